//! `mosaic-bench mesh` and `mosaic-bench edge`: throughput and latency of the mesh and the
//! edge, each next to its baseline measured in the same run against the same server.

use crate::load::cores;
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use mosaic::nats;
use mosaic_api::Endpoint as _;
use mosaic_mesh::{Ctx, Mesh, NatsConfig};
use mosaic_tests::Client;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// What is measured against its baseline.
#[derive(Clone, Copy)]
pub enum Case {
    /// The mesh's typed request/reply vs raw async-nats request/reply.
    Mesh,
    /// `GET /v1/users/me` through the edge vs a bare axum handler.
    Edge,
}

#[derive(Args, Clone)]
pub struct Load {
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight in the concurrent measurement.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Use this NATS server instead of starting one.
    #[arg(long)]
    nats_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoMsg {
    n: u64,
    text: String,
}

mosaic_api::endpoint! {
    /// Benchmark endpoint: answers with what it was sent.
    pub Echo => "bench" . "echo" : EchoMsg => EchoMsg;
}

pub async fn run(case: Case, load: Load) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let url = match &load.nats_url {
        Some(u) => u.clone(),
        None => format!("nats://127.0.0.1:{}", free_port()?),
    };
    let embedded = nats::ensure_open(&url, &dir, load.nats_url.is_none()).await?;
    // Calls cross the server, as between separately deployed services (not the in-process
    // shortcut `mosaic up` takes).
    let mesh =
        Mesh::connect(&NatsConfig { url: url.clone(), local_calls: false, ..Default::default() }, "bench").await?;
    println!("machine: {} cores; requests={} concurrency={}", cores(), load.requests, load.concurrency);
    let result = match case {
        Case::Mesh => bench_mesh(&mesh, &load).await,
        Case::Edge => bench_edge(&mesh, &load).await,
    };
    if let Some(e) = embedded {
        e.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench_mesh(mesh: &Mesh, load: &Load) -> anyhow::Result<()> {
    let rpc = mesh
        .service("bench", "benchmark echo", Arc::new(()))
        .endpoint(Echo, |_, _ctx, req: EchoMsg| async move { Ok(req) })
        .start()
        .await?;
    // The raw responder gets its own connection, as the mesh service does: both measure a
    // request crossing the server to another client and back.
    let raw_client = async_nats::connect(&mesh.config().url).await?;
    let mut raw_sub = raw_client.queue_subscribe("bench.raw.echo", "bench".into()).await?;
    let responder = raw_client.clone();
    let raw_task = tokio::spawn(async move {
        while let Some(msg) = raw_sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    raw_client.flush().await?;
    mesh.flush().await?;

    let msg = EchoMsg { n: 42, text: "hello, mosaic".into() };
    let payload = Bytes::from(serde_json::to_vec(&msg)?);
    let client = mesh.client().clone();
    let raw = move || {
        let client = client.clone();
        let payload = payload.clone();
        async move {
            let reply = client.request("bench.raw.echo", payload).await?;
            let _: EchoMsg = serde_json::from_slice(&reply.payload)?;
            anyhow::Ok(())
        }
    };
    let m = mesh.clone();
    let typed = move || {
        let m = m.clone();
        let msg = msg.clone();
        async move {
            m.call::<Echo>(&Ctx::new(), &msg).await?;
            anyhow::Ok(())
        }
    };
    // The same call made for a user: the service verifies the token it carries (EdDSA
    // against the user service's keys, then a per-token cache) before the handler runs.
    let host = mosaic_mesh::Host::new(figment::Figment::from(figment::providers::Serialized::default(
        "user.db.url",
        "mem://",
    )))?;
    let mut user = mosaic_mesh::component::start_all(&host, mesh, &[&mosaic_user::COMPONENT]).await?;
    let signup = mosaic_api::user::SignupRequest {
        username: "bench_caller".into(),
        email: "bench_caller@example.com".into(),
        password: "correct horse battery".into(),
        display_name: None,
    };
    let session = mesh.call::<mosaic_api::user::Signup>(&Ctx::new(), &signup).await?;
    let claims = mesh.identity().await?.verify(&session.access_token).await?;
    let token = session.access_token;
    let m = mesh.clone();
    let user_msg = EchoMsg { n: 42, text: "hello, mosaic".into() };
    let verified = move || {
        // A context per call, as each request makes one: a context's deadline runs from
        // its creation.
        let ctx = Ctx::new().authenticated(&token, claims.clone());
        let (m, msg) = (m.clone(), user_msg.clone());
        async move {
            m.call::<Echo>(&ctx, &msg).await?;
            anyhow::Ok(())
        }
    };
    let plain_client = mesh.client().clone();
    let plain_payload = Bytes::from(serde_json::to_vec(&EchoMsg { n: 42, text: "hello, mosaic".into() })?);
    let plain = move || {
        let client = plain_client.clone();
        let payload = plain_payload.clone();
        async move {
            let reply = client.request(Echo::SUBJECT, payload).await?;
            let _: EchoMsg = serde_json::from_slice(&reply.payload)?;
            anyhow::Ok(())
        }
    };
    let headed_client = mesh.client().clone();
    let headed_payload = Bytes::from(serde_json::to_vec(&EchoMsg { n: 42, text: "hello, mosaic".into() })?);
    let headed = move || {
        let client = headed_client.clone();
        let payload = headed_payload.clone();
        async move {
            let reply = client.request_with_headers("bench.raw.echo", Ctx::new().to_headers(), payload).await?;
            let _: EchoMsg = serde_json::from_slice(&reply.payload)?;
            anyhow::Ok(())
        }
    };
    let (base, mesh_m) = compare(load, raw.clone(), typed.clone()).await?;
    let (_, verified_m) = compare(load, typed, verified).await?;
    let (_, plain_m) = compare(load, raw.clone(), plain).await?;
    let (_, headed_m) = compare(load, raw, headed).await?;
    header();
    report("raw async-nats request/reply", &base);
    report("mesh typed call (micro service)", &mesh_m);
    report("mesh typed call for a user (token verified by the service)", &verified_m);
    report("plain NATS request (no headers) to the mesh endpoint", &plain_m);
    report("raw request/reply carrying the mesh's context headers", &headed_m);
    overhead(&base, &mesh_m);
    rpc.stop().await;
    user.stop().await;
    raw_task.abort();
    Ok(())
}

async fn bench_edge(mesh: &Mesh, load: &Load) -> anyhow::Result<()> {
    let host = mosaic_mesh::Host::new(figment::Figment::from(figment::providers::Serialized::default(
        "user.db.url",
        "mem://",
    )))?;
    let mut user = mosaic_mesh::component::start_all(&host, mesh, &[&mosaic_user::COMPONENT]).await?;
    let edge_config = mosaic_edge::Config { http: "127.0.0.1:0".parse()?, rate_limit_per_sec: 0, ..Default::default() };
    let edge = mosaic_edge::start(mesh, edge_config, None).await?;
    let base = format!("http://{}", edge.local_addr());

    let bare = axum::Router::new().route(
        "/bare",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"id": "0", "username": "bench"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/bare", listener.local_addr()?);
    let bare_server = tokio::spawn(async move { axum::serve(listener, bare).await });

    let http = reqwest::Client::builder().pool_max_idle_per_host(load.concurrency).build()?;
    let signup = Client::with_http(base.clone(), http.clone())
        .signup_request("bench_user", "bench@example.com", "correct horse battery")
        .send()
        .await?
        .error_for_status()?;
    let token = Client::try_read(signup).await?.session().context("signing up")?.access_token;
    let signup_token = token.clone();

    let c = http.clone();
    let bare_call = move || {
        let c = c.clone();
        let url = bare_url.clone();
        async move {
            c.get(url).send().await?.error_for_status()?.bytes().await?;
            anyhow::Ok(())
        }
    };
    let me_url = format!("{base}/v1/users/me");
    let me_http = http.clone();
    let edge_call = move || {
        let c = me_http.clone();
        let url = me_url.clone();
        let token = token.clone();
        async move {
            c.get(url).bearer_auth(token).send().await?.error_for_status()?.bytes().await?;
            anyhow::Ok(())
        }
    };
    let c = http.clone();
    let jwks_url = format!("{base}/v1/auth/jwks");
    let jwks_call = move || {
        let c = c.clone();
        let url = jwks_url.clone();
        async move {
            c.get(url).send().await?.error_for_status()?.bytes().await?;
            anyhow::Ok(())
        }
    };
    let (base_m, edge_m) = compare(load, bare_call.clone(), edge_call).await?;
    let (_, jwks_m) = compare(load, bare_call, jwks_call).await?;
    header();
    report("bare axum handler", &base_m);
    report("edge GET /v1/users/me (JWT + NATS + user service + SurrealDB)", &edge_m);
    report("edge GET /v1/auth/jwks (edge middleware stack, answered from the edge's cache)", &jwks_m);
    overhead(&base_m, &edge_m);

    // The token check alone: what every authenticated request pays at the edge.
    let auth = mosaic_mesh::identity::Authenticator::start(mesh, 5).await?;
    anyhow::ensure!(
        auth.wait_ready(std::time::Duration::from_secs(5)).await,
        "signing keys and revocations did not load"
    );
    let mut verify = Histogram::<u64>::new(3)?;
    for _ in 0..load.requests {
        let t = Instant::now();
        auth.verify(&signup_token).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        verify.record(t.elapsed().as_nanos() as u64)?;
    }
    println!(
        "\naccess-token check (signature + claims + revocation lookup, no I/O): p50 {:.1} µs, p99 {:.1} µs",
        verify.value_at_quantile(0.5) as f64 / 1000.0,
        verify.value_at_quantile(0.99) as f64 / 1000.0
    );
    bare_server.abort();
    edge.stop().await;
    user.stop().await;
    Ok(())
}

struct Measurement {
    sequential: Histogram<u64>,
    concurrent: Histogram<u64>,
    throughput: f64,
}

/// Measures a path and its baseline in one run: sequential latencies interleave one call of
/// each in random order (so drift on a shared machine hits both alike), then each runs `concurrency` calls in
/// flight in alternating rounds, and the median round's throughput is reported.
async fn compare<A, FA, B, FB>(load: &Load, baseline: A, path: B) -> anyhow::Result<(Measurement, Measurement)>
where
    A: Fn() -> FA + Send + Sync + Clone + 'static,
    FA: Future<Output = anyhow::Result<()>> + Send,
    B: Fn() -> FB + Send + Sync + Clone + 'static,
    FB: Future<Output = anyhow::Result<()>> + Send,
{
    for _ in 0..(load.requests / 10).max(100) {
        baseline().await?;
        path().await?;
    }
    let mut seq_a = Histogram::<u64>::new(3)?;
    let mut seq_b = Histogram::<u64>::new(3)?;
    for _ in 0..load.requests {
        // Random order per pair: whichever runs second inherits the other's wake-ups.
        let baseline_first: bool = rand::random();
        for first in [baseline_first, !baseline_first] {
            let t = Instant::now();
            if first {
                baseline().await?;
                seq_a.record(t.elapsed().as_micros() as u64)?;
            } else {
                path().await?;
                seq_b.record(t.elapsed().as_micros() as u64)?;
            }
        }
    }
    const ROUNDS: usize = 5;
    let per_round = (load.requests / ROUNDS).max(load.concurrency);
    let (mut conc_a, mut conc_b) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    let (mut rates_a, mut rates_b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (h, rate) = concurrent(load.concurrency, per_round, baseline.clone()).await?;
        conc_a.add(h)?;
        rates_a.push(rate);
        let (h, rate) = concurrent(load.concurrency, per_round, path.clone()).await?;
        conc_b.add(h)?;
        rates_b.push(rate);
    }
    Ok((
        Measurement { sequential: seq_a, concurrent: conc_a, throughput: median(rates_a) },
        Measurement { sequential: seq_b, concurrent: conc_b, throughput: median(rates_b) },
    ))
}

async fn concurrent<F, Fut>(concurrency: usize, total: usize, op: F) -> anyhow::Result<(Histogram<u64>, f64)>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let per_task = (total / concurrency.max(1)).max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3)?;
            for _ in 0..per_task {
                let t = Instant::now();
                op().await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok((all, (per_task * concurrency) as f64 / started.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn header() {
    println!(
        "| path | sequential p50 | sequential p99 | concurrent p50 | concurrent p99 | concurrent throughput (median of 5 rounds) |"
    );
    println!("|---|---|---|---|---|---|");
}

fn report(name: &str, m: &Measurement) {
    println!(
        "| {name} | {} µs | {} µs | {} µs | {} µs | {:.0} req/s |",
        m.sequential.value_at_quantile(0.5),
        m.sequential.value_at_quantile(0.99),
        m.concurrent.value_at_quantile(0.5),
        m.concurrent.value_at_quantile(0.99),
        m.throughput
    );
}

fn overhead(base: &Measurement, path: &Measurement) {
    let p50 = |m: &Measurement| m.sequential.value_at_quantile(0.5) as f64;
    println!(
        "\nsequential p50 overhead: {:+.1}%; throughput ratio: {:.2}",
        (p50(path) / p50(base) - 1.0) * 100.0,
        path.throughput / base.throughput
    );
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mosaic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

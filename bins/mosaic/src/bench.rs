//! `mosaic bench`: throughput and latency of the mesh and the edge, each next to its
//! baseline measured in the same run against the same server.

use crate::nats;
use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use mosaic_mesh::{Ctx, Mesh, NatsConfig};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum Which {
    /// Mesh request/reply (typed endpoint, micro service, headers) vs raw async-nats
    /// request/reply, same server, same payload.
    Mesh(Load),
    /// Authenticated `GET /v1/users/me` through the edge vs a bare axum handler.
    Edge(Load),
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

pub async fn run(which: Which) -> anyhow::Result<()> {
    let load = match &which {
        Which::Mesh(l) | Which::Edge(l) => l.clone(),
    };
    let dir = tempfile_dir()?;
    let url = match &load.nats_url {
        Some(u) => u.clone(),
        None => format!("nats://127.0.0.1:{}", free_port()?),
    };
    let embedded = nats::ensure(&url, &dir, load.nats_url.is_none()).await?;
    let mesh = Mesh::connect(&NatsConfig { url: url.clone(), ..Default::default() }, "bench").await?;
    println!("machine: {} cores; requests={} concurrency={}", cores(), load.requests, load.concurrency);
    let result = match which {
        Which::Mesh(_) => bench_mesh(&mesh, &load).await,
        Which::Edge(_) => bench_edge(&mesh, &load).await,
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
    let raw_client = mesh.client().clone();
    let mut raw_sub = raw_client.queue_subscribe("bench.raw.echo", "bench".into()).await?;
    let responder = raw_client.clone();
    let raw_task = tokio::spawn(async move {
        while let Some(msg) = raw_sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
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
    header();
    report("raw async-nats request/reply", measure(load, raw).await?);
    report("mesh typed call (micro service)", measure(load, typed).await?);
    rpc.stop().await;
    raw_task.abort();
    Ok(())
}

async fn bench_edge(mesh: &Mesh, load: &Load) -> anyhow::Result<()> {
    let user = mosaic_user::start(
        mesh,
        mosaic_user::Config {
            db: mosaic_mesh::db::DbConfig { url: "mem://".into(), ..Default::default() },
            ..Default::default()
        },
    )
    .await?;
    let edge_config = mosaic_edge::Config { http: "127.0.0.1:0".parse()?, rate_limit_per_sec: 0, ..Default::default() };
    let edge = mosaic_edge::start(mesh, edge_config).await?;
    let base = format!("http://{}", edge.local_addr());

    let bare = axum::Router::new().route(
        "/bare",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"id": "0", "username": "bench"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/bare", listener.local_addr()?);
    let bare_server = tokio::spawn(async move { axum::serve(listener, bare).await });

    let http = reqwest::Client::builder().pool_max_idle_per_host(load.concurrency).build()?;
    let signup: serde_json::Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&serde_json::json!({"username": "bench_user", "email": "bench@example.com", "password": "correct horse battery"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = signup["access_token"].as_str().context("no access token")?.to_owned();

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
    let edge_call = move || {
        let c = http.clone();
        let url = me_url.clone();
        let token = token.clone();
        async move {
            c.get(url).bearer_auth(token).send().await?.error_for_status()?.bytes().await?;
            anyhow::Ok(())
        }
    };
    header();
    report("bare axum handler", measure(load, bare_call).await?);
    report("edge GET /v1/users/me (JWT + NATS + user service + SurrealDB)", measure(load, edge_call).await?);
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

async fn measure<F, Fut>(load: &Load, op: F) -> anyhow::Result<Measurement>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    for _ in 0..(load.requests / 10).max(100) {
        op().await?;
    }
    let mut sequential = Histogram::<u64>::new(3)?;
    for _ in 0..load.requests {
        let t = Instant::now();
        op().await?;
        sequential.record(t.elapsed().as_micros() as u64)?;
    }
    let per_task = load.requests / load.concurrency.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency {
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
    let mut concurrent = Histogram::<u64>::new(3)?;
    for t in tasks {
        concurrent.add(t.await??)?;
    }
    let elapsed = started.elapsed();
    Ok(Measurement { sequential, concurrent, throughput: (per_task * load.concurrency) as f64 / elapsed.as_secs_f64() })
}

fn header() {
    println!("| path | sequential p50 | sequential p99 | concurrent p50 | concurrent p99 | concurrent throughput |");
    println!("|---|---|---|---|---|---|");
}

fn report(name: &str, m: Measurement) {
    println!(
        "| {name} | {} µs | {} µs | {} µs | {} µs | {:.0} req/s |",
        m.sequential.value_at_quantile(0.5),
        m.sequential.value_at_quantile(0.99),
        m.concurrent.value_at_quantile(0.5),
        m.concurrent.value_at_quantile(0.99),
        m.throughput
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mosaic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

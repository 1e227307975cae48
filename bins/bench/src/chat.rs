//! `mosaic-bench chat`: chat latency against a running Mosaic, the way phones use it: pairs
//! of users in 1:1 conversations, everyone on a WebSocket, messages sent as `chat.send`
//! frames at a fixed total rate (open loop), and the time from each message's scheduled send
//! to its `chat.message` frame on the recipient's socket.

use crate::client::{Edge, expect, phase};
use crate::load::{SPARE_FDS, cores, lock, ms, on_own_thread, raise_fd_limit};
use crate::ws::{Socket, open_socket};
use anyhow::{Context as _, bail};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The long help of `mosaic-bench chat`.
pub const ABOUT: &str = "\
Measures chat latency against a running Mosaic edge over real WebSockets.

Start Mosaic first without the per-IP and per-user limits (every socket of this benchmark \
comes from one address, and each user sends more than a person would):

    MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0 MOSAIC_MESSAGING__MAX_MESSAGES_PER_MINUTE=100000 \\
        target/release/mosaic up --data-dir /tmp/bench-chat

then: target/release/mosaic-bench chat --url http://127.0.0.1:8080

2 × --conversations users are signed up, paired in 1:1 conversations, and all connected by \
WebSocket (GET /v1/ws). Messages are then sent as chat.send frames at --rate per second in \
total, round-robin over the conversations, alternating the sender within each, for --warmup \
seconds (not recorded) and --duration seconds. Latency counts from each message's scheduled \
send time to the arrival of its chat.message frame on the recipient's socket, so a server that \
falls behind cannot hide its queue. A message whose frame does not arrive within --timeout \
seconds is reported lost.";

#[derive(Args, Clone, Debug)]
pub struct ChatLoad {
    /// Base URL of the running Mosaic edge.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// 1:1 conversations (two users each).
    #[arg(long, default_value_t = 200)]
    conversations: usize,
    /// Messages per second, in total.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Characters per message.
    #[arg(long, default_value_t = 64)]
    text_chars: usize,
    /// Seconds to wait for a message's frame before counting it lost.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Requests in flight during setup.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<ChatMessage>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    client_id: Option<String>,
    sender: Sender,
}

#[derive(Deserialize)]
struct Sender {
    id: String,
}

/// Messages sent and not yet received: client id → (scheduled time, measured?).
type Pending = Arc<Mutex<HashMap<u64, (Instant, bool)>>>;

struct Results {
    latency: Histogram<u64>,
    received: u64,
    errors: u64,
    error_kinds: HashMap<String, u64>,
}

pub async fn run(load: ChatLoad) -> anyhow::Result<()> {
    if load.conversations == 0 || load.rate == 0 || load.duration == 0 {
        bail!("--conversations, --rate and --duration must be positive");
    }
    // One thread for the generator: the server under test needs the other core.
    on_own_thread("bench-chat", move || drive(load)).await
}

async fn drive(load: ChatLoad) -> anyhow::Result<()> {
    let users = load.conversations * 2;
    let fds = raise_fd_limit(users as u64 + SPARE_FDS)?;
    let base = load.url.trim_end_matches('/').to_owned();
    let edge = Edge::with(&base, load.timeout, load.setup_concurrency)?;
    edge.check_up().await?;
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_millis() as u64;
    let prefix = format!("c{nonce:x}");
    println!(
        "machine: {} cores; file descriptors: {fds}; url={base}; {} conversations ({users} users); rate={} msg/s; \
         {} s measured after {} s warm-up; {} characters per message",
        cores(),
        load.conversations,
        load.rate,
        load.duration,
        load.warmup,
        load.text_chars
    );

    let names: Vec<String> = (0..users).map(|i| format!("{prefix}_{i}")).collect();
    let mut accounts = phase("signed up", names, load.setup_concurrency, |name| {
        let edge = edge.clone();
        async move { edge.signup(&name).await }
    })
    .await?;
    let phase_length = Duration::from_secs(load.warmup + load.duration + load.timeout + 60);
    edge.keep_fresh(&mut accounts, phase_length, load.setup_concurrency).await?;
    let pairs: Vec<(usize, usize)> = (0..load.conversations).map(|c| (2 * c, 2 * c + 1)).collect();
    // Phases finish in any order: each result carries its pair's index.
    let mut conversations = phase("conversations", pairs, load.setup_concurrency, |(a, b)| {
        let edge = edge.clone();
        let (starter, other) = (&accounts[a], &accounts[b]);
        let token = starter.access_token.clone();
        let body = serde_json::json!({ "member_ids": [other.id] });
        async move {
            let resp = edge
                .send("starting a conversation", || {
                    edge.client().request(Method::POST, "/v1/conversations", Some(&token)).json(&body)
                })
                .await?;
            let created: Created = expect(resp, StatusCode::CREATED, "POST /v1/conversations").await?.parse()?;
            anyhow::Ok((a / 2, created.id))
        }
    })
    .await?;
    conversations.sort();
    let conversations: Vec<String> = conversations.into_iter().map(|(_, id)| id).collect();

    let ws_base = base.replacen("http", "ws", 1);
    let pending: Pending = Arc::default();
    let results = Arc::new(Mutex::new(Results {
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        received: 0,
        errors: 0,
        error_kinds: HashMap::new(),
    }));
    let urls: Vec<(usize, String)> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (i, format!("{ws_base}/v1/ws?access_token={}", a.access_token)))
        .collect();
    let sockets: Vec<(usize, Socket)> =
        phase("sockets open", urls, 64, |(i, url)| async move { anyhow::Ok((i, open_socket(&url).await?)) }).await?;
    let mut writers: Vec<Option<mpsc::Sender<Message>>> = vec![None; users];
    let mut readers = Vec::new();
    for (i, socket) in sockets {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Message>(1024);
        writers[i] = Some(tx);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let me = accounts[i].id.clone();
        let pending = pending.clone();
        let results = results.clone();
        let prefix = prefix.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
                let arrived = Instant::now();
                match frame.kind.as_str() {
                    "chat.message" => {
                        let Some(m) = frame.message else { continue };
                        // The sender's own devices get the message too; only the recipient's copy counts.
                        if m.sender.id == me {
                            continue;
                        }
                        let Some(k) = m.client_id.as_deref().and_then(|c| parse_id(c, &prefix)) else { continue };
                        if let Some((due, measured)) = lock(&pending).remove(&k) {
                            let mut r = lock(&results);
                            r.received += 1;
                            if measured {
                                r.latency.saturating_record(arrived.saturating_duration_since(due).as_micros() as u64);
                            }
                        }
                    }
                    "error" => {
                        let Some(k) = frame.client_id.as_deref().and_then(|c| parse_id(c, &prefix)) else { continue };
                        if lock(&pending).remove(&k).is_some() {
                            let mut r = lock(&results);
                            r.errors += 1;
                            let kind =
                                format!("{}: {}", frame.code.unwrap_or_default(), frame.detail.unwrap_or_default());
                            *r.error_kinds.entry(kind).or_default() += 1;
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    let writers: Vec<mpsc::Sender<Message>> = writers.into_iter().map(|w| w.expect("every socket opened")).collect();

    let text: String = "x".repeat(load.text_chars.max(1));
    let interval = Duration::from_secs_f64(1.0 / f64::from(load.rate));
    let total = (load.warmup + load.duration) * u64::from(load.rate);
    let measured_from = load.warmup * u64::from(load.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut not_sent = 0u64;
    println!("timed phase: {} s warm-up, then {} s measured", load.warmup, load.duration);
    for k in 0..total {
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let conversation = (k as usize) % load.conversations;
        let sender = 2 * conversation + ((k as usize / load.conversations) % 2);
        let frame = serde_json::json!({
            "type": "chat.send",
            "conversation_id": conversations[conversation],
            "text": text,
            "client_id": format!("{prefix}-{k}"),
        });
        lock(&pending).insert(k, (due, k >= measured_from));
        if writers[sender].try_send(Message::text(frame.to_string())).is_err() {
            lock(&pending).remove(&k);
            not_sent += u64::from(k >= measured_from);
        }
    }
    let send_end = Instant::now();
    let deadline = send_end + Duration::from_secs(load.timeout);
    while Instant::now() < deadline && !lock(&pending).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = lock(&pending).values().filter(|(_, measured)| *measured).count();
    let r = lock(&results);
    let measured = load.duration * u64::from(load.rate);
    let q = |q: f64| if r.latency.is_empty() { "-".to_owned() } else { ms(r.latency.value_at_quantile(q)) };
    println!("\nchat.send → recipient's chat.message, from the scheduled send time");
    println!("| rate | scheduled | delivered | errors | lost | not sent | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} msg/s | {measured} | {} | {} | {lost} | {not_sent} | {} | {} | {} | {} | {} |",
        load.rate,
        r.latency.len(),
        r.errors,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        if r.latency.is_empty() { "-".to_owned() } else { ms(r.latency.max()) }
    );
    for (kind, n) in &r.error_kinds {
        println!("error ×{n}: {kind}");
    }
    drop(r);
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

fn parse_id(client_id: &str, prefix: &str) -> Option<u64> {
    client_id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

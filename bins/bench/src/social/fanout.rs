//! The fan-out: one author, N followers on WebSockets, one post, and the delay until each
//! follower's `feed.post` frame arrives.

use super::SocialLoad;
use super::setup::tiny_png;
use crate::client::{Edge, PROGRESS_EVERY, phase};
use crate::load::ms;
use crate::ws::{frame_type, open_socket};
use anyhow::bail;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// WebSocket handshakes in flight at once during the fan-out: a few dozen keeps the edge's
/// accept queue short without making 10 000 connections slow.
const WS_CONNECTS_IN_FLIGHT: usize = 64;

pub(super) async fn run(
    edge: &Edge,
    load: &SocialLoad,
    followers: usize,
    prefix: &str,
    nonce: u64,
) -> anyhow::Result<()> {
    let ws_base = match edge.base().strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        // The WebSocket client is built without TLS: the benchmark targets an edge nearby.
        None => bail!("the fan-out needs an http:// URL (got {})", edge.base()),
    };
    let conc = load.setup_concurrency;
    let mut author = edge.signup(&format!("{prefix}_author")).await?;
    let author_id = author.id.clone();
    let author_id = &author_id;
    let mut fans = phase("followers signed up and following", (0..followers).collect(), conc, |i| async move {
        let fan = edge.signup(&format!("{prefix}_f{i}")).await?;
        edge.follow(&fan, author_id).await?;
        Ok(fan)
    })
    .await?;
    // The photo is ready before the clock starts: only the post and its delivery are timed.
    let media = edge.upload_ready(&author, tiny_png(nonce, 0)?).await?;
    // Sockets close when their token expires: keep the tokens valid through the connecting
    // (allowing for as few as a hundred handshakes a second) and the measurement.
    let needed = Duration::from_secs(120 + followers as u64 / 100 + load.fanout_timeout);
    edge.keep_fresh(std::slice::from_mut(&mut author), needed, 1).await?;
    edge.keep_fresh(&mut fans, needed, conc).await?;

    let gate = Arc::new(Semaphore::new(WS_CONNECTS_IN_FLIGHT));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sockets = tokio::task::JoinSet::new();
    let connecting = Instant::now();
    for fan in &fans {
        let url = format!("{ws_base}/v1/ws?access_token={}", fan.access_token);
        sockets.spawn(follower(url, gate.clone(), ready_tx.clone(), arrived_tx.clone(), stop_rx.clone()));
    }
    drop((ready_tx, arrived_tx));
    let (mut connected, mut failed, mut first_failure) = (0usize, 0usize, None);
    let mut reported = Instant::now();
    // Each socket task reports exactly once; the channel stays open while they run.
    while connected + failed < followers {
        let Some(result) = ready_rx.recv().await else { break };
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
        }
        if reported.elapsed() >= PROGRESS_EVERY && connected + failed < followers {
            reported = Instant::now();
            println!("  sockets open: {connected}/{followers}");
        }
    }
    println!(
        "sockets open: {connected} of {followers} in {:.1} s{}",
        connecting.elapsed().as_secs_f64(),
        first_failure.map(|e| format!(" ({failed} failed, first: {e})")).unwrap_or_default()
    );
    if connected == 0 {
        let _ = stop_tx.send(true);
        bail!("no follower could open a WebSocket");
    }

    let sent = Instant::now();
    let posted = edge.create_post(&author, &media, "fan-out bench #bench").await;
    let reply = sent.elapsed();
    let post_id = match posted {
        Ok(id) => id,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let deadline = sent + Duration::from_secs(load.fanout_timeout);
    let mut delays = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    while delays.len() < connected as u64 {
        match tokio::time::timeout_at(deadline.into(), arrived_rx.recv()).await {
            Ok(Some(at)) => delays.saturating_record(at.saturating_duration_since(sent).as_micros() as u64),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    let mut closed_early = 0usize;
    let mut first_close = None;
    let closing = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = sockets.join_next().await {
            if let Ok(Some(reason)) = joined {
                closed_early += 1;
                first_close.get_or_insert(reason);
            }
        }
    })
    .await;
    if closing.is_err() {
        sockets.abort_all();
    }

    println!("\npost {post_id}: POST /v1/posts answered in {}", ms(reply.as_micros() as u64));
    println!("| followers on sockets | got feed.post within {} s | p50 | p90 | p99 | max |", load.fanout_timeout);
    println!("|---|---|---|---|---|---|");
    let q = |q: f64| if delays.is_empty() { "-".to_owned() } else { ms(delays.value_at_quantile(q)) };
    let max = if delays.is_empty() { "-".to_owned() } else { ms(delays.max()) };
    println!("| {connected} | {} | {} | {} | {} | {max} |", delays.len(), q(0.5), q(0.9), q(0.99));
    println!("(delay from sending the post to each follower's feed.post frame)");
    if closed_early > 0 {
        println!(
            "sockets closed before the end: {closed_early} (first: {})",
            first_close.unwrap_or_else(|| "unknown".into())
        );
    }
    if delays.is_empty() {
        println!("note: no follower got a feed.post frame; does this server have the feed service?");
    }
    Ok(())
}

/// One follower's socket: connects (a few at a time, through `gate`), reports whether it
/// is ready, then reports when its first `feed.post` frame arrives, until `stop`. Returns
/// why the socket ended early, if it did.
async fn follower(
    url: String,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    arrived: mpsc::UnboundedSender<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let opened = {
        let Ok(_permit) = gate.acquire().await else { return Some("connect gate closed".into()) };
        tokio::time::timeout(Duration::from_secs(30), open_socket(&url)).await
    };
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return None;
        }
        Err(_) => {
            let _ = ready.send(Err("WebSocket handshake timed out".into()));
            return None;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut got = false;
    let early = loop {
        tokio::select! {
            _ = stop.changed() => break None,
            msg = ws.next() => {
                // Stamped before parsing: with thousands of sockets on one thread, the parse
                // of one frame should not count against the next.
                let at = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        // This follower follows only the author, so any feed.post is the one.
                        if !got && frame_type(text.as_str()).as_deref() == Some("feed.post") {
                            got = true;
                            let _ = arrived.send(at);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Some(frame.map_or("close without a code".into(), |f| format!("close {}: {}", f.code, f.reason)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("connection ended".into()),
                }
            }
        }
    };
    if early.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    early
}

//! WebSocket clients of `GET /v1/ws`, as an app holds them.

use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket URL of an edge at `base` (`http://…`) with a query.
pub fn ws_url(base: &str, query: &str) -> String {
    format!("{}/v1/ws{query}", base.replacen("http", "ws", 1))
}

/// Connects with the token in the query and waits for the `ready` frame (the socket is
/// then subscribed: every frame published from now on reaches it).
pub async fn connect(base: &str, token: &str) -> Socket {
    connect_since(base, token, None).await.0
}

/// Connects, resuming after `since` when given; returns the socket, the frames sent before
/// `ready` (the replay, or `cursor.expired`), and the `ready` frame.
pub async fn connect_since(base: &str, token: &str, since: Option<&str>) -> (Socket, Vec<Value>, Value) {
    let query = match since {
        Some(c) => format!("?access_token={token}&since={c}"),
        None => format!("?access_token={token}"),
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(base, &query)).await.expect("ws connects");
    let mut before = Vec::new();
    loop {
        let frame = next_json(&mut socket).await;
        if frame["type"] == "ready" {
            return (socket, before, frame);
        }
        before.push(frame);
    }
}

/// The next JSON frame, within `within`; `None` if none came.
pub async fn try_next_json(socket: &mut Socket, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next()).await.ok()?.expect("open").expect("frame");
        match msg {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("JSON frame")),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next JSON frame (5 s at most).
pub async fn next_json(socket: &mut Socket) -> Value {
    try_next_json(socket, Duration::from_secs(5)).await.expect("a frame within 5 s")
}

/// The next frame of type `kind`, skipping others (5 s at most).
pub async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = try_next_json(socket, left).await.unwrap_or_else(|| panic!("a {kind} frame within 5 s"));
        if frame["type"] == kind {
            return frame;
        }
    }
}

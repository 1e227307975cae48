//! The WebSocket side of a client (`GET /v1/ws`), as the fan-out and chat generators open it.

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Deserialize)]
struct FrameType {
    #[serde(rename = "type")]
    kind: String,
}

/// The `type` of a JSON frame.
pub(crate) fn frame_type(text: &str) -> Option<String> {
    serde_json::from_str::<FrameType>(text).ok().map(|f| f.kind)
}

/// Opens a socket and waits for the answer to a ping, so the edge has certainly joined the
/// user to its push channel before the post is sent.
pub(crate) async fn open_socket(url: &str) -> anyhow::Result<Socket> {
    // Small buffers: ten thousand sockets at the default 128 KiB each would be 2.5 GiB.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.context("WebSocket handshake")?;
    ws.send(Message::text(r#"{"type":"ping","id":"ready"}"#)).await.context("sending a ping")?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg.context("waiting for the pong")?
            && frame_type(text.as_str()).as_deref() == Some("pong")
        {
            return Ok(ws);
        }
    }
    bail!("the socket closed before answering a ping")
}

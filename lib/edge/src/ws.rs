//! `GET /v1/ws`: an authenticated WebSocket carrying the user's push frames.
//!
//! The socket loop is generic over a sink and a stream of messages, so its behaviour
//! (pings, frame forwarding, expiry, revocation, shutdown) is testable with channels.

use crate::AppState;
use crate::auth::Authenticator;
use crate::error::{HttpError, Problem};
use crate::extract::QueryParams;
use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use mosaic_api::user::AccessClaims;
use mosaic_api::ws::{ClientFrame, MAX_WATCHED_POSTS, ServerFrame};
use mosaic_api::{ApiError, ErrorCode};
use mosaic_mesh::{CancellationToken, Mesh, PushSubscription};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use utoipa::IntoParams;

/// Largest frame a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How often a socket re-checks the local revocation cache.
const REVOCATION_CHECK: Duration = Duration::from_secs(2);

/// Close code: the access token expired; reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: the access token was revoked.
pub const CLOSE_TOKEN_REVOKED: u16 = 4003;

/// Query of the WebSocket route.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WsQuery {
    /// The access token (alternatively `Sec-WebSocket-Protocol: bearer, <token>`).
    pub access_token: Option<String>,
    /// Resume cursor from a previous connection.
    pub since: Option<String>,
}

/// Open the real-time socket. Server frames are JSON objects with a `type`: `pong`,
/// `resync`, `error`, and the push frames services send (`feed.post`, `notification`,
/// `chat.*`, `post.counts`). Clients send `ping`.
#[utoipa::path(get, path = "/v1/ws", tag = "realtime", params(WsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = Problem)))]
pub(crate) async fn ws(
    State(s): State<Arc<AppState>>,
    QueryParams(q): QueryParams<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let (token, via_protocol) = match (q.access_token, protocol_token(&headers)) {
        (Some(t), _) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => {
            return Err(
                ApiError::unauthorized("pass ?access_token= or `Sec-WebSocket-Protocol: bearer, <token>`").into()
            );
        }
    };
    let claims = s.auth.verify(&token).await?;
    let upgrade = upgrade.map_err(|e| HttpError::new(ErrorCode::BadRequest, e.body_text()))?;
    let membership = s.hub.join(&claims.sub).await?;
    let upgrade = if via_protocol { upgrade.protocols(["bearer"]) } else { upgrade };
    let control = Control {
        auth: s.auth.clone(),
        claims,
        heartbeat: Duration::from_secs(s.config.ws_heartbeat_secs),
        shutdown: s.shutdown.clone(),
        mesh: s.mesh.clone(),
    };
    Ok(upgrade.max_message_size(MAX_CLIENT_MESSAGE).on_upgrade(move |socket: WebSocket| async move {
        metrics::gauge!("ws_connections").increment(1.0);
        let (tx, rx) = socket.split();
        let mut membership = membership;
        run(tx, rx, &mut membership.frames, control).await;
        metrics::gauge!("ws_connections").decrement(1.0);
        drop(membership);
    }))
}

fn protocol_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("sec-websocket-protocol")?.to_str().ok()?;
    let mut parts = value.split(',').map(str::trim);
    (parts.next()? == "bearer").then(|| parts.next().map(str::to_owned)).flatten()
}

/// What a socket needs besides its messages.
pub struct Control {
    pub auth: Arc<Authenticator>,
    pub claims: AccessClaims,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    /// Subscribes the socket to the posts it watches.
    pub mesh: Mesh,
}

/// Runs one socket until the client leaves, the token expires or is revoked, the client
/// goes silent, or the edge shuts down.
pub async fn run<Tx, Rx>(mut tx: Tx, mut rx: Rx, frames: &mut broadcast::Receiver<Bytes>, control: Control)
where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let now = chrono::Utc::now().timestamp();
    let expiry = tokio::time::sleep(Duration::from_secs((control.claims.exp - now).max(0) as u64));
    tokio::pin!(expiry);
    let mut heartbeat = tokio::time::interval(control.heartbeat);
    heartbeat.tick().await;
    let mut revocation = tokio::time::interval(REVOCATION_CHECK);
    let mut last_seen = Instant::now();
    let mut watched: Option<PushSubscription> = None;

    let close = loop {
        tokio::select! {
            _ = control.shutdown.cancelled() => break Some((1001, "server shutting down")),
            _ = &mut expiry => break Some((CLOSE_TOKEN_EXPIRED, "access token expired")),
            _ = revocation.tick() => {
                if control.auth.is_revoked(&control.claims) {
                    break Some((CLOSE_TOKEN_REVOKED, "access token revoked"));
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > control.heartbeat * 3 {
                    break Some((1011, "no traffic from client"));
                }
                if tx.send(Message::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
            frame = frames.recv() => {
                let out = match frame {
                    Ok(bytes) => match Utf8Bytes::try_from(bytes) {
                        Ok(text) => Message::Text(text),
                        Err(_) => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => text(&ServerFrame::Resync { missed }),
                    Err(broadcast::error::RecvError::Closed) => break Some((1011, "push channel closed")),
                };
                if tx.send(out).await.is_err() {
                    break None;
                }
            }
            Some(frame) = next_watched(&mut watched) => {
                let Ok(text) = Utf8Bytes::try_from(frame) else { continue };
                if tx.send(Message::Text(text)).await.is_err() {
                    break None;
                }
            }
            incoming = rx.next() => {
                last_seen = Instant::now();
                let reply = match incoming {
                    Some(Ok(Message::Text(t))) => Some(answer(&t, &control.mesh, &mut watched).await),
                    Some(Ok(Message::Binary(_))) => Some(text(&ServerFrame::Error {
                        code: ErrorCode::BadRequest,
                        detail: "frames are JSON text".into(),
                    })),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                };
                if let Some(reply) = reply
                    && tx.send(reply).await.is_err() {
                        break None;
                    }
            }
        }
    };
    if let Some((code, reason)) = close {
        let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
    let _ = tx.close().await;
}

/// The next frame of a watched post; never resolves while nothing is watched.
async fn next_watched(watched: &mut Option<PushSubscription>) -> Option<Bytes> {
    match watched {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn answer(raw: &str, mesh: &Mesh, watched: &mut Option<PushSubscription>) -> Message {
    match serde_json::from_str::<ClientFrame>(raw) {
        Ok(ClientFrame::Ping { id }) => text(&ServerFrame::Pong { id }),
        Ok(ClientFrame::WatchPosts { mut post_ids }) => {
            post_ids.sort();
            post_ids.dedup();
            if post_ids.len() > MAX_WATCHED_POSTS {
                return text(&ServerFrame::Error {
                    code: ErrorCode::ValidationFailed,
                    detail: format!("watch at most {MAX_WATCHED_POSTS} posts"),
                });
            }
            // Dropping the previous subscription unsubscribes from what is no longer shown.
            *watched = None;
            if !post_ids.is_empty() {
                match mesh.subscribe_posts(&post_ids).await {
                    Ok(sub) => *watched = Some(sub),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not watch posts");
                        return text(&ServerFrame::Error {
                            code: ErrorCode::Unavailable,
                            detail: "watching is unavailable right now".into(),
                        });
                    }
                }
            }
            text(&ServerFrame::Watching { post_ids })
        }
        Err(e) => text(&ServerFrame::Error { code: ErrorCode::BadRequest, detail: format!("unsupported frame: {e}") }),
    }
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(serde_json::to_string(frame).expect("frames serialize").into())
}

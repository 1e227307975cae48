//! `GET /v1/ws`: an authenticated WebSocket carrying the user's push frames, replaying what
//! a reconnecting client missed, and taking chat frames from the client.
//!
//! The socket loop is generic over a sink and a stream of messages, so its behaviour
//! (pings, frame forwarding, replay, expiry, revocation, shutdown) is testable with channels.

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::QueryParams;
use crate::sockets::FrameRate;
use axum::Extension;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use mosaic_api::content::{PostsByIds, WatchablePosts};
use mosaic_api::messaging::{
    ByConversation, MarkDelivered, MarkRead, NewMessage, Receipt, SendMessage, SendMessageBody, Typing,
};
use mosaic_api::user::AccessClaims;
use mosaic_api::ws::{ClientFrame, MAX_WATCHED_POSTS, ServerFrame};
use mosaic_api::{ApiError, ConversationId, ErrorCode};
use mosaic_mesh::frames::Replay;
use mosaic_mesh::identity::Authenticator;
use mosaic_mesh::{CallError, CancellationToken, Ctx, Mesh, PushSubscription};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

/// Largest frame a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How often a socket re-checks the local revocation cache.
const REVOCATION_CHECK: Duration = Duration::from_secs(2);
/// Most frames replayed to a reconnecting socket; a client further behind reloads over HTTP.
const MAX_REPLAY: usize = 1000;
/// Least time between two `chat.typing` frames of one socket for one conversation that are
/// passed on; typing indicators are ephemeral and a keystroke stream must not become load.
const TYPING_INTERVAL: Duration = Duration::from_secs(2);
/// Chat requests one socket may have in flight; more get an error frame.
const MAX_PENDING_CALLS: usize = 32;
/// How long after a replay live frames are checked against the replayed ones.
const DEDUPE_WINDOW: Duration = Duration::from_secs(30);

/// Close code: the access token expired; reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: the access token was revoked.
pub const CLOSE_TOKEN_REVOKED: u16 = 4003;

/// Query of the WebSocket route.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WsQuery {
    /// The access token (alternatively `Sec-WebSocket-Protocol: bearer, <token>`).
    pub access_token: Option<String>,
    /// Resume cursor: the `cursor` of the last kept frame (or `ready` frame) received. The
    /// frames kept since are sent first, in order, then `ready`; a cursor too old gets
    /// `cursor.expired` instead of the frames.
    pub since: Option<String>,
}

/// Open the real-time socket. Server frames are JSON objects with a `type`: `ready`,
/// `pong`, `resync`, `error`, `cursor.expired`, and the frames services send (`feed.post`,
/// `notification`, `chat.message`, `chat.read`, `chat.delivered`, `chat.typing`,
/// `post.counts`). Clients send `ping`, `posts.watch`, `chat.send`, `chat.typing`,
/// `chat.delivered` and `chat.read`.
#[utoipa::path(get, path = "/v1/ws", tag = "realtime", params(WsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = Problem)))]
pub(crate) async fn ws(
    State(s): State<Arc<AppState>>,
    QueryParams(q): QueryParams<WsQuery>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
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
    if q.since.as_ref().is_some_and(|c| c.is_empty() || c.len() > 64) {
        return Err(HttpError::new(ErrorCode::ValidationFailed, "since is not a cursor"));
    }
    let upgrade = upgrade.map_err(|e| HttpError::new(ErrorCode::BadRequest, e.body_text()))?;
    let client_ip = crate::extract::client_ip_of(&headers, peer.map(|p| p.0.0.ip()), s.config.trusted_proxies);
    let slot = s.sockets.acquire(&claims.sub, client_ip).map_err(|refused| {
        metrics::counter!("ws_refused_total").increment(1);
        HttpError::from(ApiError::rate_limited(refused.to_string(), 5))
    })?;
    // Subscribed before anything is replayed: a frame published meanwhile is either in the
    // replay or arrives live (or both, and is then sent once).
    let membership = s.hub.join(&claims.sub).await?;
    let upgrade = if via_protocol { upgrade.protocols(["bearer"]) } else { upgrade };
    let mut ctx = Ctx::new().authenticated(&token, claims.clone());
    ctx.client_ip = client_ip;
    let control = Control {
        auth: s.auth.clone(),
        claims,
        heartbeat: Duration::from_secs(s.config.ws_heartbeat_secs),
        shutdown: s.shutdown.clone(),
        mesh: s.mesh.clone(),
        ctx,
        call_timeout: Duration::from_secs(s.config.request_timeout_secs),
        since: q.since,
        frames_per_sec: s.config.ws_frames_per_sec,
    };
    Ok(upgrade.max_message_size(MAX_CLIENT_MESSAGE).on_upgrade(move |socket: WebSocket| async move {
        metrics::gauge!("ws_connections").increment(1.0);
        let (tx, rx) = socket.split();
        let mut membership = membership;
        run(tx, rx, &mut membership.frames, control).await;
        metrics::gauge!("ws_connections").decrement(1.0);
        drop(membership);
        drop(slot);
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
    /// Subscribes the socket to the posts it watches, replays, and calls services.
    pub mesh: Mesh,
    /// The caller, for service calls made from client frames.
    pub ctx: Ctx,
    /// Deadline of those calls.
    pub call_timeout: Duration,
    /// The resume cursor the client connected with.
    pub since: Option<String>,
    /// Client frames per second handled (see `edge.ws_frames_per_sec`).
    pub frames_per_sec: u32,
}

/// The cursor of a kept frame, read without parsing the whole frame: kept frames are
/// serialised with `cursor` first.
fn kept_cursor(frame: &[u8]) -> Option<&str> {
    let rest = frame.strip_prefix(b"{\"cursor\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
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
    let (replies_tx, mut replies) = mpsc::channel::<Message>(MAX_PENDING_CALLS);
    let mut typing: HashMap<ConversationId, Instant> = HashMap::new();
    let mut rate = FrameRate::new(control.frames_per_sec);
    // When the client was last told it sends too fast: once a second at most, so a flood
    // is not answered with a flood.
    let mut told_too_fast: Option<Instant> = None;

    let (replayed, opened) = match catch_up(&mut tx, &control).await {
        Some(replayed) => (replayed, Instant::now()),
        None => {
            let _ = tx.close().await;
            return;
        }
    };
    let mut replayed = replayed;

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
                    Ok(bytes) => {
                        if !replayed.is_empty() {
                            if opened.elapsed() > DEDUPE_WINDOW {
                                replayed = HashSet::new();
                            } else if kept_cursor(&bytes).is_some_and(|c| replayed.remove(c)) {
                                continue;
                            }
                        }
                        match Utf8Bytes::try_from(bytes) {
                            Ok(text) => Message::Text(text),
                            Err(_) => continue,
                        }
                    }
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
            Some(reply) = replies.recv() => {
                if tx.send(reply).await.is_err() {
                    break None;
                }
            }
            incoming = rx.next() => {
                last_seen = Instant::now();
                let data = matches!(incoming, Some(Ok(Message::Text(_) | Message::Binary(_))));
                if data && !rate.admit(last_seen) {
                    metrics::counter!("ws_frames_refused_total").increment(1);
                    if told_too_fast.is_some_and(|at| last_seen.duration_since(at) < Duration::from_secs(1)) {
                        continue;
                    }
                    told_too_fast = Some(last_seen);
                    let detail = format!("at most {} frames per second", control.frames_per_sec);
                    if tx.send(text(&ServerFrame::error(ErrorCode::RateLimited, detail))).await.is_err() {
                        break None;
                    }
                    continue;
                }
                let reply = match incoming {
                    Some(Ok(Message::Text(t))) => {
                        answer(&t, &control, &mut watched, &replies_tx, &mut typing).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        Some(text(&ServerFrame::error(ErrorCode::BadRequest, "frames are JSON text")))
                    }
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

/// Sends what the client missed (for `?since=`), then `ready`. Returns the cursors replayed
/// (live copies of them are skipped), or `None` if the client went away.
async fn catch_up<Tx>(tx: &mut Tx, control: &Control) -> Option<HashSet<String>>
where
    Tx: Sink<Message> + Unpin,
{
    let user = control.ctx.user().expect("sockets are authenticated");
    let mut replayed = HashSet::new();
    let mut last = None;
    if let Some(since) = &control.since {
        match control.mesh.replay_kept(user, since, MAX_REPLAY).await {
            Ok(Replay::Frames(found)) => {
                for (cursor, frame) in found {
                    let Ok(text) = Utf8Bytes::try_from(frame) else { continue };
                    tx.send(Message::Text(text)).await.ok()?;
                    last = Some(cursor.clone());
                    replayed.insert(cursor);
                }
                // Nothing new: the client's own cursor is still the right one.
                last = last.or_else(|| Some(since.clone()));
            }
            Ok(Replay::Expired) => {
                tx.send(text(&ServerFrame::CursorExpired { since: since.clone() })).await.ok()?;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "replay failed");
                tx.send(text(&ServerFrame::CursorExpired { since: since.clone() })).await.ok()?;
            }
        }
    }
    let cursor = match last {
        Some(c) => Some(c),
        None => match control.mesh.kept_cursor_now().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "no resume cursor for a new socket");
                None
            }
        },
    };
    let replayed_count = replayed.len() as u64;
    tx.send(text(&ServerFrame::Ready { cursor, replayed: replayed_count })).await.ok()?;
    Some(replayed)
}

/// The next frame of a watched post; never resolves while nothing is watched.
async fn next_watched(watched: &mut Option<PushSubscription>) -> Option<Bytes> {
    match watched {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Handles one client frame: answers at once, or starts a service call whose answer
/// arrives on `replies`.
async fn answer(
    raw: &str,
    control: &Control,
    watched: &mut Option<PushSubscription>,
    replies: &mpsc::Sender<Message>,
    typing: &mut HashMap<ConversationId, Instant>,
) -> Option<Message> {
    let frame = match serde_json::from_str::<ClientFrame>(raw) {
        Ok(f) => f,
        Err(e) => return Some(text(&ServerFrame::error(ErrorCode::BadRequest, format!("unsupported frame: {e}")))),
    };
    match frame {
        ClientFrame::Ping { id } => Some(text(&ServerFrame::Pong { id })),
        ClientFrame::WatchPosts { mut post_ids } => {
            post_ids.sort();
            post_ids.dedup();
            if post_ids.len() > MAX_WATCHED_POSTS {
                return Some(text(&ServerFrame::error(
                    ErrorCode::ValidationFailed,
                    format!("watch at most {MAX_WATCHED_POSTS} posts"),
                )));
            }
            // Only posts the caller may see: counts of a post hidden by a block, or of a
            // suspended author, are nobody else's business.
            let post_ids = if post_ids.is_empty() {
                post_ids
            } else {
                let ctx = control.ctx.clone().with_timeout(control.call_timeout);
                match control.mesh.call::<WatchablePosts>(&ctx, &PostsByIds { ids: post_ids }).await {
                    Ok(visible) => visible,
                    Err(e) => {
                        let e = e.to_api_error();
                        return Some(text(&ServerFrame::error(e.code, e.detail)));
                    }
                }
            };
            // Dropping the previous subscription unsubscribes from what is no longer shown.
            *watched = None;
            if !post_ids.is_empty() {
                match control.mesh.subscribe_posts(&post_ids).await {
                    Ok(sub) => *watched = Some(sub),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not watch posts");
                        return Some(text(&ServerFrame::error(
                            ErrorCode::Unavailable,
                            "watching is unavailable right now",
                        )));
                    }
                }
            }
            Some(text(&ServerFrame::Watching { post_ids }))
        }
        ClientFrame::ChatSend { conversation_id, text: body, client_id } => {
            let request =
                NewMessage { conversation_id, body: SendMessageBody { text: body, client_id: client_id.clone() } };
            spawn_call(control, replies, client_id, move |mesh, ctx| async move {
                let message = mesh.call::<SendMessage>(&ctx, &request).await?;
                Ok(Some(ServerFrame::ChatSent { client_id: request.body.client_id, message: Box::new(message) }))
            })
        }
        ClientFrame::ChatTyping { conversation_id } => {
            let now = Instant::now();
            if typing.get(&conversation_id).is_some_and(|at| now.duration_since(*at) < TYPING_INTERVAL) {
                return None;
            }
            if typing.len() > 256 {
                typing.retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
            }
            typing.insert(conversation_id.clone(), now);
            spawn_call(control, replies, None, move |mesh, ctx| async move {
                mesh.call::<Typing>(&ctx, &ByConversation { conversation_id }).await?;
                Ok(None)
            })
        }
        ClientFrame::ChatDelivered { conversation_id, up_to } => {
            spawn_call(control, replies, None, move |mesh, ctx| async move {
                mesh.call::<MarkDelivered>(&ctx, &Receipt { conversation_id, up_to }).await?;
                Ok(None)
            })
        }
        ClientFrame::ChatRead { conversation_id, up_to } => {
            spawn_call(control, replies, None, move |mesh, ctx| async move {
                mesh.call::<MarkRead>(&ctx, &Receipt { conversation_id, up_to }).await?;
                Ok(None)
            })
        }
    }
}

/// Runs a service call for a client frame in the background; its frame (or an `error`
/// frame naming `client_id`) goes to the socket through `replies`.
fn spawn_call<F, Fut>(
    control: &Control,
    replies: &mpsc::Sender<Message>,
    client_id: Option<String>,
    call: F,
) -> Option<Message>
where
    F: FnOnce(Mesh, Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<ServerFrame>, CallError>> + Send + 'static,
{
    let Ok(permit) = replies.clone().try_reserve_owned() else {
        return Some(text(&ServerFrame::Error {
            code: ErrorCode::RateLimited,
            detail: format!("at most {MAX_PENDING_CALLS} requests in flight per socket"),
            client_id,
        }));
    };
    let mut ctx = control.ctx.clone().with_timeout(control.call_timeout);
    ctx.trace = mosaic_mesh::trace::TraceContext::new_root();
    let mesh = control.mesh.clone();
    tokio::spawn(async move {
        let frame = match call(mesh, ctx).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                let e = e.to_api_error();
                ServerFrame::Error { code: e.code, detail: e.detail, client_id }
            }
        };
        permit.send(text(&frame));
    });
    None
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(serde_json::to_string(frame).expect("frames serialize").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_of_a_kept_frame_is_read_from_its_start() {
        let kept = mosaic_api::ws::Kept { cursor: "abc123".into(), frame: ServerFrame::Pong { id: None } };
        let bytes = serde_json::to_vec(&kept).unwrap();
        assert_eq!(kept_cursor(&bytes), Some("abc123"));
        assert_eq!(kept_cursor(br#"{"type":"pong"}"#), None);
    }
}

//! Kept frames: WebSocket frames a user must not miss (chat messages, receipts,
//! notifications), stored per user in the [`USER_FRAMES`] stream and replayed to a socket
//! that reconnects with a cursor.
//!
//! A kept frame travels on `frames.user.<id>`: edges subscribe to it like to
//! `push.user.<id>` (plain core NATS, so live delivery costs nothing extra), and the stream
//! stores it. Each carries a `cursor` (its `Nats-Msg-Id`, a UUIDv7). The `ready` frame a
//! socket gets on connecting carries a cursor too: the stream's last sequence then
//! (`s<seq>`), for clients that received no kept frame yet.
//!
//! Replaying from a frame cursor looks the frame up by time (UUIDv7 carries its creation
//! time; the search starts a minute earlier to absorb clock skew between services and the
//! server) and returns what the stream holds for the user after it, in stream order. A
//! cursor whose frame is no longer kept (older than the stream's age limit) or never existed
//! is reported as expired rather than silently skipped.

use crate::client::Mesh;
use anyhow::{Context as _, anyhow};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt as _;
use mosaic_api::headers as h;
use mosaic_api::stream::USER_FRAMES;
use mosaic_api::ws::{Kept, ServerFrame, kept_subject};
use mosaic_api::{EventId, Id as _, UserId};
use std::time::Duration;

/// How far before a cursor's own timestamp the search for it starts.
const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(60);
/// How long a replay may take before it gives up (the client can reconnect).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a replay found.
#[derive(Debug)]
pub enum Replay {
    /// The frames after the cursor, oldest first, each with its cursor.
    Frames(Vec<(String, Bytes)>),
    /// The cursor is older than what is kept, unknown, or too far behind: the client must
    /// reload over HTTP.
    Expired,
}

impl Mesh {
    /// Publishes a kept frame for `user` and waits until it is stored; returns its cursor.
    /// Writers that must tie the frame to a database write stage it in their outbox instead
    /// ([`crate::outbox::Staged::frame`]).
    pub async fn push_kept(&self, user: &UserId, frame: ServerFrame) -> anyhow::Result<String> {
        self.ensure_stream(&USER_FRAMES).await?;
        let cursor = EventId::generate().to_string();
        let payload = serde_json::to_vec(&Kept { cursor: cursor.clone(), frame }).context("encoding kept frame")?;
        self.publish_with_id(&kept_subject(user), &cursor, payload.into()).await?;
        Ok(cursor)
    }

    /// A cursor for "now": every kept frame stored after this call comes after it.
    pub async fn kept_cursor_now(&self) -> anyhow::Result<String> {
        self.ensure_stream(&USER_FRAMES).await?;
        let mut stream = self.jetstream().get_stream(USER_FRAMES.name).await.context("opening USER_FRAMES")?;
        let info = stream.info().await.context("reading USER_FRAMES state")?;
        Ok(format!("s{}", info.state.last_sequence))
    }

    /// The kept frames of `user` after `since` (a cursor of a kept frame or a `ready`
    /// frame), at most `max` of them; more than that is [`Replay::Expired`] too.
    pub async fn replay_kept(&self, user: &UserId, since: &str, max: usize) -> anyhow::Result<Replay> {
        tokio::time::timeout(REPLAY_TIMEOUT, self.replay_inner(user, since, max))
            .await
            .map_err(|_| anyhow!("replay took longer than {REPLAY_TIMEOUT:?}"))?
    }

    async fn replay_inner(&self, user: &UserId, since: &str, max: usize) -> anyhow::Result<Replay> {
        let Some(cursor) = parse_cursor(since) else { return Ok(Replay::Expired) };
        self.ensure_stream(&USER_FRAMES).await?;
        let subject = kept_subject(user);
        let mut stream = self.jetstream().get_stream(USER_FRAMES.name).await.context("opening USER_FRAMES")?;
        let first_kept = stream.info().await.context("reading USER_FRAMES state")?.state.first_sequence;
        // The user's newest kept frame bounds the replay; in the common case (the client saw
        // it) nothing more is needed.
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Some(m),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(anyhow!("reading the newest kept frame: {e}")),
        };
        let policy = match &cursor {
            Cursor::Sequence(seq) => {
                // Anything between the cursor and the oldest kept message may have been this
                // user's, so a cursor before it cannot promise a complete replay.
                if seq.saturating_add(1) < first_kept {
                    return Ok(Replay::Expired);
                }
                match &last {
                    Some(m) if m.sequence > *seq => DeliverPolicy::ByStartSequence { start_sequence: seq + 1 },
                    _ => return Ok(Replay::Frames(Vec::new())),
                }
            }
            Cursor::Frame { id, unix_ms } => {
                let Some(m) = &last else { return Ok(Replay::Expired) };
                if msg_id(&m.headers) == Some(id.as_str()) {
                    return Ok(Replay::Frames(Vec::new()));
                }
                let start_ns = (i128::from(*unix_ms) - CLOCK_SKEW_MARGIN.as_millis() as i128) * 1_000_000;
                let start_time = async_nats::datetime::from_nanos(start_ns.max(0)).map_err(|e| anyhow!("{e}"))?;
                if m.time < start_time {
                    return Ok(Replay::Expired);
                }
                DeliverPolicy::ByStartTime { start_time }
            }
        };
        let last_seq = last.map(|m| m.sequence).unwrap_or_default();
        let mut looking_for = match cursor {
            Cursor::Frame { id, .. } => Some(id),
            Cursor::Sequence(_) => None,
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating replay consumer: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| anyhow!("starting replay: {e}"))?;
        let mut frames = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| anyhow!("reading replay: {e}"))?;
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX);
            let id = message.headers.as_ref().and_then(msg_id).unwrap_or_default().to_owned();
            match &looking_for {
                Some(target) if *target == id => looking_for = None,
                Some(_) => {}
                None => {
                    if frames.len() == max {
                        return Ok(Replay::Expired);
                    }
                    frames.push((id, message.payload.clone()));
                }
            }
            if seq >= last_seq {
                break;
            }
        }
        Ok(if looking_for.is_some() { Replay::Expired } else { Replay::Frames(frames) })
    }
}

fn msg_id(headers: &async_nats::HeaderMap) -> Option<&str> {
    headers.get(h::NATS_MSG_ID).map(|v| v.as_str())
}

enum Cursor {
    Sequence(u64),
    Frame { id: String, unix_ms: u64 },
}

fn parse_cursor(raw: &str) -> Option<Cursor> {
    if let Some(seq) = raw.strip_prefix('s') {
        return seq.parse().ok().map(Cursor::Sequence);
    }
    let uuid = uuid::Uuid::try_parse(raw).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(Cursor::Frame { id: raw.to_owned(), unix_ms: secs * 1000 + u64::from(nanos) / 1_000_000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_sequences_or_frame_ids() {
        assert!(matches!(parse_cursor("s42"), Some(Cursor::Sequence(42))));
        let id = EventId::generate().to_string();
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        match parse_cursor(&id) {
            Some(Cursor::Frame { unix_ms, .. }) => assert!(unix_ms.abs_diff(now_ms) < 5_000),
            _ => panic!("a frame id is a cursor"),
        }
        assert!(parse_cursor("sx").is_none());
        assert!(parse_cursor("garbage").is_none());
    }
}

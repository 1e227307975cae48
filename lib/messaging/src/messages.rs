//! Messages: sending (idempotent, totally ordered), history, receipts and typing.

use crate::MessagingService;
use crate::conversations::no_such_conversation;
use crate::store::Refused;
use crate::store::{
    self, MemberRow, ReadState, block_rid, client_message_rid, conversation_rid, member_rid, message_rid,
};
use base64::Engine as _;
use chrono::Utc;
use dashmap::DashMap;
use mosaic_api::endpoint::Empty;
use mosaic_api::messaging::{
    ByConversation, HistoryQuery, MAX_CLIENT_ID_CHARS, MAX_MESSAGE_CHARS, Message, NewMessage, Receipt,
};
use mosaic_api::notification::NotifyMessage;
use mosaic_api::ws::ServerFrame;
use mosaic_api::{ApiError, ConversationId, ErrorCode, Id as _, MessageId, Page, UserId};
use mosaic_mesh::db::is_conflict;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{Write, WriteError};
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use surrealdb::types::RecordId;

/// Attempts at taking the next sequence number before giving up (each failure means
/// another message took it first).
const SEND_ATTEMPTS: usize = 32;

/// Sends per user per minute, counted in fixed one-minute windows by this instance.
pub(crate) struct SendLimits {
    per_minute: u32,
    windows: DashMap<UserId, (i64, u32)>,
    typing: DashMap<(UserId, ConversationId), Instant>,
}

impl SendLimits {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: DashMap::new(), typing: DashMap::new() }
    }

    fn check(&self, user: &UserId) -> Result<(), ApiError> {
        let now = Utc::now().timestamp();
        let minute = now / 60;
        let mut entry = self.windows.entry(user.clone()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return Err(ApiError::rate_limited("too many messages; slow down", (60 - now % 60) as u64));
        }
        entry.1 += 1;
        drop(entry);
        if self.windows.len() > 100_000 {
            self.windows.retain(|_, (m, _)| *m == minute);
        }
        Ok(())
    }

    /// Whether a typing indicator of `user` in `conversation` may go out now.
    fn typing_allowed(&self, user: &UserId, conversation: &ConversationId, interval: Duration) -> bool {
        let now = Instant::now();
        let key = (user.clone(), conversation.clone());
        let allowed = self.typing.get(&key).is_none_or(|at| now.duration_since(*at) >= interval);
        if allowed {
            self.typing.insert(key, now);
            if self.typing.len() > 100_000 {
                self.typing.retain(|_, at| now.duration_since(*at) < interval);
            }
        }
        allowed
    }
}

fn validate_text(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::validation(format!("text must be 1 to {MAX_MESSAGE_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::validation("text must not contain control characters"));
    }
    Ok(text.to_owned())
}

fn validate_client_id(client_id: Option<String>) -> Result<Option<String>, ApiError> {
    match client_id {
        None => Ok(None),
        Some(c) if c.len() <= MAX_CLIENT_ID_CHARS && mosaic_api::ids::is_valid_id(&c) => Ok(Some(c)),
        Some(_) => Err(ApiError::validation(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_CHARS} characters of A-Z, a-z, 0-9, '_' and '-'"
        ))),
    }
}

fn preview(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push('…');
    }
    out
}

impl MessagingService {
    pub(crate) async fn send(self: Arc<Self>, ctx: Ctx, req: NewMessage) -> ServiceResult<Message> {
        let me = ctx.require_user()?.clone();
        let conv = req.conversation_id;
        let text = validate_text(&req.body.text)?;
        let client_id = validate_client_id(req.body.client_id)?;
        let client_key = client_id.as_deref().map(|c| client_message_rid(&conv, &me, c));
        // A retry of a message that went through gets that message, and costs no quota.
        if let Some(key) = &client_key
            && let Some(existing) = self.by_client_key(&ctx, key).await?
        {
            return Ok(existing);
        }
        self.limits.check(&me)?;
        let sender = self.directory.author(&ctx, &me).await?.ok_or_else(|| ApiError::forbidden("unknown sender"))?;

        for _ in 0..SEND_ATTEMPTS {
            let (state, members) = store::send_state(&self.db, &conv).await?;
            let Some(state) = state else { return Err(no_such_conversation().into()) };
            if !members.contains(&me) {
                return Err(no_such_conversation().into());
            }
            let other = (state.kind == "direct").then(|| members.iter().find(|m| **m != me).cloned()).flatten();
            let seq = state.last_seq + 1;
            let now = Utc::now();
            let message = Message {
                id: MessageId::generate(),
                conversation_id: conv.clone(),
                seq: seq as u64,
                sender: sender.clone(),
                text: text.clone(),
                client_id: client_id.clone(),
                created_at: now,
            };
            let frame = ServerFrame::ChatMessage { message: Box::new(message.clone()) };
            let mut staged: Vec<Staged> = members.iter().map(|m| Staged::frame(m, frame.clone())).collect();
            // Whoever has no socket open anywhere hears of it through the notification service.
            for member in members.iter().filter(|m| **m != me && !self.is_online(m)) {
                staged.push(Staged::new(NotifyMessage {
                    recipient: member.clone(),
                    actor: me.clone(),
                    conversation_id: conv.clone(),
                    message_id: message.id.clone(),
                    preview: preview(&text, self.config.preview_chars),
                }));
            }
            let result = self
                .outbox
                .write(store::SEND)
                .bind("conv", conversation_rid(&conv))
                .bind("expected", state.last_seq)
                .bind("client_key", client_key.clone())
                .bind("block_a", other.as_ref().map(|o| block_rid(o, &me)))
                .bind("block_b", other.as_ref().map(|o| block_rid(&me, o)))
                .bind("member", member_rid(&conv, &me))
                .bind("seq", seq)
                .bind("mid", message.id.to_string())
                .bind("now", now)
                .bind("message", message_rid(&message.id))
                .bind("cid", conv.to_string())
                .bind("me", me.to_string())
                .bind("text", text.clone())
                .bind("client_id", client_id.clone())
                .dispatch(staged)
                // A conflict or a moved sequence means reading the conversation again.
                .once()
                .run::<Refused>()
                .await;
            match result {
                Ok(_) => return Ok(message),
                Err(WriteError::Refused(Refused::SeqMoved)) => continue,
                Err(WriteError::Failed(e)) if is_conflict(&e) => continue,
                Err(WriteError::Refused(Refused::DuplicateClientId)) => {
                    if let Some(key) = &client_key
                        && let Some(existing) = self.by_client_key(&ctx, key).await?
                    {
                        return Ok(existing);
                    }
                    continue;
                }
                Err(WriteError::Failed(e)) if e.is_already_exists() => {
                    if let Some(key) = &client_key
                        && let Some(existing) = self.by_client_key(&ctx, key).await?
                    {
                        return Ok(existing);
                    }
                    continue;
                }
                Err(WriteError::Refused(Refused::Blocked)) => {
                    return Err(ApiError::forbidden("you cannot message this user").into());
                }
                Err(WriteError::Refused(Refused::NotMember)) => return Err(no_such_conversation().into()),
                Err(e) => return Err(anyhow::Error::new(e).context("storing message").into()),
            }
        }
        Err(ApiError::new(ErrorCode::Conflict, "the conversation is too busy; retry").into())
    }

    /// The message a `client_id` already produced, if any.
    async fn by_client_key(&self, ctx: &Ctx, key: &RecordId) -> ServiceResult<Option<Message>> {
        let Some(row) = store::message_by_client_key(&self.db, key).await? else { return Ok(None) };
        let sender = UserId::from_trusted(row.sender.clone());
        let authors = self.directory.authors(ctx, &[sender]).await?;
        Ok(Some(row.message(&authors)))
    }

    /// The caller's membership row; `not_found` unless they are an active member.
    async fn membership(&self, conv: &ConversationId, me: &UserId) -> ServiceResult<MemberRow> {
        let member = store::member(&self.db, conv, me).await?;
        member.filter(|m| m.active).ok_or_else(|| no_such_conversation().into())
    }

    pub(crate) async fn history(self: Arc<Self>, ctx: Ctx, req: HistoryQuery) -> ServiceResult<Page<Message>> {
        let me = ctx.require_user()?.clone();
        self.membership(&req.conversation_id, &me).await?;
        let limit = req.page.limit() as usize;
        let before = req.page.cursor.as_deref().map(decode_seq_cursor).transpose()?;
        let rows = store::messages_before(
            &self.db,
            &req.conversation_id,
            before.unwrap_or(i64::MAX),
            mosaic_api::page::fetch_limit(limit),
        )
        .await?;
        let (rows, next_cursor) = mosaic_api::page::cut(rows, limit, |r| encode_seq_cursor(r.seq));
        let senders: Vec<UserId> = rows.iter().map(|r| UserId::from_trusted(r.sender.clone())).collect();
        let authors = self.directory.authors(&ctx, &senders).await?;
        Ok(Page { items: rows.iter().map(|r| r.message(&authors)).collect(), next_cursor })
    }

    pub(crate) async fn mark_read(self: Arc<Self>, ctx: Ctx, req: Receipt) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let conv = req.conversation_id;
        let receipt = Write::new(&self.db, store::MARK_READ).bind("me", me.to_string());
        let after = self.receipt(receipt, &conv, &me, &req.up_to, "marking read").await?;
        let Some(after) = after.into_iter().next() else { return Ok(Empty {}) };
        // Every member's devices learn the receipt (kept, so a reconnecting device catches
        // up); the reader's own devices also get their new unread count.
        let (_, members) = store::send_state(&self.db, &conv).await?;
        for member in &members {
            let frame = ServerFrame::ChatRead {
                conversation_id: conv.clone(),
                user_id: me.clone(),
                up_to: req.up_to.clone(),
                seq: after.read_seq.max(0) as u64,
                unread: (*member == me).then_some(after.unread.max(0) as u64),
            };
            if let Err(e) = self.mesh.push_kept(member, frame).await {
                tracing::warn!(error = format!("{e:#}"), "read receipt frame not sent");
            }
        }
        Ok(Empty {})
    }

    pub(crate) async fn mark_delivered(self: Arc<Self>, ctx: Ctx, req: Receipt) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let conv = req.conversation_id;
        let receipt = Write::new(&self.db, store::MARK_DELIVERED);
        let after = self.receipt(receipt, &conv, &me, &req.up_to, "marking delivered").await?;
        let Some(after) = after.into_iter().next() else { return Ok(Empty {}) };
        let (_, members) = store::send_state(&self.db, &conv).await?;
        let frame = ServerFrame::ChatDelivered {
            conversation_id: conv.clone(),
            user_id: me.clone(),
            seq: after.delivered_seq.max(0) as u64,
        };
        for member in members.iter().filter(|m| **m != me) {
            // Ephemeral: the receipt is stored, and shows in the conversation's members.
            let _ = self.mesh.push(member, &frame).await;
        }
        Ok(Empty {})
    }

    /// Runs a receipt's transaction (bound here to `me`'s membership, the message and the
    /// conversation) and returns `me`'s receipt state after it.
    async fn receipt(
        &self,
        write: Write<'_>,
        conv: &ConversationId,
        me: &UserId,
        up_to: &MessageId,
        what: &'static str,
    ) -> ServiceResult<Vec<ReadState>> {
        let result = write
            .bind("member", member_rid(conv, me))
            .bind("message", message_rid(up_to))
            .bind("cid", conv.to_string())
            .run::<Refused>()
            .await;
        let mut res = match result {
            Ok(r) => r,
            Err(WriteError::Refused(Refused::NotMember)) => return Err(no_such_conversation().into()),
            Err(WriteError::Refused(Refused::NoMessage)) => {
                return Err(ApiError::not_found("no such message in this conversation").into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what).into()),
        };
        Ok(store::receipt_state(&mut res)?)
    }

    pub(crate) async fn typing(self: Arc<Self>, ctx: Ctx, req: ByConversation) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let interval = Duration::from_millis(self.config.typing_interval_ms);
        if !self.limits.typing_allowed(&me, &req.conversation_id, interval) {
            return Ok(Empty {});
        }
        let (_, members) = store::send_state(&self.db, &req.conversation_id).await?;
        if !members.contains(&me) {
            return Err(no_such_conversation().into());
        }
        let frame = ServerFrame::ChatTyping { conversation_id: req.conversation_id.clone(), user_id: me.clone() };
        for member in members.iter().filter(|m| **m != me) {
            let _ = self.mesh.push(member, &frame).await;
        }
        Ok(Empty {})
    }
}

fn encode_seq_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("seq|{seq}"))
}

fn decode_seq_cursor(cursor: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::validation("cursor is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix("seq|").and_then(|s| s.parse().ok()).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_seq_cursor(&encode_seq_cursor(42)).unwrap(), 42);
        assert!(decode_seq_cursor("bm9wZQ").is_err());
        assert!(decode_seq_cursor("!!").is_err());
    }

    #[test]
    fn client_ids_are_id_shaped_and_text_is_bounded() {
        assert!(validate_client_id(Some("abc-1_2".into())).is_ok());
        assert!(validate_client_id(Some("a b".into())).is_err());
        assert!(validate_client_id(Some("x".repeat(65))).is_err());
        assert!(validate_text("  ").is_err());
        assert!(validate_text(&"y".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
        assert_eq!(validate_text(" hi\n there ").unwrap(), "hi\n there");
        assert!(validate_text("bell\u{7}").is_err());
    }

    #[test]
    fn sends_are_limited_per_minute() {
        let limits = SendLimits::new(3);
        let u = UserId::generate();
        for _ in 0..3 {
            limits.check(&u).unwrap();
        }
        assert_eq!(limits.check(&u).unwrap_err().code, ErrorCode::RateLimited);
        assert!(limits.check(&UserId::generate()).is_ok());
    }
}

//! The `messaging` database: its rows, the record ids that name them, and every SurrealQL
//! statement the service runs.
//!
//! Reads are functions that take typed arguments and return typed rows. Transactions that
//! go through the one write path ([`mosaic_mesh::write`]) are documented constants; each
//! says what it binds and what it `THROW`s. The handlers hold no SurrealQL.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::Author;
use mosaic_api::messaging::{Conversation, ConversationKind, Member, Message};
use mosaic_api::page::{PageRequest, TimeCursor};
use mosaic_api::{ConversationId, Id as _, MessageId, UserId};
use mosaic_mesh::ServiceResult;
use mosaic_mesh::db::{Db, Keyset};
use mosaic_mesh::db::{first, rows};
use mosaic_mesh::write::{NoRefusal, Write};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use surrealdb::IndexedResults;
use surrealdb::types::{Array, RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// What the messaging transactions refuse (the codes their SurrealQL `THROW`s).
    pub(crate) enum Refused {
        /// A 1:1 conversation with that id exists already.
        ConversationExists = "conversation_exists",
        /// Another message took the sequence number read before the send.
        SeqMoved = "seq_moved",
        /// A message with that `client_id` exists already (a retried send).
        DuplicateClientId = "duplicate_client_id",
        /// One member blocks the other.
        Blocked = "blocked",
        /// The caller is not an active member.
        NotMember = "not_member",
        /// No such message in that conversation.
        NoMessage = "no_message",
    }
}

pub(crate) fn conversation_rid(id: &ConversationId) -> RecordId {
    RecordId::new("conversation", id.as_str())
}

pub(crate) fn member_rid(conversation: &ConversationId, user: &UserId) -> RecordId {
    RecordId::new("member", Array::from(vec![conversation.to_string(), user.to_string()]))
}

pub(crate) fn message_rid(id: &MessageId) -> RecordId {
    RecordId::new("message", id.as_str())
}

pub(crate) fn client_message_rid(conversation: &ConversationId, sender: &UserId, client_id: &str) -> RecordId {
    RecordId::new(
        "client_message",
        Array::from(vec![conversation.to_string(), sender.to_string(), client_id.to_owned()]),
    )
}

pub(crate) fn block_rid(blocker: &UserId, blocked: &UserId) -> RecordId {
    RecordId::new("block", Array::from(vec![blocker.to_string(), blocked.to_string()]))
}

/// The one direct conversation of two users: derived from the pair, so it exists once.
pub(crate) fn direct_id(a: &UserId, b: &UserId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("{lo}|{hi}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    ConversationId::from_trusted(format!("dm-{hex}"))
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct ConversationRow {
    pub key: String,
    pub kind: String,
    pub title: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_seq: i64,
    pub last_message: Option<String>,
    pub last_activity_at: DateTime<Utc>,
}

const CONVERSATION_FIELDS: &str =
    "record::id(id) AS key, kind, title, created_by, created_at, last_seq, last_message, last_activity_at";

impl ConversationRow {
    pub fn kind(&self) -> ConversationKind {
        if self.kind == "direct" { ConversationKind::Direct } else { ConversationKind::Group }
    }
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct MemberRow {
    pub conversation: String,
    pub user: String,
    pub active: bool,
    pub joined_at: DateTime<Utc>,
    pub activity_at: DateTime<Utc>,
    pub read_seq: i64,
    pub delivered_seq: i64,
    pub unread: i64,
}

const MEMBER_FIELDS: &str = "conversation, user, active, joined_at, activity_at, read_seq, delivered_seq, unread";

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct MessageRow {
    pub key: String,
    pub conversation: String,
    pub seq: i64,
    pub sender: String,
    pub text: String,
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const MESSAGE_FIELDS: &str = "record::id(id) AS key, conversation, seq, sender, text, client_id, created_at";

impl MessageRow {
    /// The wire form, if its sender can still be shown.
    pub fn message(&self, authors: &HashMap<UserId, Author>) -> Message {
        let sender = UserId::from_trusted(self.sender.clone());
        Message {
            id: MessageId::from_trusted(self.key.clone()),
            conversation_id: ConversationId::from_trusted(self.conversation.clone()),
            seq: self.seq.max(0) as u64,
            sender: authors.get(&sender).cloned().unwrap_or_else(|| gone(sender)),
            text: self.text.clone(),
            client_id: self.client_id.clone(),
            created_at: self.created_at,
        }
    }
}

/// How a user who can no longer be shown (deleted, suspended) appears in old messages.
pub(crate) fn gone(id: UserId) -> Author {
    Author { id, username: String::new(), display_name: String::new() }
}

/// Builds the wire form of a conversation for `viewer`.
pub(crate) fn conversation(
    row: &ConversationRow,
    members: &[MemberRow],
    last: Option<&MessageRow>,
    viewer: &UserId,
    authors: &HashMap<UserId, Author>,
) -> Conversation {
    let unread = members.iter().find(|m| m.user == viewer.as_str()).map(|m| m.unread.max(0) as u64).unwrap_or(0);
    Conversation {
        id: ConversationId::from_trusted(row.key.clone()),
        kind: row.kind(),
        title: row.title.clone(),
        members: members
            .iter()
            .filter(|m| m.active)
            .filter_map(|m| {
                let id = UserId::from_trusted(m.user.clone());
                Some(Member {
                    user: authors.get(&id)?.clone(),
                    joined_at: m.joined_at,
                    delivered_seq: m.delivered_seq.max(0) as u64,
                    read_seq: m.read_seq.max(0) as u64,
                })
            })
            .collect(),
        created_by: UserId::from_trusted(row.created_by.clone()),
        created_at: row.created_at,
        last_activity_at: row.last_activity_at,
        last_seq: row.last_seq.max(0) as u64,
        last_message: last.map(|m| m.message(authors)),
        unread_count: unread,
    }
}

/// A member row to insert.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct NewMember {
    id: RecordId,
    conversation: String,
    user: String,
    active: bool,
    joined_at: DateTime<Utc>,
    activity_at: DateTime<Utc>,
    read_seq: i64,
    delivered_seq: i64,
    unread: i64,
}

/// Rows for `users` joining `conversation` at `now`, having seen everything up to `seen`.
pub(crate) fn new_members(
    conversation: &ConversationId,
    users: &[UserId],
    now: DateTime<Utc>,
    seen: u64,
) -> Vec<NewMember> {
    users
        .iter()
        .map(|u| NewMember {
            id: member_rid(conversation, u),
            conversation: conversation.to_string(),
            user: u.to_string(),
            active: true,
            joined_at: now,
            activity_at: now,
            read_seq: seen as i64,
            delivered_seq: seen as i64,
            unread: 0,
        })
        .collect()
}

// Conversations and members.

/// Creates the conversation `$conv` (`$kind`, `$title`, started by `$me` at `$now`) with the
/// members `$rows` (see [`new_members`]). Throws `conversation_exists` if `$conv` exists.
pub(crate) const CREATE_CONVERSATION: &str = "BEGIN TRANSACTION;
     IF record::exists($conv) { THROW 'conversation_exists'; };
     CREATE $conv SET kind = $kind, title = $title, created_by = $me, created_at = $now,
        last_seq = 0, last_activity_at = $now;
     INSERT INTO member $rows;
     COMMIT TRANSACTION;";

/// Adds the members `$rows` (see [`new_members`]), making those who left active again with
/// the new row's state. Throws nothing.
pub(crate) const ADD_MEMBERS: &str =
    "INSERT INTO member $rows ON DUPLICATE KEY UPDATE active = true, joined_at = $input.joined_at,
        activity_at = $input.activity_at, read_seq = $input.read_seq,
        delivered_seq = $input.delivered_seq, unread = 0";

/// Makes the membership `$member` inactive, with nothing unread. Throws nothing.
pub(crate) const LEAVE: &str = "UPDATE $member SET active = false, unread = 0";

/// The page of `user`'s active conversations that `page` asks for, most recently active
/// first (ties broken by id), and the next page's cursor.
pub(crate) async fn conversations_page(
    db: &Db,
    user: &UserId,
    page: &PageRequest,
) -> ServiceResult<(Vec<ConversationId>, Option<String>)> {
    let select = format!("SELECT {MEMBER_FIELDS} FROM member WHERE user = $me AND active = true");
    let (mine, next_cursor) = Keyset::newest_first("activity_at", "conversation", "conversation")
        .page(
            db,
            &select,
            page,
            |q| q.bind(("me", user.to_string())),
            |m: &MemberRow| TimeCursor::new(m.activity_at, m.conversation.clone()),
        )
        .await?;
    Ok((mine.into_iter().map(|m| ConversationId::from_trusted(m.conversation)).collect(), next_cursor))
}

/// `user`'s membership of `conversation`, active or not, if they ever joined.
pub(crate) async fn member(db: &Db, conversation: &ConversationId, user: &UserId) -> anyhow::Result<Option<MemberRow>> {
    let query =
        db.query(format!("SELECT {MEMBER_FIELDS} FROM $member")).bind(("member", member_rid(conversation, user)));
    first(query, "reading membership").await
}

/// A conversation's kind and last sequence number.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct SendState {
    pub kind: String,
    pub last_seq: i64,
}

/// The conversation's kind and last sequence number (`None`: no such conversation), and
/// its active members.
pub(crate) async fn send_state(
    db: &Db,
    conversation: &ConversationId,
) -> anyhow::Result<(Option<SendState>, Vec<UserId>)> {
    let mut res = db
        .query(
            "SELECT kind, last_seq FROM $conv;
             SELECT VALUE user FROM member WHERE conversation = $cid AND active = true;",
        )
        .bind(("conv", conversation_rid(conversation)))
        .bind(("cid", conversation.to_string()))
        .await
        .context("reading conversation state")?;
    let state: Vec<SendState> = res.take(0).context("reading conversation state")?;
    let members: Vec<String> = res.take(1).context("reading members")?;
    Ok((state.into_iter().next(), members.into_iter().map(UserId::from_trusted).collect()))
}

/// A conversation, its active members and its last message, in one round trip.
pub(crate) async fn load(
    db: &Db,
    id: &ConversationId,
) -> anyhow::Result<Option<(ConversationRow, Vec<MemberRow>, Option<MessageRow>)>> {
    let mut found = load_many(db, std::slice::from_ref(id)).await?;
    Ok(found.remove(id.as_str()))
}

/// Like [`load`] for many conversations, keyed by id.
pub(crate) async fn load_many(
    db: &Db,
    ids: &[ConversationId],
) -> anyhow::Result<HashMap<String, (ConversationRow, Vec<MemberRow>, Option<MessageRow>)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(conversation_rid).collect();
    let keys: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut res = db
        .query(format!(
            "SELECT {CONVERSATION_FIELDS} FROM $rids;
             SELECT {MEMBER_FIELDS} FROM member WHERE conversation IN $keys AND active = true;"
        ))
        .bind(("rids", rids))
        .bind(("keys", keys))
        .await
        .context("loading conversations")?;
    let convs: Vec<ConversationRow> = res.take(0).context("loading conversations")?;
    let members: Vec<MemberRow> = res.take(1).context("loading members")?;
    let last_ids: Vec<RecordId> =
        convs.iter().filter_map(|r| r.last_message.as_ref()).map(|m| RecordId::new("message", m.as_str())).collect();
    let lasts: Vec<MessageRow> = if last_ids.is_empty() {
        Vec::new()
    } else {
        rows(db.query(format!("SELECT {MESSAGE_FIELDS} FROM $ids")).bind(("ids", last_ids)), "loading last messages")
            .await?
    };
    let mut by_conv: HashMap<String, Vec<MemberRow>> = HashMap::new();
    for m in members {
        by_conv.entry(m.conversation.clone()).or_default().push(m);
    }
    let mut lasts: HashMap<String, MessageRow> = lasts.into_iter().map(|m| (m.key.clone(), m)).collect();
    Ok(convs
        .into_iter()
        .map(|row| {
            let members = by_conv.remove(&row.key).unwrap_or_default();
            let last = row.last_message.as_ref().and_then(|k| lasts.remove(k));
            (row.key.clone(), (row, members, last))
        })
        .collect())
}

// Messages and receipts.

/// Stores the message `$message` (`$mid`, number `$seq` of the conversation `$conv`, named
/// `$cid`, from `$me` at `$now`: `$text`, `$client_id`) and inserts `$events`, if the
/// conversation's last number is still `$expected`: the sender's membership `$member` reads
/// everything up to it, every other active member has one more unread. Throws `seq_moved`
/// if another message took the number, `duplicate_client_id` if `$client_key` (may be
/// `NONE`) exists, `blocked` if `$block_a` or `$block_b` (`NONE` outside 1:1s) exists, and
/// `not_member` unless `$member` is active.
pub(crate) const SEND: &str = "BEGIN TRANSACTION;
     LET $c = (SELECT last_seq FROM ONLY $conv);
     IF $c == NONE OR $c.last_seq != $expected { THROW 'seq_moved'; };
     IF $client_key != NONE AND record::exists($client_key) { THROW 'duplicate_client_id'; };
     IF $block_a != NONE AND (record::exists($block_a) OR record::exists($block_b)) { THROW 'blocked'; };
     LET $mine = (SELECT active FROM ONLY $member);
     IF $mine == NONE OR $mine.active != true { THROW 'not_member'; };
     UPDATE $conv SET last_seq = $seq, last_message = $mid, last_activity_at = $now;
     CREATE $message SET conversation = $cid, seq = $seq, sender = $me, text = $text,
        client_id = $client_id, created_at = $now;
     IF $client_key != NONE { CREATE $client_key SET message = $mid, created_at = $now; };
     UPDATE member SET unread += 1, activity_at = $now
        WHERE conversation = $cid AND active = true AND user != $me;
     UPDATE $member SET read_seq = $seq, delivered_seq = math::max([delivered_seq, $seq]), unread = 0,
        activity_at = $now;
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// The message a `client_id` (its record `key`, see [`client_message_rid`]) already
/// produced, if any.
pub(crate) async fn message_by_client_key(db: &Db, key: &RecordId) -> anyhow::Result<Option<MessageRow>> {
    let id: Option<String> =
        first(db.query("SELECT VALUE message FROM $key").bind(("key", key.clone())), "reading a retry").await?;
    let Some(id) = id else { return Ok(None) };
    let query = db
        .query(format!("SELECT {MESSAGE_FIELDS} FROM $message"))
        .bind(("message", RecordId::new("message", id.as_str())));
    first(query, "reading a retried message").await
}

/// Up to `limit` messages of `conversation` numbered below `before`, newest first.
pub(crate) async fn messages_before(
    db: &Db,
    conversation: &ConversationId,
    before: i64,
    limit: i64,
) -> anyhow::Result<Vec<MessageRow>> {
    let query = db
        .query(format!(
            "SELECT {MESSAGE_FIELDS} FROM message WHERE conversation = $cid AND seq < $before
             ORDER BY seq DESC LIMIT $limit"
        ))
        .bind(("cid", conversation.to_string()))
        .bind(("before", before))
        .bind(("limit", limit));
    rows(query, "reading history").await
}

/// Marks the membership `$member` (of `$me`) read up to the message `$message` of the
/// conversation `$cid`, and delivered as far, if it is further than before; recounts what
/// is unread after it. Then reads the receipt state ([`receipt_state`]). Throws
/// `not_member` unless `$member` is active, `no_message` unless `$message` is in `$cid`.
pub(crate) const MARK_READ: &str = "BEGIN TRANSACTION;
     LET $mine = (SELECT active, read_seq FROM ONLY $member);
     IF $mine == NONE OR $mine.active != true { THROW 'not_member'; };
     LET $msg = (SELECT conversation, seq FROM ONLY $message);
     IF $msg == NONE OR $msg.conversation != $cid { THROW 'no_message'; };
     IF $msg.seq > $mine.read_seq {
        LET $unread = count(SELECT id FROM message WHERE conversation = $cid AND seq > $msg.seq
            AND sender != $me);
        UPDATE $member SET read_seq = $msg.seq, delivered_seq = math::max([delivered_seq, $msg.seq]),
            unread = $unread;
     };
     COMMIT TRANSACTION;
     SELECT read_seq, delivered_seq, unread FROM $member;";

/// Marks the membership `$member` delivered up to the message `$message` of the
/// conversation `$cid`, if it is further than before. Then reads the receipt state
/// ([`receipt_state`]). Throws `not_member` unless `$member` is active, `no_message` unless
/// `$message` is in `$cid`.
pub(crate) const MARK_DELIVERED: &str = "BEGIN TRANSACTION;
     LET $mine = (SELECT active, delivered_seq FROM ONLY $member);
     IF $mine == NONE OR $mine.active != true { THROW 'not_member'; };
     LET $msg = (SELECT conversation, seq FROM ONLY $message);
     IF $msg == NONE OR $msg.conversation != $cid { THROW 'no_message'; };
     IF $msg.seq > $mine.delivered_seq { UPDATE $member SET delivered_seq = $msg.seq; };
     COMMIT TRANSACTION;
     SELECT read_seq, delivered_seq, unread FROM $member;";

/// A member's receipts and unread count.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct ReadState {
    pub read_seq: i64,
    pub delivered_seq: i64,
    pub unread: i64,
}

/// The member's state after [`MARK_READ`] or [`MARK_DELIVERED`]: their last statement.
pub(crate) fn receipt_state(res: &mut IndexedResults) -> anyhow::Result<Vec<ReadState>> {
    res.take(res.num_statements() - 1).context("reading receipt state")
}

// Blocks.

/// Mirrors a block (or its removal) from the user service.
pub(crate) async fn set_block(db: &Db, blocker: &UserId, blocked: &UserId, on: bool) -> anyhow::Result<()> {
    let sql =
        if on { "IF !record::exists($rid) { CREATE $rid SET created_at = time::now(); };" } else { "DELETE $rid;" };
    Write::new(db, sql)
        .bind("rid", block_rid(blocker, blocked))
        .run::<NoRefusal>()
        .await
        .context("mirroring a block")?;
    Ok(())
}

//! Rows of the `messaging` database and the record ids that name them.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::Author;
use mosaic_api::messaging::{Conversation, ConversationKind, Member, Message};
use mosaic_api::{ConversationId, Id as _, MessageId, UserId};
use mosaic_mesh::db::Db;
use mosaic_mesh::write::{NoRefusal, Write};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
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

pub(crate) const CONVERSATION_FIELDS: &str =
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

pub(crate) const MEMBER_FIELDS: &str =
    "conversation, user, active, joined_at, activity_at, read_seq, delivered_seq, unread";

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

pub(crate) const MESSAGE_FIELDS: &str = "record::id(id) AS key, conversation, seq, sender, text, client_id, created_at";

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
    let rows: Vec<ConversationRow> = res.take(0).context("loading conversations")?;
    let members: Vec<MemberRow> = res.take(1).context("loading members")?;
    let last_ids: Vec<RecordId> =
        rows.iter().filter_map(|r| r.last_message.as_ref()).map(|m| RecordId::new("message", m.as_str())).collect();
    let lasts: Vec<MessageRow> = if last_ids.is_empty() {
        Vec::new()
    } else {
        let mut res = db
            .query(format!("SELECT {MESSAGE_FIELDS} FROM $ids"))
            .bind(("ids", last_ids))
            .await
            .context("loading last messages")?;
        res.take(0).context("loading last messages")?
    };
    let mut by_conv: HashMap<String, Vec<MemberRow>> = HashMap::new();
    for m in members {
        by_conv.entry(m.conversation.clone()).or_default().push(m);
    }
    let mut lasts: HashMap<String, MessageRow> = lasts.into_iter().map(|m| (m.key.clone(), m)).collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let members = by_conv.remove(&row.key).unwrap_or_default();
            let last = row.last_message.as_ref().and_then(|k| lasts.remove(k));
            (row.key.clone(), (row, members, last))
        })
        .collect())
}

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

//! Inbox entries: their rows and wire form, the inbox's reads, marking read, and taking
//! notifications in (the jobs seen, the entry a job coalesces into, the intake transaction).

use super::deliveries::{DELIVERY_FIELDS, DeliveryRow};
use super::{attempt, first, job_rid, notification_rid, rows, run};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::Author;
use mosaic_api::notification::{Notification, NotificationType};
use mosaic_api::page::{PageRequest, TimeCursor};
use mosaic_api::{CommentId, ConversationId, Id as _, NotificationId, PostId, UserId};
use mosaic_mesh::ServiceResult;
use mosaic_mesh::db::{Db, Keyset};
use mosaic_mesh::write::Write;
use std::collections::HashMap;
use surrealdb::types::{RecordId, SurrealValue};

/// Actors kept per entry.
pub(crate) const MAX_ACTORS: usize = 20;
/// Actors shown per entry.
const SHOWN_ACTORS: usize = 3;

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct NotificationRow {
    pub key: String,
    pub recipient: String,
    pub kind: String,
    pub actors: Vec<String>,
    pub actor_count: i64,
    pub count: i64,
    pub subject_id: String,
    pub post_id: Option<String>,
    pub comment_id: Option<String>,
    pub conversation_id: Option<String>,
    pub preview: Option<String>,
    pub text: Option<String>,
    pub visible: bool,
    pub read: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const NOTIFICATION_FIELDS: &str = "record::id(id) AS key, recipient, kind, actors, actor_count, count, \
     subject_id, post_id, comment_id, conversation_id, preview, text, visible, read, created_at, updated_at";

impl NotificationRow {
    pub fn kind(&self) -> NotificationType {
        NotificationType::parse(&self.kind).unwrap_or(NotificationType::Like)
    }

    pub fn actor_ids(&self) -> Vec<UserId> {
        self.actors.iter().take(SHOWN_ACTORS).map(|a| UserId::from_trusted(a.clone())).collect()
    }

    /// The human summary: "ada and 12 others liked your post".
    pub fn text(&self, authors: &HashMap<UserId, Author>) -> String {
        if let Some(text) = &self.text {
            return text.clone();
        }
        let name = self
            .actors
            .first()
            .and_then(|a| authors.get(&UserId::from_trusted(a.clone())))
            .map(|a| a.username.clone())
            .unwrap_or_else(|| "Someone".into());
        let others = (self.actor_count - 1).max(0);
        let who = match others {
            0 => name,
            1 => format!("{name} and 1 other"),
            n => format!("{name} and {n} others"),
        };
        match self.kind() {
            NotificationType::Like => format!("{who} liked your post"),
            NotificationType::Comment => format!("{who} commented on your post"),
            NotificationType::Follow => format!("{who} started following you"),
            NotificationType::Mention => format!("{who} mentioned you"),
            NotificationType::Message if self.count > 1 => format!("{who} sent you {} messages", self.count),
            NotificationType::Message => match &self.preview {
                Some(p) => format!("{who}: {p}"),
                None => format!("{who} sent you a message"),
            },
            NotificationType::Report => format!("Your report for {} is ready", self.subject_id),
        }
    }

    pub fn wire(&self, authors: &HashMap<UserId, Author>) -> Notification {
        let actors: Vec<Author> = self.actor_ids().iter().filter_map(|id| authors.get(id).cloned()).collect();
        Notification {
            id: NotificationId::from_trusted(self.key.clone()),
            kind: self.kind(),
            actor: actors.first().cloned(),
            others: (self.actor_count - 1).max(0) as u64,
            actors,
            subject_id: self.subject_id.clone(),
            post_id: self.post_id.clone().map(PostId::from_trusted),
            comment_id: self.comment_id.clone().map(CommentId::from_trusted),
            conversation_id: self.conversation_id.clone().map(ConversationId::from_trusted),
            text: self.text(authors),
            read: self.read,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An entry's fields as stored (`UPSERT … CONTENT`).
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct NotificationContent {
    recipient: String,
    kind: String,
    actors: Vec<String>,
    actor_count: i64,
    count: i64,
    subject_id: String,
    post_id: Option<String>,
    comment_id: Option<String>,
    conversation_id: Option<String>,
    preview: Option<String>,
    text: Option<String>,
    visible: bool,
    read: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl NotificationRow {
    /// The stored form.
    pub fn content(&self) -> NotificationContent {
        NotificationContent {
            recipient: self.recipient.clone(),
            kind: self.kind.clone(),
            actors: self.actors.clone(),
            actor_count: self.actor_count,
            count: self.count,
            subject_id: self.subject_id.clone(),
            post_id: self.post_id.clone(),
            comment_id: self.comment_id.clone(),
            conversation_id: self.conversation_id.clone(),
            preview: self.preview.clone(),
            text: self.text.clone(),
            visible: self.visible,
            read: self.read,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Count {
    count: i64,
}

/// Takes one notification in: upserts its coalesced entry (`$row`) unless another job moved
/// the entry since it was read, counts its actor on the entry once, records the job as
/// seen, and inserts its deliveries and events.
///
/// Binds `$job` and `$entry` (record ids), `$expected` (the entry's `updated_at` as read,
/// NONE for a new entry), `$row` ([`NotificationContent`]), `$actor_key` (an `entry_actor`
/// record id, or NONE), `$recipient`, `$actor`, `$deliveries` (`NewDelivery` rows) and
/// `$events`. Throws `job_seen` ([`super::Refused::JobSeen`]) for a job taken in before and
/// `entry_moved` ([`super::Refused::EntryMoved`]) when the entry changed since it was read.
pub(crate) const ACCEPT: &str = "BEGIN TRANSACTION;
     IF record::exists($job) { THROW 'job_seen'; };
     LET $current = (SELECT VALUE updated_at FROM ONLY $entry);
     IF $current != $expected { THROW 'entry_moved'; };
     UPSERT $entry CONTENT $row;
     IF $actor_key != NONE {
        UPSERT $actor_key SET entry = $entry, recipient = $recipient, actor = $actor;
     };
     CREATE $job SET created_at = time::now();
     INSERT INTO delivery $deliveries;
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// A page of `me`'s visible entries (only the unread ones if `unread_only`), most recently
/// updated first (ties by entry id), and the next page's cursor.
pub(crate) async fn page(
    db: &Db,
    me: &UserId,
    unread_only: bool,
    page: &PageRequest,
) -> ServiceResult<(Vec<NotificationRow>, Option<String>)> {
    let unread = if unread_only { " AND read = false" } else { "" };
    Keyset::newest_first("updated_at", "record::id(id)", "key")
        .page(
            db,
            &format!("SELECT {NOTIFICATION_FIELDS} FROM notification WHERE recipient = $me AND visible = true{unread}"),
            page,
            |q| q.bind(("me", me.to_string())),
            |r: &NotificationRow| TimeCursor::new(r.updated_at, r.key.clone()),
        )
        .await
}

/// How many of `me`'s visible entries are unread.
pub(crate) async fn unread_count(db: &Db, me: &UserId) -> anyhow::Result<u64> {
    let query = db
        .query("SELECT count() AS count FROM notification WHERE recipient = $me AND visible = true AND read = false GROUP ALL")
        .bind(("me", me.to_string()));
    let count: Option<Count> = first(query, "counting unread entries").await?;
    Ok(count.map(|c| c.count.max(0) as u64).unwrap_or(0))
}

/// An entry, whoever's it is.
pub(crate) async fn entry(db: &Db, id: &str) -> anyhow::Result<Option<NotificationRow>> {
    let query = db.query(format!("SELECT {NOTIFICATION_FIELDS} FROM $rid")).bind(("rid", notification_rid(id)));
    first(query, "reading an inbox entry").await
}

/// An entry, and its last 100 deliveries, newest first.
pub(crate) async fn entry_with_deliveries(
    db: &Db,
    id: &NotificationId,
) -> anyhow::Result<(Option<NotificationRow>, Vec<DeliveryRow>)> {
    let mut res = db
        .query(format!(
            "SELECT {NOTIFICATION_FIELDS} FROM $rid;
             SELECT {DELIVERY_FIELDS} FROM delivery WHERE notification = $id ORDER BY created_at DESC LIMIT 100;"
        ))
        .bind(("rid", notification_rid(id.as_str())))
        .bind(("id", id.to_string()))
        .await
        .context("reading an inbox entry")?;
    let rows: Vec<NotificationRow> = res.take(0).context("reading an inbox entry")?;
    let deliveries: Vec<DeliveryRow> = res.take(1).context("reading deliveries")?;
    Ok((rows.into_iter().next(), deliveries))
}

/// The entry `id` a notification coalesces into, and whether `actor_key`'s actor is
/// already counted in it.
pub(crate) async fn coalescing(
    db: &Db,
    id: &str,
    actor_key: Option<&RecordId>,
) -> anyhow::Result<(Option<NotificationRow>, bool)> {
    let mut res = db
        .query(format!(
            "SELECT {NOTIFICATION_FIELDS} FROM $entry;
             SELECT VALUE id FROM $actor_key;"
        ))
        .bind(("entry", notification_rid(id)))
        .bind(("actor_key", actor_key.cloned()))
        .await
        .context("reading an inbox entry")?;
    let rows: Vec<NotificationRow> = res.take(0).context("reading an inbox entry")?;
    let counted: Vec<RecordId> = res.take(1).context("reading an inbox entry")?;
    Ok((rows.into_iter().next(), !counted.is_empty()))
}

/// Marks `me`'s entries read: all of them, or those of `ids` that are `me`'s.
pub(crate) async fn mark_read(db: &Db, me: &UserId, ids: &[NotificationId], all: bool) -> anyhow::Result<()> {
    let rids: Vec<_> = ids.iter().map(|i| notification_rid(i.as_str())).collect();
    let sql = if all {
        "UPDATE notification SET read = true WHERE recipient = $me AND read = false"
    } else {
        // Only the caller's own entries; others' ids change nothing.
        "UPDATE $rids SET read = true WHERE recipient = $me"
    };
    run(Write::new(db, sql).bind("me", me.to_string()).bind("rids", rids), "marking entries read").await
}

/// Takes `who` out of `user`'s inbox: entries only they caused disappear, coalesced ones
/// lose them.
pub(crate) async fn forget_actor(db: &Db, user: &UserId, who: &UserId) -> anyhow::Result<()> {
    let write = Write::new(
        db,
        "BEGIN TRANSACTION;
         LET $entries = (SELECT VALUE entry FROM entry_actor WHERE recipient = $user AND actor = $who);
         UPDATE notification SET actors = array::complement(actors, [$who]), actor_count -= 1
            WHERE id IN $entries;
         UPDATE notification SET visible = false WHERE id IN $entries AND actor_count <= 0;
         DELETE entry_actor WHERE recipient = $user AND actor = $who;
         COMMIT TRANSACTION;",
    );
    run(write.bind("user", user.to_string()).bind("who", who.to_string()), "removing an actor from an inbox").await
}

/// Whether `job` was taken in already.
pub(crate) async fn job_seen(db: &Db, job: &str) -> anyhow::Result<bool> {
    let query = db.query("SELECT VALUE id FROM $job").bind(("job", job_rid(job)));
    let found: Vec<RecordId> = rows(query, "reading a job").await?;
    Ok(!found.is_empty())
}

/// Records `job` as taken in (without an entry: a notification nobody wants); a job
/// recorded before is fine.
pub(crate) async fn mark_job_seen(db: &Db, job: &str) -> anyhow::Result<()> {
    match attempt(db.query("CREATE $job SET created_at = time::now()").bind(("job", job_rid(job)))).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("recording a job")),
    }
}

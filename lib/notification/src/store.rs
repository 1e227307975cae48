//! Rows of the `notification` database, the record ids that name them, and their wire forms.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::Author;
use mosaic_api::notification::{
    Channel, Delivery, DeliveryStatus, Device, Notification, NotificationPreferences, NotificationType, Platform,
};
use mosaic_api::{CommentId, ConversationId, DeviceId, Id as _, NotificationId, PostId, UserId};
use mosaic_mesh::db::{Checked as _, Db};
use mosaic_mesh::write::{NoRefusal, Write};
use std::collections::HashMap;
use surrealdb::types::{Array, RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// What the notification service's transactions refuse (the codes their SurrealQL
    /// `THROW`s).
    pub(crate) enum Refused {
        /// The job was taken in before (a redelivery).
        JobSeen = "job_seen",
        /// The entry changed since it was read (another job coalesced into it).
        EntryMoved = "entry_moved",
        /// The digest of those held pushes is queued already.
        DigestExists = "digest_exists",
    }
}

/// Actors kept per entry.
pub(crate) const MAX_ACTORS: usize = 20;
/// Actors shown per entry.
const SHOWN_ACTORS: usize = 3;

pub(crate) fn notification_rid(id: &str) -> RecordId {
    RecordId::new("notification", id)
}

pub(crate) fn job_rid(job: &str) -> RecordId {
    RecordId::new("job", job)
}

pub(crate) fn entry_actor_rid(entry: &str, actor: &UserId) -> RecordId {
    RecordId::new("entry_actor", Array::from(vec![entry.to_owned(), actor.to_string()]))
}

pub(crate) fn delivery_rid(job: &str, channel: Channel) -> RecordId {
    RecordId::new("delivery", Array::from(vec![job.to_owned(), channel.as_str().to_owned()]))
}

pub(crate) fn device_rid(id: &DeviceId) -> RecordId {
    RecordId::new("device", id.as_str())
}

pub(crate) fn prefs_rid(user: &UserId) -> RecordId {
    RecordId::new("prefs", user.as_str())
}

pub(crate) fn parse_channel(s: &str) -> Channel {
    match s {
        "push" => Channel::Push,
        "email" => Channel::Email,
        _ => Channel::InApp,
    }
}

pub(crate) fn status_name(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Queued => "queued",
        DeliveryStatus::Held => "held",
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Expired => "expired",
        DeliveryStatus::RateLimited => "rate_limited",
        DeliveryStatus::Disabled => "disabled",
        DeliveryStatus::NoRecipient => "no_recipient",
        DeliveryStatus::Failed => "failed",
    }
}

pub(crate) fn parse_status(s: &str) -> DeliveryStatus {
    match s {
        "held" => DeliveryStatus::Held,
        "sent" => DeliveryStatus::Sent,
        "expired" => DeliveryStatus::Expired,
        "rate_limited" => DeliveryStatus::RateLimited,
        "disabled" => DeliveryStatus::Disabled,
        "no_recipient" => DeliveryStatus::NoRecipient,
        "failed" => DeliveryStatus::Failed,
        _ => DeliveryStatus::Queued,
    }
}

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

pub(crate) const NOTIFICATION_FIELDS: &str = "record::id(id) AS key, recipient, kind, actors, actor_count, count, \
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

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct DeliveryRow {
    pub notification: String,
    pub recipient: String,
    pub channel: String,
    pub status: String,
    pub attempts: i64,
    pub detail: Option<String>,
    pub urgent: bool,
    pub expires_at: DateTime<Utc>,
    pub hold_until: Option<DateTime<Utc>>,
    pub digest: Option<String>,
    pub items: i64,
    pub sent_devices: Vec<String>,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const DELIVERY_FIELDS: &str = "notification, recipient, channel, status, attempts, detail, urgent, \
     expires_at, hold_until, digest, items, sent_devices, email, created_at, updated_at";

impl DeliveryRow {
    pub fn wire(&self) -> Delivery {
        Delivery {
            channel: parse_channel(&self.channel),
            status: parse_status(&self.status),
            attempts: self.attempts.max(0) as u32,
            detail: self.detail.clone(),
            updated_at: self.updated_at,
        }
    }
}

/// A delivery row to insert.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct NewDelivery {
    pub id: RecordId,
    pub notification: String,
    pub recipient: String,
    pub channel: String,
    pub status: String,
    pub attempts: i64,
    pub detail: Option<String>,
    pub urgent: bool,
    pub expires_at: DateTime<Utc>,
    pub hold_until: Option<DateTime<Utc>>,
    pub digest: Option<String>,
    pub items: i64,
    pub sent_devices: Vec<String>,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct DeviceRow {
    pub key: String,
    pub user: String,
    pub platform: String,
    pub token: Option<String>,
    pub endpoint: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub(crate) const DEVICE_FIELDS: &str =
    "record::id(id) AS key, user, platform, token, endpoint, p256dh, auth, created_at";

impl DeviceRow {
    pub fn wire(&self) -> Device {
        Device {
            id: DeviceId::from_trusted(self.key.clone()),
            platform: if self.platform == "webpush" { Platform::Webpush } else { Platform::Fcm },
            created_at: self.created_at,
        }
    }
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct PrefsRow {
    doc: String,
}

/// A user's preferences (the defaults when they never set any).
pub(crate) async fn prefs(db: &Db, user: &UserId) -> anyhow::Result<NotificationPreferences> {
    let mut res =
        db.query("SELECT doc FROM $rid").bind(("rid", prefs_rid(user))).await.context("reading preferences")?;
    let rows: Vec<PrefsRow> = res.take(0).context("reading preferences")?;
    Ok(match rows.into_iter().next() {
        Some(row) => serde_json::from_str(&row.doc).context("decoding preferences")?,
        None => NotificationPreferences::default(),
    })
}

/// Stores a user's preferences.
pub(crate) async fn set_prefs(db: &Db, user: &UserId, prefs: &NotificationPreferences) -> anyhow::Result<()> {
    let doc = serde_json::to_string(prefs)?;
    Write::new(db, "UPSERT $rid SET doc = $doc, updated_at = time::now()")
        .bind("rid", prefs_rid(user))
        .bind("doc", doc.clone())
        .run::<NoRefusal>()
        .await
        .context("storing preferences")?;
    Ok(())
}

/// A secret the service generates once and every instance shares: the stored value, or
/// `make()`'s stored now (the first instance to store wins; the others read its value).
pub(crate) async fn shared_secret(
    db: &Db,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let read = || async {
        let mut res = db.query("SELECT VALUE value FROM $rid").bind(("rid", RecordId::new("secret", name))).await?;
        let found: Vec<String> = res.take(0)?;
        anyhow::Ok(found.into_iter().next())
    };
    if let Some(v) = read().await.context("reading a stored secret")? {
        return Ok(v);
    }
    let value = make()?;
    let created = db
        .query("CREATE $rid SET value = $value")
        .bind(("rid", RecordId::new("secret", name)))
        .bind(("value", value.clone()))
        .await
        .and_then(|r| r.checked());
    match created {
        Ok(_) => Ok(value),
        Err(_) => read().await.context("reading a stored secret")?.context("a stored secret vanished"),
    }
}

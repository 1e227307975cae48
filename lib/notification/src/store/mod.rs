//! The `notification` database: its rows, the record ids that name them, their wire forms,
//! and every SurrealQL statement the service runs.
//!
//! Reads are functions that take typed arguments and return typed rows. Transactions that
//! go through the one write path ([`mosaic_mesh::write`]) are documented constants, each
//! saying what it binds and what it `THROW`s; the handlers bind and run them. The handlers
//! hold no SurrealQL. By area: the inbox and intake ([`inbox`]), deliveries and digests
//! ([`deliveries`]), devices ([`devices`]); preferences and shared secrets here.

pub(crate) mod deliveries;
pub(crate) mod devices;
pub(crate) mod inbox;

use anyhow::Context as _;
use mosaic_api::notification::{Channel, DeliveryStatus, NotificationPreferences};
use mosaic_api::{DeviceId, Id as _, UserId};
use mosaic_mesh::db::{Checked as _, Db};
use mosaic_mesh::db::{exec, first, rows};
use mosaic_mesh::write::{NoRefusal, Write};
use surrealdb::engine::any::Any;
use surrealdb::method::Query;
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

/// Runs `query` for its effect, failing with the most specific statement error (see
/// [`Checked`](mosaic_mesh::db::Checked)).
async fn attempt(query: Query<'_, Any>) -> Result<(), surrealdb::Error> {
    query.await.and_then(|r| r.checked()).map(drop)
}

/// Runs `write`, which refuses nothing, with `what` it does as the error's context.
async fn run(write: Write<'_>, what: &'static str) -> anyhow::Result<()> {
    write.run::<NoRefusal>().await.context(what)?;
    Ok(())
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct PrefsRow {
    doc: String,
}

/// A user's preferences (the defaults when they never set any).
pub(crate) async fn prefs(db: &Db, user: &UserId) -> anyhow::Result<NotificationPreferences> {
    let query = db.query("SELECT doc FROM $rid").bind(("rid", prefs_rid(user)));
    Ok(match first::<PrefsRow>(query, "reading preferences").await? {
        Some(row) => serde_json::from_str(&row.doc).context("decoding preferences")?,
        None => NotificationPreferences::default(),
    })
}

/// Stores a user's preferences.
pub(crate) async fn set_prefs(db: &Db, user: &UserId, prefs: &NotificationPreferences) -> anyhow::Result<()> {
    let doc = serde_json::to_string(prefs)?;
    let write = Write::new(db, "UPSERT $rid SET doc = $doc, updated_at = time::now()")
        .bind("rid", prefs_rid(user))
        .bind("doc", doc);
    run(write, "storing preferences").await
}

/// A secret the service generates once and every instance shares: the stored value, or
/// `make()`'s stored now (the first instance to store wins; the others read its value).
pub(crate) async fn shared_secret(
    db: &Db,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let read = || {
        let query = db.query("SELECT VALUE value FROM $rid").bind(("rid", RecordId::new("secret", name)));
        first::<String>(query, "reading a stored secret")
    };
    if let Some(v) = read().await? {
        return Ok(v);
    }
    let value = make()?;
    let created = attempt(
        db.query("CREATE $rid SET value = $value")
            .bind(("rid", RecordId::new("secret", name)))
            .bind(("value", value.clone())),
    )
    .await;
    match created {
        Ok(_) => Ok(value),
        Err(_) => read().await?.context("a stored secret vanished"),
    }
}

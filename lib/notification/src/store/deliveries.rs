//! Deliveries: one row per job and channel recording how sending it went, the pushes held
//! by quiet hours and their digests, and forgetting old jobs and deliveries.

use super::{delivery_rid, exec, first, parse_channel, parse_status, rows, run, status_name};
use chrono::{DateTime, Utc};
use mosaic_api::notification::{Channel, Delivery, DeliveryStatus};
use mosaic_mesh::db::Db;
use mosaic_mesh::write::Write;
use surrealdb::types::{Array, RecordId, SurrealValue, Value};

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

pub(super) const DELIVERY_FIELDS: &str = "notification, recipient, channel, status, attempts, detail, urgent, \
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

/// A delivery row to insert: the row under its record id.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct NewDelivery {
    pub id: RecordId,
    #[surreal(flatten)]
    pub row: DeliveryRow,
}

/// A push held by quiet hours.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct Held {
    key: Vec<String>,
    pub recipient: String,
    pub expires_at: DateTime<Utc>,
    pub hold_until: Option<DateTime<Utc>>,
}

impl Held {
    /// The held delivery's record id.
    pub fn rid(&self) -> RecordId {
        RecordId::new("delivery", Array::from(self.key.clone()))
    }
}

/// Queues the digest of held pushes (`$held`) unless it is queued already, marks the held
/// pushes as part of it, and inserts its events.
///
/// Binds `$digest` (the digest's delivery record id), `$user`, `$expires_at`, `$items` (how
/// many pushes it stands for), `$held` (their record ids), `$job` (the digest's job) and
/// `$events`. Throws `digest_exists` ([`super::Refused::DigestExists`]) when the digest is
/// queued already.
pub(crate) const QUEUE_DIGEST: &str = "BEGIN TRANSACTION;
     IF record::exists($digest) { THROW 'digest_exists'; };
     CREATE $digest SET notification = '', recipient = $user, channel = 'push', status = 'queued',
        attempts = 0, urgent = false, expires_at = $expires_at, items = $items,
        sent_devices = [], created_at = time::now(), updated_at = time::now();
     UPDATE $held SET digest = $job, updated_at = time::now();
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// A delivery row.
pub(crate) async fn delivery(db: &Db, job: &str, channel: Channel) -> anyhow::Result<Option<DeliveryRow>> {
    let query = db.query(format!("SELECT {DELIVERY_FIELDS} FROM $rid")).bind(("rid", delivery_rid(job, channel)));
    first(query, "reading a delivery").await
}

/// Sets a delivery's final status.
pub(crate) async fn finish(
    db: &Db,
    rid: &RecordId,
    status: DeliveryStatus,
    detail: Option<String>,
) -> anyhow::Result<()> {
    let write = Write::new(db, "UPDATE $rid SET status = $status, detail = $detail, updated_at = time::now()")
        .bind("rid", rid.clone())
        .bind("status", status_name(status))
        .bind("detail", detail);
    run(write, "recording a delivery").await
}

/// Records a failed attempt (and, on the last one, the failure).
pub(crate) async fn attempted(db: &Db, rid: &RecordId, reason: &str, last: bool) -> anyhow::Result<()> {
    let status = if last { "failed" } else { "queued" };
    let write =
        Write::new(db, "UPDATE $rid SET attempts += 1, detail = $detail, status = $status, updated_at = time::now()")
            .bind("rid", rid.clone())
            .bind("detail", reason.to_owned())
            .bind("status", status);
    run(write, "recording an attempt").await
}

/// Gives the pushes of the digest `job` its outcome.
pub(crate) async fn settle_digest(db: &Db, job: &str, status: DeliveryStatus, detail: &str) -> anyhow::Result<()> {
    let write = Write::new(
        db,
        "UPDATE delivery SET status = $status, detail = $detail, updated_at = time::now() WHERE digest = $job",
    )
    .bind("status", status_name(status))
    .bind("detail", detail.to_owned())
    .bind("job", job.to_owned());
    run(write, "settling a digest").await
}

/// Records that a push reached `device`, so a retry does not send it there again.
pub(crate) async fn device_sent(db: &Db, rid: &RecordId, device: &str) -> anyhow::Result<()> {
    let write = Write::new(db, "UPDATE $rid SET sent_devices += $device, updated_at = time::now()")
        .bind("rid", rid.clone())
        .bind("device", device.to_owned());
    run(write, "recording a push").await
}

/// Up to `limit` pushes whose quiet hours are over and that no digest holds yet.
pub(crate) async fn held(db: &Db, limit: i64) -> anyhow::Result<Vec<Held>> {
    let query = db
        .query(
            "SELECT record::id(id) AS key, recipient, expires_at, hold_until FROM delivery
             WHERE status = 'held' AND hold_until <= time::now() AND digest = NONE LIMIT $limit",
        )
        .bind(("limit", limit));
    rows(query, "finding held pushes").await
}

/// Marks held pushes (`ids`) that outlived their time-to-live in quiet hours as expired.
pub(crate) async fn expire_held(db: &Db, ids: Vec<RecordId>) -> anyhow::Result<()> {
    let query = db
        .query("UPDATE $ids SET status = $status, detail = 'expired during quiet hours', updated_at = time::now()")
        .bind(("ids", ids))
        .bind(("status", status_name(DeliveryStatus::Expired)));
    exec(query, "expiring held pushes").await
}

/// Forgets the jobs taken in before `jobs`, and the finished deliveries last changed before
/// `deliveries`.
pub(crate) async fn sweep(db: &Db, jobs: DateTime<Utc>, deliveries: DateTime<Utc>) -> anyhow::Result<()> {
    let query = db
        .query(
            "DELETE job WHERE created_at < $jobs;
             DELETE delivery WHERE updated_at < $deliveries AND status NOT IN ['queued', 'held'];",
        )
        .bind(("jobs", jobs))
        .bind(("deliveries", deliveries));
    exec(query, "sweeping old jobs and deliveries").await
}

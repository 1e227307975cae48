//! The transactional outbox: an event and the write that implies it commit together.
//!
//! A service stages events with [`Staged::new`] and inserts them into its `outbox` table in
//! the same transaction as its write (`INSERT INTO outbox $events`). The relay started by
//! [`Outbox::spawn`] publishes staged rows to JetStream with their event id as
//! `Nats-Msg-Id` and deletes them once JetStream has acknowledged. A crash between the two
//! means the row is published again later; JetStream drops the duplicate.
//!
//! Latency-sensitive writers (chat) call [`Outbox::dispatch`] right after their commit: it
//! publishes the rows it was given and deletes them, leaving anything it could not publish
//! to the relay. The row id is the event id, so both paths name the same row.

use crate::client::Mesh;
use crate::db::{Checked as _, Db};
use crate::service::Lifecycle;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::ws::{Kept, ServerFrame, kept_subject};
use mosaic_api::{Envelope, Event, EventId, Id as _, UserId};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::SurrealValue;
use tokio::sync::Notify;

/// How often the relay looks for rows nobody woke it for (a crashed instance's).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
const BATCH: usize = 256;

/// An event ready to be inserted into the outbox table.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct Staged {
    id: surrealdb::types::RecordId,
    subject: String,
    msg_id: String,
    payload: String,
    created_at: DateTime<Utc>,
}

impl Staged {
    /// Wraps `event` in an [`Envelope`] and stages it.
    pub fn new<E: Event>(event: E) -> Self {
        Self::envelope(&Envelope::new(event))
    }

    /// Stages an existing envelope.
    pub fn envelope<E: Event>(envelope: &Envelope<E>) -> Self {
        Self::raw(
            E::SUBJECT.to_owned(),
            envelope.id.to_string(),
            serde_json::to_string(envelope).expect("events serialize"),
            envelope.at,
        )
    }

    /// Stages a frame `user` must not miss: published on their kept-frames subject (see
    /// [`mosaic_api::stream::USER_FRAMES`]) with a fresh cursor.
    pub fn frame(user: &UserId, frame: ServerFrame) -> Self {
        let cursor = EventId::generate();
        let kept = Kept { cursor: cursor.to_string(), frame };
        Self::raw(
            kept_subject(user),
            cursor.to_string(),
            serde_json::to_string(&kept).expect("frames serialize"),
            chrono::Utc::now(),
        )
    }

    fn raw(subject: String, msg_id: String, payload: String, created_at: DateTime<Utc>) -> Self {
        Self { id: surrealdb::types::RecordId::new("outbox", msg_id.as_str()), subject, msg_id, payload, created_at }
    }

    /// The de-duplication id it is published with.
    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Row {
    key: String,
    subject: String,
    msg_id: String,
    payload: String,
    #[allow(dead_code)] // selected only because SurrealQL orders by selected fields
    created_at: DateTime<Utc>,
}

/// Handle on a running relay.
#[derive(Clone, Debug)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Starts the relay for `db`'s outbox.
    pub fn spawn(db: Db, mesh: Mesh, lifecycle: &Lifecycle) -> Self {
        let wake = Arc::new(Notify::new());
        let notified = wake.clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            let mut failures = 0u32;
            loop {
                match relay(&db, &mesh).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = format!("{e:#}"), failures, "outbox relay failed; will retry");
                    }
                }
                let pause =
                    if failures == 0 { SWEEP_INTERVAL } else { Duration::from_millis(100 * 2u64.pow(failures.min(6))) };
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // One last pass so a clean stop leaves nothing behind.
                        if let Err(e) = relay(&db, &mesh).await {
                            tracing::warn!(error = format!("{e:#}"), "final outbox relay failed");
                        }
                        return;
                    }
                    _ = notified.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
        Self { wake }
    }

    /// Publishes what was just committed without waiting for the next sweep.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes `rows`, which the caller has just committed, now: all of them before
    /// waiting for JetStream's acknowledgements, then deletes the published rows. Whatever
    /// fails is left to the relay (woken), which republishes it; JetStream drops duplicates.
    pub async fn dispatch(&self, db: &Db, mesh: &Mesh, rows: &[Staged]) {
        if rows.is_empty() {
            return;
        }
        let acks = rows.iter().map(|row| mesh.publish_with_id(&row.subject, &row.msg_id, row.payload.clone().into()));
        let results = futures::future::join_all(acks).await;
        let mut done = Vec::with_capacity(rows.len());
        let mut failed = false;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => done.push(row.id.clone()),
                Err(e) => {
                    failed = true;
                    tracing::debug!(error = format!("{e:#}"), subject = %row.subject, "dispatch failed; the relay will retry");
                }
            }
        }
        if failed {
            self.wake();
        }
        if let Err(e) = db.query("DELETE $done").bind(("done", done)).await.and_then(|r| r.checked()) {
            // Harmless: the relay republishes the rows and JetStream drops the duplicates.
            tracing::debug!(error = %e, "clearing dispatched outbox rows failed");
        }
    }
}

async fn relay(db: &Db, mesh: &Mesh) -> anyhow::Result<()> {
    loop {
        let mut res = db
            .query("SELECT record::id(id) AS key, subject, msg_id, payload, created_at FROM outbox ORDER BY created_at ASC LIMIT $limit")
            .bind(("limit", BATCH as i64))
            .await
            .context("reading the outbox")?;
        let rows: Vec<Row> = res.take(0).context("reading the outbox")?;
        if rows.is_empty() {
            return Ok(());
        }
        // Everything is sent before any acknowledgement is awaited: a batch costs about one
        // round trip, and the order of publication is the order of the rows.
        let acks = rows.iter().map(|row| mesh.publish_with_id(&row.subject, &row.msg_id, row.payload.clone().into()));
        let results = futures::future::join_all(acks).await;
        let mut done = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => done.push(surrealdb::types::RecordId::new("outbox", row.key.clone())),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        db.query("DELETE $done").bind(("done", done)).await.and_then(|r| r.checked()).context("clearing the outbox")?;
        if let Some(e) = first_error {
            return Err(e);
        }
        if rows.len() < BATCH {
            return Ok(());
        }
    }
}

//! The transactional outbox: an event and the write that implies it commit together.
//!
//! A service stages events with [`Staged::new`] and inserts them into its `outbox` table in
//! the same transaction as its write (`INSERT INTO outbox $events`). The relay started by
//! [`Outbox::spawn`] publishes staged rows to JetStream with their event id as
//! `Nats-Msg-Id` and deletes them once JetStream has acknowledged. A crash between the two
//! means the row is published again later; JetStream drops the duplicate.

use crate::client::Mesh;
use crate::db::{Checked as _, Db};
use crate::service::Lifecycle;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::{Envelope, Event};
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
        Self {
            subject: E::SUBJECT.to_owned(),
            msg_id: envelope.id.to_string(),
            payload: serde_json::to_string(envelope).expect("events serialize"),
            created_at: envelope.at,
        }
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
        let mut done = Vec::with_capacity(rows.len());
        for row in &rows {
            mesh.publish_with_id(&row.subject, &row.msg_id, row.payload.clone().into()).await?;
            done.push(surrealdb::types::RecordId::new("outbox", row.key.clone()));
        }
        db.query("DELETE outbox WHERE id IN $done")
            .bind(("done", done))
            .await
            .and_then(|r| r.checked())
            .context("clearing the outbox")?;
        if rows.len() < BATCH {
            return Ok(());
        }
    }
}

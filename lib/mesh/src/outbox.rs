//! The transactional outbox: an event and the write that implies it commit together.
//!
//! A service stages events with [`Staged::new`] and inserts them into its `outbox` table in
//! the same transaction as its write (`INSERT INTO outbox $events`). The relay started by
//! [`Outbox::spawn`] publishes staged rows to JetStream with their event id as
//! `Nats-Msg-Id` and deletes them once JetStream has acknowledged. A crash between the two
//! means the row is published again later; JetStream drops the duplicate.
//!
//! After its commit a writer hands the relay the rows it staged ([`Outbox::committed`]); the
//! relay reads them back by id, so a row the transaction decided not to insert (an
//! idempotent repeat) is simply not found, and publishes them in the order they were handed
//! over. A writer whose transaction inserts its rows unconditionally hands over the rows
//! themselves ([`Outbox::inserted`]), which the relay publishes without reading them back.
//! Reading by id matters: the table is a queue, and in the storage engine a scan from its
//! head walks every row deleted since the last compaction. The relay still sweeps the table
//! every `SWEEP_INTERVAL` (2 s) for rows nobody handed over (a crashed instance's, a failed
//! publish), but from a mark: rows staged since `LOOKBACK` (60 s) before the previous sweep
//! began. Any row committed after that sweep began is at or past the mark unless its
//! transaction took longer than the look-back between staging and commit. A sweep of the
//! whole table runs at start and every `FULL_SWEEP_EVERY` (300) sweeps, for rows stamped by a
//! clock far behind this one. Walking the whole table every two seconds was 13 % of the
//! process's CPU on a posting workload, in bursts that held a core for a third of a second.
//!
//! Rows published from a hand-over are deleted together, `CLEAR_DELAY` (50 ms) after the
//! first of them or once `BATCH` are waiting, and always before a sweep reads the table:
//! a delete statement per event cost a busy writer's database one more statement for every
//! event, while a late delete only keeps a published row in the table a little longer.
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
use surrealdb::types::RecordId;
use surrealdb::types::SurrealValue;
use tokio::sync::{Notify, mpsc};

/// How often the relay looks for rows nobody woke it for (a crashed instance's).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// How far before the previous sweep's start a sweep looks: more than a transaction takes
/// from staging a row to committing it, plus the clock skew between instances.
const LOOKBACK: Duration = Duration::from_secs(60);
/// Every this many sweeps (ten minutes), one walks the whole table.
const FULL_SWEEP_EVERY: u32 = 300;
const BATCH: usize = 256;
/// Longest a published row waits for others to be deleted with.
const CLEAR_DELAY: Duration = Duration::from_millis(50);
/// Committed batches waiting for the relay; past this a writer falls back to a sweep.
const COMMITTED_QUEUE: usize = 4096;

/// An event ready to be inserted into the outbox table.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct Staged {
    id: RecordId,
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
        Self { id: RecordId::new("outbox", msg_id.as_str()), subject, msg_id, payload, created_at }
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

impl Row {
    fn of(staged: &Staged) -> Self {
        Self {
            key: staged.msg_id.clone(),
            subject: staged.subject.clone(),
            msg_id: staged.msg_id.clone(),
            payload: staged.payload.clone(),
            created_at: staged.created_at,
        }
    }
}

/// A row a writer handed over after its commit.
#[derive(Debug)]
enum Handed {
    /// Staged, perhaps not inserted: read back by id (its key).
    Maybe(String),
    /// Certainly in the table, as it is.
    Inserted(Row),
}

/// Handle on a running relay, and the start of every write that stages events
/// ([`Outbox::write`]).
#[derive(Clone)]
pub struct Outbox {
    wake: Arc<Notify>,
    committed: mpsc::Sender<Vec<Handed>>,
    db: Db,
    mesh: Mesh,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// What the relay does next.
enum Work {
    /// Rows just committed, in commit order.
    Rows(Vec<Handed>),
    /// Everything in the table.
    Sweep,
    /// Delete the rows published so far.
    Clear,
}

impl Outbox {
    /// Starts the relay for `db`'s outbox.
    pub fn spawn(db: Db, mesh: Mesh, lifecycle: &Lifecycle) -> Self {
        let handle = (db.clone(), mesh.clone());
        let wake = Arc::new(Notify::new());
        let notified = wake.clone();
        let (committed, mut queue) = mpsc::channel::<Vec<Handed>>(COMMITTED_QUEUE);
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            let mut failures = 0u32;
            // Where sweeps start (`None`: the whole table) and how many ran since a full one.
            let mut mark: Option<DateTime<Utc>> = None;
            let mut since_full = 0u32;
            let mut sweeps = tokio::time::interval(SWEEP_INTERVAL);
            sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: rows left by a previous run go out at start.
            let mut work = Work::Sweep;
            // Published, not yet deleted; and when the oldest of them must be.
            let mut published: Vec<RecordId> = Vec::new();
            let mut clear_by: Option<tokio::time::Instant> = None;
            loop {
                let outcome = match work {
                    Work::Rows(rows) => {
                        let (done, sent) = publish_committed(&db, &mesh, rows).await;
                        published.extend(done);
                        clear_by.get_or_insert_with(|| tokio::time::Instant::now() + CLEAR_DELAY);
                        if published.len() >= BATCH {
                            clear_by = None;
                            sent.and(clear(&db, std::mem::take(&mut published)).await)
                        } else {
                            sent
                        }
                    }
                    Work::Clear => {
                        clear_by = None;
                        clear(&db, std::mem::take(&mut published)).await
                    }
                    Work::Sweep => {
                        // Rows still to delete would be read and published again.
                        clear_by = None;
                        let cleared = clear(&db, std::mem::take(&mut published)).await;
                        let began = Utc::now();
                        let from = mark.filter(|_| since_full < FULL_SWEEP_EVERY);
                        let swept = relay(&db, &mesh, from).await;
                        if swept.is_ok() {
                            since_full = if from.is_none() { 0 } else { since_full + 1 };
                            mark = Some(began - LOOKBACK);
                        }
                        cleared.and(swept)
                    }
                };
                match outcome {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = format!("{e:#}"), failures, "outbox relay failed; will retry");
                    }
                }
                let next = if failures > 0 {
                    // Whatever failed is still in the table: back off, then sweep it.
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        _ = shutdown.cancelled() => None,
                        _ = tokio::time::sleep(pause) => Some(Work::Sweep),
                    }
                } else {
                    let clear_at = clear_by.filter(|_| !published.is_empty());
                    tokio::select! {
                        // Sweeps first: they are rarely ready, and a steady stream of
                        // committed rows must not starve them.
                        biased;
                        _ = shutdown.cancelled() => None,
                        _ = notified.notified() => Some(Work::Sweep),
                        _ = sweeps.tick() => Some(Work::Sweep),
                        _ = sleep_until(clear_at) => Some(Work::Clear),
                        Some(mut ids) = queue.recv() => {
                            while ids.len() < BATCH {
                                match queue.try_recv() {
                                    Ok(more) => ids.extend(more),
                                    Err(_) => break,
                                }
                            }
                            Some(Work::Rows(ids))
                        }
                    }
                };
                let Some(next) = next else {
                    // One last pass so a clean stop leaves nothing behind.
                    if let Err(e) = clear(&db, std::mem::take(&mut published)).await {
                        tracing::warn!(error = format!("{e:#}"), "clearing the outbox failed");
                    }
                    if let Err(e) = relay(&db, &mesh, mark).await {
                        tracing::warn!(error = format!("{e:#}"), "final outbox relay failed");
                    }
                    return;
                };
                work = next;
            }
        });
        Self { wake, committed, db: handle.0, mesh: handle.1 }
    }

    /// A write on the service's database that stages `events` (see [`crate::write`]).
    pub fn write<'a>(&'a self, sql: impl Into<std::borrow::Cow<'a, str>>) -> crate::write::Write<'a> {
        crate::write::Write::new(&self.db, sql).outbox(self)
    }

    /// Publishes what was just committed, by a full sweep. Prefer [`Outbox::committed`].
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Hands the relay the rows a transaction that just committed may have inserted (any it
    /// did not insert are skipped). Returns at once; the relay publishes them in the order
    /// they were handed over.
    pub fn committed(&self, rows: &[Staged]) {
        self.hand_over(rows.iter().map(|r| Handed::Maybe(r.msg_id.clone())).collect());
    }

    /// Like [`Outbox::committed`], for rows the transaction inserted whatever happened (no
    /// condition around its `INSERT INTO outbox`): they are published as they are, without
    /// reading them back.
    pub fn inserted(&self, rows: &[Staged]) {
        self.hand_over(rows.iter().map(|r| Handed::Inserted(Row::of(r))).collect());
    }

    fn hand_over(&self, rows: Vec<Handed>) {
        if rows.is_empty() {
            return;
        }
        if self.committed.try_send(rows).is_err() {
            // The relay is behind (or stopping): the rows are in the table, a sweep finds them.
            self.wake();
        }
    }

    /// Publishes `rows`, which the caller has just committed, now: all of them before
    /// waiting for JetStream's acknowledgements, then deletes the published rows. Whatever
    /// fails is left to the relay (woken), which republishes it; JetStream drops duplicates.
    pub async fn dispatch(&self, rows: &[Staged]) {
        let (db, mesh) = (&self.db, &self.mesh);
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

const SELECT_ROWS: &str = "SELECT record::id(id) AS key, subject, msg_id, payload, created_at";

/// Waits until `at`, or forever for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Publishes the handed-over rows that exist, in the given order; returns the rows
/// JetStream acknowledged, for the caller to delete.
async fn publish_committed(db: &Db, mesh: &Mesh, handed: Vec<Handed>) -> (Vec<RecordId>, anyhow::Result<()>) {
    let ids: Vec<RecordId> = handed
        .iter()
        .filter_map(|h| match h {
            Handed::Maybe(key) => Some(RecordId::new("outbox", key.as_str())),
            Handed::Inserted(_) => None,
        })
        .collect();
    let mut found: std::collections::HashMap<String, Row> = if ids.is_empty() {
        Default::default()
    } else {
        let read = async {
            let mut res =
                db.query(format!("{SELECT_ROWS} FROM $ids")).bind(("ids", ids)).await.context("reading the outbox")?;
            let rows: Vec<Row> = res.take(0).context("reading the outbox")?;
            anyhow::Ok(rows)
        };
        match read.await {
            Ok(rows) => rows.into_iter().map(|r| (r.key.clone(), r)).collect(),
            Err(e) => return (Vec::new(), Err(e)),
        }
    };
    let rows: Vec<Row> = handed
        .into_iter()
        .filter_map(|h| match h {
            Handed::Maybe(key) => found.remove(&key),
            Handed::Inserted(row) => Some(row),
        })
        .collect();
    send(mesh, &rows).await
}

/// Publishes every row in the table staged at or after `from` (all of them for `None`),
/// oldest first.
async fn relay(db: &Db, mesh: &Mesh, from: Option<DateTime<Utc>>) -> anyhow::Result<()> {
    let sql = if from.is_some() {
        format!("{SELECT_ROWS} FROM outbox WHERE created_at >= $from ORDER BY created_at ASC LIMIT $limit")
    } else {
        format!("{SELECT_ROWS} FROM outbox ORDER BY created_at ASC LIMIT $limit")
    };
    loop {
        let mut res = db
            .query(sql.as_str())
            .bind(("from", from))
            .bind(("limit", BATCH as i64))
            .await
            .context("reading the outbox")?;
        let rows: Vec<Row> = res.take(0).context("reading the outbox")?;
        publish(db, mesh, &rows).await?;
        if rows.len() < BATCH {
            return Ok(());
        }
    }
}

/// Publishes `rows` and deletes those JetStream acknowledged.
async fn publish(db: &Db, mesh: &Mesh, rows: &[Row]) -> anyhow::Result<()> {
    let (done, sent) = send(mesh, rows).await;
    clear(db, done).await?;
    sent
}

/// Publishes `rows`; returns those JetStream acknowledged, and the first failure.
async fn send(mesh: &Mesh, rows: &[Row]) -> (Vec<RecordId>, anyhow::Result<()>) {
    // Everything is sent before any acknowledgement is awaited: a batch costs about one
    // round trip, and the order of publication is the order of the rows.
    let acks = rows.iter().map(|row| mesh.publish_with_id(&row.subject, &row.msg_id, row.payload.clone().into()));
    let results = futures::future::join_all(acks).await;
    let mut done = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => done.push(RecordId::new("outbox", row.key.clone())),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    (done, first_error.map_or(Ok(()), Err))
}

/// Deletes published rows.
async fn clear(db: &Db, done: Vec<RecordId>) -> anyhow::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    // A writer's `dispatch` may be deleting the same rows: a write conflict here is routine.
    crate::db::retry_conflicts(|| async {
        db.query("DELETE $done").bind(("done", done.clone())).await.and_then(|r| r.checked())
    })
    .await
    .context("clearing the outbox")?;
    Ok(())
}

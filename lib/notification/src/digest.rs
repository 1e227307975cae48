//! Background upkeep: releasing pushes held by quiet hours as one digest per user when the
//! hours end, and forgetting old jobs and deliveries.
//!
//! Any number of instances run the release: a digest's id is derived from the user and the
//! moment their quiet hours ended, and it is created only if absent, in the same
//! transaction that claims the held pushes, so each user gets one digest per night.

use crate::NotificationService;
use crate::store::Refused;
use crate::store::{delivery_rid, status_name};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::notification::{Channel, Deliver, DeliveryStatus};
use mosaic_mesh::Lifecycle;
use mosaic_mesh::db::Checked as _;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::WriteError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::{RecordId, SurrealValue};

/// Held pushes released per pass, at most.
const RELEASE_BATCH: i64 = 2000;
/// Jobs are remembered a little longer than the job streams keep them (7 days).
const JOB_MEMORY_DAYS: i64 = 8;
/// Finished deliveries are kept this long for status queries.
const DELIVERY_MEMORY_DAYS: i64 = 30;

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Held {
    key: Vec<String>,
    recipient: String,
    expires_at: DateTime<Utc>,
    hold_until: Option<DateTime<Utc>>,
}

pub(crate) fn spawn(state: Arc<NotificationService>, lifecycle: &Lifecycle) {
    let shutdown = lifecycle.shutdown().clone();
    let every = Duration::from_secs(state.config.digest_interval_secs);
    lifecycle.spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = state.release_digests().await {
                tracing::warn!(error = format!("{e:#}"), "releasing quiet-hours digests failed");
            }
            if last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_sweep = Some(tokio::time::Instant::now());
                if let Err(e) = state.sweep().await {
                    tracing::warn!(error = format!("{e:#}"), "notification sweep failed");
                }
            }
        }
    });
}

impl NotificationService {
    /// Releases held pushes whose quiet hours are over: one digest per user.
    pub(crate) async fn release_digests(&self) -> anyhow::Result<()> {
        let mut res = self
            .db
            .query(
                "SELECT record::id(id) AS key, recipient, expires_at, hold_until FROM delivery
                 WHERE status = 'held' AND hold_until <= time::now() AND digest = NONE LIMIT $limit",
            )
            .bind(("limit", RELEASE_BATCH))
            .await
            .context("finding held pushes")?;
        let held: Vec<Held> = res.take(0).context("finding held pushes")?;
        let now = Utc::now();
        let mut by_user: BTreeMap<String, Vec<Held>> = BTreeMap::new();
        for h in held {
            by_user.entry(h.recipient.clone()).or_default().push(h);
        }
        for (user, items) in by_user {
            let (live, expired): (Vec<Held>, Vec<Held>) = items.into_iter().partition(|h| h.expires_at > now);
            let ids = |hs: &[Held]| -> Vec<RecordId> {
                hs.iter().map(|h| RecordId::new("delivery", surrealdb::types::Array::from(h.key.clone()))).collect()
            };
            if !expired.is_empty() {
                self.db
                    .query("UPDATE $ids SET status = $status, detail = 'expired during quiet hours', updated_at = time::now()")
                    .bind(("ids", ids(&expired)))
                    .bind(("status", status_name(DeliveryStatus::Expired)))
                    .await
                    .and_then(|r| r.checked())
                    .context("expiring held pushes")?;
            }
            if live.is_empty() {
                continue;
            }
            let ended = live.iter().filter_map(|h| h.hold_until).min().unwrap_or(now);
            let job = format!("digest-{user}-{}", ended.timestamp());
            let expires_at = now + chrono::Duration::seconds(self.config.push_ttl_secs as i64);
            let events = vec![Staged::new(Deliver { job: job.clone(), channel: Channel::Push })];
            let outcome = self
                .outbox
                .write(
                    "BEGIN TRANSACTION;
                     IF record::exists($digest) { THROW 'digest_exists'; };
                     CREATE $digest SET notification = '', recipient = $user, channel = 'push', status = 'queued',
                        attempts = 0, urgent = false, expires_at = $expires_at, items = $items,
                        sent_devices = [], created_at = time::now(), updated_at = time::now();
                     UPDATE $held SET digest = $job, updated_at = time::now();
                     INSERT INTO outbox $events;
                     COMMIT TRANSACTION;",
                )
                .bind("digest", delivery_rid(&job, Channel::Push))
                .bind("user", user.clone())
                .bind("expires_at", expires_at)
                .bind("items", live.len() as i64)
                .bind("held", ids(&live))
                .bind("job", job.clone())
                .dispatch(events)
                .run::<Refused>()
                .await;
            match outcome {
                Ok(_) => tracing::info!(%user, items = live.len(), "quiet hours over; digest queued"),
                // Another instance queued this digest first.
                Err(WriteError::Refused(Refused::DigestExists)) => {}
                Err(WriteError::Failed(e)) if e.is_already_exists() => {}
                Err(e) => return Err(anyhow::Error::new(e).context("queueing a digest")),
            }
        }
        Ok(())
    }

    /// Forgets jobs older than their streams keep them, and finished deliveries after a month.
    async fn sweep(&self) -> anyhow::Result<()> {
        self.db
            .query(
                "DELETE job WHERE created_at < $jobs;
                 DELETE delivery WHERE updated_at < $deliveries AND status NOT IN ['queued', 'held'];",
            )
            .bind(("jobs", Utc::now() - chrono::Duration::days(JOB_MEMORY_DAYS)))
            .bind(("deliveries", Utc::now() - chrono::Duration::days(DELIVERY_MEMORY_DAYS)))
            .await
            .and_then(|r| r.checked())
            .context("sweeping old jobs and deliveries")?;
        Ok(())
    }
}

//! Background upkeep: releasing pushes held by quiet hours as one digest per user when the
//! hours end, and forgetting old jobs and deliveries.
//!
//! Any number of instances run the release: a digest's id is derived from the user and the
//! moment their quiet hours ended, and it is created only if absent, in the same
//! transaction that claims the held pushes, so each user gets one digest per night.

use crate::NotificationService;
use crate::store::deliveries::{self, Held};
use crate::store::{Refused, delivery_rid};
use chrono::Utc;
use mosaic_api::notification::{Channel, Deliver};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::WriteError;
use mosaic_mesh::{FirstRun, Lifecycle};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::RecordId;

/// Held pushes released per pass, at most.
const RELEASE_BATCH: i64 = 2000;
/// Jobs are remembered a little longer than the job streams keep them (7 days).
const JOB_MEMORY_DAYS: i64 = 8;
/// Finished deliveries are kept this long for status queries.
const DELIVERY_MEMORY_DAYS: i64 = 30;

pub(crate) fn spawn(state: Arc<NotificationService>, lifecycle: &Lifecycle) {
    let digests = state.clone();
    lifecycle.every(Duration::from_secs(state.config.digest_interval_secs), FirstRun::Now, move || {
        let state = digests.clone();
        async move {
            if let Err(e) = state.release_digests().await {
                tracing::warn!(error = format!("{e:#}"), "releasing quiet-hours digests failed");
            }
        }
    });
    lifecycle.every(Duration::from_secs(3600), FirstRun::Now, move || {
        let state = state.clone();
        async move {
            if let Err(e) = state.sweep().await {
                tracing::warn!(error = format!("{e:#}"), "notification sweep failed");
            }
        }
    });
}

impl NotificationService {
    /// Releases held pushes whose quiet hours are over: one digest per user.
    pub(crate) async fn release_digests(&self) -> anyhow::Result<()> {
        let held = deliveries::held(&self.db, RELEASE_BATCH).await?;
        let now = Utc::now();
        let mut by_user: BTreeMap<String, Vec<Held>> = BTreeMap::new();
        for h in held {
            by_user.entry(h.recipient.clone()).or_default().push(h);
        }
        for (user, items) in by_user {
            let (live, expired): (Vec<Held>, Vec<Held>) = items.into_iter().partition(|h| h.expires_at > now);
            let ids = |hs: &[Held]| -> Vec<RecordId> { hs.iter().map(Held::rid).collect() };
            if !expired.is_empty() {
                deliveries::expire_held(&self.db, ids(&expired)).await?;
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
                .write(deliveries::QUEUE_DIGEST)
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
        let now = Utc::now();
        deliveries::sweep(
            &self.db,
            now - chrono::Duration::days(JOB_MEMORY_DAYS),
            now - chrono::Duration::days(DELIVERY_MEMORY_DAYS),
        )
        .await
    }
}

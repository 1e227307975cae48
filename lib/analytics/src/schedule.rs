//! The daily schedule and compaction, safe with any number of instances: each day's work
//! is taken under a lease in a JetStream key-value bucket (taken over when its holder dies
//! and the lease runs out) and marked done when finished. Emails are additionally
//! de-duplicated by their ids, so even a run repeated by hand sends each recipient one.

use crate::AnalyticsService;
use anyhow::Context as _;
use chrono::{Duration as ChronoDuration, NaiveDate, Utc};
use mosaic_api::analytics::ReportRun;
use mosaic_api::user::ListAdmins;
use mosaic_mesh::clock::at_local;
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::{Ctx, FirstRun, Lifecycle};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How often the schedule looks for due work.
const TICK: Duration = Duration::from_secs(60);
/// How long a report run may hold its lease before another instance takes over.
const RUN_LEASE: Duration = Duration::from_secs(30 * 60);
/// How long a compaction may hold its lease.
const COMPACT_LEASE: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until_ms: i64,
    #[serde(default)]
    done: bool,
}

/// Leases in the `analytics_leases` bucket.
#[derive(Clone, Debug)]
pub struct Leases {
    bucket: Bucket,
    owner: String,
}

impl Leases {
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket, owner: format!("analytics-{}", uuid::Uuid::now_v7().simple()) }
    }

    /// Takes `key` for `ttl`, unless it is done or another live holder has it.
    pub async fn acquire(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        let now = Utc::now().timestamp_millis();
        let mine = serde_json::to_vec(&Lease {
            owner: self.owner.clone(),
            until_ms: now + ttl.as_millis() as i64,
            done: false,
        })?;
        match self.bucket.get(key).await? {
            None => Ok(self.bucket.create(key, mine.into()).await?.is_some()),
            Some(current) => {
                let lease: Lease = serde_json::from_slice(&current.value).context("reading a lease")?;
                if lease.done || (lease.owner != self.owner && lease.until_ms > now) {
                    return Ok(false);
                }
                Ok(self.bucket.update(key, mine.into(), current.revision).await?.is_some())
            }
        }
    }

    /// Marks `key` done for good.
    pub async fn finish(&self, key: &str) -> anyhow::Result<()> {
        let done = serde_json::to_vec(&Lease { owner: self.owner.clone(), until_ms: 0, done: true })?;
        self.bucket.put(key, done.into()).await?;
        Ok(())
    }

    /// Gives `key` back (for work that recurs, like compaction).
    pub async fn release(&self, key: &str) -> anyhow::Result<()> {
        self.bucket.delete(key).await
    }
}

pub(crate) fn spawn(state: Arc<AnalyticsService>, lifecycle: &Lifecycle) {
    if state.config.schedule {
        let schedule = state.clone();
        lifecycle.every(TICK, FirstRun::Now, move || {
            let schedule = schedule.clone();
            async move {
                for date in schedule.due_dates() {
                    let key = format!("reports.{date}");
                    match schedule.leases.acquire(&key, RUN_LEASE).await {
                        Ok(true) => match schedule.run(date).await {
                            Ok(run) => {
                                tracing::info!(%date, creators = run.creators, emails = run.emails, "daily reports done");
                                if let Err(e) = schedule.leases.finish(&key).await {
                                    tracing::warn!(error = format!("{e:#}"), "could not mark the reports done");
                                }
                            }
                            Err(e) => tracing::warn!(%date, error = format!("{e:#}"), "daily reports failed; will retry"),
                        },
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "report lease unavailable"),
                    }
                }
            }
        });
    }
    if state.config.ingest {
        let period = Duration::from_secs(state.config.compact_interval_secs);
        lifecycle.every(period, FirstRun::AfterPeriod, move || {
            let compactor = state.clone();
            async move {
                if let Err(e) = compactor.compact_all().await {
                    tracing::warn!(error = format!("{e:#}"), "compaction failed");
                }
            }
        });
    }
}

impl AnalyticsService {
    /// Days whose reports are due: yesterday once today's report time has passed, and the
    /// day before (in case the service was down at its time).
    fn due_dates(&self) -> Vec<NaiveDate> {
        let tz = self.config.tz();
        let now = Utc::now();
        let today = now.with_timezone(&tz).date_naive();
        let yesterday = today - ChronoDuration::days(1);
        let mut due = vec![yesterday - ChronoDuration::days(1)];
        if now >= at_local(tz, today, self.config.report_at()) {
            due.push(yesterday);
        }
        due
    }

    /// Compacts every day with enough files, each under a lease.
    pub(crate) async fn compact_all(&self) -> anyhow::Result<usize> {
        let mut compacted = 0;
        for date in self.reports.warehouse.dates().await? {
            let key = format!("compact.{date}");
            if !self.leases.acquire(&key, COMPACT_LEASE).await? {
                continue;
            }
            let outcome = self.reports.warehouse.compact(date, self.config.compact_min_files).await;
            self.leases.release(&key).await?;
            compacted += outcome?;
        }
        Ok(compacted)
    }

    /// Builds, stores and emails a day's reports: what the schedule runs, and what an
    /// administrator can run by hand.
    pub(crate) async fn run(&self, date: NaiveDate) -> anyhow::Result<ReportRun> {
        let creators = self.reports.creators(date, None).await?;
        for report in &creators {
            self.reports.store_creator(report).await?;
        }
        let platform = self.reports.platform(date).await?;
        self.reports.store_platform(&platform).await?;
        let mut emails = 0u64;
        if self.config.email_reports {
            let jobs = creators.iter().map(crate::reports::creator_email).collect::<anyhow::Result<Vec<_>>>()?;
            for chunk in jobs.chunks(500) {
                self.mesh.publish_batch(chunk).await.context("queueing creator report emails")?;
            }
            emails += jobs.len() as u64;
            let ctx = Ctx::new().with_timeout(Duration::from_secs(10));
            let admins = self.mesh.call::<ListAdmins>(&ctx, &mosaic_api::endpoint::Empty {}).await?;
            let jobs: Vec<_> = admins.iter().map(|a| crate::reports::platform_email(&platform, a)).collect();
            self.mesh.publish_batch(&jobs).await.context("queueing platform report emails")?;
            emails += jobs.len() as u64;
        }
        Ok(ReportRun { date, creators: creators.len() as u64, emails })
    }
}

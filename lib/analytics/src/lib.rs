//! The analytics service: an event warehouse and daily reports.
//!
//! * Collection ([`ingest`]): durable consumers over views, likes, comments, follows, posts
//!   and signups write Parquet files into the object store, partitioned by event date
//!   ([`warehouse`]); at-least-once delivery never double-counts (counts are over distinct
//!   event ids, and compaction drops duplicates).
//! * Queries: SQL with DataFusion straight over the Parquet files.
//! * Reports ([`reports`]): per creator and for the platform, for a local day in a
//!   configured time zone (23 or 25 hours on daylight-saving days); built, stored and emailed
//!   once a day at a configured local time under a lease ([`schedule`]), or by an
//!   administrator on demand through the same code.

pub mod config;
pub mod ingest;
pub mod reports;
pub mod schedule;
pub mod warehouse;

pub use config::Config;

use mosaic_api::Event as _;

use chrono::Duration as ChronoDuration;
use mosaic_api::ApiError;
use mosaic_api::analytics::{self as api, CreatorReport, DailyQuery, IngestStatus, PlatformReport, ReportRun, SERVICE};
use mosaic_api::endpoint::Empty;
use mosaic_api::stream::ANALYTICS_LEASES;
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::{Ctx, Lifecycle, Mesh, ServiceHandle, ServiceResult};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Shared state of one instance.
pub(crate) struct AnalyticsService {
    config: Config,
    mesh: Mesh,
    reports: reports::Reports,
    ingest: Option<Arc<ingest::Ingest>>,
    leases: schedule::Leases,
}

/// The analytics service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Event warehouse and daily reports",
    migrations: None,
    serves: mosaic_api::subjects![api::CreatorDaily, api::PlatformDaily, api::RunReports, api::Status,],
    instances: &[],
    calls: mosaic_api::subjects![mosaic_api::content::PostRefs, mosaic_api::user::ListAdmins],
    publishes: &[mosaic_api::notification::SendEmail::SUBJECT, mosaic_api::subject::DEAD_LETTERS],
    subscribes: &[],
    streams: &[
        &mosaic_api::stream::NOTIFY_JOBS,
        &mosaic_api::stream::EVENTS_VIEW,
        &mosaic_api::stream::EVENTS_INTERACTION,
        &mosaic_api::stream::EVENTS_USER,
        &mosaic_api::stream::EVENTS_POST,
        &mosaic_api::stream::DEAD_LETTERS,
    ],
    buckets: &[&mosaic_api::stream::ANALYTICS_LEASES],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config: Config = unit.config()?;

    let storage = unit.storage()?;
    let mesh = unit.mesh();
    let warehouse = warehouse::Warehouse::open(storage.store.clone(), &config.prefix).await?;
    let lifecycle = Lifecycle::new();
    let ingest = if config.ingest {
        let ingest = ingest::Ingest::new(
            warehouse.clone(),
            mesh.clone(),
            config.flush_rows,
            Duration::from_millis(config.flush_interval_ms),
        );
        ingest.spawn(mesh, &lifecycle).await?;
        Some(ingest)
    } else {
        None
    };
    let reports = reports::Reports {
        warehouse,
        tz: config.tz(),
        tz_name: config.time_zone.clone(),
        top_posts: config.top_posts,
        top_creators: config.top_creators,
    };
    let state = Arc::new(AnalyticsService {
        leases: schedule::Leases::new(mesh.bucket(&ANALYTICS_LEASES).await?),
        config,
        mesh: mesh.clone(),
        reports,
        ingest,
    });
    schedule::spawn(state.clone(), &lifecycle);
    let rpc = unit
        .service(state)
        .endpoint(api::CreatorDaily, AnalyticsService::creator_daily)
        .endpoint(api::PlatformDaily, AnalyticsService::platform_daily)
        .endpoint(api::RunReports, AnalyticsService::run_reports)
        .endpoint(api::Status, AnalyticsService::status)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

impl AnalyticsService {
    fn date_of(&self, q: &DailyQuery) -> Result<chrono::NaiveDate, ApiError> {
        let today = self.reports.today();
        let date = q.date.unwrap_or(today);
        if date > today {
            return Err(ApiError::validation("date is in the future"));
        }
        Ok(date)
    }

    async fn creator_daily(self: Arc<Self>, ctx: Ctx, q: DailyQuery) -> ServiceResult<CreatorReport> {
        let me = ctx.require_user()?.clone();
        let date = self.date_of(&q)?;
        // A stored report is final once its day is over; until then the numbers grow.
        if let Some(stored) = self.reports.stored_creator(date, &me).await?
            && stored.complete
        {
            return Ok(stored);
        }
        Ok(self.reports.creator(date, &me).await?)
    }

    async fn platform_daily(self: Arc<Self>, ctx: Ctx, q: DailyQuery) -> ServiceResult<PlatformReport> {
        ctx.require_admin()?;
        let date = self.date_of(&q)?;
        if let Some(stored) = self.reports.stored_platform(date).await?
            && stored.complete
        {
            return Ok(stored);
        }
        Ok(self.reports.platform(date).await?)
    }

    async fn run_reports(self: Arc<Self>, ctx: Ctx, q: DailyQuery) -> ServiceResult<ReportRun> {
        ctx.require_admin()?;
        let date = match q.date {
            Some(d) => self.date_of(&DailyQuery { date: Some(d) })?,
            None => self.reports.today() - ChronoDuration::days(1),
        };
        // Whatever is buffered belongs in the numbers.
        if let Some(ingest) = &self.ingest {
            ingest.flush().await;
        }
        Ok(self.run(date).await?)
    }

    async fn status(self: Arc<Self>, _ctx: Ctx, _q: Empty) -> ServiceResult<IngestStatus> {
        let Some(ingest) = &self.ingest else {
            return Ok(IngestStatus { events_written: 0, newest_event_at: None, lag_seconds: 0.0 });
        };
        let newest = ingest.stats.newest_ms.load(Ordering::Relaxed);
        Ok(IngestStatus {
            events_written: ingest.stats.written.load(Ordering::Relaxed),
            newest_event_at: (newest > 0).then(|| chrono::DateTime::from_timestamp_millis(newest)).flatten(),
            lag_seconds: ingest.stats.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        })
    }
}

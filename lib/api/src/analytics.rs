//! The analytics service: daily creator and platform reports from the event warehouse.

use crate::ids::{PostId, UserId};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "analytics";

/// A post's numbers on the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopPost {
    pub post_id: PostId,
    pub views: u64,
    pub likes: u64,
    pub comments: u64,
}

/// A creator's day: `GET /v1/analytics/me/daily`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatorReport {
    pub user_id: UserId,
    /// The local calendar day (in `time_zone`).
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub time_zone: String,
    /// Views of the creator's posts.
    pub views: u64,
    /// Distinct viewers of the creator's posts.
    pub unique_viewers: u64,
    /// Likes received (each liker counted once per post).
    pub likes: u64,
    /// Comments received.
    pub comments: u64,
    /// New followers.
    pub new_followers: u64,
    /// The creator's most viewed posts of the day.
    pub top_posts: Vec<TopPost>,
    /// Views per local hour (23 or 25 entries on daylight-saving days).
    pub views_by_hour: Vec<u64>,
    /// False while the day is still running (the numbers are so far).
    pub complete: bool,
    pub generated_at: DateTime<Utc>,
}

/// A creator's day in the platform report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopCreator {
    pub user_id: UserId,
    pub views: u64,
    pub likes: u64,
    pub comments: u64,
    pub new_followers: u64,
}

/// The platform's day: `GET /v1/admin/analytics/daily`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlatformReport {
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub time_zone: String,
    /// Users who did anything (viewed, liked, commented, followed, posted, signed up).
    pub active_users: u64,
    pub new_users: u64,
    pub posts: u64,
    pub views: u64,
    pub likes: u64,
    pub comments: u64,
    pub follows: u64,
    /// Likes and comments.
    pub interactions: u64,
    /// Creators with the most views.
    pub top_creators: Vec<TopCreator>,
    pub complete: bool,
    pub generated_at: DateTime<Utc>,
}

/// A day to report on; absent: today in the service's time zone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DailyQuery {
    #[serde(default)]
    pub date: Option<NaiveDate>,
}

/// What a report run did: `POST /v1/admin/analytics/reports/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportRun {
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// Creator reports built and stored.
    pub creators: u64,
    /// Emails queued (creators and administrators); each recipient gets one per day however
    /// often the run is repeated.
    pub emails: u64,
}

/// How far behind the warehouse is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngestStatus {
    /// Events written since this instance started.
    pub events_written: u64,
    /// Time of the newest event written.
    pub newest_event_at: Option<DateTime<Utc>>,
    /// Seconds between the newest event's time and when it was written.
    pub lag_seconds: f64,
}

crate::endpoint! {
    /// The caller's creator report for a day.
    pub CreatorDaily => "analytics" . "creator_daily" : DailyQuery => CreatorReport;
    /// The platform report for a day (admin).
    pub PlatformDaily => "analytics" . "platform_daily" : DailyQuery => PlatformReport;
    /// Builds, stores and emails a day's reports now (admin); the daily schedule runs the same.
    pub RunReports => "analytics" . "run_reports" : DailyQuery => ReportRun;
    /// Ingestion state of this instance.
    pub Status => "analytics" . "status" : crate::endpoint::Empty => IngestStatus;
}

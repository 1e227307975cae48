//! Daily reports (the analytics service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Auth, QueryParams};
use axum::Json;
use axum::extract::State;
use mosaic_api::analytics::{
    CreatorDaily, CreatorReport, DailyQuery, PlatformDaily, PlatformReport, ReportRun, RunReports,
};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The analytics routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(creator_daily)).routes(routes!(platform_daily)).routes(routes!(run_reports))
}

/// The day of a report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DateParams {
    /// `YYYY-MM-DD` in the service's time zone; default: today (so far).
    #[param(value_type = Option<String>, format = Date)]
    pub date: Option<chrono::NaiveDate>,
}

/// The caller's creator report for a day: views, unique viewers, likes, comments, new
/// followers, top posts, views by hour.
#[utoipa::path(get, path = "/v1/analytics/me/daily", tag = "analytics", params(DateParams),
    responses((status = 200, body = CreatorReport), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn creator_daily(
    State(s): S,
    Auth(ctx): Auth,
    QueryParams(q): QueryParams<DateParams>,
) -> Result<Json<CreatorReport>, HttpError> {
    Ok(Json(s.mesh.call::<CreatorDaily>(&ctx, &DailyQuery { date: q.date }).await?))
}

/// The platform report for a day (administrators).
#[utoipa::path(get, path = "/v1/admin/analytics/daily", tag = "analytics", params(DateParams),
    responses((status = 200, body = PlatformReport), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn platform_daily(
    State(s): S,
    auth: Auth,
    QueryParams(q): QueryParams<DateParams>,
) -> Result<Json<PlatformReport>, HttpError> {
    auth.require_admin()?;
    Ok(Json(s.mesh.call::<PlatformDaily>(&auth.0, &DailyQuery { date: q.date }).await?))
}

/// Build, store and email a day's reports now (administrators; default: yesterday), as the
/// daily schedule does. Each recipient gets one email per day however often this runs.
#[utoipa::path(post, path = "/v1/admin/analytics/reports/run", tag = "analytics", params(DateParams),
    responses((status = 200, body = ReportRun), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn run_reports(
    State(s): S,
    auth: Auth,
    QueryParams(q): QueryParams<DateParams>,
) -> Result<Json<ReportRun>, HttpError> {
    auth.require_admin()?;
    Ok(Json(s.mesh.call::<RunReports>(&auth.0, &DailyQuery { date: q.date }).await?))
}

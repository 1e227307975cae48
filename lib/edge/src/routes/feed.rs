//! The home feed (the feed service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Auth, QueryParams};
use crate::routes::Relayed;
use axum::extract::State;
use mosaic_api::content::Post;
use mosaic_api::feed::{FeedOrder, FeedQuery, GetFeed};
use mosaic_api::{Page, PageRequest};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The feed route.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(home))
}

/// Page selection and order of the home feed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    /// `ranked` (default: by the reader's preferences) or `latest` (newest first).
    pub order: Option<FeedOrder>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (of the same order).
    pub cursor: Option<String>,
}

/// The caller's home feed: posts of the accounts they follow and their own. Ranked by
/// recency, affinity with the author, the caller's topics and engagement; `?order=latest`
/// for newest first. Pages stay stable while new posts arrive.
#[utoipa::path(get, path = "/v1/feed", tag = "feed", params(FeedParams),
    responses((status = 200, body = Page<Post>), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn home(
    State(s): State<Arc<AppState>>,
    Auth(ctx): Auth,
    QueryParams(q): QueryParams<FeedParams>,
) -> Result<Relayed, HttpError> {
    let query =
        FeedQuery { order: q.order.unwrap_or_default(), page: PageRequest { limit: q.limit, cursor: q.cursor } };
    Ok(Relayed(s.mesh.call_json::<GetFeed>(&ctx, &query).await?))
}

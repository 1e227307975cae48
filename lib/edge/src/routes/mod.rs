//! Every HTTP route of the edge, in one place, with the OpenAPI document generated from the
//! same definitions.

pub mod accounts;
pub mod analytics;
pub mod feed;
pub mod interactions;
pub mod media;
pub mod messaging;
pub mod notifications;
pub mod ops;
pub mod posts;

use crate::AppState;
use crate::error::Problem;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A service's JSON reply passed to the client as it came (see `Mesh::call_json`): the
/// hot reads return pages of posts, and decoding them only to encode them again was a
/// measurable share of the edge's work. The route's OpenAPI body names the reply's type.
pub struct Relayed(pub bytes::Bytes);

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        ([(CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Mosaic edge API", version = "1", description = "The client contract of Mosaic's edge; docs/API.md in the repository describes the same routes in prose."),
    modifiers(&BearerAuth),
    components(schemas(Problem, mosaic_api::ErrorCode)),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// All routes, and the OpenAPI document describing exactly them.
pub fn all() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::router())
        .merge(accounts::router())
        .merge(media::router())
        .merge(posts::router())
        .merge(feed::router())
        .merge(interactions::router())
        .merge(messaging::router())
        .merge(notifications::router())
        .merge(analytics::router())
        .routes(routes!(crate::ws::ws))
}

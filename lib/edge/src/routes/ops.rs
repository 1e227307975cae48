//! Operations: liveness, readiness, metrics, the OpenAPI document.

use crate::AppState;
use crate::error::{HttpError, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mosaic_api::ErrorCode;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The operational routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// Readiness and what it depends on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// NATS connection is up.
    pub nats: bool,
    /// Signing keys and revocations are loaded, so tokens can be checked.
    pub auth: bool,
    /// Which services answered `$SRV.PING` just now.
    pub services: std::collections::BTreeMap<&'static str, bool>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// NATS and token verification are ready; services are reported, not required (one being
/// down degrades its routes, not the whole edge).
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let nats = s.mesh.is_connected();
    let auth = s.auth.ready();
    let mut services = std::collections::BTreeMap::new();
    if nats {
        for name in s.services {
            services.insert(*name, s.mesh.ping_service(name, Duration::from_millis(250)).await);
        }
    }
    let ready = nats && auth;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ready" } else { "not_ready" }, nats, auth, services }))
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = Problem)))]
async fn metrics(State(s): State<Arc<AppState>>) -> Result<Response, HttpError> {
    let handle = s.metrics.as_ref().ok_or_else(|| {
        HttpError::new(ErrorCode::Unavailable, "metrics are recorded by another component of this process")
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}

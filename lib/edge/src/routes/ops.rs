//! Operations: liveness, readiness, metrics, the OpenAPI document.

use crate::AppState;
use crate::error::{HttpError, Problem};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mosaic_api::ErrorCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
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

/// Readiness, and for operators (loopback clients, or `edge.ops_token`) what it depends on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// NATS connection is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<bool>,
    /// Signing keys and revocations are loaded, so tokens can be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
    /// Which services answered `$SRV.PING` just now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<std::collections::BTreeMap<&'static str, bool>>,
}

/// Whether the caller may see the edge's internals: a client on this host (with no proxy
/// trusted in front, every client's own address), or one sending `edge.ops_token`.
fn operator(s: &AppState, headers: &HeaderMap, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> bool {
    let ip = crate::extract::client_ip_of(headers, peer.map(|p| p.0.0.ip()), s.config.trusted_proxies);
    if ip.is_some_and(|ip| ip.to_canonical().is_loopback()) {
        return true;
    }
    let Some(expected) = &s.config.ops_token else { return false };
    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Digests compared, so the time taken says nothing about how much of the token matched.
    sent.is_some_and(|t| Sha256::digest(t.as_bytes()) == Sha256::digest(expected.as_bytes()))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// NATS and token verification are ready; services are reported, not required (one being
/// down degrades its routes, not the whole edge). Only operators get the details: the
/// service pings are work any caller could otherwise make the edge do.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let nats = s.mesh.is_connected();
    let auth = s.auth.ready();
    let ready = nats && auth;
    let mut readiness =
        Readiness { status: if ready { "ready" } else { "not_ready" }, nats: None, auth: None, services: None };
    if operator(&s, &headers, peer) {
        let mut services = std::collections::BTreeMap::new();
        if nats {
            for name in s.services {
                services.insert(*name, s.mesh.ping_service(name, Duration::from_millis(250)).await);
            }
        }
        readiness = Readiness { nats: Some(nats), auth: Some(auth), services: Some(services), ..readiness };
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String), (status = 403, body = Problem), (status = 503, body = Problem)))]
async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, HttpError> {
    if !operator(&s, &headers, peer) {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            "metrics are served to loopback clients and to callers sending edge.ops_token",
        ));
    }
    let handle = s.metrics.as_ref().ok_or_else(|| {
        HttpError::new(ErrorCode::Unavailable, "metrics are recorded by another component of this process")
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}

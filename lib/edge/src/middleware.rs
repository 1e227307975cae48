//! Cross-cutting request handling: per-IP rate limits, metrics, and `Idempotency-Key`.

use crate::AppState;
use crate::error::problem;
use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use governor::clock::{Clock, DefaultClock};
use mosaic_api::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Per-IP token buckets.
pub type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Headers every answer carries: browsers must not guess a type other than the one sent
/// (an upload sniffed as HTML would run as this origin). Over TLS, which the edge sees only
/// through a trusted proxy's `X-Forwarded-Proto`, browsers are also told to use nothing
/// else for a year (HSTS); over plain HTTP the header would be ignored, or pin a developer's
/// `localhost`.
pub async fn security_headers(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let over_tls = s.config.trusted_proxies > 0 && forwarded_proto(req.headers()) == Some("https");
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    if over_tls {
        headers.entry(header::STRICT_TRANSPORT_SECURITY).or_insert(HeaderValue::from_static("max-age=31536000"));
    }
    res
}

/// The scheme the nearest proxy says the client used: the last value it appended.
fn forwarded_proto(headers: &axum::http::HeaderMap) -> Option<&str> {
    let last = headers.get_all("x-forwarded-proto").iter().filter_map(|v| v.to_str().ok()).next_back()?;
    last.rsplit(',').next().map(str::trim)
}

/// Answers 429 with `Retry-After` to clients over their rate.
pub async fn rate_limit(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(limiter) = &s.limiter
        && !OPS_PATHS.contains(&req.uri().path())
    {
        let (parts, body) = req.into_parts();
        let ip = crate::extract::client_ip(&parts, s.config.trusted_proxies);
        let req = Request::from_parts(parts, body);
        if let Some(ip) = ip
            && let Err(not_until) = limiter.check_key(&ip)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return problem(ApiError::rate_limited("too many requests from this address", secs));
        }
        return next.run(req).await;
    }
    next.run(req).await
}

/// Counts requests and their latency per route and status.
pub async fn metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// A stored first reply, or the marker of a request still running.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    /// Unix seconds when the first request started.
    started: i64,
    #[serde(default)]
    done: Option<Done>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// A first request that has been running longer than this is presumed dead (its edge
/// crashed) and a retry may take over.
const PENDING_TIMEOUT_SECS: i64 = 60;
/// Replies larger than this are not stored (the key is released instead).
const MAX_STORED_REPLY: usize = 1024 * 1024;

/// Replays the first reply to a retried write carrying the same `Idempotency-Key`.
///
/// Keys are scoped to the caller (their `Authorization` header, or their address when
/// anonymous), the method and the path. A retry with a different body is refused (422); a
/// retry while the first attempt still runs gets 409 with `Retry-After`. Server errors are
/// not stored, so a retry after a 5xx runs again.
pub async fn idempotency(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(bucket) = s.idempotency.as_ref() else { return next.run(req).await };
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key").cloned() else { return next.run(req).await };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return problem(ApiError::new(
                ErrorCode::BadRequest,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
    };
    let (parts, body) = req.into_parts();
    // JSON bodies are small and fingerprinted by content; uploads are streamed and never
    // buffered here, so they are fingerprinted by type and length.
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("application/json"));
    let (body, fingerprint_source): (Body, bytes::Bytes) = if is_json {
        match to_bytes(body, s.config.max_json_body_bytes).await {
            Ok(b) => (Body::from(b.clone()), b),
            Err(_) => return problem(ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")),
        }
    } else {
        let described =
            format!("{:?}|{:?}", parts.headers.get(header::CONTENT_TYPE), parts.headers.get(header::CONTENT_LENGTH));
        (body, bytes::Bytes::from(described))
    };
    let caller = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| crate::extract::client_ip(&parts, s.config.trusted_proxies).map(|ip| ip.to_string().into_bytes()))
        .unwrap_or_default();
    let scope = hex(&Sha256::new()
        .chain_update(&caller)
        .chain_update([0])
        .chain_update(parts.method.as_str())
        .chain_update([0])
        .chain_update(parts.uri.path())
        .chain_update([0])
        .chain_update(&key)
        .finalize());
    let fingerprint = hex(&Sha256::digest(&fingerprint_source));
    let now = chrono::Utc::now().timestamp();
    let pending = Stored { fingerprint: fingerprint.clone(), started: now, done: None };
    let pending_bytes = bytes::Bytes::from(serde_json::to_vec(&pending).expect("serializes"));

    let claimed = match bucket.create(&scope, pending_bytes.clone()).await {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(e) => {
            // Without the store we cannot promise idempotency; running the request is still
            // better than failing it.
            tracing::warn!(error = format!("{e:#}"), "idempotency store unavailable");
            return next.run(Request::from_parts(parts, body)).await;
        }
    };
    if !claimed {
        match bucket.get(&scope).await {
            Ok(Some(existing)) => {
                let stored: Stored = match serde_json::from_slice(&existing.value) {
                    Ok(s) => s,
                    Err(_) => return problem(ApiError::internal()),
                };
                if stored.fingerprint != fingerprint {
                    return problem(ApiError::new(
                        ErrorCode::IdempotencyKeyReused,
                        "this Idempotency-Key was used with a different request body",
                    ));
                }
                if let Some(done) = stored.done {
                    return replay(done);
                }
                let abandoned = now - stored.started > PENDING_TIMEOUT_SECS;
                let took_over =
                    abandoned && matches!(bucket.update(&scope, pending_bytes, existing.revision).await, Ok(Some(_)));
                if !took_over {
                    let mut e = ApiError::new(
                        ErrorCode::IdempotencyInProgress,
                        "a request with this Idempotency-Key is still running",
                    );
                    e.retry_after = Some(1);
                    return problem(e);
                }
            }
            // Released between our create and get: run it.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "idempotency store unavailable");
                return problem(ApiError::new(ErrorCode::Unavailable, "could not check the Idempotency-Key; retry"));
            }
        }
    }

    let response = next.run(Request::from_parts(parts, body)).await;
    let status = response.status();
    if status.is_server_error() {
        let _ = bucket.delete(&scope).await;
        return response;
    }
    let (mut res_parts, res_body) = response.into_parts();
    let bytes = match to_bytes(res_body, MAX_STORED_REPLY).await {
        Ok(b) => b,
        Err(_) => {
            let _ = bucket.delete(&scope).await;
            return problem(ApiError::internal());
        }
    };
    let done = Done {
        status: status.as_u16(),
        content_type: res_parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
        body: STANDARD.encode(&bytes),
    };
    let stored = Stored { fingerprint, started: now, done: Some(done) };
    if let Err(e) = bucket.put_json(&scope, &stored).await {
        tracing::warn!(error = format!("{e:#}"), "could not store idempotent reply");
    }
    res_parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(res_parts, Body::from(bytes))
}

fn replay(done: Done) -> Response {
    let status = StatusCode::from_u16(done.status).unwrap_or(StatusCode::OK);
    let body = STANDARD.decode(done.body).unwrap_or_default();
    let mut response = (status, body).into_response();
    if let Some(ct) = done.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

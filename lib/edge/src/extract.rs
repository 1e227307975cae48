//! Request extractors that turn HTTP into a service call: who is calling (verified locally),
//! the request context, and bodies and paths whose rejections are problem+json.

use crate::AppState;
use crate::error::HttpError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use mosaic_api::user::Role;
use mosaic_api::{ApiError, ErrorCode, Id, UserId};
use mosaic_mesh::Ctx;
use mosaic_mesh::trace::TraceContext;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The context of an anonymous request.
pub struct Anon(pub Ctx);

/// The context of an authenticated request; `0.user` is the verified caller.
pub struct Auth(pub Ctx);

impl Auth {
    /// The verified caller.
    pub fn user(&self) -> &UserId {
        self.0.user().expect("Auth always carries a user")
    }
}

/// The client's address: with `trusted_proxies` proxies in front, the address the
/// outermost one saw, `trusted_proxies` hops from the right of `X-Forwarded-For` (what lies
/// further left the client wrote itself); without, the socket's peer.
pub fn client_ip(parts: &Parts, trusted_proxies: usize) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    client_ip_of(&parts.headers, peer, trusted_proxies)
}

/// [`client_ip`] from the headers and the socket's peer.
pub fn client_ip_of(headers: &HeaderMap, peer: Option<IpAddr>, trusted_proxies: usize) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    // Every header line counts: a client can send its own, which the proxies append to.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Fewer hops than proxies: the request did not come through them all; only the peer
    // is known.
    let hop = hops.len().checked_sub(trusted_proxies).map(|i| hops[i]);
    match hop {
        Some(hop) => hop.parse().ok().or(peer),
        None => peer,
    }
}

fn base_ctx(parts: &Parts, state: &AppState) -> Ctx {
    let mut ctx = Ctx::new().with_timeout(Duration::from_secs(state.config.request_timeout_secs));
    if let Some(trace) = header_str(&parts.headers, "traceparent").and_then(TraceContext::parse) {
        ctx.trace = trace;
    }
    ctx.request_id = header_str(&parts.headers, "x-request-id").map(str::to_owned);
    ctx.client_ip = client_ip(parts, state.config.trusted_proxies);
    ctx
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<AppState>> for Anon {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        Ok(Anon(base_ctx(parts, state)))
    }
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("an `Authorization: Bearer <access_token>` header is required"))?;
        let claims = state.auth.verify(token).await?;
        Ok(Auth(base_ctx(parts, state).authenticated(token, claims)))
    }
}

impl Auth {
    /// `forbidden` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), HttpError> {
        if self.0.role() == Role::Admin {
            Ok(())
        } else {
            Err(HttpError::new(ErrorCode::Forbidden, "this operation is for administrators"))
        }
    }
}

/// A JSON body whose every rejection is problem+json: malformed JSON 400, wrong types or
/// unknown fields 422, missing/wrong content type 415, too large 413.
pub struct JsonBody<T>(pub T);

/// Bodies declared larger than the limit are read and thrown away up to this size before
/// answering 413, so the client gets the answer instead of a reset connection mid-upload.
const DRAIN_OVERSIZED_UP_TO: u64 = 64 * 1024 * 1024;

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > state.config.max_json_body_bytes as u64) {
            if declared.is_some_and(|n| n <= DRAIN_OVERSIZED_UP_TO) {
                drain(req.into_body()).await;
            }
            return Err(HttpError::new(ErrorCode::PayloadTooLarge, "the request body is too large"));
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> HttpError {
    match rejection {
        JsonRejection::JsonDataError(e) => HttpError::new(ErrorCode::ValidationFailed, e.body_text()),
        JsonRejection::JsonSyntaxError(e) => HttpError::new(ErrorCode::BadRequest, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            HttpError::new(ErrorCode::UnsupportedMediaType, "expected `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            HttpError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        other => HttpError::new(ErrorCode::BadRequest, other.body_text()),
    }
}

/// An optional JSON body: absent (no content) is `None`, present must be valid.
pub struct OptionalJson<T>(pub Option<T>);

async fn drain(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_OVERSIZED_UP_TO {
                break;
            }
        }
    })
    .await;
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for OptionalJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let empty = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (!req.headers().contains_key(header::CONTENT_TYPE)
                && !req.headers().contains_key(header::TRANSFER_ENCODING));
        if empty {
            return Ok(OptionalJson(None));
        }
        JsonBody::from_request(req, state).await.map(|JsonBody(v)| OptionalJson(Some(v)))
    }
}

/// A user id from the path; anything that cannot be an id is `not_found`.
pub struct PathUser(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for PathUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state).await.map_err(path_rejection)?;
        UserId::parse(&raw).map(PathUser).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such user"))
    }
}

fn path_rejection(e: PathRejection) -> HttpError {
    HttpError::new(ErrorCode::NotFound, e.body_text())
}

/// A query string whose rejection is 422 problem+json.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> HttpError {
    HttpError::new(ErrorCode::ValidationFailed, e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut req = axum::http::Request::builder();
        for line in forwarded {
            req = req.header("x-forwarded-for", *line);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo::<SocketAddr>(format!("{peer}:443").parse().unwrap()));
        parts
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_client_is_counted_from_the_right_through_the_trusted_proxies() {
        // No proxy: whatever the client wrote is ignored.
        assert_eq!(client_ip(&parts("198.51.100.1", &["1.2.3.4"]), 0), ip("198.51.100.1"));
        // One proxy appends the address it saw; the client's own entries are further left.
        let spoofed = parts("10.0.0.2", &["1.2.3.4, 203.0.113.7"]);
        assert_eq!(client_ip(&spoofed, 1), ip("203.0.113.7"));
        // Two proxies, the client's line and the proxies' line apart.
        let chained = parts("10.0.0.3", &["1.2.3.4", "203.0.113.7, 10.0.0.2"]);
        assert_eq!(client_ip(&chained, 2), ip("203.0.113.7"));
        // Fewer hops than proxies: only the peer is known.
        assert_eq!(client_ip(&parts("10.0.0.2", &[]), 1), ip("10.0.0.2"));
        assert_eq!(client_ip(&parts("10.0.0.3", &["203.0.113.7"]), 2), ip("10.0.0.3"));
    }
}

//! HTTP side of the error policy: every failure leaves the edge as RFC 9457
//! `application/problem+json` with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mosaic_api::{ApiError, ErrorCode};
use mosaic_mesh::CallError;
use serde::Serialize;
use utoipa::ToSchema;

/// Problem details (RFC 9457) with Mosaic's machine code.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: ErrorCode,
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl HttpError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self(ApiError::new(code, detail))
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<CallError> for HttpError {
    fn from(e: CallError) -> Self {
        if !matches!(e, CallError::Api(_)) {
            tracing::warn!(error = %e, "service call failed");
        }
        Self(e.to_api_error())
    }
}

impl From<anyhow::Error> for HttpError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "request failed");
        Self(ApiError::internal())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        problem(self.0)
    }
}

/// Renders an [`ApiError`] as problem+json, with `Retry-After` when it has one.
pub fn problem(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Problem {
        type_: format!("https://mosaic.dev/problems/{}", e.code.as_str().replace('_', "-")),
        title: e.code.title().to_owned(),
        status: status.as_u16(),
        detail: e.detail,
        code: e.code,
    };
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Some(secs) = e.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

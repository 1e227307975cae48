//! The workspace's error policy, on the wire.
//!
//! * Every failure a client or another service can act on has a stable [`ErrorCode`]. The
//!   code, not the message, is the contract; messages are for humans and may change.
//! * Services use `anyhow` internally and convert to [`ApiError`] at their boundary. An
//!   unexpected failure becomes [`ErrorCode::Internal`] with a generic detail; its cause is
//!   logged with the trace id, never sent.
//! * Infrastructure failures keep their meaning: no responder is `unavailable` (503), a
//!   missed deadline is `timeout` (504).
//! * Over NATS an error travels as the micro spec's `Nats-Service-Error` (the detail) and
//!   `Nats-Service-Error-Code` (the HTTP-like status) headers, plus
//!   [`crate::headers::ERROR_CODE`] carrying the machine code.
//! * The edge turns it into RFC 9457 `application/problem+json` with the code in `code`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request could not be read (malformed JSON, bad query string, bad header).
    BadRequest,
    /// The request was read but a field is invalid (wrong type, out of range, unknown).
    ValidationFailed,
    /// A password does not meet the password policy.
    WeakPassword,
    /// No credentials, or credentials that cannot be verified.
    Unauthorized,
    /// The access token has expired; refresh it.
    TokenExpired,
    /// Wrong login or password.
    InvalidCredentials,
    /// A refresh token was presented twice; its whole session family was revoked.
    RefreshTokenReused,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The account is suspended.
    AccountSuspended,
    /// The resource does not exist (or its existence is private).
    NotFound,
    /// The HTTP method is not supported on this route.
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// The username is already in use.
    UsernameTaken,
    /// The email address is already in use.
    EmailTaken,
    /// A request with the same `Idempotency-Key` is still being processed.
    IdempotencyInProgress,
    /// The `Idempotency-Key` was already used for a different request.
    IdempotencyKeyReused,
    /// Media referenced by a post is still processing.
    MediaNotReady,
    /// The body is larger than the route allows.
    PayloadTooLarge,
    /// The upload would exceed the user's storage quota.
    QuotaExceeded,
    /// The body's type is not accepted, or is not what its `Content-Type` claims.
    UnsupportedMediaType,
    /// Too many requests; retry after the indicated delay.
    RateLimited,
    /// An unexpected failure; details are in the server log under the trace id.
    Internal,
    /// A dependency is unreachable; retrying later may succeed.
    Unavailable,
    /// The request's deadline passed before it completed.
    Timeout,
}

impl ErrorCode {
    /// The HTTP status the edge answers with; also sent as `Nats-Service-Error-Code`.
    pub const fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest => 400,
            ValidationFailed | WeakPassword => 422,
            Unauthorized | TokenExpired | InvalidCredentials | RefreshTokenReused => 401,
            Forbidden | AccountSuspended => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Conflict | UsernameTaken | EmailTaken | IdempotencyInProgress | MediaNotReady => 409,
            IdempotencyKeyReused => 422,
            PayloadTooLarge | QuotaExceeded => 413,
            UnsupportedMediaType => 415,
            RateLimited => 429,
            Internal => 500,
            Unavailable => 503,
            Timeout => 504,
        }
    }

    /// The code as it appears on the wire (`snake_case`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            ValidationFailed => "validation_failed",
            WeakPassword => "weak_password",
            Unauthorized => "unauthorized",
            TokenExpired => "token_expired",
            InvalidCredentials => "invalid_credentials",
            RefreshTokenReused => "refresh_token_reused",
            Forbidden => "forbidden",
            AccountSuspended => "account_suspended",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            UsernameTaken => "username_taken",
            EmailTaken => "email_taken",
            IdempotencyInProgress => "idempotency_in_progress",
            IdempotencyKeyReused => "idempotency_key_reused",
            MediaNotReady => "media_not_ready",
            PayloadTooLarge => "payload_too_large",
            QuotaExceeded => "quota_exceeded",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            Internal => "internal",
            Unavailable => "unavailable",
            Timeout => "timeout",
        }
    }

    /// Parses a wire code; unknown codes (from a newer peer) yield `None`.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// The closest code for a bare status number, for replies from peers that sent no
    /// machine code.
    pub fn from_status(status: u16) -> Self {
        use ErrorCode::*;
        match status {
            400 => BadRequest,
            401 => Unauthorized,
            403 => Forbidden,
            404 => NotFound,
            405 => MethodNotAllowed,
            409 => Conflict,
            413 => PayloadTooLarge,
            415 => UnsupportedMediaType,
            422 => ValidationFailed,
            429 => RateLimited,
            503 => Unavailable,
            504 => Timeout,
            _ => Internal,
        }
    }

    /// A short human title for problem+json bodies.
    pub fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "Bad request",
            ValidationFailed => "Validation failed",
            WeakPassword => "Password too weak",
            Unauthorized => "Unauthorized",
            TokenExpired => "Token expired",
            InvalidCredentials => "Invalid credentials",
            RefreshTokenReused => "Refresh token reused",
            Forbidden => "Forbidden",
            AccountSuspended => "Account suspended",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Conflict => "Conflict",
            UsernameTaken => "Username taken",
            EmailTaken => "Email taken",
            IdempotencyInProgress => "Request in progress",
            IdempotencyKeyReused => "Idempotency key reused",
            MediaNotReady => "Media not ready",
            PayloadTooLarge => "Payload too large",
            QuotaExceeded => "Storage quota exceeded",
            UnsupportedMediaType => "Unsupported media type",
            RateLimited => "Too many requests",
            Internal => "Internal error",
            Unavailable => "Service unavailable",
            Timeout => "Timeout",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a service reports to its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The stable machine code.
    pub code: ErrorCode,
    /// A human-readable explanation, safe to show to the client.
    pub detail: String,
    /// For `rate_limited`: seconds until a retry may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a client-safe detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), retry_after: None }
    }
    /// `validation_failed` with the given detail.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, detail)
    }
    /// `not_found` with the given detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }
    /// `forbidden` with the given detail.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }
    /// `unauthorized` with the given detail.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }
    /// `rate_limited`, retryable after `secs` seconds.
    pub fn rate_limited(detail: impl Into<String>, secs: u64) -> Self {
        Self { code: ErrorCode::RateLimited, detail: detail.into(), retry_after: Some(secs.max(1)) }
    }
    /// `internal` with a generic detail; the cause belongs in the log, not here.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "an unexpected error occurred")
    }
    /// The HTTP-like status of the code.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_names() {
        for code in
            [ErrorCode::UsernameTaken, ErrorCode::RateLimited, ErrorCode::Internal, ErrorCode::RefreshTokenReused]
        {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(ErrorCode::parse("from_the_future"), None);
    }

    #[test]
    fn client_errors_are_4xx_and_outages_5xx() {
        assert_eq!(ErrorCode::ValidationFailed.status(), 422);
        assert_eq!(ErrorCode::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorCode::Unavailable.status(), 503);
        assert_eq!(ErrorCode::Timeout.status(), 504);
    }
}

//! NATS header names of the request context. Any client in any language that sets these can
//! call a Mosaic service; who the caller is comes only from the token it carries, which
//! every service verifies.

/// W3C trace context (`00-<trace-id>-<span-id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";
/// The caller's access token (the JWT the user service issued), carried on by every call
/// made on the caller's behalf. Absent for anonymous calls and background work.
pub const TOKEN: &str = "Mosaic-Token";
/// The end client's IP address as seen by the edge, for throttling.
pub const CLIENT_IP: &str = "Mosaic-Client-Ip";
/// The HTTP request id, so service logs and edge logs join up.
pub const REQUEST_ID: &str = "Mosaic-Request-Id";
/// Absolute deadline in milliseconds since the Unix epoch; work past it is wasted.
pub const DEADLINE: &str = "Mosaic-Deadline";
/// On error replies: the stable machine code (see [`crate::ErrorCode`]).
pub const ERROR_CODE: &str = "Mosaic-Error-Code";
/// On `rate_limited` error replies: seconds until a retry may succeed.
pub const RETRY_AFTER: &str = "Mosaic-Retry-After";
/// The micro spec's error description header.
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// The micro spec's error code header (an HTTP-like status number).
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// JetStream de-duplication id.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

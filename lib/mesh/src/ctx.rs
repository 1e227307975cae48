//! The request context that travels with every call: who is asking, until when, and which
//! trace the work belongs to.

use crate::trace::TraceContext;
use async_nats::HeaderMap;
use mosaic_api::headers as h;
use mosaic_api::user::Role;
use mosaic_api::{ApiError, Id, SessionId, UserId};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default time a call may take when nobody upstream set a deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Context of one request, built by the edge (or any caller) and read by services.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The authenticated caller; `None` for anonymous calls (signup, login).
    pub user: Option<UserId>,
    /// The caller's role; only meaningful with `user`.
    pub role: Role,
    /// The caller's session.
    pub session: Option<SessionId>,
    /// The end client's address, for per-IP throttling.
    pub client_ip: Option<IpAddr>,
    /// The HTTP request id, to join edge and service logs.
    pub request_id: Option<String>,
    /// Trace position of this request.
    pub trace: TraceContext,
    /// Absolute deadline, milliseconds since the Unix epoch.
    deadline_ms: i64,
}

impl Ctx {
    /// A fresh context: new trace, anonymous, default deadline.
    pub fn new() -> Self {
        Self {
            user: None,
            role: Role::User,
            session: None,
            client_ip: None,
            request_id: None,
            trace: TraceContext::new_root(),
            deadline_ms: now_ms() + DEFAULT_TIMEOUT.as_millis() as i64,
        }
    }

    /// A context acting as `user` (for background work on a user's behalf).
    pub fn for_user(user: UserId) -> Self {
        Self { user: Some(user), ..Self::new() }
    }

    /// Replaces the deadline with `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline_ms = now_ms() + timeout.as_millis() as i64;
        self
    }

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis((self.deadline_ms - now_ms()).max(0) as u64)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        now_ms() >= self.deadline_ms
    }

    /// The caller's id, or `unauthorized` for anonymous calls.
    pub fn require_user(&self) -> Result<&UserId, ApiError> {
        self.user.as_ref().ok_or_else(|| ApiError::unauthorized("this operation needs an authenticated caller"))
    }

    /// `forbidden` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<&UserId, ApiError> {
        let user = self.require_user()?;
        if self.role == Role::Admin {
            Ok(user)
        } else {
            Err(ApiError::forbidden("this operation is for administrators"))
        }
    }

    /// Headers for an outgoing call made on behalf of this context (a child span).
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(h::TRACEPARENT, self.trace.child().header().as_str());
        headers.insert(h::DEADLINE, self.deadline_ms.to_string().as_str());
        if let Some(user) = &self.user {
            headers.insert(h::USER, user.as_str());
            headers.insert(h::ROLE, self.role.as_str());
        }
        if let Some(session) = &self.session {
            headers.insert(h::SESSION, session.as_str());
        }
        if let Some(ip) = &self.client_ip {
            headers.insert(h::CLIENT_IP, ip.to_string().as_str());
        }
        if let Some(id) = &self.request_id {
            headers.insert(h::REQUEST_ID, id.as_str());
        }
        headers
    }

    /// The context a handler in this process sees for a call made on behalf of this one:
    /// what [`Ctx::from_headers`] of [`Ctx::to_headers`] gives, without the headers.
    pub(crate) fn for_callee(&self) -> Self {
        Self { trace: self.trace.child(), ..self.clone() }
    }

    /// Reads the context of an incoming request. Missing or malformed headers fall back to
    /// safe defaults (anonymous, new trace, default deadline) rather than failing the call.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Self {
        let mut ctx = Self::new();
        let Some(headers) = headers else { return ctx };
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        if let Some(trace) = get(h::TRACEPARENT).as_deref().and_then(TraceContext::parse) {
            ctx.trace = trace;
        }
        if let Some(deadline) = get(h::DEADLINE).and_then(|v| v.parse::<i64>().ok()) {
            ctx.deadline_ms = deadline;
        }
        ctx.user = get(h::USER).as_deref().and_then(UserId::parse);
        ctx.role = get(h::ROLE).as_deref().and_then(Role::parse).unwrap_or_default();
        ctx.session = get(h::SESSION).as_deref().and_then(SessionId::parse);
        ctx.client_ip = get(h::CLIENT_IP).and_then(|v| v.parse().ok());
        ctx.request_id = get(h::REQUEST_ID).filter(|v| v.len() <= 128);
        ctx
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_survives_the_trip_through_headers() {
        let mut ctx = Ctx::for_user(UserId::parse("u1").unwrap());
        ctx.role = Role::Admin;
        ctx.client_ip = Some("10.1.2.3".parse().unwrap());
        ctx.request_id = Some("req-1".into());
        let back = Ctx::from_headers(Some(&ctx.to_headers()));
        assert_eq!(back.user, ctx.user);
        assert_eq!(back.role, Role::Admin);
        assert_eq!(back.client_ip, ctx.client_ip);
        assert_eq!(back.request_id.as_deref(), Some("req-1"));
        assert_eq!(back.trace.trace_id(), ctx.trace.trace_id());
        assert_eq!(back.deadline_ms, ctx.deadline_ms);
    }

    #[test]
    fn forged_or_broken_headers_fall_back_to_anonymous() {
        let mut headers = HeaderMap::new();
        headers.insert(h::USER, "a.b.>");
        headers.insert(h::ROLE, "root");
        headers.insert(h::DEADLINE, "soon");
        let ctx = Ctx::from_headers(Some(&headers));
        assert!(ctx.user.is_none());
        assert_eq!(ctx.role, Role::User);
        assert!(!ctx.expired());
    }
}

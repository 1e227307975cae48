//! The request context that travels with every call: who is asking, until when, and which
//! trace the work belongs to.
//!
//! Who is asking is never taken from the wire: a context names a caller only once the
//! caller's access token was verified (at the edge, or by the service a call arrives at; see
//! [`crate::identity`]), and calls made on its behalf carry the token, not the identity.

use crate::trace::TraceContext;
use async_nats::HeaderMap;
use mosaic_api::headers as h;
use mosaic_api::user::{AccessClaims, Role};
use mosaic_api::{ApiError, SessionId, UserId};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default time a call may take when nobody upstream set a deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Context of one request, built by the edge (or any caller) and read by services.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The verified caller; `None` for anonymous calls (signup, login) and background work.
    caller: Option<Arc<Caller>>,
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
            caller: None,
            client_ip: None,
            request_id: None,
            trace: TraceContext::new_root(),
            deadline_ms: now_ms() + DEFAULT_TIMEOUT.as_millis() as i64,
        }
    }

    /// This context as the caller whose access token `token` was verified to carry
    /// `claims`. Only a verifier calls this ([`crate::identity::Authenticator::verify`]):
    /// a context that names a caller is one whose token checked out.
    pub fn authenticated(mut self, token: &str, claims: AccessClaims) -> Self {
        self.caller = Some(Arc::new(Caller { token: token.into(), claims }));
        self
    }

    /// The verified caller, if any.
    pub fn user(&self) -> Option<&UserId> {
        self.caller.as_ref().map(|c| &c.claims.sub)
    }

    /// The verified caller's role (`user` for anonymous calls).
    pub fn role(&self) -> Role {
        self.caller.as_ref().map_or(Role::User, |c| c.claims.role)
    }

    /// The verified caller's session.
    pub fn session(&self) -> Option<&SessionId> {
        self.caller.as_ref().map(|c| &c.claims.sid)
    }

    /// The verified caller's token claims.
    pub fn claims(&self) -> Option<&AccessClaims> {
        self.caller.as_ref().map(|c| &c.claims)
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
        self.user().ok_or_else(|| ApiError::unauthorized("this operation needs an authenticated caller"))
    }

    /// `forbidden` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<&UserId, ApiError> {
        let user = self.require_user()?;
        if self.role() == Role::Admin {
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
        if let Some(caller) = &self.caller {
            headers.insert(h::TOKEN, &*caller.token);
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

    /// Reads the context of an incoming request, anonymous: the caller's token, if it
    /// carries one, is returned for the receiver to verify. Missing or malformed headers fall
    /// back to safe defaults (new trace, default deadline) rather than failing the call.
    pub fn from_headers(headers: Option<&HeaderMap>) -> (Self, Option<String>) {
        let mut ctx = Self::new();
        let Some(headers) = headers else { return (ctx, None) };
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        if let Some(trace) = get(h::TRACEPARENT).as_deref().and_then(TraceContext::parse) {
            ctx.trace = trace;
        }
        if let Some(deadline) = get(h::DEADLINE).and_then(|v| v.parse::<i64>().ok()) {
            ctx.deadline_ms = deadline;
        }
        ctx.client_ip = get(h::CLIENT_IP).and_then(|v| v.parse().ok());
        ctx.request_id = get(h::REQUEST_ID).filter(|v| v.len() <= 128);
        (ctx, get(h::TOKEN))
    }
}

/// A verified caller and the token that proved it.
struct Caller {
    token: Box<str>,
    claims: AccessClaims,
}

impl std::fmt::Debug for Caller {
    /// The claims, never the token: contexts end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("user", &self.claims.sub).field("role", &self.claims.role).finish()
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

/// The address a client is counted by: an IPv4 address, or the /64 of an IPv6 one (one
/// subscriber usually holds a whole /64 and can pick any address in it).
pub fn client_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_api::Id as _;

    fn claims(role: Role) -> AccessClaims {
        AccessClaims {
            sub: UserId::parse("u1").unwrap(),
            sid: SessionId::parse("s1").unwrap(),
            role,
            iat: 0,
            iat_ms: 0,
            exp: i64::MAX,
            iss: mosaic_api::user::TOKEN_ISSUER.into(),
        }
    }

    #[test]
    fn a_call_carries_the_token_and_the_callee_starts_anonymous() {
        let mut ctx = Ctx::new().authenticated("header.claims.signature", claims(Role::Admin));
        ctx.client_ip = Some("10.1.2.3".parse().unwrap());
        ctx.request_id = Some("req-1".into());
        let (back, token) = Ctx::from_headers(Some(&ctx.to_headers()));
        assert_eq!(token.as_deref(), Some("header.claims.signature"));
        assert_eq!(back.user(), None, "identity comes from verifying the token, never from headers");
        assert_eq!(back.role(), Role::User);
        assert_eq!(back.client_ip, ctx.client_ip);
        assert_eq!(back.request_id.as_deref(), Some("req-1"));
        assert_eq!(back.trace.trace_id(), ctx.trace.trace_id());
        assert_eq!(back.deadline_ms, ctx.deadline_ms);
    }

    #[test]
    fn identity_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("Mosaic-User", "u1");
        headers.insert("Mosaic-Role", "admin");
        headers.insert(h::DEADLINE, "soon");
        let (ctx, token) = Ctx::from_headers(Some(&headers));
        assert!(ctx.user().is_none() && token.is_none());
        assert_eq!(ctx.role(), Role::User);
        assert!(!ctx.expired());
    }

    #[test]
    fn a_context_never_prints_its_token() {
        let ctx = Ctx::new().authenticated("secret-token", claims(Role::User));
        assert!(!format!("{ctx:?}").contains("secret-token"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = client_network("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_network("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let other = client_network("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(client_network("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(client_network("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}

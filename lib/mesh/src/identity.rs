//! Who is asking: access-token verification without a request per call.
//!
//! Identity in the mesh is never a header a caller writes: a call made for a user carries
//! the user's access token, and every service that takes the call verifies it itself, as
//! the edge did. Each process holds the user service's public keys (fetched over NATS on
//! first use, again when a token names an unknown `kid`, and every minute) and a copy of
//! the revocations bucket kept current by a KV watch. Verifying a token is a signature
//! check and two map lookups; a token seen before skips the signature check (clients send
//! the same token for its whole life, and a call chain forwards it), its expiry and
//! revocation are still checked on every call.

use crate::client::{Mesh, WeakMesh};
use crate::ctx::Ctx;
use crate::kv::Bucket;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use mosaic_api::stream::REVOCATIONS;
use mosaic_api::user::{AccessClaims, GetJwks, Jwks, Revocation, TOKEN_ISSUER};
use mosaic_api::{ApiError, ErrorCode, Id, SessionId, UserId, endpoint::Empty};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Longest access-token lifetime the user service allows; older revocations can void nothing.
const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Least time between two JWKS fetches caused by unknown `kid`s (forged tokens must not
/// turn into a request flood).
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(1);
/// Tokens whose signature this process remembers having checked (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 50_000;
/// How long a call waits for the revocation snapshot of a process that just started.
const READY_WAIT: Duration = Duration::from_secs(3);

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    jwks: Jwks,
}

/// Verifies access tokens and tracks revocations. One per process: see [`Mesh::identity`].
pub struct Authenticator {
    /// Not scoped to a component: verifying callers is the mesh's work, not a use any
    /// component declares. Weak, because the mesh owns the process's authenticator.
    mesh: WeakMesh,
    keys: ArcSwap<KeySet>,
    sessions: DashMap<SessionId, Revocation>,
    users: DashMap<UserId, Revocation>,
    revocations_synced: AtomicBool,
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    /// Tokens whose signature, issuer and key checked out, by their exact text: an Ed25519
    /// verification is most of a request's own cost at the edge. Emptied when the key set
    /// changes, so a key withdrawn from the JWK Set stops verifying at once.
    verified: quick_cache::sync::Cache<Box<str>, AccessClaims>,
}

impl Authenticator {
    /// An authenticator with no keys yet; see [`Authenticator::start`].
    fn new(mesh: WeakMesh, clock_skew_secs: u64) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = clock_skew_secs;
        Arc::new(Self {
            mesh,
            keys: ArcSwap::from_pointee(KeySet { keys: HashMap::new(), jwks: Jwks::default() }),
            sessions: DashMap::new(),
            users: DashMap::new(),
            revocations_synced: AtomicBool::new(false),
            last_refetch: tokio::sync::Mutex::new(None),
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        })
    }

    /// An authenticator that keeps its keys and revocations current in the background for
    /// as long as it is referenced, allowing `clock_skew_secs` of difference between the
    /// clocks of the token's issuer and this process. Its tasks hold it weakly: they end
    /// once the last handle is gone, so a closed mesh leaks nothing.
    pub async fn start(mesh: &Mesh, clock_skew_secs: u64) -> anyhow::Result<Arc<Self>> {
        let this = Self::new(mesh.downgrade(), clock_skew_secs);
        tokio::spawn(watch_revocations(Arc::downgrade(&this)));
        tokio::spawn(refresh_keys_every_minute(Arc::downgrade(&this)));
        Ok(this)
    }

    /// Waits up to `wait` for the keys and the revocation snapshot; whether they came.
    pub async fn wait_ready(&self, wait: Duration) -> bool {
        wait_for(wait, || self.ready()).await
    }

    /// Whether tokens can be verified: keys loaded and revocations caught up.
    pub fn ready(&self) -> bool {
        !self.keys.load().keys.is_empty() && self.revocations_synced.load(Ordering::Acquire)
    }

    /// The public keys as last fetched.
    pub fn jwks(&self) -> Jwks {
        self.keys.load().jwks.clone()
    }

    /// Fetches the JWK Set from the user service.
    pub async fn refresh_keys(&self) -> anyhow::Result<()> {
        let ctx = Ctx::new().with_timeout(Duration::from_secs(3));
        let mesh = self.mesh.upgrade().ok_or_else(|| anyhow::anyhow!("the mesh is closed"))?;
        let jwks = mesh.call::<GetJwks>(&ctx, &Empty {}).await?;
        let mut keys = HashMap::with_capacity(jwks.keys.len());
        for jwk in &jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            match DecodingKey::from_ed_components(&jwk.x) {
                Ok(key) => {
                    keys.insert(jwk.kid.clone(), key);
                }
                Err(e) => tracing::warn!(kid = %jwk.kid, error = %e, "ignoring unreadable signing key"),
            }
        }
        let changed = {
            let old = self.keys.load();
            old.keys.len() != keys.len() || keys.keys().any(|kid| !old.keys.contains_key(kid))
        };
        self.keys.store(Arc::new(KeySet { keys, jwks }));
        if changed {
            self.verified.clear();
        }
        Ok(())
    }

    /// Verifies a bearer token: signature, issuer, expiry, revocation. Until the revocation
    /// snapshot is loaded no token is accepted (a revoked one could pass): the call waits
    /// for it up to `READY_WAIT`, then fails as unavailable.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let invalid = |detail: &str| ApiError::unauthorized(detail);
        if !wait_for(READY_WAIT, || self.revocations_synced.load(Ordering::Acquire)).await {
            return Err(ApiError::new(ErrorCode::Unavailable, "token revocations are not loaded yet; retry shortly"));
        }
        if let Some(claims) = self.verified.get(token) {
            if claims.exp + (self.validation.leeway as i64) < chrono::Utc::now().timestamp() {
                return Err(ApiError::new(ErrorCode::TokenExpired, "access token has expired"));
            }
            if self.is_revoked(&claims) {
                return Err(invalid("access token has been revoked"));
            }
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("access token is malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("access token uses an unsupported algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("access token names no key"))?;
        let claims = match self.decode(token, &kid) {
            Some(result) => result?,
            None => {
                self.refetch_for_unknown_kid().await;
                self.decode(token, &kid).ok_or_else(|| invalid("access token was signed by an unknown key"))??
            }
        };
        if self.is_revoked(&claims) {
            return Err(invalid("access token has been revoked"));
        }
        self.verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    fn decode(&self, token: &str, kid: &str) -> Option<Result<AccessClaims, ApiError>> {
        let keys = self.keys.load();
        let key = keys.keys.get(kid)?;
        Some(jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired, "access token has expired"),
                _ => ApiError::unauthorized("access token is not valid"),
            }
        }))
    }

    async fn refetch_for_unknown_kid(&self) {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh_keys().await {
            tracing::warn!(error = format!("{e:#}"), "could not refetch signing keys");
        }
    }

    /// Whether a revocation voids these claims.
    pub fn is_revoked(&self, claims: &AccessClaims) -> bool {
        if let Some(r) = self.sessions.get(&claims.sid)
            && claims.iat_ms <= r.not_before_ms
        {
            return true;
        }
        if let Some(r) = self.users.get(&claims.sub)
            && claims.iat_ms <= r.not_before_ms
            && r.except_session.as_ref() != Some(&claims.sid)
        {
            return true;
        }
        false
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) {
        let revocation = value.and_then(|v| serde_json::from_slice::<Revocation>(v).ok());
        if let Some(id) = key.strip_prefix("session.").and_then(SessionId::parse) {
            match revocation {
                Some(r) => self.sessions.insert(id, r),
                None => self.sessions.remove(&id).map(|(_, r)| r),
            };
        } else if let Some(id) = key.strip_prefix("user.").and_then(UserId::parse) {
            match revocation {
                Some(r) => self.users.insert(id, r),
                None => self.users.remove(&id).map(|(_, r)| r),
            };
        }
    }

    fn prune(&self) {
        let horizon = chrono::Utc::now().timestamp_millis() - MAX_TOKEN_LIFETIME_SECS * 1000;
        self.sessions.retain(|_, r| r.not_before_ms >= horizon);
        self.users.retain(|_, r| r.not_before_ms >= horizon);
    }
}

impl Mesh {
    /// A context acting as the holder of access token `token`, once the token verifies: how
    /// a process other than the edge (a tool, a test) calls services for a user.
    pub async fn as_caller(&self, token: &str) -> Result<Ctx, ApiError> {
        let auth = self.identity().await.map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("{e:#}")))?;
        let claims = auth.verify(token).await?;
        Ok(Ctx::new().authenticated(token, claims))
    }
}

/// Whether `done` holds within `wait` (checked every 10 ms).
async fn wait_for(wait: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// The context of a call that arrived over NATS, its caller verified from the token it
/// carries (anonymous without one). A token that does not verify refuses the call, whatever
/// the endpoint: a forged proof is never treated as no proof.
pub(crate) async fn receive(mesh: &Mesh, headers: Option<&async_nats::HeaderMap>) -> Result<Ctx, ApiError> {
    let (ctx, token) = Ctx::from_headers(headers);
    let Some(token) = token else { return Ok(ctx) };
    let auth = mesh.identity().await.map_err(|e| {
        tracing::warn!(error = format!("{e:#}"), "cannot start verifying callers");
        ApiError::new(ErrorCode::Unavailable, "callers cannot be verified right now; retry shortly")
    })?;
    let claims = auth.verify(&token).await?;
    Ok(ctx.authenticated(&token, claims))
}

/// Keeps `auth`'s copy of the revocations bucket current while `auth` lives.
///
/// The bucket is opened, never created: the user service owns it, and the other components
/// may only read it (see [`crate::authz`]). Until it exists no token is accepted.
async fn watch_revocations(auth: Weak<Authenticator>) {
    let mut opened: Option<Bucket> = None;
    while auth.strong_count() > 0 {
        let bucket = match opened.as_ref() {
            Some(bucket) => bucket,
            None => {
                let mesh = auth.upgrade().and_then(|a| a.mesh.upgrade());
                let Some(mesh) = mesh else { return };
                match mesh.existing_bucket(&REVOCATIONS).await {
                    Ok(bucket) => opened.insert(bucket),
                    Err(e) => {
                        tracing::debug!(error = format!("{e:#}"), "revocations bucket not there yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        };
        let stream = match bucket.watch_all().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot watch revocations; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if bucket.is_empty().await.unwrap_or(false) {
            let Some(auth) = auth.upgrade() else { return };
            auth.revocations_synced.store(true, Ordering::Release);
        }
        futures::pin_mut!(stream);
        loop {
            // Wakes at least every few seconds to notice an authenticator nobody holds.
            let change = match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                Ok(change) => change,
                Err(_) if auth.strong_count() > 0 => continue,
                Err(_) => return,
            };
            let Some(auth) = auth.upgrade() else { return };
            match change {
                Some(Ok(change)) => {
                    auth.apply(&change.key, change.value.as_deref());
                    if change.caught_up {
                        auth.revocations_synced.store(true, Ordering::Release);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = format!("{e:#}"), "revocation watch error"),
                None => break,
            }
        }
        tracing::warn!("revocation watch ended; re-watching");
    }
}

/// Fetches the JWK Set every minute (every half second until a fetch succeeds) while
/// `auth` lives, and forgets revocations older than any token they could void.
async fn refresh_keys_every_minute(auth: Weak<Authenticator>) {
    loop {
        let Some(this) = auth.upgrade() else { return };
        let pause = match this.refresh_keys().await {
            Ok(()) => Duration::from_secs(60),
            Err(e) if this.keys.load().keys.is_empty() => {
                tracing::debug!(error = format!("{e:#}"), "signing keys not available yet");
                Duration::from_millis(500)
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "could not fetch signing keys");
                Duration::from_secs(60)
            }
        };
        this.prune();
        drop(this);
        tokio::time::sleep(pause).await;
    }
}

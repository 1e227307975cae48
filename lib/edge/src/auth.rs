//! Access-token verification without a request per call.
//!
//! The edge holds the user service's public keys (fetched over NATS at start, again when a
//! token names an unknown `kid`, and every minute) and a copy of the revocations bucket kept
//! current by a KV watch. Verifying a token is a signature check and two map lookups; a
//! token seen before skips the signature check (clients send the same token for its whole
//! life), its expiry and revocation are still checked on every request.

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use mosaic_api::user::{AccessClaims, GetJwks, Jwks, Revocation, TOKEN_ISSUER};
use mosaic_api::{ApiError, ErrorCode, Id, SessionId, UserId, endpoint::Empty};
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::{CancellationToken, Ctx, Lifecycle, Mesh};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest access-token lifetime the user service allows; older revocations can void nothing.
const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Least time between two JWKS fetches caused by unknown `kid`s (forged tokens must not
/// turn into a request flood).
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(1);
/// Tokens whose signature this edge remembers having checked (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 50_000;

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    jwks: Jwks,
}

/// Verifies access tokens and tracks revocations.
pub struct Authenticator {
    mesh: Mesh,
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
    /// An authenticator with no keys yet; see [`Authenticator::spawn`].
    pub fn new(mesh: Mesh, clock_skew_secs: u64) -> Arc<Self> {
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

    /// Loads keys and the revocation snapshot (waiting up to `wait` for both), then keeps
    /// them current in the background.
    pub async fn spawn(self: &Arc<Self>, revocations: Bucket, wait: Duration, lifecycle: &Lifecycle) {
        let watcher = self.clone();
        let stop = lifecycle.shutdown().clone();
        lifecycle.spawn(async move { watcher.watch_revocations(revocations, stop).await });

        let refresher = self.clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Until the first load succeeds, retry quickly.
                let pause = match refresher.refresh_keys().await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "could not fetch signing keys");
                        Some(Duration::from_millis(500))
                    }
                };
                if let Some(p) = pause.filter(|_| refresher.keys.load().keys.is_empty()) {
                    tick.reset_after(p);
                }
                refresher.prune();
            }
        });

        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.ready() {
            tracing::warn!("edge started before signing keys and revocations were loaded; /readyz says so");
        }
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
        let jwks = self.mesh.call::<GetJwks>(&ctx, &Empty {}).await?;
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

    /// Verifies a bearer token: signature, issuer, expiry, revocation.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let invalid = |detail: &str| ApiError::unauthorized(detail);
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

    async fn watch_revocations(self: Arc<Self>, bucket: Bucket, shutdown: CancellationToken) {
        loop {
            let stream = match bucket.watch_all().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot watch revocations; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if bucket.is_empty().await.unwrap_or(false) {
                self.revocations_synced.store(true, Ordering::Release);
            }
            futures::pin_mut!(stream);
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = stream.next() => c,
                };
                match change {
                    Some(Ok(change)) => {
                        self.apply(&change.key, change.value.as_deref());
                        if change.caught_up {
                            self.revocations_synced.store(true, Ordering::Release);
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = format!("{e:#}"), "revocation watch error"),
                    None => break,
                }
            }
            tracing::warn!("revocation watch ended; re-watching");
        }
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

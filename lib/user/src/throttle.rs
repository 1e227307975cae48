//! Login throttling per account and per client IP, shared by every instance through a KV
//! bucket of fixed-window failure counters.

use mosaic_api::{ApiError, ErrorCode};
use mosaic_mesh::ctx::client_network;
use mosaic_mesh::kv::Bucket;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Counts failed logins and refuses attempts over the limit.
pub struct Throttle {
    bucket: Bucket,
    window_secs: u64,
    max_account: u64,
    max_ip: u64,
}

impl Throttle {
    /// A throttle over `bucket` with the given window and limits.
    pub fn new(bucket: Bucket, window_secs: u64, max_account: u32, max_ip: u32) -> Self {
        Self { bucket, window_secs, max_account: max_account.into(), max_ip: max_ip.into() }
    }

    /// Counts an attempt against the account and the client address *before* the password
    /// is checked, so a burst of concurrent guesses cannot all pass a check made before any
    /// of them failed: `rate_limited` once either is over its limit in this window.
    ///
    /// Fails closed: if the counters cannot be read or written, the attempt is refused as
    /// `unavailable` rather than let through uncounted.
    pub async fn attempt(&self, account: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (window, retry_after) = self.window();
        let mut over = false;
        for (key, max) in self.keys(account, ip, window) {
            let n = self.bucket.increment(&key).await.map_err(|e| {
                tracing::warn!(error = format!("{e:#}"), "login throttle unavailable; refusing the attempt");
                ApiError::new(ErrorCode::Unavailable, "logins are briefly unavailable; retry shortly")
            })?;
            over |= n > max;
        }
        if over {
            return Err(ApiError::rate_limited("too many failed login attempts; try again later", retry_after));
        }
        Ok(())
    }

    /// After a successful login: the account's count starts over, and the attempt no longer
    /// counts against the client address (many people may log in from one network).
    pub async fn succeeded(&self, account: &str, ip: Option<IpAddr>) {
        let (window, _) = self.window();
        let mut keys = self.keys(account, ip, window).into_iter();
        if let Some((key, _)) = keys.next()
            && let Err(e) = self.bucket.delete(&key).await
        {
            tracing::debug!(error = format!("{e:#}"), "could not reset login failures");
        }
        for (key, _) in keys {
            if let Err(e) = self.bucket.decrement(&key).await {
                tracing::debug!(error = format!("{e:#}"), "could not give back a login attempt");
            }
        }
    }

    fn window(&self) -> (u64, u64) {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let window = now / self.window_secs;
        (window, (window + 1) * self.window_secs - now)
    }

    fn keys(&self, account: &str, ip: Option<IpAddr>, window: u64) -> Vec<(String, u64)> {
        let mut keys = vec![(format!("acct.{}.{window}", digest(&account.to_lowercase())), self.max_account)];
        if let Some(ip) = ip {
            keys.push((format!("ip.{}.{window}", digest(&client_network(ip))), self.max_ip));
        }
        keys
    }
}

/// KV keys allow a narrow alphabet; a digest also keeps emails out of the bucket.
fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
}

//! Login throttling per account and per client IP, shared by every instance through a KV
//! bucket of fixed-window failure counters.

use mosaic_api::ApiError;
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

    /// `rate_limited` if the account or the IP used up its failures in this window.
    ///
    /// If the bucket is unreachable the attempt is allowed: Argon2 already makes each guess
    /// expensive, and locking everyone out during a NATS hiccup would be worse.
    pub async fn check(&self, account: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (window, retry_after) = self.window();
        for (key, max) in self.keys(account, ip, window) {
            match self.bucket.counter(&key).await {
                Ok(n) if n >= max => {
                    return Err(ApiError::rate_limited("too many failed login attempts; try again later", retry_after));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "login throttle unavailable; allowing attempt"),
            }
        }
        Ok(())
    }

    /// Counts one failed attempt against the account and the IP.
    pub async fn failed(&self, account: &str, ip: Option<IpAddr>) {
        let (window, _) = self.window();
        for (key, _) in self.keys(account, ip, window) {
            if let Err(e) = self.bucket.increment(&key).await {
                tracing::warn!(error = format!("{e:#}"), "could not count failed login");
            }
        }
    }

    /// Clears the account's failures after a successful login.
    pub async fn succeeded(&self, account: &str) {
        let (window, _) = self.window();
        let (key, _) = self.keys(account, None, window).swap_remove(0);
        if let Err(e) = self.bucket.delete(&key).await {
            tracing::debug!(error = format!("{e:#}"), "could not reset login failures");
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
            keys.push((format!("ip.{}.{window}", digest(&ip.to_string())), self.max_ip));
        }
        keys
    }
}

/// KV keys allow a narrow alphabet; a digest also keeps emails out of the bucket.
fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
}

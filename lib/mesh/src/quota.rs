//! How often one actor may do one thing: fixed-window counters in a KV bucket, shared by
//! every instance of a service, so a limit holds however many instances answer.
//!
//! An attempt is counted before the action runs (concurrent attempts cannot all slip under
//! the limit), and the counters fail closed: if the bucket cannot be reached the action is
//! refused as `unavailable`, never let through uncounted.

use crate::kv::Bucket;
use mosaic_api::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// At most `max` of one action per actor per window; `max` 0 lifts the limit.
pub struct Quota {
    bucket: Bucket,
    action: &'static str,
    max: u64,
    window_secs: u64,
}

impl Quota {
    /// `action` names the counted thing in keys and errors ("posts", "signups"); its bucket
    /// must keep keys at least `window` (its `max_age`).
    pub fn new(bucket: Bucket, action: &'static str, max: u32, window: Duration) -> Self {
        Self { bucket, action, max: max.into(), window_secs: window.as_secs().max(1) }
    }

    /// Counts one `action` by `actor` (a user id, a client network): `rate_limited`, with
    /// the seconds left in the window, once over the limit.
    pub async fn take(&self, actor: &str) -> Result<(), ApiError> {
        if self.max == 0 {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let window = now / self.window_secs;
        let key = format!("{}.{}.{window}", self.action, digest(actor));
        let n = self.bucket.increment(&key).await.map_err(|e| {
            tracing::warn!(action = self.action, error = format!("{e:#}"), "quota counters unavailable; refusing");
            ApiError::new(ErrorCode::Unavailable, "briefly unavailable; retry shortly")
        })?;
        if n > self.max {
            tracing::debug!(action = self.action, count = n, "over quota");
            let retry_after = (window + 1) * self.window_secs - now;
            let per = human(self.window_secs);
            return Err(ApiError::rate_limited(format!("at most {} {} per {per}", self.max, self.action), retry_after));
        }
        Ok(())
    }
}

fn human(secs: u64) -> String {
    match secs {
        3600 => "hour".into(),
        60 => "minute".into(),
        86_400 => "day".into(),
        s => format!("{s} s"),
    }
}

/// KV keys allow a narrow alphabet; a digest also keeps addresses and ids out of the bucket.
fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
}

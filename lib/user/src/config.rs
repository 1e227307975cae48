//! User-service settings (`[user]` in the configuration file, `MOSAIC_USER__*`).

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the user service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Access-token lifetime. Short, because an access token is checked without asking the
    /// user service; revocation (logout, suspension) reaches edges through a KV watch.
    pub access_token_ttl_secs: u64,
    /// Refresh-token lifetime; each refresh issues a new one.
    pub refresh_token_ttl_secs: u64,
    /// A new signing key every this many seconds; old keys stay published until every token
    /// they signed has expired.
    pub key_rotation_secs: u64,
    /// Argon2id memory cost in KiB (OWASP: 19 MiB with 2 iterations).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Failed logins per account per window before further attempts get 429.
    pub login_max_failures_per_account: u32,
    /// Failed logins per client IP per window before further attempts get 429.
    pub login_max_failures_per_ip: u32,
    /// Length of the throttling window.
    pub login_window_secs: u64,
    /// Accounts one client network (an IPv4 address, an IPv6 /64) may sign up per hour;
    /// beyond it, 429. 0 lifts the limit.
    pub signups_per_ip_per_hour: u32,
    /// Follows one user may make per hour; beyond it, 429. 0 lifts the limit.
    pub follows_per_hour: u32,
    /// The key that seals the token signing keys in the database: base64 of 32 random
    /// bytes (`openssl rand -base64 32`), the same for every instance. Required with a remote
    /// database; with an embedded one it defaults to a key kept in
    /// `<data_dir>/user/key-encryption-key`.
    #[serde(skip_serializing)]
    pub key_encryption_key: Option<mosaic_mesh::config::Secret>,
    /// Removed: administrators were usernames, so whoever signed up first under one was
    /// one. Set, it stops the service with the way to grant the role instead.
    #[serde(skip_serializing)]
    pub admins: Option<serde::de::IgnoredAny>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            key_rotation_secs: 7 * 24 * 3600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            login_max_failures_per_account: 5,
            login_max_failures_per_ip: 50,
            login_window_secs: 15 * 60,
            signups_per_ip_per_hour: 20,
            follows_per_hour: 200,
            key_encryption_key: None,
            admins: None,
        }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run safely with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if self.admins.is_some() {
            bail!("user.admins is no longer read: grant the role with `mosaic admin grant <username>`");
        }
        // Revocations are kept for a day (see mosaic_api::stream::REVOCATIONS); a token must
        // not outlive the record that voids it.
        // Under 5 s a token could expire in flight.
        if !(5..=3600).contains(&self.access_token_ttl_secs) {
            bail!("user.access_token_ttl_secs must be between 5 and 3600 (got {})", self.access_token_ttl_secs);
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            bail!("user.refresh_token_ttl_secs must be at least user.access_token_ttl_secs");
        }
        if self.key_rotation_secs < 2 * self.access_token_ttl_secs {
            bail!("user.key_rotation_secs must be at least twice user.access_token_ttl_secs");
        }
        if self.argon2_memory_kib < 8 * self.argon2_parallelism.max(1) || self.argon2_iterations == 0 {
            bail!("user.argon2_memory_kib / user.argon2_iterations are below Argon2's minimum");
        }
        if self.login_window_secs == 0
            || self.login_max_failures_per_account == 0
            || self.login_max_failures_per_ip == 0
        {
            bail!("user.login_* throttling settings must be positive");
        }
        Ok(())
    }
}

impl Config {
    pub(crate) fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }
}

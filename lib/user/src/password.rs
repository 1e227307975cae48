//! Argon2id password hashing off the async runtime, with bounded parallelism.

use crate::config::Config;
use anyhow::{Context as _, anyhow};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Hashes and verifies passwords.
///
/// Hashing is deliberately expensive, so it runs on the blocking pool and at most one hash
/// per core runs at once: a burst of logins queues instead of starving every other request.
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the account does not exist so
    /// that "no such user" and "wrong password" take the same time.
    decoy: String,
}

impl Passwords {
    /// Builds a hasher with the configured Argon2id cost.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| anyhow!("invalid argon2 parameters: {e}"))?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let decoy = hash_with(&params, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(cores)), decoy })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("password hasher closed")?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password)).await.context("hashing task")?
    }

    /// Whether `password` matches `hash` (a PHC string; its own parameters are used).
    pub async fn verify(&self, password: String, hash: String) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("password hasher closed")?;
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| anyhow!("stored hash unreadable: {e}"))?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .context("verification task")?
    }

    /// Spends the time a verification would, for accounts that don't exist.
    pub async fn verify_decoy(&self, password: String) {
        let _ = self.verify(password, self.decoy.clone()).await;
    }
}

fn hash_with(params: &Params, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("hashing password: {e}"))
}

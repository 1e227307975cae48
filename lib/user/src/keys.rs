//! Ed25519 signing keys for access tokens, rotated by time.
//!
//! Time is cut into rotation periods; the key of period `n` has the id `ed-<period>-<n>`, so
//! every instance agrees on which key signs without coordinating, and two instances creating
//! the same key at once collide on one record instead of producing two. The next period's
//! key is created ahead of time, so it is in the JWK Set before the first token it signs
//! reaches an edge. Keys stay published for one period plus the access-token lifetime after
//! they stop signing, then are deleted. Private keys are stored sealed (see [`crate::seal`]).

use crate::config::Config;
use crate::seal::{Opened, Sealer};
use crate::store::{self, keys::KeyRow};
use anyhow::{Context as _, anyhow};
use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mosaic_api::user::{AccessClaims, Jwk, Jwks};
use mosaic_mesh::db::{Db, is_conflict};
use mosaic_mesh::write::{NoRefusal, Write, WriteError};
use std::sync::Arc;
use std::time::Duration;

struct Current {
    kid: String,
    key: EncodingKey,
}

/// The signing key in use, refreshed in the background.
pub struct Keys {
    db: Db,
    sealer: Sealer,
    period_secs: i64,
    access_ttl_secs: i64,
    current: ArcSwap<Current>,
}

impl Keys {
    /// Loads (creating if needed) the key of the current period.
    pub async fn load(db: Db, sealer: Sealer, config: &Config) -> anyhow::Result<Arc<Self>> {
        let period_secs = config.key_rotation_secs as i64;
        let current = Self::ensure_period(&db, &sealer, period_secs, period_of(Utc::now(), period_secs)).await?;
        let keys = Arc::new(Self {
            db,
            sealer,
            period_secs,
            access_ttl_secs: config.access_token_ttl_secs as i64,
            current: ArcSwap::from_pointee(current),
        });
        keys.refresh().await?;
        Ok(keys)
    }

    /// How often [`Keys::refresh`] should run.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs((self.period_secs as u64 / 20).clamp(1, 60))
    }

    /// Switches to the current period's key, pre-creates the next one and deletes keys no
    /// token can still need.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let period = period_of(now, self.period_secs);
        if self.current.load().kid != kid_for(self.period_secs, period) {
            self.current.store(Arc::new(Self::ensure_period(&self.db, &self.sealer, self.period_secs, period).await?));
            tracing::info!(kid = %self.current.load().kid, "rotated access-token signing key");
        }
        Self::ensure_period(&self.db, &self.sealer, self.period_secs, period + 1).await?;
        let horizon = now - chrono::Duration::seconds(2 * self.period_secs + self.access_ttl_secs);
        store::keys::prune(&self.db, horizon).await
    }

    /// Signs access-token claims with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let current = self.current.load();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(current.kid.clone());
        jsonwebtoken::encode(&header, claims, &current.key).context("signing access token")
    }

    /// Every public key that may have signed a live token, read from the database so every
    /// instance answers the same.
    pub async fn jwks(&self) -> anyhow::Result<Jwks> {
        let rows = store::keys::public_keys(&self.db).await?;
        Ok(Jwks {
            keys: rows
                .into_iter()
                .map(|r| Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: r.public_x,
                    kid: r.kid,
                    alg: "EdDSA".into(),
                    use_: "sig".into(),
                })
                .collect(),
        })
    }

    async fn ensure_period(db: &Db, sealer: &Sealer, period_secs: i64, period: i64) -> anyhow::Result<Current> {
        let kid = kid_for(period_secs, period);
        if let Some(row) = store::keys::key(db, &kid).await? {
            return Self::decode(db, sealer, row).await;
        }
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = signing.to_pkcs8_der().map_err(|e| anyhow!("encoding signing key: {e}"))?;
        let public_x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        // Once: a conflict or an existing record both mean another instance got there first.
        let created = Write::new(db, store::keys::CREATE)
            .bind("kid", kid.clone())
            .bind("private", sealer.seal(&kid, der.as_bytes()))
            .bind("public", public_x)
            .once()
            .run::<NoRefusal>()
            .await;
        match created {
            Ok(_) => {}
            // Another instance created this period's key first; use theirs.
            Err(WriteError::Failed(e)) if e.is_already_exists() || is_conflict(&e) => {}
            Err(e) => return Err(anyhow!(e).context("storing signing key")),
        }
        let row = store::keys::key(db, &kid).await?.ok_or_else(|| anyhow!("signing key {kid} vanished"))?;
        Self::decode(db, sealer, row).await
    }

    async fn decode(db: &Db, sealer: &Sealer, row: KeyRow) -> anyhow::Result<Current> {
        let der = match sealer.open(&row.kid, &row.private_pkcs8)? {
            Opened::Sealed(der) => der,
            Opened::Plain(der) => {
                // Stored before keys were sealed: sealed now, where it lies.
                store::keys::reseal(db, &row.kid, &row.private_pkcs8, &sealer.seal(&row.kid, &der)).await?;
                tracing::info!(kid = %row.kid, "sealed a signing key stored in plaintext");
                der
            }
        };
        Ok(Current { kid: row.kid, key: EncodingKey::from_ed_der(&der) })
    }
}

fn period_of(at: DateTime<Utc>, period_secs: i64) -> i64 {
    at.timestamp().div_euclid(period_secs)
}

fn kid_for(period_secs: i64, period: i64) -> String {
    format!("ed-{period_secs}-{period}")
}

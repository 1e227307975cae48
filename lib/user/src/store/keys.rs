//! Access-token signing keys: `signing_key` records.

use super::{Db, exec, first, rows};
use chrono::{DateTime, Utc};
use surrealdb::types::SurrealValue;

/// A signing key as stored.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct KeyRow {
    pub kid: String,
    pub private_pkcs8: String,
    pub public_x: String,
    pub created_at: DateTime<Utc>,
}

/// Creates the key `$kid` (`$private`, `$public`). Throws nothing; fails if the key exists.
pub(crate) const CREATE: &str = "CREATE type::record('signing_key', $kid) SET private_pkcs8 = $private, public_x = $public, created_at = time::now()";

/// The key `kid`, if stored.
pub(crate) async fn key(db: &Db, kid: &str) -> anyhow::Result<Option<KeyRow>> {
    let query = db
        .query(
            "SELECT record::id(id) AS kid, private_pkcs8, public_x, created_at FROM type::record('signing_key', $kid)",
        )
        .bind(("kid", kid.to_owned()));
    first(query, "reading signing key").await
}

/// A signing key's public half: all the JWK Set needs, so its query never reads a private
/// key, not even an encrypted one.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct PublicKeyRow {
    pub kid: String,
    pub public_x: String,
}

/// Every stored key's public half, newest first.
pub(crate) async fn public_keys(db: &Db) -> anyhow::Result<Vec<PublicKeyRow>> {
    let query =
        db.query("SELECT record::id(id) AS kid, public_x, created_at FROM signing_key ORDER BY created_at DESC");
    rows(query, "reading signing keys").await
}

/// Replaces the stored private key of `kid` if it is still `old` (a plaintext key from
/// before encryption at rest, encrypted on first read).
pub(crate) async fn reseal(db: &Db, kid: &str, old: &str, sealed: &str) -> anyhow::Result<()> {
    exec(
        db.query("UPDATE type::record('signing_key', $kid) SET private_pkcs8 = $sealed WHERE private_pkcs8 = $old")
            .bind(("kid", kid.to_owned()))
            .bind(("old", old.to_owned()))
            .bind(("sealed", sealed.to_owned())),
        "encrypting a stored signing key",
    )
    .await
}

/// Deletes the keys created before `horizon`.
pub(crate) async fn prune(db: &Db, horizon: DateTime<Utc>) -> anyhow::Result<()> {
    exec(
        db.query("DELETE signing_key WHERE created_at < $horizon").bind(("horizon", horizon)),
        "pruning old signing keys",
    )
    .await
}

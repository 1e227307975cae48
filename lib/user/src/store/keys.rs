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

/// Every stored key, newest first.
pub(crate) async fn all(db: &Db) -> anyhow::Result<Vec<KeyRow>> {
    let query = db.query(
        "SELECT record::id(id) AS kid, private_pkcs8, public_x, created_at FROM signing_key ORDER BY created_at DESC",
    );
    rows(query, "reading signing keys").await
}

/// Deletes the keys created before `horizon`.
pub(crate) async fn prune(db: &Db, horizon: DateTime<Utc>) -> anyhow::Result<()> {
    exec(
        db.query("DELETE signing_key WHERE created_at < $horizon").bind(("horizon", horizon)),
        "pruning old signing keys",
    )
    .await
}

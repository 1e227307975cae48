//! SurrealDB: connecting by URL, the migration runner, and retrying transaction conflicts.
//!
//! Each service owns one database (`mosaic/<service>`). Its schema lives in
//! `surreal/<service>/NNNN_name.surql`, embedded into the binary and applied in order by
//! [`migrate`]: each file runs in one transaction together with the record of its
//! application, so a file is applied exactly once even when several instances start at the
//! same moment, and a file edited after it was applied stops the start with an error.

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::Duration;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::types::SurrealValue;

/// A connection to one service database.
pub type Db = Surreal<Any>;

/// Where a service's database lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DbConfig {
    /// `mem://`, `surrealkv://<path>` (embedded) or `ws://host:8000` / `wss://…` (cluster).
    /// Empty: an embedded `surrealkv://` store under the data directory.
    pub url: String,
    /// Root user for remote servers.
    pub username: Option<String>,
    /// Root password for remote servers.
    pub password: Option<crate::config::Secret>,
}

/// SurrealDB namespace shared by all service databases.
pub const NAMESPACE: &str = "mosaic";

/// Connects to `config.url` and selects database `database`.
pub async fn connect(config: &DbConfig, database: &str) -> anyhow::Result<Db> {
    let url = config.url.as_str();
    if url.is_empty() {
        bail!("the database URL of service {database} is empty");
    }
    if let Some(path) = url.strip_prefix("surrealkv://").or_else(|| url.strip_prefix("rocksdb://")) {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating database directory {path} for service {database}"))?;
    }
    let db = surrealdb::engine::any::connect(url)
        .await
        .with_context(|| format!("opening SurrealDB at {url} for service {database}"))?;
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        db.signin(surrealdb::opt::auth::Root { username: username.clone(), password: password.expose().to_owned() })
            .await
            .with_context(|| format!("signing in to SurrealDB at {url}"))?;
    }
    db.use_ns(NAMESPACE)
        .use_db(database)
        .await
        .with_context(|| format!("selecting database {NAMESPACE}/{database}"))?;
    Ok(db)
}

/// One schema change, applied once.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Unique, ordered name (`0001_init`).
    pub name: &'static str,
    /// The SurrealQL to run.
    pub sql: &'static str,
}

/// Embeds `surreal/<dir>/<name>.surql` files as an ordered list of [`Migration`]s.
#[macro_export]
macro_rules! migrations {
    ($dir:literal: $($name:literal),+ $(,)?) => {
        &[$($crate::db::Migration {
            name: concat!($dir, "/", $name),
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../surreal/", $dir, "/", $name, ".surql")),
        }),+]
    };
}

/// Tables every service database has (the outbox); applied before the service's own files.
pub const COMMON: &[Migration] = crate::migrations!("mesh": "0001_outbox");

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Applied {
    name: String,
    checksum: String,
}

/// Applies [`COMMON`] then `migrations`, each at most once; see the module docs.
pub async fn migrate(db: &Db, migrations: &[Migration]) -> anyhow::Result<()> {
    retry_conflicts(|| async {
        db.query(
            "DEFINE TABLE IF NOT EXISTS _migration SCHEMAFULL;
             DEFINE FIELD IF NOT EXISTS checksum ON _migration TYPE string;
             DEFINE FIELD IF NOT EXISTS applied_at ON _migration TYPE datetime;",
        )
        .await?
        .checked()?;
        Ok(())
    })
    .await
    .context("creating the migration ledger")?;

    for migration in COMMON.iter().chain(migrations) {
        let checksum = hex_sha256(migration.sql);
        loop {
            if let Some(applied) = applied(db, migration.name).await? {
                if applied.checksum != checksum {
                    bail!(
                        "migration {} changed after it was applied (recorded checksum {}, file {}); \
                         add a new migration instead of editing an applied one",
                        applied.name,
                        applied.checksum,
                        checksum
                    );
                }
                break;
            }
            let sql = format!(
                "BEGIN TRANSACTION;\n\
                 CREATE type::record('_migration', $name) SET checksum = $checksum, applied_at = time::now();\n\
                 {}\n;\nCOMMIT TRANSACTION;",
                migration.sql
            );
            let outcome = db
                .query(sql)
                .bind(("name", migration.name))
                .bind(("checksum", checksum.clone()))
                .await
                .and_then(|r| r.checked());
            match outcome {
                Ok(_) => {
                    tracing::info!(migration = migration.name, "applied migration");
                    break;
                }
                // Another instance applied it at the same moment: loop to verify its checksum.
                Err(e) if is_conflict(&e) || e.is_already_exists() => {
                    tracing::debug!(migration = migration.name, "migration raced with another instance");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(anyhow!(e).context(format!("applying migration {}", migration.name))),
            }
        }
    }
    Ok(())
}

async fn applied(db: &Db, name: &str) -> anyhow::Result<Option<Applied>> {
    let mut res = db
        .query("SELECT record::id(id) AS name, checksum FROM type::record('_migration', $name)")
        .bind(("name", name.to_owned()))
        .await
        .context("reading the migration ledger")?;
    let rows: Vec<Applied> = res.take(0).context("reading the migration ledger")?;
    Ok(rows.into_iter().next())
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `err` is an optimistic-concurrency conflict that is safe to retry.
pub fn is_conflict(err: &surrealdb::Error) -> bool {
    matches!(err.query_details(), Some(surrealdb::types::QueryError::TransactionConflict))
}

/// Whether an error chain contains a retryable transaction conflict.
pub fn is_conflict_chain(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<surrealdb::Error>().is_some_and(is_conflict))
}

/// How many times a conflicting transaction is run again. Fifty writers of one counter on
/// a loaded two-core machine outlasted twelve (each attempt then takes hundreds of
/// milliseconds); the backoff is capped at ~128 ms, so this bounds the wait at a few
/// seconds, inside any request's deadline.
const CONFLICT_RETRIES: u32 = 32;

/// Runs `op` again (with jittered backoff, a bounded number of times) while it fails with a
/// transaction conflict: concurrent writers to the same records are normal under load.
pub async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T, surrealdb::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, surrealdb::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                let base = 2u64.pow(attempt.min(6));
                let jitter = rand::random::<u64>() % base.max(1);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            other => return other,
        }
    }
}

/// A query being built against [`Db`].
pub type Query<'a> = surrealdb::method::Query<'a, Any>;

/// The rows of `query`'s first statement; `what` names the read in its errors.
pub async fn rows<R: SurrealValue>(query: Query<'_>, what: &'static str) -> anyhow::Result<Vec<R>> {
    let mut res = query.await.context(what)?;
    res.take(0).context(what)
}

/// The first row of `query`'s first statement, if any.
pub async fn first<R: SurrealValue>(query: Query<'_>, what: &'static str) -> anyhow::Result<Option<R>> {
    Ok(rows(query, what).await?.into_iter().next())
}

/// Runs `query`, a write whose results nobody reads, failing with the most specific
/// statement error (see [`Checked`]).
pub async fn exec(query: Query<'_>, what: &'static str) -> anyhow::Result<()> {
    query.await.and_then(|r| r.checked()).context(what)?;
    Ok(())
}

/// Like `IndexedResults::check`, but reports the error that explains the failure.
///
/// When one statement of a transaction fails, SurrealDB fails every statement of it, most
/// with a generic "not executed due to a failed transaction"; `check` returns whichever
/// comes first. This returns the specific one (a conflict, a unique-index violation, a
/// `THROW`), so callers can tell a retryable conflict from a taken username.
pub trait Checked: Sized {
    /// The results, or the most specific statement error.
    fn checked(self) -> Result<Self, surrealdb::Error>;
}

impl Checked for surrealdb::IndexedResults {
    fn checked(mut self) -> Result<Self, surrealdb::Error> {
        let mut errors: Vec<(usize, surrealdb::Error)> = self.take_errors().into_iter().collect();
        if errors.is_empty() {
            return Ok(self);
        }
        errors.sort_by_key(|(i, _)| *i);
        let generic =
            |e: &surrealdb::Error| matches!(e.query_details(), Some(surrealdb::types::QueryError::NotExecuted));
        let pick = errors.iter().position(|(_, e)| !generic(e)).unwrap_or(0);
        Err(errors.swap_remove(pick).1)
    }
}

/// A list read a page at a time in (time, key) order: the keyset query behind every
/// cursor-paged list. A list names its columns and its `SELECT … WHERE …`; the cursor
/// condition, the order, the one-row look-ahead and the next cursor are the same for all.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    /// The time column.
    time: &'static str,
    /// The tie-breaker as the condition reads it (a column, or `record::id(id)`).
    key_expr: &'static str,
    /// The tie-breaker as the rows name it (`ORDER BY` takes output fields only).
    key_field: &'static str,
    descending: bool,
}

impl Keyset {
    /// Newest first; ties on `time` broken by the key, also descending.
    pub const fn newest_first(time: &'static str, key_expr: &'static str, key_field: &'static str) -> Self {
        Self { time, key_expr, key_field, descending: true }
    }

    /// Oldest first; ties broken by the key, ascending.
    pub const fn oldest_first(time: &'static str, key_expr: &'static str, key_field: &'static str) -> Self {
        Self { time, key_expr, key_field, descending: false }
    }

    /// Reads the page of `select` (a `SELECT … FROM … WHERE …` statement, without order or
    /// limit) that `page` asks for. `bind` binds the statement's own parameters; `$at`,
    /// `$after_key` and `$limit` are this helper's. `cursor` gives a row's time and key,
    /// from which the next page's cursor is made. A cursor that is not one of ours is a
    /// validation error.
    pub async fn page<R: SurrealValue>(
        &self,
        db: &Db,
        select: &str,
        page: &mosaic_api::page::PageRequest,
        bind: impl FnOnce(surrealdb::method::Query<'_, Any>) -> surrealdb::method::Query<'_, Any>,
        cursor: impl FnOnce(&R) -> mosaic_api::page::TimeCursor,
    ) -> crate::ServiceResult<(Vec<R>, Option<String>)> {
        use mosaic_api::page::{TimeCursor, cut, fetch_limit};
        let limit = page.limit() as usize;
        let after = page.cursor.as_deref().map(TimeCursor::decode).transpose()?;
        let (cmp, dir) = if self.descending { ('<', "DESC") } else { ('>', "ASC") };
        let Self { time, key_expr, key_field, .. } = *self;
        let condition = if after.is_some() {
            format!(" AND ({time} {cmp} $at OR ({time} = $at AND {key_expr} {cmp} $after_key))")
        } else {
            String::new()
        };
        let sql = format!("{select}{condition} ORDER BY {time} {dir}, {key_field} {dir} LIMIT $limit");
        let after = after.unwrap_or_else(|| TimeCursor::new(chrono::Utc::now(), ""));
        let query =
            db.query(sql).bind(("at", after.at)).bind(("after_key", after.key)).bind(("limit", fetch_limit(limit)));
        let mut res = bind(query).await.with_context(|| format!("reading a page of {select}"))?;
        let rows: Vec<R> = res.take(0).with_context(|| format!("reading a page of {select}"))?;
        Ok(cut(rows, limit, |r| cursor(r).encode()))
    }
}

//! Key-value buckets without NATS types: what services need (get, put, compare-and-set,
//! counters, watching) as plain async methods.

use crate::client::Mesh;
use anyhow::{Context as _, anyhow};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mosaic_api::stream::KvSpec;
use serde::{Serialize, de::DeserializeOwned};

/// An open key-value bucket.
#[derive(Clone)]
pub struct Bucket {
    store: kv::Store,
    name: &'static str,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

/// A value with the revision it was read at (for compare-and-set).
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Bytes,
    /// Revision to pass to [`Bucket::update`].
    pub revision: u64,
}

/// One change seen by [`Bucket::watch_all`].
#[derive(Debug, Clone)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The new value; `None` when the key was deleted or purged.
    pub value: Option<Bytes>,
    /// Whether this is the last entry of the initial snapshot (live updates follow).
    pub caught_up: bool,
}

impl Mesh {
    /// Opens (creating or updating as needed) the bucket described by `spec`.
    pub async fn bucket(&self, spec: &'static KvSpec) -> anyhow::Result<Bucket> {
        Ok(Bucket { store: self.kv(spec, None).await?, name: spec.bucket })
    }

    /// Opens the existing bucket described by `spec` without creating or changing it: for
    /// readers of a bucket another component owns. Fails while it does not exist.
    pub(crate) async fn existing_bucket(&self, spec: &'static KvSpec) -> anyhow::Result<Bucket> {
        let store = self
            .jetstream()
            .get_key_value(spec.bucket)
            .await
            .map_err(|e| anyhow!("opening key-value bucket {}: {e}", spec.bucket))?;
        Ok(Bucket { store, name: spec.bucket })
    }

    /// Opens a [`KvStorage::Cache`](mosaic_api::stream::KvStorage::Cache) bucket sized by the
    /// caller's settings rather than the spec.
    pub async fn cache_bucket(&self, spec: &'static KvSpec, max_bytes: i64) -> anyhow::Result<Bucket> {
        Ok(Bucket { store: self.kv(spec, Some(max_bytes)).await?, name: spec.bucket })
    }
}

impl Bucket {
    /// The current value of `key`, if any.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Versioned>> {
        let entry = self.store.entry(key).await.with_context(|| format!("reading {}/{key}", self.name))?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => Some(Versioned { value: e.value, revision: e.revision }),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// The current value of `key` decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        match self.get(key).await? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v.value).with_context(|| format!("decoding {}/{key}", self.name))?))
            }
            None => Ok(None),
        }
    }

    /// Sets `key`, whatever it held.
    pub async fn put(&self, key: &str, value: Bytes) -> anyhow::Result<u64> {
        self.store.put(key, value).await.with_context(|| format!("writing {}/{key}", self.name))
    }

    /// Sets `key` to `value` as JSON.
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> anyhow::Result<u64> {
        self.put(key, serde_json::to_vec(value)?.into()).await
    }

    /// Sets `key` only if it holds nothing; `None` if it already had a value.
    pub async fn create(&self, key: &str, value: Bytes) -> anyhow::Result<Option<u64>> {
        match self.store.create(key, value).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(anyhow!("creating {}/{key}: {e}", self.name)),
        }
    }

    /// Sets `key` only if it is still at `revision`; `None` if someone wrote it since.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> anyhow::Result<Option<u64>> {
        match self.store.update(key, value, revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(anyhow!("updating {}/{key}: {e}", self.name)),
        }
    }

    /// Removes `key` (a no-op if absent).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.store.delete(key).await.with_context(|| format!("deleting {}/{key}", self.name))
    }

    /// Adds one to the decimal counter at `key` and returns the new count; exact under
    /// concurrent increments (compare-and-set with retries).
    pub async fn increment(&self, key: &str) -> anyhow::Result<u64> {
        for _ in 0..32 {
            match self.get(key).await? {
                None => {
                    if self.create(key, Bytes::from_static(b"1")).await?.is_some() {
                        return Ok(1);
                    }
                }
                Some(current) => {
                    let n: u64 = std::str::from_utf8(&current.value).ok().and_then(|s| s.parse().ok()).unwrap_or(0) + 1;
                    if self.update(key, n.to_string().into(), current.revision).await?.is_some() {
                        return Ok(n);
                    }
                }
            }
        }
        Err(anyhow!("counter {}/{key} too contended", self.name))
    }

    /// Takes one from the decimal counter at `key` (never below zero); exact under
    /// concurrent changes like [`Bucket::increment`].
    pub async fn decrement(&self, key: &str) -> anyhow::Result<u64> {
        for _ in 0..32 {
            let Some(current) = self.get(key).await? else { return Ok(0) };
            let n: u64 = std::str::from_utf8(&current.value).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let n = n.saturating_sub(1);
            if self.update(key, n.to_string().into(), current.revision).await?.is_some() {
                return Ok(n);
            }
        }
        Err(anyhow!("counter {}/{key} too contended", self.name))
    }

    /// Every current entry, then every change as it happens. The entry that completes the
    /// initial snapshot has `caught_up` set; an empty bucket yields no snapshot entries, so
    /// callers should also check [`Bucket::is_empty`].
    pub async fn watch_all(&self) -> anyhow::Result<impl Stream<Item = anyhow::Result<Change>> + Send + 'static> {
        let watch = self.store.watch_with_history(">").await.with_context(|| format!("watching {}", self.name))?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(|e| anyhow!("watch: {e}"))?;
            Ok(Change {
                caught_up: entry.delta == 0,
                value: matches!(entry.operation, Operation::Put).then_some(entry.value),
                key: entry.key,
            })
        }))
    }

    /// Whether the bucket currently holds no values (deleted keys count as empty).
    pub async fn is_empty(&self) -> anyhow::Result<bool> {
        let status = self.store.status().await.with_context(|| format!("status of {}", self.name))?;
        Ok(status.values() == 0)
    }
}

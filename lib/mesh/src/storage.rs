//! Object storage chosen by URL: the local filesystem (`file:///path` or a plain path),
//! any S3-compatible store (`s3://bucket[/prefix]`), or memory (`memory://`, tests).

use crate::config::Secret;
use anyhow::{Context as _, bail};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where media lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `file:///var/lib/mosaic/media`, `s3://bucket/prefix` or `memory://`. Empty: a
    /// `media` directory under the data directory.
    pub url: String,
    /// S3 endpoint for non-AWS stores (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// S3 region (`us-east-1` when unset).
    pub region: Option<String>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    pub secret_access_key: Option<Secret>,
    /// Allow plain-HTTP endpoints (local S3-compatible servers).
    pub allow_http: bool,
    /// Use `bucket.host` URLs instead of `host/bucket`.
    pub virtual_hosted_style: bool,
}

/// An open object store, and a URL signer when the store supports presigned URLs.
#[derive(Clone)]
pub struct Storage {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Presigns GET URLs (S3 only).
    pub signer: Option<Arc<dyn Signer>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.store)
    }
}

impl Storage {
    /// Opens the store `config.url` names.
    pub fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        let url = config.url.trim();
        if url.is_empty() {
            bail!("storage.url is empty");
        }
        if url == "memory://" {
            return Ok(Self { store: Arc::new(InMemory::new()), signer: None });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("storage.url {url:?} names no bucket");
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_virtual_hosted_style_request(config.virtual_hosted_style)
                .with_client_options(ClientOptions::new().with_allow_http(config.allow_http));
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(key) = &config.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.with_secret_access_key(secret.expose());
            }
            let s3 = Arc::new(builder.build().with_context(|| format!("opening storage.url {url}"))?);
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                s3.clone()
            } else {
                Arc::new(PrefixStore::new(s3.as_ref().clone(), prefix.trim_matches('/')))
            };
            // Presigned URLs must point at the full key, so they are only offered without a prefix.
            let signer: Option<Arc<dyn Signer>> = prefix.is_empty().then_some(s3 as Arc<dyn Signer>);
            return Ok(Self { store, signer });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(path).with_context(|| format!("creating storage directory {path} (storage.url)"))?;
        let fs = LocalFileSystem::new_with_prefix(path)
            .with_context(|| format!("opening storage directory {path} (storage.url)"))?
            .with_automatic_cleanup(true);
        Ok(Self { store: Arc::new(fs), signer: None })
    }
}

//! What every Mosaic binary does the same way: common settings, connecting, waiting for a
//! stop signal and shutting down in order.

use crate::client::{Mesh, NatsConfig};
use crate::component::{Component, Host};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every Mosaic process runs on mimalloc. Under the social benchmark glibc's allocator took
/// about a third of the CPU (SurrealDB, serde and the NATS client allocate per request, on
/// many threads); mimalloc's thread-local free lists serve that pattern for a fraction of
/// the cost. Declared here, in the one crate every binary links, so no binary can forget it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settings shared by every binary (top-level keys of the configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Common {
    /// Where embedded state lives (databases, local media, the embedded NATS store).
    pub data_dir: PathBuf,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// NATS credentials file (`.creds`), for clusters with decentralised auth.
    pub nats_creds: Option<PathBuf>,
    /// NATS user (user/password accounts, see `nats/accounts.conf`).
    pub nats_user: Option<String>,
    /// NATS password of `nats_user`.
    pub nats_password: Option<crate::config::Secret>,
    /// JetStream replicas for what this process declares (1 alone, 3 in a cluster).
    pub nats_replicas: usize,
    /// Calls between services of this process skip the NATS server (see `NatsConfig`).
    pub nats_local_calls: bool,
    /// Size limit of each JetStream stream this process declares, in bytes.
    pub nats_stream_max_bytes: i64,
    /// Size limit of each file-backed key-value bucket this process declares, in bytes.
    pub nats_bucket_max_bytes: i64,
    /// Log as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// Media storage, shared by the content service (writes) and the edge (uploads, serving).
    pub storage: crate::storage::StorageConfig,
    /// The address clients reach the edge at (links in emails). Unset: `mosaic up` fills in
    /// its own edge's address.
    pub public_url: Option<String>,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("mosaic-data"),
            nats_url: NatsConfig::default().url,
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_replicas: 1,
            nats_local_calls: true,
            nats_stream_max_bytes: NatsConfig::default().stream_max_bytes,
            nats_bucket_max_bytes: NatsConfig::default().bucket_max_bytes,
            log_json: false,
            storage: Default::default(),
            public_url: None,
        }
    }
}

impl Common {
    /// The NATS connection settings.
    pub fn nats(&self) -> NatsConfig {
        NatsConfig {
            url: self.nats_url.clone(),
            creds_file: self.nats_creds.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            replicas: self.nats_replicas,
            local_calls: self.nats_local_calls,
            stream_max_bytes: self.nats_stream_max_bytes,
            bucket_max_bytes: self.nats_bucket_max_bytes,
        }
    }

    /// The embedded database URL of `service` under the data directory.
    pub fn default_db_url(&self, service: &str) -> String {
        let dir = self.data_dir.join("db").join(service);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        format!("surrealkv://{}", dir.display())
    }

    /// The storage settings, with an empty URL filled by `<data_dir>/media`.
    pub fn storage(&self) -> crate::storage::StorageConfig {
        let mut storage = self.storage.clone();
        if storage.url.trim().is_empty() {
            let dir = self.data_dir.join("media");
            storage.url = format!("file://{}", std::path::absolute(&dir).unwrap_or(dir).display());
        }
        storage
    }

    /// Fills an empty database URL with the embedded default.
    pub fn fill_db_url(&self, url: &mut String, service: &str) {
        if url.trim().is_empty() {
            *url = self.default_db_url(service);
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("stop signal received; draining");
}

/// Runs one instance of `component` as its own process would: connects to NATS as the
/// component, starts it, serves until a stop signal, then drains.
pub async fn serve_until_signal(host: &Host, component: &'static Component, nats: &NatsConfig) -> anyhow::Result<()> {
    let mesh = Mesh::connect(nats, component.name).await?;
    let mut running = crate::component::start_all(host, &mesh, &[component]).await?;
    tracing::info!(component = component.name, "ready");
    shutdown_signal().await;
    running.stop().await;
    let _ = mesh.flush().await;
    Ok(())
}

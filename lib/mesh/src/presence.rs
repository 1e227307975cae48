//! Who has a WebSocket open, across every edge.
//!
//! Each edge announces its connected users in the [`PRESENCE`] bucket under
//! `<user_id>.<edge_id>`, with an expiry time as the value: written when the user's first
//! socket on that edge opens, refreshed while any stays open, deleted when the last one
//! closes. An edge that dies stops refreshing, and its entries count as gone once they
//! expire. Services that need to know whether a user is online ([`PresenceMirror`]) keep
//! a copy of the bucket in memory through a watch, so asking costs no request.

use crate::client::Mesh;
use crate::kv::Bucket;
use crate::service::Lifecycle;
use dashmap::DashMap;
use futures::StreamExt as _;
use mosaic_api::stream::PRESENCE;
use mosaic_api::{Id as _, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long an announcement lasts without a refresh.
pub const TTL: Duration = Duration::from_secs(75);
/// How often an edge refreshes its announcements.
pub const REFRESH: Duration = Duration::from_secs(25);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn key(user: &UserId, edge: &str) -> String {
    format!("{user}.{edge}")
}

/// An edge's announcements.
#[derive(Clone)]
pub struct Presence {
    bucket: Bucket,
    edge: Arc<str>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("edge", &self.edge).finish()
    }
}

impl Presence {
    /// Opens the bucket for an edge named `edge` (unique per edge process).
    pub async fn open(mesh: &Mesh, edge: &str) -> anyhow::Result<Self> {
        Ok(Self { bucket: mesh.bucket(&PRESENCE).await?, edge: edge.into() })
    }

    /// `user` has a socket on this edge (again).
    pub async fn online(&self, user: &UserId) -> anyhow::Result<()> {
        let expires = now_ms() + TTL.as_millis() as i64;
        self.bucket.put(&key(user, &self.edge), expires.to_string().into()).await?;
        Ok(())
    }

    /// `user`'s last socket on this edge closed.
    pub async fn offline(&self, user: &UserId) -> anyhow::Result<()> {
        self.bucket.delete(&key(user, &self.edge)).await
    }

    /// Refreshes the announcements of `users`, every [`REFRESH`], until shutdown.
    pub fn spawn_refresh<F>(&self, lifecycle: &Lifecycle, users: F)
    where
        F: Fn() -> Vec<UserId> + Send + Sync + 'static,
    {
        let this = self.clone();
        lifecycle.every(REFRESH, crate::FirstRun::AfterPeriod, move || {
            let (this, users) = (this.clone(), users());
            async move {
                for user in users {
                    if let Err(e) = this.online(&user).await {
                        tracing::debug!(error = format!("{e:#}"), "presence refresh failed");
                        break;
                    }
                }
            }
        });
    }
}

/// An in-memory copy of the presence bucket.
#[derive(Clone, Default)]
pub struct PresenceMirror {
    /// user → edge → expiry (Unix ms).
    users: Arc<DashMap<UserId, HashMap<String, i64>>>,
}

impl std::fmt::Debug for PresenceMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceMirror").field("users", &self.users.len()).finish()
    }
}

impl PresenceMirror {
    /// Starts mirroring; returns once the current contents are loaded (or after a few
    /// seconds, when the bucket is slow: users then count as offline until it catches up).
    pub async fn spawn(mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<Self> {
        let bucket = mesh.bucket(&PRESENCE).await?;
        let mirror = Self::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let empty = bucket.is_empty().await.unwrap_or(false);
        let this = mirror.clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            let mut ready = Some(ready_tx);
            if empty {
                let _ = ready.take().map(|tx| tx.send(()));
            }
            loop {
                let mut changes = match bucket.watch_all().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "presence watch failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                loop {
                    let change = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = changes.next() => c,
                    };
                    let Some(Ok(change)) = change else { break };
                    this.apply(&change.key, change.value.as_deref());
                    if change.caught_up {
                        let _ = ready.take().map(|tx| tx.send(()));
                    }
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
        Ok(mirror)
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) {
        let Some((user, edge)) = key.split_once('.') else { return };
        let Some(user) = UserId::parse(user) else { return };
        match value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<i64>().ok()) {
            Some(expires) => {
                self.users.entry(user).or_default().insert(edge.to_owned(), expires);
            }
            None => {
                if let Some(mut edges) = self.users.get_mut(&user) {
                    edges.remove(edge);
                    let gone = edges.is_empty();
                    drop(edges);
                    if gone {
                        self.users.remove_if(&user, |_, e| e.is_empty());
                    }
                }
            }
        }
    }

    /// Whether `user` has a socket open on any live edge.
    pub fn is_online(&self, user: &UserId) -> bool {
        let now = now_ms();
        self.users.get(user).is_some_and(|edges| edges.values().any(|&expires| expires > now))
    }
}

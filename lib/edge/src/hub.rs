//! One NATS subscription per connected user on this edge, shared by all of that user's
//! sockets here, and dropped when the last one closes. The hub also announces who is
//! connected here (see [`mosaic_mesh::presence`]), so services know who is offline.

use bytes::Bytes;
use futures::StreamExt;
use mosaic_api::UserId;
use mosaic_mesh::Mesh;
use mosaic_mesh::presence::Presence;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

struct Entry {
    tx: broadcast::Sender<Bytes>,
    sockets: usize,
    forwarder: AbortHandle,
}

/// Fans push frames out to local sockets.
pub struct Hub {
    mesh: Mesh,
    presence: Option<Presence>,
    buffer: usize,
    users: Mutex<HashMap<UserId, Entry>>,
    /// Serialises subscription set-up so two sockets of one user don't both subscribe.
    setup: tokio::sync::Mutex<()>,
}

/// A socket's share of its user's subscription; leaving drops it.
pub struct Membership {
    hub: Arc<Hub>,
    user: UserId,
    /// Frames for this socket.
    pub frames: broadcast::Receiver<Bytes>,
}

impl Hub {
    /// A hub buffering `buffer` frames per user, announcing its users in `presence`.
    pub fn new(mesh: Mesh, buffer: usize, presence: Option<Presence>) -> Arc<Self> {
        Arc::new(Self { mesh, presence, buffer, users: Mutex::new(HashMap::new()), setup: tokio::sync::Mutex::new(()) })
    }

    /// Joins `user`'s frames. Returns once the NATS subscription is live, so a frame
    /// published after this returns reaches the socket.
    pub async fn join(self: &Arc<Self>, user: &UserId) -> anyhow::Result<Membership> {
        if let Some(frames) = self.attach(user) {
            return Ok(Membership { hub: self.clone(), user: user.clone(), frames });
        }
        let _guard = self.setup.lock().await;
        if let Some(frames) = self.attach(user) {
            return Ok(Membership { hub: self.clone(), user: user.clone(), frames });
        }
        let mut subscription = self.mesh.subscribe_push(user).await?;
        let (tx, frames) = broadcast::channel(self.buffer);
        let sender = tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(frame) = subscription.next().await {
                // No receivers only happens in the instant before the entry is removed.
                let _ = sender.send(frame);
            }
        })
        .abort_handle();
        self.users.lock().expect("hub poisoned").insert(user.clone(), Entry { tx, sockets: 1, forwarder });
        if let Some(presence) = &self.presence
            && let Err(e) = presence.online(user).await
        {
            // The user is still served; they just count as offline for notifications.
            tracing::warn!(error = format!("{e:#}"), "could not announce presence");
        }
        Ok(Membership { hub: self.clone(), user: user.clone(), frames })
    }

    fn attach(&self, user: &UserId) -> Option<broadcast::Receiver<Bytes>> {
        let mut users = self.users.lock().expect("hub poisoned");
        let entry = users.get_mut(user)?;
        entry.sockets += 1;
        Some(entry.tx.subscribe())
    }

    /// Users with at least one socket here.
    pub fn connected_users(&self) -> usize {
        self.users.lock().expect("hub poisoned").len()
    }

    /// The ids of the users with at least one socket here.
    pub fn connected_user_ids(&self) -> Vec<UserId> {
        self.users.lock().expect("hub poisoned").keys().cloned().collect()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().expect("hub poisoned");
        if let Some(entry) = users.get_mut(&self.user) {
            entry.sockets -= 1;
            if entry.sockets == 0 {
                entry.forwarder.abort();
                users.remove(&self.user);
                if let Some(presence) = self.hub.presence.clone() {
                    let user = self.user.clone();
                    tokio::spawn(async move {
                        if let Err(e) = presence.offline(&user).await {
                            tracing::debug!(error = format!("{e:#}"), "could not retract presence");
                        }
                    });
                }
            }
        }
    }
}

//! The device registry: where a user's pushes go.

use super::{device_rid, exec, first, rows, run};
use chrono::{DateTime, Utc};
use mosaic_api::notification::{Device, Platform};
use mosaic_api::{DeviceId, Id as _, UserId};
use mosaic_mesh::db::Db;
use mosaic_mesh::write::Write;
use surrealdb::types::SurrealValue;

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct DeviceRow {
    pub key: String,
    pub user: String,
    pub platform: String,
    pub token: Option<String>,
    pub endpoint: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub created_at: DateTime<Utc>,
}

const DEVICE_FIELDS: &str = "record::id(id) AS key, user, platform, token, endpoint, p256dh, auth, created_at";

impl DeviceRow {
    pub fn wire(&self) -> Device {
        Device {
            id: DeviceId::from_trusted(self.key.clone()),
            platform: if self.platform == "webpush" { Platform::Webpush } else { Platform::Fcm },
            created_at: self.created_at,
        }
    }
}

/// How to reach a device being registered: an FCM token, or a Web Push subscription.
#[derive(Debug)]
pub(crate) struct Registration {
    /// `fcm` or `webpush`.
    pub platform: &'static str,
    pub token: Option<String>,
    pub endpoint: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
}

/// Registers device `id` as `user`'s. The same device under another account (a re-login)
/// moves to this one; it keeps its registration time.
pub(crate) async fn register(db: &Db, id: &DeviceId, user: &UserId, device: Registration) -> anyhow::Result<()> {
    let write = Write::new(
        db,
        "UPSERT $rid SET user = $me, platform = $platform, token = $fcm_token, endpoint = $endpoint,
            p256dh = $p256dh, auth = $auth_secret, created_at = created_at ?? time::now()",
    )
    .bind("rid", device_rid(id))
    .bind("me", user.to_string())
    .bind("platform", device.platform)
    .bind("fcm_token", device.token)
    .bind("endpoint", device.endpoint)
    .bind("p256dh", device.p256dh)
    .bind("auth_secret", device.auth);
    run(write, "registering a device").await
}

/// `user`'s devices, oldest first.
pub(crate) async fn of_user(db: &Db, user: &UserId) -> anyhow::Result<Vec<DeviceRow>> {
    let query = db
        .query(format!("SELECT {DEVICE_FIELDS} FROM device WHERE user = $user ORDER BY created_at"))
        .bind(("user", user.to_string()));
    rows(query, "reading devices").await
}

/// A device, whoever's it is.
pub(crate) async fn device(db: &Db, id: &DeviceId) -> anyhow::Result<Option<DeviceRow>> {
    let query = db.query(format!("SELECT {DEVICE_FIELDS} FROM $rid")).bind(("rid", device_rid(id)));
    first(query, "reading a device").await
}

/// Forgets a device.
pub(crate) async fn remove(db: &Db, id: &DeviceId) -> anyhow::Result<()> {
    exec(db.query("DELETE $rid").bind(("rid", device_rid(id))), "removing a device").await
}

/// Forgets the devices `ids` (a user's oldest, past the most one may have).
pub(crate) async fn remove_stale(db: &Db, ids: &[DeviceId]) -> anyhow::Result<()> {
    let stale: Vec<_> = ids.iter().map(device_rid).collect();
    exec(db.query("DELETE $stale").bind(("stale", stale)), "forgetting old devices").await
}

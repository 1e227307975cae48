//! The endpoints: the inbox, preferences, devices, unsubscribe links.

use crate::NotificationService;
use crate::quiet::Window;
use crate::store::deliveries::DeliveryRow;
use crate::store::devices::{self, DeviceRow, Registration};
use crate::store::{self, inbox};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use mosaic_api::endpoint::Empty;
use mosaic_api::notification::{
    ByDevice, ByNotification, Device, DeviceRegistered, InboxQuery, MarkReadBody, Notification, NotificationDetail,
    NotificationPreferences, NotificationType, Platform, RegisterDeviceBody, UnreadCount, UnsubscribeRequest,
    Unsubscribed, VapidKey,
};
use mosaic_api::ws::ServerFrame;
use mosaic_api::{ApiError, DeviceId, Id as _, Page, UserId};
use mosaic_mesh::{Ctx, ServiceResult};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// Devices one user may have; registering more forgets the oldest.
const MAX_DEVICES: usize = 20;
/// Ids one mark-read request may name.
const MAX_MARK_IDS: usize = 500;

impl NotificationService {
    pub(crate) async fn inbox(self: Arc<Self>, ctx: Ctx, req: InboxQuery) -> ServiceResult<Page<Notification>> {
        let me = ctx.require_user()?.clone();
        let (rows, next_cursor) = inbox::page(&self.db, &me, req.unread_only, &req.page).await?;
        let people: Vec<UserId> = rows.iter().flat_map(|r| r.actor_ids()).collect();
        let authors = self.directory.authors(&ctx, &people).await?;
        Ok(Page { items: rows.iter().map(|r| r.wire(&authors)).collect(), next_cursor })
    }

    pub(crate) async fn unread_count(self: Arc<Self>, ctx: Ctx, _req: Empty) -> ServiceResult<UnreadCount> {
        let me = ctx.require_user()?.clone();
        Ok(UnreadCount { unread: inbox::unread_count(&self.db, &me).await? })
    }

    pub(crate) async fn get(self: Arc<Self>, ctx: Ctx, req: ByNotification) -> ServiceResult<NotificationDetail> {
        let me = ctx.require_user()?.clone();
        let (row, deliveries) = inbox::entry_with_deliveries(&self.db, &req.notification_id).await?;
        let Some(row) = row.filter(|r| r.recipient == me.as_str() && r.visible) else {
            return Err(ApiError::not_found("no such notification").into());
        };
        let authors = self.directory.authors(&ctx, &row.actor_ids()).await?;
        Ok(NotificationDetail {
            notification: row.wire(&authors),
            deliveries: deliveries.iter().map(DeliveryRow::wire).collect(),
        })
    }

    pub(crate) async fn mark_read(self: Arc<Self>, ctx: Ctx, req: MarkReadBody) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let ids = req.ids.unwrap_or_default();
        if !req.all && ids.is_empty() {
            return Err(ApiError::validation("name the notifications in `ids`, or set `all`").into());
        }
        if ids.len() > MAX_MARK_IDS {
            return Err(ApiError::validation(format!("at most {MAX_MARK_IDS} ids at once")).into());
        }
        inbox::mark_read(&self.db, &me, &ids, req.all).await?;
        // The user's other devices clear their badges.
        let frame = ServerFrame::NotificationsRead { ids, all: req.all };
        if let Err(e) = self.mesh.push(&me, &frame).await {
            tracing::debug!(error = format!("{e:#}"), "read frame not sent");
        }
        Ok(Empty {})
    }

    pub(crate) async fn preferences(self: Arc<Self>, ctx: Ctx, _req: Empty) -> ServiceResult<NotificationPreferences> {
        let me = ctx.require_user()?;
        Ok(store::prefs(&self.db, me).await?)
    }

    pub(crate) async fn put_preferences(
        self: Arc<Self>,
        ctx: Ctx,
        req: NotificationPreferences,
    ) -> ServiceResult<NotificationPreferences> {
        let me = ctx.require_user()?;
        if let Some(q) = &req.quiet_hours {
            Window::parse(q)?;
        }
        store::set_prefs(&self.db, me, &req).await?;
        Ok(req)
    }

    pub(crate) async fn register_device(
        self: Arc<Self>,
        ctx: Ctx,
        req: RegisterDeviceBody,
    ) -> ServiceResult<DeviceRegistered> {
        let me = ctx.require_user()?.clone();
        let (key, token, endpoint, p256dh, auth) = match (req.platform, req.token, req.subscription) {
            (Platform::Fcm, Some(token), None) => {
                let token = token.trim().to_owned();
                if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ApiError::validation("token must be an FCM registration token").into());
                }
                (format!("fcm|{token}"), Some(token), None, None, None)
            }
            (Platform::Webpush, None, Some(sub)) => {
                let endpoint = sub.endpoint.trim().to_owned();
                if endpoint.len() > 2048 {
                    return Err(ApiError::validation("subscription.endpoint is too long").into());
                }
                // Checked again at every send (a name may resolve elsewhere later); here so
                // a client learns at once that its endpoint will never be used.
                let policy = self.config.webpush.policy();
                let uri = policy.check_url(&endpoint).map_err(ApiError::validation)?;
                let key_len = |s: &str| B64URL.decode(s.trim_end_matches('=')).map(|k| k.len()).unwrap_or(0);
                if key_len(&sub.keys.p256dh) != 65 || key_len(&sub.keys.auth) != 16 {
                    return Err(ApiError::validation(
                        "subscription.keys must hold a 65-byte p256dh key and a 16-byte auth secret (base64url)",
                    )
                    .into());
                }
                let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
                policy.resolve(uri.host().unwrap_or_default(), port).await.map_err(ApiError::validation)?;
                (format!("webpush|{endpoint}"), None, Some(endpoint), Some(sub.keys.p256dh), Some(sub.keys.auth))
            }
            (Platform::Fcm, _, _) => return Err(ApiError::validation("platform fcm takes a `token` (only)").into()),
            (Platform::Webpush, _, _) => {
                return Err(ApiError::validation("platform webpush takes a `subscription` (only)").into());
            }
        };
        let digest = Sha256::digest(key.as_bytes());
        let id = DeviceId::from_trusted(format!(
            "dv-{}",
            digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let platform = match req.platform {
            Platform::Fcm => "fcm",
            Platform::Webpush => "webpush",
        };
        devices::register(&self.db, &id, &me, Registration { platform, token, endpoint, p256dh, auth }).await?;
        let devices = devices::of_user(&self.db, &me).await?;
        if devices.len() > MAX_DEVICES {
            let stale: Vec<DeviceId> = devices
                .iter()
                .filter(|d| d.key != id.as_str())
                .take(devices.len() - MAX_DEVICES)
                .map(|d| DeviceId::from_trusted(d.key.clone()))
                .collect();
            devices::remove_stale(&self.db, &stale).await?;
        }
        Ok(DeviceRegistered { id })
    }

    pub(crate) async fn devices(self: Arc<Self>, ctx: Ctx, _req: Empty) -> ServiceResult<Vec<Device>> {
        let me = ctx.require_user()?.clone();
        Ok(devices::of_user(&self.db, &me).await?.iter().map(DeviceRow::wire).collect())
    }

    pub(crate) async fn remove_device(self: Arc<Self>, ctx: Ctx, req: ByDevice) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let mine = devices::device(&self.db, &req.device_id).await?.is_some_and(|d| d.user == me.as_str());
        if !mine {
            return Err(ApiError::not_found("no such device").into());
        }
        devices::remove(&self.db, &req.device_id).await?;
        Ok(Empty {})
    }

    pub(crate) async fn unsubscribe(
        self: Arc<Self>,
        _ctx: Ctx,
        req: UnsubscribeRequest,
    ) -> ServiceResult<Unsubscribed> {
        let Some((user, kind)) = self.unsubscribes.verify(req.token.trim()) else {
            return Err(ApiError::not_found("this unsubscribe link is not valid").into());
        };
        let mut prefs = store::prefs(&self.db, &user).await?;
        match kind {
            Some(k) => prefs.of_mut(k).email = false,
            None => {
                for k in NotificationType::ALL {
                    prefs.of_mut(k).email = false;
                }
            }
        }
        store::set_prefs(&self.db, &user, &prefs).await?;
        tracing::info!(%user, kind = kind.map(|k| k.as_str()).unwrap_or("all"), "unsubscribed from emails");
        Ok(Unsubscribed { kind })
    }

    pub(crate) async fn vapid_key(self: Arc<Self>, _ctx: Ctx, _req: Empty) -> ServiceResult<VapidKey> {
        Ok(VapidKey { public_key: self.vapid_public.clone() })
    }
}

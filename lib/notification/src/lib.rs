//! The notification service: the in-app inbox, per-type × channel preferences, quiet hours,
//! devices, and sending by mobile push (FCM HTTP v1), browser push (Web Push) and email.
//!
//! * Intake ([`intake`]): jobs from other services (`jobs.notify.*`: likes, comments,
//!   mentions, messages, composed emails) and graph events (follows, mentions in captions)
//!   become coalesced inbox entries, a delivery record per channel, and a kept
//!   `notification` frame, in one transaction per job; a redelivered job changes nothing.
//!   Blocked and muted actors never reach the inbox.
//! * Sending ([`deliver`]): each push or email is a job on its own work queue, retried with
//!   backoff and jitter (a provider's `Retry-After` honoured), dead-lettered with the reason
//!   when attempts run out; its delivery record says how it went.
//! * Quiet hours hold non-urgent pushes and release one digest when they end ([`digest`]);
//!   pushes older than their time-to-live are dropped; sends are rate-limited per user.
//! * Providers sit behind traits chosen from configuration; without credentials, pushes and
//!   emails are logged, so `mosaic up` works offline.

pub mod config;
mod deliver;
mod digest;
pub mod email;
mod inbox;
mod intake;
pub mod push;
pub mod quiet;
mod store;

pub use config::Config;

use mosaic_api::Event as _;

use anyhow::Context as _;
use base64::Engine as _;
use mosaic_api::notification::{self as api, SERVICE};
use mosaic_api::stream::NOTIFY_LIMITS;
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::db::{Db, Migration};
use mosaic_mesh::directory::Directory;
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::{Lifecycle, Mesh, ServiceHandle};
use push::Sender;
use std::sync::Arc;
use std::time::Duration;

/// The service's schema, applied in order by [`mosaic_mesh::db::migrate`].
pub const MIGRATIONS: &[Migration] = mosaic_mesh::migrations!("notification": "0001_init");

/// Shared state of one instance.
pub(crate) struct NotificationService {
    config: Config,
    /// Retry delays of sends, from `config.retry_backoff_ms`.
    backoff: &'static [Duration],
    db: Db,
    mesh: Mesh,
    outbox: Outbox,
    directory: Directory,
    limits: Bucket,
    fcm: Arc<dyn Sender>,
    webpush: Arc<dyn Sender>,
    mailer: Arc<dyn email::Mailer>,
    unsubscribes: email::Unsubscribes,
    vapid_public: String,
}

/// The notification service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Inbox, preferences, devices, push and email",
    migrations: Some(MIGRATIONS),
    serves: mosaic_api::subjects![
        api::Inbox,
        api::GetUnreadCount,
        api::GetNotification,
        api::MarkNotificationsRead,
        api::GetPreferences,
        api::PutPreferences,
        api::RegisterDevice,
        api::Devices,
        api::RemoveDevice,
        api::Unsubscribe,
        api::GetVapidKey,
    ],
    instances: &[],
    calls: mosaic_api::subjects![
        mosaic_api::user::Relations,
        mosaic_api::user::GetContact,
        mosaic_api::user::GetProfiles
    ],
    publishes: &[
        mosaic_api::notification::Deliver::SUBJECT,
        mosaic_api::subject::USER_FRAMES,
        mosaic_api::subject::USER_PUSHES,
        mosaic_api::subject::DEAD_LETTERS,
    ],
    subscribes: &[],
    streams: &[
        &mosaic_api::stream::NOTIFY_JOBS,
        &mosaic_api::stream::DELIVERY_JOBS,
        &mosaic_api::stream::USER_FRAMES,
        &mosaic_api::stream::EVENTS_USER,
        &mosaic_api::stream::EVENTS_POST,
        &mosaic_api::stream::DEAD_LETTERS,
    ],
    buckets: &[&mosaic_api::stream::NOTIFY_LIMITS],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let mut config: Config = unit.config()?;
    if config.public_url.is_empty() {
        config.public_url = unit.common().public_url.clone().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    }
    let db = unit.database().await?;
    let mesh = unit.mesh();
    let unsubscribe_secret = if config.unsubscribe_secret.expose().is_empty() {
        let stored = store::shared_secret(&db, "unsubscribe", || {
            let bytes: [u8; 32] = rand::random();
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        })
        .await?;
        base64::engine::general_purpose::STANDARD.decode(stored).context("stored unsubscribe secret")?
    } else {
        config.unsubscribe_secret.expose().as_bytes().to_vec()
    };
    let vapid = if config.webpush.vapid_private_key.expose().trim().is_empty() {
        let stored = store::shared_secret(&db, "vapid", || {
            let (_, der) = push::webpush::Vapid::generate()?;
            Ok(base64::engine::general_purpose::STANDARD.encode(der))
        })
        .await?;
        push::webpush::Vapid::from_pkcs8(&base64::engine::general_purpose::STANDARD.decode(stored)?)?
    } else {
        push::webpush::Vapid::from_pem(config.webpush.vapid_private_key.expose())
            .context("notification.webpush.vapid_private_key")?
    };
    let fcm: Arc<dyn Sender> = match push::fcm::FcmSender::from_config(&config.fcm)? {
        Some(sender) => Arc::new(sender),
        None => Arc::new(push::LogSender { platform: "fcm" }),
    };
    let vapid_public = vapid.public_key();
    let webpush: Arc<dyn Sender> =
        Arc::new(push::webpush::WebPushSender::new(vapid, config.webpush.subject.clone(), config.webpush.policy())?);
    let mailer: Arc<dyn email::Mailer> = match email::SmtpMailer::from_config(&config.smtp)? {
        Some(m) => Arc::new(m),
        None => Arc::new(email::LogMailer),
    };
    // Consumer specs are static data; the configured delays are leaked once per start.
    let backoff: &'static [Duration] =
        Vec::leak(config.retry_backoff_ms.iter().map(|ms| Duration::from_millis(*ms)).collect());

    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    let state = Arc::new(NotificationService {
        backoff,
        limits: mesh.bucket(&NOTIFY_LIMITS).await?,
        directory: Directory::new(mesh.clone(), 50_000),
        unsubscribes: email::Unsubscribes::new(unsubscribe_secret),
        config,
        db,
        mesh: mesh.clone(),
        outbox,
        fcm,
        webpush,
        mailer,
        vapid_public,
    });
    intake::spawn(state.clone(), mesh, &lifecycle).await?;
    digest::spawn(state.clone(), &lifecycle);
    let rpc = unit
        .service(state)
        .endpoint(api::Inbox, NotificationService::inbox)
        .endpoint(api::GetUnreadCount, NotificationService::unread_count)
        .endpoint(api::GetNotification, NotificationService::get)
        .endpoint(api::MarkNotificationsRead, NotificationService::mark_read)
        .endpoint(api::GetPreferences, NotificationService::preferences)
        .endpoint(api::PutPreferences, NotificationService::put_preferences)
        .endpoint(api::RegisterDevice, NotificationService::register_device)
        .endpoint(api::Devices, NotificationService::devices)
        .endpoint(api::RemoveDevice, NotificationService::remove_device)
        .endpoint(api::Unsubscribe, NotificationService::unsubscribe)
        .endpoint(api::GetVapidKey, NotificationService::vapid_key)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

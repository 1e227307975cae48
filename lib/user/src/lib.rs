//! The user service: accounts and sessions, access and refresh tokens, profiles and
//! preferences, the follow graph, blocks, mutes and suspension.
//!
//! Served over NATS as `mosaic.user.v1.*` (see [`mosaic_api::user`]); state in the `user`
//! SurrealDB database; events (`events.user.*`) through the transactional outbox; token
//! revocations published to the `revocations` bucket that every edge watches.

mod accounts;
pub mod admin;
mod audience;
pub mod config;
mod counts;
mod graph;
mod keys;
mod password;
mod seal;
mod store;
mod throttle;
pub mod validate;

pub use config::Config;

use mosaic_api::Event as _;

use anyhow::Context as _;
use keys::Keys;
use mosaic_api::stream::{LOGIN_THROTTLE, REVOCATIONS};
use mosaic_api::user::{self as api, SERVICE};
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::db::{Db, Migration};
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::quota::Quota;
use mosaic_mesh::{FirstRun, Lifecycle, Mesh, ServiceHandle};
use password::Passwords;
use std::sync::Arc;
use throttle::Throttle;

/// The service's schema, applied in order by [`mosaic_mesh::db::migrate`].
pub const MIGRATIONS: &[Migration] =
    mosaic_mesh::migrations!("user": "0001_init", "0002_post_counts", "0003_mutes_muted");

/// Shared state of one service instance; every endpoint is a method of it.
pub(crate) struct UserService {
    config: Config,
    db: Db,
    outbox: Outbox,
    keys: Arc<Keys>,
    passwords: Passwords,
    throttle: Throttle,
    /// Signups per client network per hour.
    signups: Quota,
    /// Follows per user per hour.
    follows: Quota,
    revocations: Bucket,
    mesh: Mesh,
    /// Per viewer, their relations (all of them, or those looked up): every timeline read
    /// asks for one. Dropped on every instance when the viewer's follows, blocks or mutes
    /// change.
    relations: mosaic_mesh::cache::Coherent<mosaic_api::UserId, graph::ViewerRelations>,
    /// Per author, the first page of who sees their posts: every new post's fan-out asks.
    /// Dropped with the relations.
    audiences: mosaic_mesh::cache::Coherent<mosaic_api::UserId, Option<api::AudiencePage>>,
}

/// The user service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Accounts, tokens, profiles and the social graph",
    migrations: Some(MIGRATIONS),
    serves: mosaic_api::subjects![
        api::Signup,
        api::Login,
        api::Refresh,
        api::Logout,
        api::GetJwks,
        api::GetMe,
        api::UpdateMe,
        api::ChangePassword,
        api::GetProfile,
        api::GetProfiles,
        api::LookupUsernames,
        api::Follow,
        api::Unfollow,
        api::Followers,
        api::Following,
        api::Block,
        api::Unblock,
        api::Mute,
        api::Unmute,
        api::Relations,
        api::Filters,
        api::Suspend,
        api::Unsuspend,
        api::Audience,
        api::GetFeedSeed,
        api::GetContact,
        api::ListAdmins,
    ],
    instances: &[],
    calls: &[],
    publishes: &[
        mosaic_api::user::SignedUp::SUBJECT,
        mosaic_api::user::Followed::SUBJECT,
        mosaic_api::user::Unfollowed::SUBJECT,
        mosaic_api::user::Blocked::SUBJECT,
        mosaic_api::user::Unblocked::SUBJECT,
        mosaic_api::user::Muted::SUBJECT,
        mosaic_api::user::Unmuted::SUBJECT,
        mosaic_api::user::Suspended::SUBJECT,
        mosaic_api::user::Unsuspended::SUBJECT,
        mosaic_api::user::AdminGranted::SUBJECT,
        mosaic_api::user::AdminRevoked::SUBJECT,
        mosaic_api::user::ProfileUpdated::SUBJECT,
        <mosaic_api::user::GraphChanged as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::subject::DEAD_LETTERS,
    ],
    subscribes: &[<mosaic_api::user::GraphChanged as mosaic_api::Broadcast>::SUBJECT],
    streams: &[&mosaic_api::stream::EVENTS_USER, &mosaic_api::stream::EVENTS_POST, &mosaic_api::stream::DEAD_LETTERS],
    buckets: &[&mosaic_api::stream::REVOCATIONS, &mosaic_api::stream::LOGIN_THROTTLE, &mosaic_api::stream::USER_QUOTAS],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance of the user service.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config: Config = unit.config()?;
    let db = unit.database().await?;
    let mesh = unit.mesh();
    let revocations = mesh.bucket(&REVOCATIONS).await?;
    let throttle = Throttle::new(
        mesh.bucket(&LOGIN_THROTTLE).await?,
        config.login_window_secs,
        config.login_max_failures_per_account,
        config.login_max_failures_per_ip,
    );

    let quotas = mesh.bucket(&mosaic_api::stream::USER_QUOTAS).await?;
    let hour = std::time::Duration::from_secs(3600);
    let signups = Quota::new(quotas.clone(), "signups", config.signups_per_ip_per_hour, hour);
    let follows = Quota::new(quotas, "follows", config.follows_per_hour, hour);

    // Before anything runs in the background: a key that does not open leaves nothing behind.
    let sealer = match &config.key_encryption_key {
        Some(kek) => seal::Sealer::from_base64(kek.expose()).context("user.key_encryption_key")?,
        None if unit.database_is_embedded()? => {
            seal::Sealer::load_or_create(&unit.common().data_dir.join("user").join("key-encryption-key"))?
        }
        None => anyhow::bail!(
            "user.key_encryption_key must be set when the user database is a server: the same base64 of 32 random \
             bytes (`openssl rand -base64 32`) for every instance, kept out of the database"
        ),
    };
    let keys = Keys::load(db.clone(), sealer, &config).await?;

    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    spawn_key_rotation(keys.clone(), &lifecycle);

    let state = Arc::new(UserService {
        passwords: Passwords::new(&config)?,
        config,
        db,
        outbox,
        keys,
        throttle,
        signups,
        follows,
        revocations,
        mesh: mesh.clone(),
        relations: mosaic_mesh::cache::Coherent::new(graph::CACHED_VIEWERS, graph::RELATIONS_TTL),
        audiences: mosaic_mesh::cache::Coherent::new(graph::CACHED_VIEWERS, graph::RELATIONS_TTL),
    });
    let listener = state.clone();
    mesh.on_broadcast(&lifecycle, move |n: api::GraphChanged| listener.forget_relations(&n)).await?;
    counts::spawn(state.clone(), mesh, &lifecycle).await?;
    let rpc = unit
        .service(state)
        .endpoint(api::Signup, UserService::signup)
        .endpoint(api::Login, UserService::login)
        .endpoint(api::Refresh, UserService::refresh)
        .endpoint(api::Logout, UserService::logout)
        .endpoint(api::GetJwks, UserService::jwks)
        .endpoint(api::GetMe, UserService::me)
        .endpoint(api::UpdateMe, UserService::update_me)
        .endpoint(api::ChangePassword, UserService::change_password)
        .endpoint(api::GetProfile, UserService::profile)
        .endpoint(api::GetProfiles, UserService::profiles)
        .endpoint(api::LookupUsernames, UserService::lookup_usernames)
        .endpoint(api::Follow, UserService::follow)
        .endpoint(api::Unfollow, UserService::unfollow)
        .endpoint(api::Followers, UserService::followers)
        .endpoint(api::Following, UserService::following)
        .endpoint(api::Block, UserService::block)
        .endpoint(api::Unblock, UserService::unblock)
        .endpoint(api::Mute, UserService::mute)
        .endpoint(api::Unmute, UserService::unmute)
        .endpoint(api::Relations, UserService::relations)
        .endpoint(api::Filters, UserService::filters)
        .endpoint(api::Suspend, UserService::suspend)
        .endpoint(api::Unsuspend, UserService::unsuspend)
        .endpoint(api::Audience, UserService::audience)
        .endpoint(api::GetFeedSeed, UserService::feed_seed)
        .endpoint(api::GetContact, UserService::contact)
        .endpoint(api::ListAdmins, UserService::admins)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

fn spawn_key_rotation(keys: Arc<Keys>, lifecycle: &Lifecycle) {
    lifecycle.every(keys.refresh_interval(), FirstRun::Now, move || {
        let keys = keys.clone();
        async move {
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = format!("{e:#}"), "signing-key refresh failed");
            }
        }
    });
}

//! The interaction service: likes, comments with replies, their counters, and the signals
//! (counts, affinity) other services read.
//!
//! * Every like or comment changes its counter in the same transaction, and its events
//!   (`events.interaction.*`, owner notifications on the `NOTIFY_JOBS` queue) leave through
//!   the transactional outbox, so nothing is counted twice, lost between write and publish,
//!   or sent for one's own actions.
//! * Counter changes reach the sockets watching the post as `post.counts` frames.
//! * Reads of counts and affinity come from per-instance caches that every write drops on
//!   every instance, so the hot path touches the database only for what it has not seen.

pub mod config;
mod engage;
mod signals;
mod store;

pub use config::Config;

use mosaic_api::Event as _;

use mosaic_api::content::PostCreated;
use mosaic_api::interaction::{self as api, SERVICE};
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::db::{Db, Migration};
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::{Lifecycle, Mesh, ServiceHandle};
use std::sync::Arc;

/// The service's schema, applied in order by [`mosaic_mesh::db::migrate`].
pub const MIGRATIONS: &[Migration] = mosaic_mesh::migrations!("interaction": "0001_init", "0002_viewer_lookups");

/// Shared state of one instance.
pub(crate) struct InteractionService {
    db: Db,
    mesh: Mesh,
    outbox: Outbox,
    /// Counts, likes and affinity for the hot reads; see [`signals`].
    cache: signals::SignalCache,
    /// Comments per user per hour.
    comments: mosaic_mesh::quota::Quota,
}

/// The interaction service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Likes, comments, counters and owner notifications",
    migrations: Some(MIGRATIONS),
    serves: mosaic_api::subjects![
        api::Like,
        api::Unlike,
        api::Likers,
        api::AddComment,
        api::Comments,
        api::DeleteComment,
        api::GetSignals,
    ],
    instances: &[],
    calls: mosaic_api::subjects![
        mosaic_api::content::PostRefs,
        mosaic_api::user::Relations,
        mosaic_api::user::GetProfiles,
        mosaic_api::user::LookupUsernames,
    ],
    publishes: &[
        mosaic_api::interaction::Liked::SUBJECT,
        mosaic_api::interaction::Unliked::SUBJECT,
        mosaic_api::interaction::Commented::SUBJECT,
        mosaic_api::interaction::CommentDeleted::SUBJECT,
        mosaic_api::interaction::NotifyUser::SUBJECT,
        <mosaic_api::interaction::SignalsChanged as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::subject::POST_PUSHES,
    ],
    subscribes: &[
        <mosaic_api::interaction::SignalsChanged as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::content::PostCreated::SUBJECT,
    ],
    streams: &[&mosaic_api::stream::EVENTS_INTERACTION, &mosaic_api::stream::NOTIFY_JOBS],
    buckets: &[&mosaic_api::stream::INTERACTION_QUOTAS],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config = unit.config::<Config>()?;
    let db = unit.database().await?;
    let mesh = unit.mesh();
    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    let comments = mosaic_mesh::quota::Quota::new(
        mesh.bucket(&mosaic_api::stream::INTERACTION_QUOTAS).await?,
        "comments",
        config.comments_per_hour,
        std::time::Duration::from_secs(3600),
    );
    let state =
        Arc::new(InteractionService { db, mesh: mesh.clone(), outbox, cache: signals::SignalCache::new(), comments });
    let listener = state.clone();
    mesh.on_broadcast(&lifecycle, move |notice: api::SignalsChanged| listener.forget(&notice)).await?;
    let seeder = state.clone();
    mesh.on_event_notice(&lifecycle, move |e: PostCreated| {
        seeder.cache.seed_new(&e.post_id, &e.author, chrono::Utc::now() - e.created_at);
    })
    .await?;
    let rpc = unit
        .service(state)
        .endpoint(api::Like, InteractionService::like)
        .endpoint(api::Unlike, InteractionService::unlike)
        .endpoint(api::Likers, InteractionService::likers)
        .endpoint(api::AddComment, InteractionService::add_comment)
        .endpoint(api::Comments, InteractionService::comments)
        .endpoint(api::DeleteComment, InteractionService::delete_comment)
        .endpoint(api::GetSignals, InteractionService::signals)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

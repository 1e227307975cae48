//! The content service: uploads, photo and video processing, posts and user timelines.
//!
//! * Uploads: the edge streams bytes into the object store under a ticket from
//!   [`mosaic_api::content::BeginUploadEp`], then registers them; originals are stored once
//!   per content hash.
//! * Processing: a JetStream work queue (`MEDIA_JOBS`) shared by every instance's worker
//!   pool; a watchdog retries or fails jobs whose worker died; a sweeper removes what is no
//!   longer referenced.
//! * Posts: `events.post.*` leave through the transactional outbox.

mod cache;
pub mod config;
mod hygiene;
mod posts;
pub mod process;
mod store;
mod upload;

pub use config::Config;

use mosaic_api::Event as _;

use mosaic_api::content::{self as api, SERVICE};
use mosaic_api::stream::{ConsumerSpec, MEDIA_JOBS};
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::db::{Db, Migration};
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::storage::Storage;
use mosaic_mesh::{Lifecycle, Mesh, ServiceHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The service's schema, applied in order by [`mosaic_mesh::db::migrate`].
pub const MIGRATIONS: &[Migration] = mosaic_mesh::migrations!("content": "0001_init");

/// Shared state of one instance.
pub(crate) struct ContentService {
    config: Config,
    db: Db,
    mesh: Mesh,
    storage: Storage,
    outbox: Outbox,
    /// CPU-bound work (decoding, resizing, encoding, ffmpeg) at most `workers` at a time.
    cpu: Arc<Semaphore>,
    /// Wakes the sweeper early (after a post deletion).
    sweep: tokio::sync::Notify,
    /// Timelines, media and authors for the hot reads; see [`cache`].
    cache: cache::ContentCache,
    /// Posts per user per hour.
    posts: mosaic_mesh::quota::Quota,
}

/// The content service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Uploads, media processing, posts and timelines",
    migrations: Some(MIGRATIONS),
    serves: mosaic_api::subjects![
        api::BeginUploadEp,
        api::CompleteUploadEp,
        api::GetMedia,
        api::GetStorage,
        api::CreatePost,
        api::GetPost,
        api::GetPosts,
        api::WatchablePosts,
        api::DeletePost,
        api::UserPosts,
        api::PostRefs,
        api::RecentPosts,
    ],
    instances: &[],
    calls: mosaic_api::subjects![
        mosaic_api::interaction::GetSignals,
        mosaic_api::user::GetProfiles,
        mosaic_api::user::Relations,
        mosaic_api::user::LookupUsernames,
    ],
    publishes: &[
        mosaic_api::content::PostCreated::SUBJECT,
        mosaic_api::content::PostDeleted::SUBJECT,
        mosaic_api::content::PostMentioned::SUBJECT,
        mosaic_api::content::ProcessMedia::SUBJECT,
        <mosaic_api::content::PostsChanged as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::subject::DEAD_LETTERS,
    ],
    subscribes: &[
        <mosaic_api::content::PostsChanged as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::user::ProfileUpdated::SUBJECT,
        mosaic_api::user::Suspended::SUBJECT,
        mosaic_api::user::Unsuspended::SUBJECT,
    ],
    streams: &[&mosaic_api::stream::EVENTS_POST, &mosaic_api::stream::MEDIA_JOBS, &mosaic_api::stream::DEAD_LETTERS],
    buckets: &[&mosaic_api::stream::CONTENT_QUOTAS],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config: Config = unit.config()?;
    let db = unit.database().await?;
    let storage = unit.storage()?;
    let mesh = unit.mesh();

    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    let posts = mosaic_mesh::quota::Quota::new(
        mesh.bucket(&mosaic_api::stream::CONTENT_QUOTAS).await?,
        "posts",
        config.posts_per_hour,
        std::time::Duration::from_secs(3600),
    );
    let state = Arc::new(ContentService {
        posts,
        cpu: Arc::new(Semaphore::new(config.workers)),
        sweep: tokio::sync::Notify::new(),
        config,
        db,
        mesh: mesh.clone(),
        storage,
        outbox,
        cache: cache::ContentCache::new(),
    });
    cache::ContentCache::listen(&state, mesh, &lifecycle).await?;

    // Consumer specs are static data; the configured delays are leaked once per start (a
    // few bytes) to become that.
    let backoff: &'static [Duration] = Box::leak(
        state
            .config
            .job_retry_backoff_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    // Our own attempt counter fails the media first; this bound parks what slips past it.
    let jobs = ConsumerSpec::new(&MEDIA_JOBS, "content-workers", &[])
        .retries(i64::from(state.config.max_attempts) + 2, backoff)
        .ack_wait(Duration::from_secs(state.config.job_ack_wait_secs));
    mesh.consume::<api::ProcessMedia, _, _, _>(
        jobs,
        state.config.workers,
        state.clone(),
        &lifecycle,
        ContentService::process,
    )
    .await?;
    hygiene::spawn(state.clone(), &lifecycle);

    let rpc = unit
        .service(state)
        .endpoint(api::BeginUploadEp, ContentService::begin_upload)
        .endpoint(api::CompleteUploadEp, ContentService::complete_upload)
        .endpoint(api::GetMedia, ContentService::get_media)
        .endpoint(api::GetStorage, ContentService::storage_usage)
        .endpoint(api::CreatePost, ContentService::create_post)
        .endpoint(api::GetPost, ContentService::get_post)
        .endpoint(api::GetPosts, ContentService::get_posts)
        .endpoint(api::WatchablePosts, ContentService::watchable_posts)
        .endpoint(api::DeletePost, ContentService::delete_post)
        .endpoint(api::UserPosts, ContentService::user_posts)
        .endpoint(api::PostRefs, ContentService::post_refs)
        .endpoint(api::RecentPosts, ContentService::recent_posts)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

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

pub use config::Config;

use mosaic_api::content::PostCreated;
use mosaic_api::interaction::{self as api, SERVICE};
use mosaic_api::stream::{EVENTS_INTERACTION, NOTIFY_JOBS};
use mosaic_mesh::db::{self, Db, Migration};
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
}

/// Opens the database and applies pending migrations (`mosaic migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<Db> {
    let db = db::connect(&config.db, SERVICE).await?;
    db::migrate(&db, MIGRATIONS).await?;
    Ok(db)
}

/// Starts one instance on `mesh`.
pub async fn start(mesh: &Mesh, config: Config) -> anyhow::Result<ServiceHandle> {
    config.validate()?;
    let db = db::connect(&config.db, SERVICE).await?;
    start_with_db(mesh, db).await
}

/// Starts one instance on an already open database.
pub async fn start_with_db(mesh: &Mesh, db: Db) -> anyhow::Result<ServiceHandle> {
    db::migrate(&db, MIGRATIONS).await?;
    mesh.ensure_stream(&EVENTS_INTERACTION).await?;
    mesh.ensure_stream(&NOTIFY_JOBS).await?;
    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    let state = Arc::new(InteractionService { db, mesh: mesh.clone(), outbox, cache: signals::SignalCache::new() });
    let listener = state.clone();
    mesh.on_broadcast(&lifecycle, move |notice: api::SignalsChanged| listener.forget(&notice)).await?;
    let seeder = state.clone();
    mesh.on_event_notice(&lifecycle, move |e: PostCreated| {
        seeder.cache.seed_new(&e.post_id, &e.author, chrono::Utc::now() - e.created_at);
    })
    .await?;
    let rpc = mesh
        .service(SERVICE, "Likes, comments, counters and owner notifications", state)
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

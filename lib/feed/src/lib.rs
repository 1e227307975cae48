//! The feed service: each reader's home feed, cached in the `feeds` key-value bucket.
//!
//! * Write path (hybrid fan-out): a new post of an author with fewer followers than
//!   `fanout_threshold` is pushed into the cached feed of each follower who read theirs
//!   within `active_window_secs`; posts of bigger authors are marked for pulling and merged
//!   in when a follower reads. Every online follower gets a `feed.post` frame either way.
//! * Graph events (follow, unfollow, block, mute, preference changes) reconcile the feeds
//!   they touch; a feed that is missing or stale is rebuilt from the graph on read.
//! * Read path: the feed as this instance last read or wrote it while that is known to be
//!   current (a bucket read otherwise), cached posts of pulled authors, one request for
//!   counts and affinity, and post bodies from a short-lived cache; see [`rank`] for the
//!   order and the `listing` module for the pages after the first.

mod codec;
pub mod config;
mod fanout;
mod known;
mod listing;
pub mod rank;
mod read;
mod store;

pub use config::Config;

use mosaic_api::content::{Post, PostRef};
use mosaic_api::feed::{self as api, SERVICE};
use mosaic_api::stream::{FEED_PULL_AUTHORS, FEEDS};
use mosaic_api::{Id, PostId, UserId};
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::presence::PresenceMirror;
use mosaic_mesh::{Lifecycle, Mesh, ServiceHandle};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Memory an instance spends remembering feeds it read or wrote (estimated, see
/// [`known::KnownWeight`]); at the default cap of 500 posts a full feed weighs ~80 KB, so
/// this holds the ~1 600 busiest feeds.
const KNOWN_FEEDS_BYTES: u64 = 128 << 20;

/// Shared state of one instance.
pub(crate) struct FeedService {
    config: Config,
    mesh: Mesh,
    feeds: Bucket,
    /// Ranked orders kept for the pages after the first.
    listings: Arc<listing::Listings>,
    pull_marks: Bucket,
    /// Authors whose posts are pulled at read time; mirrors `pull_marks` through a watch.
    pull_authors: RwLock<HashSet<UserId>>,
    /// Recent posts of pulled authors, briefly, so a burst of readers asks once.
    pulled: quick_cache::sync::Cache<UserId, (Instant, Arc<Vec<PostRef>>)>,
    /// The last revision of each feed this instance read or wrote, with the document: lets
    /// fan-out write without reading first, and reads skip the bucket (see [`known`]).
    known: Arc<known::KnownFeeds>,
    /// Post bodies (author, caption, media), briefly; counts are always read fresh.
    posts: quick_cache::sync::Cache<PostId, (Instant, Arc<Post>)>,
    /// Who has a socket open on some edge: live frames go to those followers only.
    presence: PresenceMirror,
}

/// The feed service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Ranked home feeds with hybrid fan-out",
    migrations: None,
    serves: mosaic_api::subjects![api::GetFeed,],
    instances: mosaic_api::subjects![mosaic_api::feed::GetRankedOrder],
    calls: mosaic_api::subjects![
        mosaic_api::content::GetPosts,
        mosaic_api::content::RecentPosts,
        mosaic_api::user::Audience,
        mosaic_api::user::GetFeedSeed,
        mosaic_api::interaction::GetSignals,
    ],
    publishes: &[
        mosaic_api::subject::USER_PUSHES,
        <mosaic_api::feed::FeedsWritten as mosaic_api::Broadcast>::SUBJECT,
        mosaic_api::subject::DEAD_LETTERS,
    ],
    subscribes: &[<mosaic_api::feed::FeedsWritten as mosaic_api::Broadcast>::SUBJECT],
    streams: &[&mosaic_api::stream::EVENTS_POST, &mosaic_api::stream::EVENTS_USER, &mosaic_api::stream::DEAD_LETTERS],
    buckets: &[&mosaic_api::stream::FEEDS, &mosaic_api::stream::FEED_PULL_AUTHORS, &mosaic_api::stream::PRESENCE],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config: Config = unit.config()?;

    let mesh = unit.mesh();
    let lifecycle = Lifecycle::new();
    // Names this instance to the others: in cursors, and in notices of the feeds it wrote.
    let instance = mosaic_api::EventId::generate().to_string();
    let presence = PresenceMirror::spawn(mesh, &lifecycle).await?;
    let state = Arc::new(FeedService {
        feeds: mesh.cache_bucket(&FEEDS, config.cache_max_bytes as i64).await?,
        listings: Arc::new(listing::Listings::new(instance.clone())),
        pull_marks: mesh.bucket(&FEED_PULL_AUTHORS).await?,
        pull_authors: RwLock::new(HashSet::new()),
        pulled: quick_cache::sync::Cache::new(10_000),
        known: Arc::new(known::KnownFeeds::new(
            KNOWN_FEEDS_BYTES,
            Duration::from_millis(config.known_fresh_ms),
            instance,
        )),
        posts: quick_cache::sync::Cache::new(50_000),
        presence,
        mesh: mesh.clone(),
        config,
    });
    state.known.spawn(mesh, &lifecycle).await?;
    state.listings.serve(mesh, &lifecycle).await?;
    state.clone().watch_pull_authors(&lifecycle).await?;
    fanout::spawn(state.clone(), mesh, &lifecycle).await?;
    let rpc = unit.service(state).endpoint(api::GetFeed, FeedService::home).start().await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

impl FeedService {
    /// Mirrors the pulled-author marks into memory, so reads never ask for them. Returns
    /// once the current marks are loaded.
    async fn watch_pull_authors(self: Arc<Self>, lifecycle: &Lifecycle) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = lifecycle.shutdown().clone();
        let empty = self.pull_marks.is_empty().await?;
        lifecycle.spawn(async move {
            let mut ready = Some(ready_tx);
            if empty && let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            loop {
                let mut changes = match self.pull_marks.watch_all().await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching pulled authors failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                loop {
                    let change = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = changes.next() => c,
                    };
                    let Some(Ok(change)) = change else { break };
                    if let Some(author) = change.key.strip_prefix("author.").and_then(UserId::parse) {
                        let mut set = self.pull_authors.write().expect("pull set poisoned");
                        if change.value.is_some() {
                            set.insert(author);
                        } else {
                            set.remove(&author);
                        }
                    }
                    if change.caught_up
                        && let Some(tx) = ready.take()
                    {
                        let _ = tx.send(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("loading pulled authors timed out"))?
            .map_err(|_| anyhow::anyhow!("pulled-author watch ended"))?;
        Ok(())
    }

    fn is_pulled(&self, author: &UserId) -> bool {
        self.pull_authors.read().expect("pull set poisoned").contains(author)
    }
}

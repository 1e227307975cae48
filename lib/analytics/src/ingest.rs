//! Collection: durable consumers over the view, interaction, user and post streams turn
//! events into warehouse rows. Batches from all of them are buffered and written together
//! every few seconds (or sooner when the buffer is full), so a day is a few files per flush
//! interval rather than one per event; a batch is acknowledged only once the file holding it
//! is in the store, so a crash means redelivery, not loss.

use crate::warehouse::{Event, Kind, Warehouse};
use chrono::Utc;
use mosaic_api::content::{PostCreated, PostDeleted, PostRefs, PostsByIds};
use mosaic_api::interaction::{CommentDeleted, Commented, Liked, PostViewed, Unliked};
use mosaic_api::stream::{ConsumerSpec, EVENTS_INTERACTION, EVENTS_POST, EVENTS_USER, EVENTS_VIEW};
use mosaic_api::user::{Followed, SignedUp, Unfollowed};
use mosaic_api::{Envelope, Event as _, Id as _, PostId};
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::{Ctx, Lifecycle, Mesh};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, oneshot};

const BACKOFF: &[Duration] =
    &[Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(60)];

fn spec(
    stream: &'static mosaic_api::stream::StreamSpec,
    durable: &'static str,
    filters: &'static [&'static str],
) -> ConsumerSpec {
    // A batch waits for the flush that writes it, at most a flush interval and a write.
    ConsumerSpec::new(stream, durable, filters)
        .retries(20, BACKOFF)
        .ack_wait(Duration::from_secs(60))
        .in_flight(200_000)
}

/// Messages per batch handed to the writer.
const BATCH: usize = 10_000;
/// How long a batch waits for more messages.
const LINGER: Duration = Duration::from_millis(250);
/// Post ids per owner lookup.
const LOOKUP_CHUNK: usize = 1000;

/// Counters for the status endpoint and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    /// Unix ms of the newest event written.
    pub newest_ms: AtomicI64,
    /// Milliseconds between the newest event's time and its write, at the last flush.
    pub lag_ms: AtomicI64,
}

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// The flusher has stopped: appends fail (their batches are redelivered elsewhere).
    closed: bool,
}

/// The collector.
pub struct Ingest {
    warehouse: Warehouse,
    mesh: Mesh,
    flush_rows: usize,
    flush_interval: Duration,
    pending: Mutex<Pending>,
    wake: Notify,
    /// Post → author, for views (which name only the post).
    owners: quick_cache::sync::Cache<PostId, Option<String>>,
    pub stats: Stats,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("written", &self.stats.written).finish_non_exhaustive()
    }
}

/// What one message becomes.
enum Mapped {
    Row(Event),
    /// A view, whose post's author is looked up before it becomes a row.
    View {
        id: String,
        at: chrono::DateTime<Utc>,
        post: PostId,
        viewer: String,
    },
}

mosaic_api::event_set! {
    /// Every event the warehouse collects, from the four streams.
    enum Collected {
        Viewed(PostViewed),
        Liked(Liked),
        Unliked(Unliked),
        Commented(Commented),
        CommentDeleted(CommentDeleted),
        SignedUp(SignedUp),
        Followed(Followed),
        Unfollowed(Unfollowed),
        PostCreated(PostCreated),
        PostDeleted(PostDeleted),
    }
}

/// An event as a warehouse row.
fn map(e: Envelope<Collected>) -> Mapped {
    let row = |kind: Kind, user: &str, owner: Option<&str>, post: Option<&str>| {
        Mapped::Row(Event {
            event_id: e.id.to_string(),
            at: e.at,
            kind,
            user_id: user.to_owned(),
            owner_id: owner.map(str::to_owned),
            post_id: post.map(str::to_owned),
        })
    };
    match &e.data {
        Collected::Viewed(v) => {
            Mapped::View { id: e.id.to_string(), at: e.at, post: v.post_id.clone(), viewer: v.viewer.to_string() }
        }
        Collected::Liked(l) => row(Kind::Like, l.user.as_str(), Some(l.owner.as_str()), Some(l.post_id.as_str())),
        Collected::Unliked(l) => row(Kind::Unlike, l.user.as_str(), Some(l.owner.as_str()), Some(l.post_id.as_str())),
        Collected::Commented(c) => {
            row(Kind::Comment, c.user.as_str(), Some(c.owner.as_str()), Some(c.post_id.as_str()))
        }
        Collected::CommentDeleted(c) => {
            row(Kind::CommentDeleted, c.by.as_str(), Some(c.owner.as_str()), Some(c.post_id.as_str()))
        }
        Collected::SignedUp(u) => row(Kind::Signup, u.user_id.as_str(), None, None),
        Collected::Followed(f) => row(Kind::Follow, f.follower.as_str(), Some(f.followee.as_str()), None),
        Collected::Unfollowed(f) => row(Kind::Unfollow, f.follower.as_str(), Some(f.followee.as_str()), None),
        Collected::PostCreated(p) => {
            row(Kind::Post, p.author.as_str(), Some(p.author.as_str()), Some(p.post_id.as_str()))
        }
        Collected::PostDeleted(p) => {
            row(Kind::PostDeleted, p.author.as_str(), Some(p.author.as_str()), Some(p.post_id.as_str()))
        }
    }
}

impl Ingest {
    /// A collector writing to `warehouse`.
    pub fn new(warehouse: Warehouse, mesh: Mesh, flush_rows: usize, flush_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            warehouse,
            mesh,
            flush_rows: flush_rows.max(1),
            flush_interval,
            pending: Mutex::default(),
            wake: Notify::new(),
            owners: quick_cache::sync::Cache::new(200_000),
            stats: Stats::default(),
        })
    }

    /// Starts the flusher and the consumers.
    pub async fn spawn(self: &Arc<Self>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
        let flusher = self.clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        flusher.pending.lock().await.closed = true;
                        flusher.flush().await;
                        return;
                    }
                    _ = flusher.wake.notified() => {}
                    _ = tokio::time::sleep(flusher.flush_interval) => {}
                }
                flusher.flush().await;
            }
        });
        let consumers = [
            spec(&EVENTS_VIEW, "analytics-views", &[]),
            spec(
                &EVENTS_INTERACTION,
                "analytics-interactions",
                &[Liked::SUBJECT, Unliked::SUBJECT, Commented::SUBJECT, CommentDeleted::SUBJECT],
            ),
            spec(&EVENTS_USER, "analytics-users", &[SignedUp::SUBJECT, Followed::SUBJECT, Unfollowed::SUBJECT]),
            spec(&EVENTS_POST, "analytics-posts", &[PostCreated::SUBJECT, PostDeleted::SUBJECT]),
        ];
        for consumer in consumers {
            let this = self.clone();
            mesh.consume_event_batches(consumer, BATCH, LINGER, 4, lifecycle, move |batch| {
                let this = this.clone();
                async move { this.take(batch).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Turns a batch into rows and waits until they are written.
    async fn take(&self, batch: Vec<(usize, Envelope<Collected>)>) -> Result<Vec<(usize, String)>, HandlerError> {
        let mut rows = Vec::with_capacity(batch.len());
        let mut views = Vec::new();
        for (_, e) in batch {
            match map(e) {
                Mapped::Row(e) => {
                    if e.kind == Kind::Post
                        && let (Some(p), Some(o)) = (&e.post_id, &e.owner_id)
                    {
                        self.owners.insert(PostId::from_trusted(p.clone()), Some(o.clone()));
                    }
                    rows.push(e);
                }
                Mapped::View { id, at, post, viewer } => views.push((id, at, post, viewer)),
            }
        }
        if !views.is_empty() {
            let posts: Vec<PostId> = views.iter().map(|v| v.2.clone()).collect();
            self.resolve_owners(&posts).await.map_err(HandlerError::Transient)?;
            for (id, at, post, viewer) in views {
                // Views of posts that never existed (or are gone) are not counted.
                let Some(Some(owner)) = self.owners.get(&post) else {
                    metrics::counter!("analytics_views_dropped_total").increment(1);
                    continue;
                };
                rows.push(Event {
                    event_id: id,
                    at,
                    kind: Kind::View,
                    user_id: viewer,
                    owner_id: Some(owner),
                    post_id: Some(post.to_string()),
                });
            }
        }
        self.append(rows).await.map_err(HandlerError::Transient)?;
        Ok(Vec::new())
    }

    /// Looks up the authors of posts not seen yet.
    async fn resolve_owners(&self, posts: &[PostId]) -> anyhow::Result<()> {
        let mut unknown: Vec<PostId> = posts.iter().filter(|p| self.owners.get(*p).is_none()).cloned().collect();
        unknown.sort();
        unknown.dedup();
        for chunk in unknown.chunks(LOOKUP_CHUNK) {
            let ctx = Ctx::new().with_timeout(Duration::from_secs(10));
            let refs = self.mesh.call::<PostRefs>(&ctx, &PostsByIds { ids: chunk.to_vec() }).await?;
            for p in chunk {
                self.owners.insert(p.clone(), None);
            }
            for r in refs {
                self.owners.insert(r.post_id, Some(r.author.to_string()));
            }
        }
        Ok(())
    }

    /// Adds rows to the next file and waits until it is written.
    pub async fn append(&self, rows: Vec<Event>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().await;
            if pending.closed {
                anyhow::bail!("the writer is stopping");
            }
            pending.events.extend(rows);
            pending.waiters.push(tx);
            if pending.events.len() >= self.flush_rows {
                self.wake.notify_one();
            }
        }
        rx.await.map_err(|_| anyhow::anyhow!("the writer stopped"))?.map_err(|e| anyhow::anyhow!(e))
    }

    /// Writes what is buffered and tells the waiters how it went.
    pub async fn flush(&self) {
        let (events, waiters) = {
            let mut pending = self.pending.lock().await;
            (std::mem::take(&mut pending.events), std::mem::take(&mut pending.waiters))
        };
        if events.is_empty() {
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let started = Instant::now();
        let outcome = self.warehouse.write(&events).await;
        match &outcome {
            Ok(files) => {
                let newest = events.iter().map(|e| e.at.timestamp_millis()).max().unwrap_or(0);
                let lag = Utc::now().timestamp_millis() - newest;
                self.stats.written.fetch_add(events.len() as u64, Ordering::Relaxed);
                self.stats.newest_ms.fetch_max(newest, Ordering::Relaxed);
                self.stats.lag_ms.store(lag.max(0), Ordering::Relaxed);
                metrics::counter!("analytics_events_written_total").increment(events.len() as u64);
                metrics::gauge!("analytics_ingest_lag_seconds").set(lag.max(0) as f64 / 1000.0);
                tracing::debug!(rows = events.len(), files = files.len(), took = ?started.elapsed(), "events written");
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                rows = events.len(),
                "writing events failed; they will be redelivered"
            ),
        }
        let result = outcome.map(|_| ()).map_err(|e| format!("{e:#}"));
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

//! Feeds this instance read or wrote, remembered with their bucket revision.
//!
//! Fan-out writes from the remembered document without reading it first (see [`store`]),
//! and a read serves it without asking the bucket while it is *checked*: known to be the
//! bucket's latest revision within the last `known_fresh_ms`. A read of the bucket that
//! finds the same revision, or a write of this instance, checks it again. Each instance
//! tells the others which feeds it wrote ([`FeedsWritten`], gathered for
//! [`NOTICE_LINGER`]), and hearing that unchecks their copies, so a feed another instance
//! changed is read from the bucket again within milliseconds. A notice lost with a
//! connection leaves a copy that may be behind for at most `known_fresh_ms`.
//!
//! A check that races a notice must not survive it: a read that fetched a revision before
//! another instance wrote, and remembers it after the notice arrived, would otherwise pass
//! the older revision off as checked. So a check counts only when no notice arrived while
//! it was made ([`KnownFeeds::epoch`]).
//!
//! [`store`]: crate::store

use crate::codec::FeedDoc;
use mosaic_api::UserId;
use mosaic_api::feed::FeedsWritten;
use mosaic_mesh::{Lifecycle, Mesh};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long written feeds are gathered before the others are told, in one notice.
pub(crate) const NOTICE_LINGER: Duration = Duration::from_millis(5);
/// Feeds named per notice at most (~40 bytes each), well inside a NATS message.
const NOTICE_USERS: usize = 2_000;

/// Weighs a remembered feed by the memory it holds, roughly: ids are short strings, so an
/// entry with its tags and encoding costs ~160 bytes and an id in the graph lists ~48.
/// Entries are shared between the feeds one post went to, so this errs high.
#[derive(Clone, Copy)]
pub(crate) struct KnownWeight;

impl KnownWeight {
    const ENTRY: u64 = 160;
    const ID: u64 = 48;
    /// A feed at the default cap, for sizing the cache's index.
    pub(crate) const FULL_FEED: u64 = 500 * Self::ENTRY;
}

impl quick_cache::Weighter<UserId, Arc<Known>> for KnownWeight {
    fn weight(&self, _: &UserId, known: &Arc<Known>) -> u64 {
        let doc = &known.doc;
        let ids = doc.graph.following.len() + doc.graph.hidden.len() + doc.graph.topics.len();
        256 + doc.entries.len() as u64 * Self::ENTRY + ids as u64 * Self::ID
    }
}

/// One remembered feed.
pub(crate) struct Known {
    pub(crate) revision: u64,
    pub(crate) doc: Arc<FeedDoc>,
    /// When this revision was last known to be the latest, in nanoseconds after
    /// [`KnownFeeds::origin`] plus one; 0 when it must be read again before it is served.
    checked: AtomicU64,
}

/// The remembered feeds of one instance, and the notices about them.
pub(crate) struct KnownFeeds {
    feeds: quick_cache::sync::Cache<UserId, Arc<Known>, KnownWeight>,
    fresh: Duration,
    origin: Instant,
    /// Notices heard so far; see the module documentation.
    epoch: AtomicU64,
    /// This instance, so it ignores its own notices.
    writer: String,
    written: Mutex<Vec<UserId>>,
    wake: Notify,
}

/// What [`KnownFeeds::epoch`] was when a check started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(u64);

impl KnownFeeds {
    /// Remembers feeds up to `bytes` (estimated), each served unchecked for at most `fresh`;
    /// `writer` names this instance in its notices.
    pub(crate) fn new(bytes: u64, fresh: Duration, writer: String) -> Self {
        Self {
            feeds: quick_cache::sync::Cache::with_weighter(
                (bytes / KnownWeight::FULL_FEED) as usize,
                bytes,
                KnownWeight,
            ),
            fresh,
            origin: Instant::now(),
            epoch: AtomicU64::new(0),
            writer,
            written: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    /// Taken before reading the bucket, for [`KnownFeeds::remember`].
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// The remembered feed, checked or not.
    pub(crate) fn get(&self, user: &UserId) -> Option<Arc<Known>> {
        self.feeds.get(user)
    }

    /// The remembered feed if it was checked recently enough to be served as it is.
    pub(crate) fn checked(&self, user: &UserId) -> Option<Arc<Known>> {
        let known = self.feeds.get(user)?;
        let at = known.checked.load(Ordering::Acquire);
        (at != 0 && self.now().saturating_sub(at) < self.fresh.as_nanos() as u64).then_some(known)
    }

    /// Records that the bucket holds `known`'s revision, as read after `since` was taken.
    pub(crate) fn confirm(&self, known: &Known, since: Epoch) {
        if self.epoch.load(Ordering::Acquire) == since.0 {
            known.checked.store(self.now(), Ordering::Release);
        }
    }

    /// Remembers `doc` as `user`'s feed at `revision`, read or written after `since`.
    pub(crate) fn remember(&self, user: &UserId, revision: u64, doc: Arc<FeedDoc>, since: Epoch) {
        let known = Arc::new(Known { revision, doc, checked: AtomicU64::new(0) });
        self.confirm(&known, since);
        self.feeds.insert(user.clone(), known);
    }

    /// Remembers what this instance just wrote as `user`'s feed at `revision`, unless a
    /// later write of this instance got there first, and notes it for the next notice.
    pub(crate) fn wrote(&self, user: &UserId, revision: u64, doc: Arc<FeedDoc>, since: Epoch) {
        // Two local writers of one feed may finish in either order; the bucket's revisions
        // only grow, so the older one must not replace the newer one.
        if self.feeds.get(user).is_none_or(|known| known.revision < revision) {
            self.remember(user, revision, doc, since);
        }
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.push(user.clone());
        if written.len() == 1 {
            self.wake.notify_one();
        }
    }

    pub(crate) fn forget(&self, user: &UserId) {
        self.feeds.remove(user);
    }

    /// Another instance's notice: the feeds it names are read from the bucket next time.
    fn heard(&self, notice: FeedsWritten) {
        if notice.writer == self.writer {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for user in &notice.users {
            if let Some(known) = self.feeds.get(user) {
                known.checked.store(0, Ordering::Release);
            }
        }
    }

    /// Listens to the other instances' notices and sends this one's until shutdown.
    pub(crate) async fn spawn(self: &Arc<Self>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
        let this = self.clone();
        mesh.on_broadcast(lifecycle, move |notice: FeedsWritten| this.heard(notice)).await?;
        let this = self.clone();
        let mesh = mesh.clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = this.wake.notified() => {}
                }
                tokio::time::sleep(NOTICE_LINGER).await;
                let mut users = std::mem::take(&mut *this.written.lock().unwrap_or_else(PoisonError::into_inner));
                users.sort_unstable();
                users.dedup();
                for chunk in users.chunks(NOTICE_USERS) {
                    let notice = FeedsWritten { writer: this.writer.clone(), users: chunk.to_vec() };
                    if let Err(e) = mesh.broadcast(&notice).await {
                        // The others serve their copies until `known_fresh_ms` runs out.
                        tracing::warn!(feeds = chunk.len(), error = %e, "could not tell other instances of written feeds");
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_api::Id as _;

    fn doc() -> Arc<FeedDoc> {
        Arc::new(FeedDoc::default())
    }

    fn known(fresh: Duration) -> (KnownFeeds, UserId) {
        (KnownFeeds::new(1 << 20, fresh, "this".into()), UserId::generate())
    }

    #[test]
    fn a_remembered_feed_is_served_unchecked_only_while_fresh() {
        let (k, user) = known(Duration::from_millis(30));
        k.remember(&user, 3, doc(), k.epoch());
        assert_eq!(k.checked(&user).map(|c| c.revision), Some(3));
        std::thread::sleep(Duration::from_millis(40));
        assert!(k.checked(&user).is_none());
        // Still there for fan-out, which writes from it without reading.
        assert_eq!(k.get(&user).map(|c| c.revision), Some(3));
        let again = k.get(&user).unwrap();
        k.confirm(&again, k.epoch());
        assert!(k.checked(&user).is_some());
    }

    #[test]
    fn another_instances_notice_unchecks_and_its_own_does_not() {
        let (k, user) = known(Duration::from_secs(60));
        k.remember(&user, 3, doc(), k.epoch());
        k.heard(FeedsWritten { writer: k.writer.clone(), users: vec![user.clone()] });
        assert!(k.checked(&user).is_some());
        k.heard(FeedsWritten { writer: "other".into(), users: vec![user.clone()] });
        assert!(k.checked(&user).is_none());
    }

    #[test]
    fn a_check_that_raced_a_notice_does_not_count() {
        let (k, user) = known(Duration::from_secs(60));
        let since = k.epoch();
        // Another instance wrote after this one read the bucket, and said so.
        k.heard(FeedsWritten { writer: "other".into(), users: vec![user.clone()] });
        k.remember(&user, 3, doc(), since);
        assert!(k.checked(&user).is_none());
        assert!(k.get(&user).is_some());
    }
}

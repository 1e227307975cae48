//! Reading and writing cached feeds: every write is a compare-and-set on the key's revision,
//! retried on conflict, so concurrent fan-outs, graph changes and rebuilds never lose each
//! other's work.
//!
//! Each instance remembers the last revision it read or wrote of each feed, with the
//! document (`FeedService::known`), so a fan-out writes without reading first: one bucket
//! operation per follower instead of two, and a read that finds the remembered revision
//! skips decoding. A remembered revision that another writer has passed only fails its
//! compare-and-set; the write then starts over from the newer revision this instance
//! remembers (a concurrent fan-out here) or reads the feed as before. Decisions not to
//! write (inactive reader, nothing to change) are only taken on a freshly read document.

use crate::FeedService;
use crate::codec::{Entry, FeedDoc, Graph};
use anyhow::{Context as _, bail};
use chrono::Utc;
use mosaic_api::UserId;
use mosaic_api::content::{PostRef, RecentByAuthors, RecentPosts};
use mosaic_api::user::{ByUser, GetFeedSeed};
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;

const CAS_ATTEMPTS: usize = 32;

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

impl quick_cache::Weighter<UserId, (u64, Arc<FeedDoc>)> for KnownWeight {
    fn weight(&self, _: &UserId, (_, doc): &(u64, Arc<FeedDoc>)) -> u64 {
        let ids = doc.graph.following.len() + doc.graph.hidden.len() + doc.graph.topics.len();
        256 + doc.entries.len() as u64 * Self::ENTRY + ids as u64 * Self::ID
    }
}

pub(crate) fn key(user: &UserId) -> String {
    format!("feed.{user}")
}

pub(crate) fn entry(p: &PostRef) -> Entry {
    Entry::new(p.post_id.clone(), p.author.clone(), p.created_at.timestamp_millis(), p.tags.clone())
}

/// What a read found.
pub(crate) enum Loaded {
    /// A feed read within the activity window.
    Active(Arc<FeedDoc>),
    /// A feed not read for longer than the window (its revision, for the rebuild's CAS).
    Stale(u64),
    Missing,
}

impl FeedService {
    fn is_active(&self, doc: &FeedDoc) -> bool {
        let window_ms = (self.config.active_window_secs as i64).saturating_mul(1000);
        Utc::now().timestamp_millis() - doc.touched_ms <= window_ms
    }

    pub(crate) async fn load(&self, user: &UserId) -> anyhow::Result<Loaded> {
        let Some(v) = self.feeds.get(&key(user)).await? else {
            self.known.remove(user);
            return Ok(Loaded::Missing);
        };
        // The revision this instance last read or wrote: the same document, already decoded.
        if let Some((revision, doc)) = self.known.get(user)
            && revision == v.revision
            && self.is_active(&doc)
        {
            return Ok(Loaded::Active(doc));
        }
        match FeedDoc::decode(&v.value) {
            Some(doc) if self.is_active(&doc) => {
                let doc = Arc::new(doc);
                self.known.insert(user.clone(), (v.revision, doc.clone()));
                Ok(Loaded::Active(doc))
            }
            Some(_) => Ok(Loaded::Stale(v.revision)),
            None => {
                tracing::warn!(user = %user, "undecodable cached feed; rebuilding it");
                Ok(Loaded::Stale(v.revision))
            }
        }
    }

    /// Applies `change` to `user`'s feed if it is cached and active (a missing or stale
    /// feed is rebuilt on its next read, so it needs no update). `change` returns whether it
    /// changed anything; nothing is written otherwise.
    pub(crate) async fn modify(
        &self,
        user: &UserId,
        mut change: impl FnMut(&mut FeedDoc) -> bool,
    ) -> anyhow::Result<()> {
        let key = key(user);
        let mut remembered = self.known.get(user);
        for _ in 0..CAS_ATTEMPTS {
            let (revision, mut doc, fresh) = match remembered.take() {
                Some((revision, doc)) => (revision, FeedDoc::clone(&doc), false),
                None => {
                    let Some(v) = self.feeds.get(&key).await? else { return Ok(()) };
                    let Some(doc) = FeedDoc::decode(&v.value) else { return Ok(()) };
                    (v.revision, doc, true)
                }
            };
            if !self.is_active(&doc) || !change(&mut doc) {
                if fresh {
                    return Ok(());
                }
                // The remembered copy may be behind (another instance's touch or change).
                continue;
            }
            match self.feeds.update(&key, doc.encode(), revision).await? {
                Some(new) => {
                    self.known.insert(user.clone(), (new, Arc::new(doc)));
                    return Ok(());
                }
                None => {
                    // Lost to another writer. Most often that is a concurrent fan-out on
                    // this instance, which remembered what it wrote: start from that rather
                    // than reading and decoding the feed again (decoding after lost races was
                    // two thirds of the fan-out's CPU at 1 000 requests/s).
                    remembered = self.known.get(user).filter(|(newer, _)| *newer > revision);
                    if remembered.is_none() {
                        self.known.remove(user);
                    }
                }
            }
        }
        bail!("feed {key} too contended")
    }

    /// Builds `user`'s feed from the graph and stores it (replacing the stale revision
    /// `previous`, or creating it). Losing the race to another writer is fine: theirs is as
    /// fresh as ours.
    pub(crate) async fn rebuild(&self, ctx: &Ctx, user: &UserId, previous: Option<u64>) -> ServiceResult<Arc<FeedDoc>> {
        let seed = self.mesh.call::<GetFeedSeed>(ctx, &ByUser { user_id: user.clone() }).await?;
        let mut authors: Vec<UserId> = seed.following.iter().filter(|a| !seed.hidden.contains(a)).cloned().collect();
        authors.push(user.clone());
        let mut doc = FeedDoc {
            touched_ms: Utc::now().timestamp_millis(),
            graph: Arc::new(Graph::new(seed.topics, seed.following, seed.hidden)),
            entries: Vec::new(),
        };
        // Large follow lists are asked for in slices; each answer is newest first.
        for chunk in authors.chunks(1000) {
            let recent = self
                .mesh
                .call::<RecentPosts>(ctx, &RecentByAuthors { authors: chunk.to_vec(), limit: self.config.cap as u32 })
                .await?;
            doc.merge(recent.iter().map(entry), self.config.cap);
        }
        let key = key(user);
        let bytes = doc.encode();
        let written = match previous {
            Some(rev) => self.feeds.update(&key, bytes, rev).await,
            None => self.feeds.create(&key, bytes).await,
        }
        .context("storing rebuilt feed")?;
        let doc = Arc::new(doc);
        match written {
            Some(revision) => {
                self.known.insert(user.clone(), (revision, doc.clone()));
            }
            None => tracing::debug!(user = %user, "another writer stored this feed first"),
        }
        tracing::debug!(user = %user, entries = doc.entries.len(), "feed rebuilt");
        Ok(doc)
    }

    /// Marks `user`'s feed as read now, so fan-out keeps serving it.
    pub(crate) async fn touch(&self, user: &UserId) -> anyhow::Result<()> {
        let now = Utc::now().timestamp_millis();
        self.modify(user, |doc| {
            doc.touched_ms = now;
            true
        })
        .await
    }
}

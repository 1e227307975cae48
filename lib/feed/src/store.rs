//! Reading and writing cached feeds: every write is a compare-and-set on the key's revision,
//! retried on conflict, so concurrent fan-outs, graph changes and rebuilds never lose each
//! other's work.
//!
//! Each instance remembers the last revision it read or wrote of each feed, with the
//! document ([`crate::known`]), so a fan-out writes without reading first: one bucket
//! operation per follower instead of two, a read that finds the remembered revision skips
//! decoding, and a read of a copy checked lately skips the bucket. A remembered revision
//! that another writer has passed only fails its compare-and-set; the write then starts
//! over from the newer revision this instance remembers (a concurrent fan-out here) or
//! reads the feed as before. Decisions not to write (inactive reader, nothing to change)
//! are only taken on a freshly read document.

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
        // Checked lately and not changed by another instance since: no bucket read at all.
        if let Some(known) = self.known.checked(user)
            && self.is_active(&known.doc)
        {
            return Ok(Loaded::Active(known.doc.clone()));
        }
        let since = self.known.epoch();
        let Some(v) = self.feeds.get(&key(user)).await? else {
            self.known.forget(user);
            return Ok(Loaded::Missing);
        };
        // The revision this instance last read or wrote: the same document, already decoded.
        if let Some(known) = self.known.get(user)
            && known.revision == v.revision
            && self.is_active(&known.doc)
        {
            self.known.confirm(&known, since);
            return Ok(Loaded::Active(known.doc.clone()));
        }
        match FeedDoc::decode(&v.value) {
            Some(doc) if self.is_active(&doc) => {
                let doc = Arc::new(doc);
                self.known.remember(user, v.revision, doc.clone(), since);
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
        self.modify_with(user, || std::future::ready(Ok(())), |doc, ()| change(doc)).await
    }

    /// [`Self::modify`] with `read` run after each read of the document and before `change`,
    /// which gets what it returned: what `read` fetches (the graph) is then at least as new as
    /// every write in the revision that `change` replaces. Read first instead, a graph change
    /// could be applied with a stale graph after a fan-out that followed the newer one, and
    /// take the post it had just delivered out of the feed again.
    pub(crate) async fn modify_with<T, R: Future<Output = anyhow::Result<T>>>(
        &self,
        user: &UserId,
        mut read: impl FnMut() -> R,
        mut change: impl FnMut(&mut FeedDoc, &T) -> bool,
    ) -> anyhow::Result<()> {
        let key = key(user);
        let mut remembered = self.known.get(user);
        for _ in 0..CAS_ATTEMPTS {
            let since = self.known.epoch();
            let (revision, mut doc, fresh) = match remembered.take() {
                Some(known) => (known.revision, FeedDoc::clone(&known.doc), false),
                None => {
                    let Some(v) = self.feeds.get(&key).await? else { return Ok(()) };
                    let Some(doc) = FeedDoc::decode(&v.value) else { return Ok(()) };
                    (v.revision, doc, true)
                }
            };
            if !self.is_active(&doc) || !change(&mut doc, &read().await?) {
                if fresh {
                    return Ok(());
                }
                // The remembered copy may be behind (another instance's touch or change).
                continue;
            }
            match self.feeds.update(&key, doc.encode(), revision).await? {
                Some(new) => {
                    self.known.wrote(user, new, Arc::new(doc), since);
                    return Ok(());
                }
                None => {
                    // Lost to another writer. Most often that is a concurrent fan-out on
                    // this instance, which remembered what it wrote: start from that rather
                    // than reading and decoding the feed again (decoding after lost races was
                    // two thirds of the fan-out's CPU at 1 000 requests/s).
                    remembered = self.known.get(user).filter(|known| known.revision > revision);
                    if remembered.is_none() {
                        self.known.forget(user);
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
                .call::<RecentPosts>(
                    ctx,
                    &RecentByAuthors { authors: chunk.to_vec(), limit: self.config.cap as u32, each: false },
                )
                .await?;
            doc.merge(recent.iter().map(entry), self.config.cap);
        }
        let key = key(user);
        let bytes = doc.encode();
        let since = self.known.epoch();
        let written = match previous {
            Some(rev) => self.feeds.update(&key, bytes, rev).await,
            None => self.feeds.create(&key, bytes).await,
        }
        .context("storing rebuilt feed")?;
        let doc = Arc::new(doc);
        match written {
            Some(revision) => {
                self.known.wrote(user, revision, doc.clone(), since);
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

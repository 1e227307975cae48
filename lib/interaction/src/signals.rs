//! Counts and affinity for a viewer: what every feed page and timeline asks for.
//!
//! Served from two coherent caches ([`mosaic_mesh::cache`]): counters per post, and per
//! viewer the likes and affinity already looked up. Only what neither holds is read from
//! the database, in one round trip however many posts and authors that is. Every write
//! that changes them drops them on every instance ([`SignalsChanged`]), so a reader sees
//! their own like on their next read, whichever instance serves it.

use crate::InteractionService;
use crate::engage::{affinity_rid, like_rid, stats_rid};
use anyhow::Context as _;
use mosaic_api::interaction::{Affinity, MAX_SIGNAL_ITEMS, PostCounts, Signals, SignalsChanged, SignalsQuery};
use mosaic_api::{ApiError, Id, PostId, UserId};
use mosaic_mesh::cache::Coherent;
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::{RecordId, SurrealValue};

/// Posts whose counters are cached per instance (two integers each).
const COUNTED_POSTS: usize = 200_000;
/// Viewers whose looked-up likes and affinity are cached per instance.
const VIEWERS: usize = 20_000;
/// Posts and authors remembered per viewer before the entry starts over; a feed asks about
/// at most a few hundred, so this bounds memory without costing hits.
const PER_VIEWER: usize = 2_048;
/// Longest a cached signal lives if the notice that should have dropped it was lost.
const TTL: Duration = Duration::from_secs(60);

/// Likes and comments on a post.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    likes: u64,
    comments: u64,
}

/// What one viewer's reads have looked up so far.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    liked: HashMap<PostId, bool>,
    affinity: HashMap<UserId, Counters>,
}

/// The caches of one instance.
pub(crate) struct SignalCache {
    counts: Coherent<PostId, Option<Counters>>,
    viewers: Coherent<UserId, Seen>,
}

impl SignalCache {
    pub(crate) fn new() -> Self {
        Self { counts: Coherent::new(COUNTED_POSTS, TTL), viewers: Coherent::new(VIEWERS, TTL) }
    }

    pub(crate) fn forget(&self, notice: &SignalsChanged) {
        self.counts.invalidate(&notice.post_id);
        for user in &notice.users {
            self.viewers.invalidate(user);
        }
    }
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct StatsRow {
    key: String,
    likes: i64,
    comments: i64,
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct AffinityRow {
    author: String,
    likes: i64,
    comments: i64,
}

fn counters(likes: i64, comments: i64) -> Counters {
    Counters { likes: likes.max(0) as u64, comments: comments.max(0) as u64 }
}

impl InteractionService {
    /// Drops what this instance caches about a change (its own or another instance's).
    pub(crate) fn forget(&self, notice: &SignalsChanged) {
        self.cache.forget(notice);
    }

    pub(crate) async fn signals(self: Arc<Self>, ctx: Ctx, req: SignalsQuery) -> ServiceResult<Signals> {
        let viewer = ctx.require_user()?.clone();
        if req.post_ids.len() > MAX_SIGNAL_ITEMS || req.authors.len() > MAX_SIGNAL_ITEMS {
            return Err(ApiError::validation(format!("at most {MAX_SIGNAL_ITEMS} posts and authors")).into());
        }
        if req.post_ids.is_empty() && req.authors.is_empty() {
            return Ok(Signals::default());
        }
        // Slots are taken before the database is read: see mosaic_mesh::cache.
        let seen = self.cache.viewers.slot(&viewer);
        let count_slots: Vec<_> = req.post_ids.iter().map(|p| self.cache.counts.slot(p)).collect();
        let mut counts: Vec<Option<Counters>> = count_slots.iter().map(|s| s.read(|c| *c)).collect();
        let (mut liked, mut affinity) = seen.read(|s| {
            let liked: Vec<Option<bool>> = req.post_ids.iter().map(|p| s.liked.get(p).copied()).collect();
            let affinity: Vec<Option<Counters>> = req.authors.iter().map(|a| s.affinity.get(a).copied()).collect();
            (liked, affinity)
        });

        let count_misses: Vec<&PostId> =
            req.post_ids.iter().zip(&counts).filter(|(_, c)| c.is_none()).map(|(p, _)| p).collect();
        let like_misses: Vec<&PostId> =
            req.post_ids.iter().zip(&liked).filter(|(_, l)| l.is_none()).map(|(p, _)| p).collect();
        let affinity_misses: Vec<&UserId> =
            req.authors.iter().zip(&affinity).filter(|(_, a)| a.is_none()).map(|(a, _)| a).collect();
        if !count_misses.is_empty() || !like_misses.is_empty() || !affinity_misses.is_empty() {
            let loaded = self.load(&viewer, &count_misses, &like_misses, &affinity_misses).await?;
            for ((post, slot), c) in req.post_ids.iter().zip(&count_slots).zip(counts.iter_mut()) {
                if c.is_none() {
                    let found = loaded.counts.get(post.as_str()).copied().unwrap_or_default();
                    slot.write(|v| *v = Some(found));
                    *c = Some(found);
                }
            }
            seen.write(|s| {
                if s.liked.len() + s.affinity.len() > PER_VIEWER {
                    *s = Seen::default();
                }
                for post in &like_misses {
                    s.liked.insert((*post).clone(), loaded.liked.contains(post.as_str()));
                }
                for author in &affinity_misses {
                    s.affinity
                        .insert((*author).clone(), loaded.affinity.get(author.as_str()).copied().unwrap_or_default());
                }
            });
            for (post, l) in req.post_ids.iter().zip(liked.iter_mut()) {
                l.get_or_insert_with(|| loaded.liked.contains(post.as_str()));
            }
            for (author, a) in req.authors.iter().zip(affinity.iter_mut()) {
                a.get_or_insert_with(|| loaded.affinity.get(author.as_str()).copied().unwrap_or_default());
            }
        }

        // Posts nobody engaged with and authors the viewer never engaged with are left out,
        // as the contract says; readers count what is missing as zero.
        Ok(Signals {
            counts: req
                .post_ids
                .iter()
                .zip(counts)
                .zip(liked)
                .filter_map(|((post, c), l)| {
                    let c = c.unwrap_or_default();
                    let liked_by_me = l.unwrap_or(false);
                    (c != Counters::default() || liked_by_me).then(|| PostCounts {
                        post_id: post.clone(),
                        like_count: c.likes,
                        comment_count: c.comments,
                        liked_by_me,
                    })
                })
                .collect(),
            affinity: req
                .authors
                .iter()
                .zip(affinity)
                .filter_map(|(author, a)| {
                    let a = a.unwrap_or_default();
                    (a != Counters::default()).then(|| Affinity {
                        author: author.clone(),
                        likes: a.likes,
                        comments: a.comments,
                    })
                })
                .collect(),
        })
    }

    /// Reads what the caches did not hold, in one round trip.
    async fn load(
        &self,
        viewer: &UserId,
        posts: &[&PostId],
        likes: &[&PostId],
        authors: &[&UserId],
    ) -> anyhow::Result<Loaded> {
        let stats: Vec<RecordId> = posts.iter().map(|p| stats_rid(p)).collect();
        let likes: Vec<RecordId> = likes.iter().map(|p| like_rid(p, viewer)).collect();
        let affinity: Vec<RecordId> = authors.iter().map(|a| affinity_rid(viewer, a)).collect();
        let mut res = self
            .db
            .query(
                "SELECT record::id(id) AS key, likes, comments FROM $stats;
                 SELECT VALUE post FROM $likes;
                 SELECT record::id(id)[1] AS author, likes, comments FROM $affinity;",
            )
            .bind(("stats", stats))
            .bind(("likes", likes))
            .bind(("affinity", affinity))
            .await
            .context("reading signals")?;
        let stats: Vec<StatsRow> = res.take(0).context("reading counts")?;
        let liked: Vec<String> = res.take(1).context("reading likes")?;
        let affinity: Vec<AffinityRow> = res.take(2).context("reading affinity")?;
        Ok(Loaded {
            counts: stats.into_iter().map(|s| (s.key, counters(s.likes, s.comments))).collect(),
            liked: liked.into_iter().collect(),
            affinity: affinity.into_iter().map(|a| (a.author, counters(a.likes, a.comments))).collect(),
        })
    }
}

/// Rows read for the misses, keyed by id.
struct Loaded {
    counts: HashMap<String, Counters>,
    liked: HashSet<String>,
    affinity: HashMap<String, Counters>,
}

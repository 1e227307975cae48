//! Counts and affinity for a viewer: what every feed page and timeline asks for.
//!
//! Served from two coherent caches ([`mosaic_mesh::cache`]): counters per post, and per
//! viewer their affinity and the likes looked up. A viewer's first read loads all their
//! affinity rows at once (few for most people), so the authors a feed ranks need no lookup
//! later; a viewer with more than [`WHOLE_VIEWER`] is looked up per author instead. What
//! the caches do not hold is read in one round trip however many posts and authors that
//! is. Every write that changes them drops them on every instance ([`SignalsChanged`]), so
//! a reader sees their own like on their next read, whichever instance serves it. A new
//! post's notice fills in what is known without asking: no likes, no comments, and not
//! liked by its author ([`SignalCache::seed_new`]).

use crate::InteractionService;
use crate::store;
use mosaic_api::interaction::{Affinity, MAX_SIGNAL_ITEMS, PostCounts, Signals, SignalsChanged, SignalsQuery};
use mosaic_api::{ApiError, Id, PostId, UserId};
use mosaic_mesh::cache::Coherent;
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Posts whose counters are cached per instance (two integers each).
const COUNTED_POSTS: usize = 200_000;
/// Viewers whose looked-up likes and affinity are cached per instance.
const VIEWERS: usize = 20_000;
/// Posts and authors remembered per viewer before the entry starts over; a feed asks about
/// at most a few hundred, so this bounds memory without costing hits.
const PER_VIEWER: usize = 2_048;
/// Longest a cached signal lives if the notice that should have dropped it was lost.
const TTL: Duration = Duration::from_secs(60);
/// A post created longer ago (or, by a skewed clock, later) than this is not seeded (see
/// [`SignalCache::seed_new`]): a change to it may be older than what is remembered.
const SEED_WITHIN: Duration = Duration::from_secs(10);
/// Posts whose last change is remembered (most recent first to stay): more than the
/// changes of [`TTL`] at a few thousand likes a second.
const CHANGES_REMEMBERED: usize = 200_000;

/// Likes and comments on a post.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    likes: u64,
    comments: u64,
}

/// Authors engaged with up to which a viewer's affinity is cached whole.
const WHOLE_VIEWER: usize = 1_000;

/// What is known of one viewer.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Whether all the viewer's affinity was loaded, or only what was asked for (too many
    /// to hold whole). `None`: nothing loaded yet.
    whole: Option<bool>,
    /// Every post looked up, liked or not.
    liked: HashMap<PostId, bool>,
    /// When whole: only authors engaged with. Otherwise: every author looked up.
    affinity: HashMap<UserId, Counters>,
}

impl Seen {
    fn liked(&self, post: &PostId) -> Option<bool> {
        self.liked.get(post).copied()
    }

    fn affinity(&self, author: &UserId) -> Option<Counters> {
        match (self.affinity.get(author), self.whole) {
            (Some(a), _) => Some(*a),
            (None, Some(true)) => Some(Counters::default()),
            (None, _) => None,
        }
    }
}

/// The caches of one instance.
pub(crate) struct SignalCache {
    counts: Coherent<PostId, Option<Counters>>,
    viewers: Coherent<UserId, Seen>,
    /// When each post's signals last changed, as far as this instance heard.
    changed: quick_cache::sync::Cache<PostId, Instant>,
    /// Orders [`SignalCache::forget`] and [`SignalCache::seed_new`]: a seed either sees
    /// the change or is dropped by it.
    order: Mutex<()>,
}

impl SignalCache {
    pub(crate) fn new() -> Self {
        Self {
            counts: Coherent::new(COUNTED_POSTS, TTL),
            viewers: Coherent::new(VIEWERS, TTL),
            changed: quick_cache::sync::Cache::new(CHANGES_REMEMBERED),
            order: Mutex::new(()),
        }
    }

    pub(crate) fn forget(&self, notice: &SignalsChanged) {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        self.changed.insert(notice.post_id.clone(), Instant::now());
        self.counts.invalidate(&notice.post_id);
        for user in &notice.users {
            self.viewers.invalidate(user);
        }
    }

    /// What the notice of a new post tells for sure: nobody has liked or commented on it
    /// yet, its author included. Holding that spares its first readers a database read
    /// each (300 a second at 3 000 requests/s of the benchmark's mix). Skipped when a
    /// change to the post was heard (the notice came late) or the post is not new.
    pub(crate) fn seed_new(&self, post: &PostId, author: &UserId, age: chrono::TimeDelta) {
        if age.abs().to_std().map_or(true, |age| age > SEED_WITHIN) {
            return;
        }
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        if self.changed.get(post).is_some_and(|at| at.elapsed() < TTL) {
            return;
        }
        self.counts.fill(post, Some(Counters::default()));
        // A viewer's likes are otherwise known from their affinity, which leaves out their
        // likes of their own posts: without this, every author's next read missed.
        if let Some(seen) = self.viewers.live(author) {
            seen.write(|s| {
                if s.whole.is_some() && s.liked.len() + s.affinity.len() < PER_VIEWER {
                    s.liked.entry(post.clone()).or_insert(false);
                }
            });
        }
    }
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
        if !req.post_authors.is_empty() && req.post_authors.len() != req.post_ids.len() {
            return Err(ApiError::validation("post_authors must name the author of each post, in order").into());
        }
        if req.post_ids.is_empty() && req.authors.is_empty() {
            return Ok(Signals::default());
        }
        // Slots are taken before the database is read: see mosaic_mesh::cache.
        let seen = self.cache.viewers.slot(&viewer);
        if seen.read(|s| s.whole.is_none()) {
            let loaded = self.load_viewer(&viewer).await?;
            seen.write(|s| *s = loaded);
        }
        let count_slots: Vec<_> = req.post_ids.iter().map(|p| self.cache.counts.slot(p)).collect();
        let mut counts: Vec<Option<Counters>> = count_slots.iter().map(|s| s.read(|c| *c)).collect();
        let (mut liked, mut affinity) = seen.read(|s| {
            let liked: Vec<Option<bool>> = req
                .post_ids
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    s.liked(p).or_else(|| {
                        // Affinity counts every like on the author's posts but the author's own.
                        let author = req.post_authors.get(i).filter(|a| **a != viewer)?;
                        (s.affinity(author)?.likes == 0).then_some(false)
                    })
                })
                .collect();
            let affinity: Vec<Option<Counters>> = req.authors.iter().map(|a| s.affinity(a)).collect();
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
                    // Starting over: a whole affinity would come back with the next load.
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

    /// All of `viewer`'s affinity, or, when there is too much to hold, an empty record that
    /// says so.
    async fn load_viewer(&self, viewer: &UserId) -> anyhow::Result<Seen> {
        let affinity = store::affinity_of(&self.db, viewer, WHOLE_VIEWER + 1).await?;
        if affinity.len() > WHOLE_VIEWER {
            return Ok(Seen { whole: Some(false), ..Seen::default() });
        }
        Ok(Seen {
            whole: Some(true),
            liked: HashMap::new(),
            affinity: affinity
                .into_iter()
                .map(|a| (UserId::from_trusted(a.author), counters(a.likes, a.comments)))
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
        let store::SignalRows { stats, liked, affinity } =
            store::signals(&self.db, viewer, posts, likes, authors).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (PostId, UserId) {
        (PostId::generate(), UserId::generate())
    }

    fn counts(cache: &SignalCache, post: &PostId) -> Option<Counters> {
        cache.counts.live(post).and_then(|slot| slot.read(|c| *c))
    }

    fn liked(cache: &SignalCache, viewer: &UserId, post: &PostId) -> Option<bool> {
        cache.viewers.live(viewer).and_then(|slot| slot.read(|s| s.liked(post)))
    }

    #[test]
    fn a_new_post_is_known_unliked_and_uncounted() {
        let cache = SignalCache::new();
        let (post, author) = ids();
        cache.viewers.slot(&author).write(|s| s.whole = Some(true));
        cache.seed_new(&post, &author, chrono::TimeDelta::milliseconds(40));
        assert_eq!(counts(&cache, &post), Some(Counters::default()));
        assert_eq!(liked(&cache, &author, &post), Some(false));
    }

    #[test]
    fn an_author_whose_likes_were_not_loaded_is_left_alone() {
        let cache = SignalCache::new();
        let (post, author) = ids();
        cache.seed_new(&post, &author, chrono::TimeDelta::zero());
        assert!(cache.viewers.live(&author).is_none(), "no entry made for a viewer nobody read");
        cache.viewers.slot(&author);
        let (other, _) = ids();
        cache.seed_new(&other, &author, chrono::TimeDelta::zero());
        assert_eq!(liked(&cache, &author, &other), None, "a viewer not loaded yet loads everything");
    }

    #[test]
    fn a_late_notice_does_not_hide_a_like_it_never_saw() {
        let cache = SignalCache::new();
        let (post, author) = ids();
        cache.viewers.slot(&author).write(|s| s.whole = Some(true));
        // The author liked the post before this instance heard it was created.
        cache.forget(&SignalsChanged { post_id: post.clone(), users: vec![author.clone()] });
        cache.viewers.slot(&author).write(|s| s.whole = Some(true));
        cache.seed_new(&post, &author, chrono::TimeDelta::seconds(1));
        assert_eq!(counts(&cache, &post), None);
        assert_eq!(liked(&cache, &author, &post), None);
    }

    #[test]
    fn only_posts_created_moments_ago_are_seeded() {
        let cache = SignalCache::new();
        for age in [chrono::TimeDelta::seconds(11), chrono::TimeDelta::seconds(-11)] {
            let (post, author) = ids();
            cache.seed_new(&post, &author, age);
            assert_eq!(counts(&cache, &post), None, "age {age}");
        }
    }

    #[test]
    fn a_loaded_count_is_not_replaced_by_a_seed() {
        let cache = SignalCache::new();
        let (post, author) = ids();
        let loaded = Counters { likes: 3, comments: 1 };
        cache.counts.slot(&post).write(|c| *c = Some(loaded));
        cache.seed_new(&post, &author, chrono::TimeDelta::zero());
        assert_eq!(counts(&cache, &post), Some(loaded));
    }
}

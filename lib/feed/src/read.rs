//! The read side: `GET /v1/feed`.

use crate::FeedService;
use crate::codec::{Entry, FeedDoc};
use crate::rank::{self, Engagement};
use crate::store::{Loaded, entry};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use mosaic_api::content::{GetPosts, MAX_RECENT_AUTHORS_EACH, Post, PostRef, PostsByIds, RecentByAuthors, RecentPosts};
use mosaic_api::feed::{FeedOrder, FeedQuery};
use mosaic_api::interaction::{GetSignals, PostCounts, SignalsQuery};
use mosaic_api::page::TimeCursor;
use mosaic_api::{ApiError, EventId, Id, Page, PostId, UserId};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a ranked listing continues: the listing whose order the first page fixed, the
/// position, and the instance that keeps the order (see [`crate::listing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RankCursor {
    snapshot: String,
    offset: usize,
    /// The clock the first page was ranked with.
    at_ms: i64,
    /// `None` in cursors from before orders were kept by instances: ranked again.
    maker: Option<String>,
}

impl RankCursor {
    fn encode(&self) -> String {
        let maker = self.maker.as_deref().map(|m| format!("|{m}")).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(format!("r|{}|{}|{}{maker}", self.snapshot, self.offset, self.at_ms))
    }

    fn decode(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::validation("cursor is not valid");
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?).map_err(|_| bad())?;
        let mut parts = raw.split('|');
        if parts.next() != Some("r") {
            return Err(bad());
        }
        let snapshot = parts.next().filter(|s| EventId::parse(s).is_some()).ok_or_else(bad)?.to_owned();
        let offset: usize = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
        let at_ms: i64 = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
        let maker = match parts.next() {
            Some(m) if mosaic_api::ids::is_valid_id(m) => Some(m.to_owned()),
            Some(_) => return Err(bad()),
            None => None,
        };
        if parts.next().is_some() || offset > 100_000 {
            return Err(bad());
        }
        Ok(Self { snapshot, offset, at_ms, maker })
    }
}

/// The posts of one page of a feed, in order, before they are hydrated.
struct Listed {
    page: Vec<PostId>,
    next_cursor: Option<String>,
    /// Counts the listing already read (ranking reads them).
    counted: HashMap<PostId, PostCounts>,
    /// Posts of the page whose counts are still to be read.
    uncounted: Vec<PostId>,
}

impl Listed {
    /// A page none of whose counts were read.
    fn uncounted(page: Vec<PostId>, next_cursor: Option<String>) -> Self {
        Self { uncounted: page.clone(), page, next_cursor, counted: HashMap::new() }
    }
}

impl FeedService {
    pub(crate) async fn home(self: Arc<Self>, ctx: Ctx, q: FeedQuery) -> ServiceResult<Page<Post>> {
        let viewer = ctx.require_user()?.clone();
        let limit = q.page.limit() as usize;
        let cursor = q.page.cursor.as_deref();
        let listed = match q.order {
            FeedOrder::Latest => self.latest(&ctx, &viewer, limit, cursor).await?,
            FeedOrder::Ranked => self.ranked(&ctx, &viewer, limit, cursor).await?,
        };
        let mut counts = listed.counted;
        counts.extend(self.counts(&ctx, &listed.uncounted).await?);
        Ok(Page { items: self.hydrate(&ctx, &listed.page, &counts).await?, next_cursor: listed.next_cursor })
    }

    async fn latest(
        self: &Arc<Self>,
        ctx: &Ctx,
        viewer: &UserId,
        limit: usize,
        cursor: Option<&str>,
    ) -> ServiceResult<Listed> {
        let cursor = cursor.map(TimeCursor::decode).transpose()?;
        let candidates = self.candidates(ctx, viewer).await?;
        // One past the page tells whether there is a next one; the rest is never filtered.
        let after: Vec<&Entry> = candidates
            .visible()
            .filter(|e| {
                cursor
                    .as_ref()
                    .is_none_or(|c| (e.created_ms, e.post.as_str()) < (c.at.timestamp_millis(), c.key.as_str()))
            })
            .take(limit + 1)
            .collect();
        let (after, next_cursor) = mosaic_api::page::cut(after, limit, |e| {
            let at = chrono::DateTime::from_timestamp_millis(e.created_ms).unwrap_or_default();
            TimeCursor::new(at, e.post.as_str()).encode()
        });
        Ok(Listed::uncounted(after.iter().map(|e| e.post.clone()).collect(), next_cursor))
    }

    async fn ranked(
        self: &Arc<Self>,
        ctx: &Ctx,
        viewer: &UserId,
        limit: usize,
        cursor: Option<&str>,
    ) -> ServiceResult<Listed> {
        let cursor = cursor.map(RankCursor::decode).transpose()?;
        if let Some(c) = &cursor
            && let Some(maker) = &c.maker
            && let Some(order) = self.listings.order(&self.mesh, ctx, viewer, &c.snapshot, maker).await
        {
            let page: Vec<PostId> = order.iter().skip(c.offset).take(limit).cloned().collect();
            let next_cursor =
                (order.len() > c.offset + limit).then(|| RankCursor { offset: c.offset + limit, ..c.clone() }.encode());
            return Ok(Listed::uncounted(page, next_cursor));
        }

        // A first page, or a snapshot that expired: rank as of the listing's clock.
        let now_ms = cursor.as_ref().map_or_else(|| Utc::now().timestamp_millis(), |c| c.at_ms);
        let offset = cursor.as_ref().map_or(0, |c| c.offset);
        let candidates = self.candidates(ctx, viewer).await?;
        // Candidates are newest first: score the newest `window`, and keep the rest in time
        // order after them (they would mostly rank there anyway, their recency having
        // decayed). The rest is filtered only if a page reaches it.
        let mut head: Vec<Entry> = Vec::with_capacity(self.config.ranking.window);
        let mut tail_from = candidates.all().len();
        let shown = candidates.all().iter().enumerate().filter(|(_, e)| e.created_ms <= now_ms && candidates.shows(e));
        for (i, e) in shown {
            head.push(e.clone());
            if head.len() == self.config.ranking.window {
                tail_from = i + 1;
                break;
            }
        }
        let mut authors: Vec<UserId> = head.iter().map(|e| e.author.clone()).collect();
        authors.sort();
        authors.dedup();
        let query = SignalsQuery {
            post_ids: head.iter().map(|e| e.post.clone()).collect(),
            authors,
            post_authors: head.iter().map(|e| e.author.clone()).collect(),
        };
        let signals =
            if head.is_empty() { Default::default() } else { self.mesh.call_owned::<GetSignals>(ctx, query).await? };
        {
            // Borrowed keys: a read ranks a hundred posts, and owned ones were a hundred
            // allocations just to look them up.
            let engagement: HashMap<&str, Engagement> = signals
                .counts
                .iter()
                .map(|c| (c.post_id.as_str(), Engagement { likes: c.like_count, comments: c.comment_count }))
                .collect();
            let affinity: HashMap<&str, Engagement> = signals
                .affinity
                .iter()
                .map(|a| (a.author.as_str(), Engagement { likes: a.likes, comments: a.comments }))
                .collect();
            let topics: HashSet<&str> = candidates.doc.graph.topics.iter().map(String::as_str).collect();
            let inputs = rank::Signals { now_ms, topics: &topics, affinity: &affinity, engagement: &engagement };
            rank::rank(&self.config.ranking, &mut head, &inputs);
        }

        let order = Order { head, candidates, tail_from, until_ms: now_ms };
        let page: Vec<PostId> = order.entries().skip(offset).take(limit).map(|e| e.post.clone()).collect();
        // Positions past the head were not scored: their counts are asked for below.
        let unscored: Vec<PostId> =
            page.iter().enumerate().filter(|(i, _)| offset + i >= order.head.len()).map(|(_, p)| p.clone()).collect();
        let next_cursor = if order.entries().nth(offset + limit).is_some() {
            let snapshot = EventId::generate().to_string();
            self.listings.keep(snapshot.clone(), viewer, order);
            let maker = Some(self.listings.instance.clone());
            Some(RankCursor { snapshot, offset: offset + limit, at_ms: now_ms, maker }.encode())
        } else {
            None
        };
        let counted = signals.counts.into_iter().map(|c| (c.post_id.clone(), c)).collect();
        Ok(Listed { page, next_cursor, counted, uncounted: unscored })
    }

    /// The reader's candidate posts, newest first: the cached feed (rebuilt when missing or
    /// stale) plus the recent posts of followed pulled authors.
    async fn candidates(self: &Arc<Self>, ctx: &Ctx, viewer: &UserId) -> ServiceResult<Candidates> {
        let doc = match self.load(viewer).await? {
            Loaded::Active(doc) => {
                // Refreshing the activity mark on every read would be a write per read; once
                // per eighth of the window keeps an active reader active.
                let refresh_ms = (self.config.active_window_secs as i64).saturating_mul(1000) / 8;
                if Utc::now().timestamp_millis() - doc.touched_ms > refresh_ms {
                    let this = self.clone();
                    let user = viewer.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.touch(&user).await {
                            tracing::warn!(user = %user, error = %e, "could not refresh feed activity");
                        }
                    });
                }
                doc
            }
            Loaded::Stale(revision) => self.rebuild(ctx, viewer, Some(revision)).await?,
            Loaded::Missing => self.rebuild(ctx, viewer, None).await?,
        };
        let graph = &doc.graph;
        let pulled: Vec<UserId> = {
            let set = self.pull_authors.read().expect("pull set poisoned");
            graph.following.iter().filter(|a| set.contains(*a) && graph.shows(a)).cloned().collect()
        };
        let mut candidates = Candidates { doc, merged: None, viewer: viewer.clone() };
        if !pulled.is_empty() {
            let mut out: Vec<Entry> = candidates.visible().cloned().collect();
            let mut seen: HashSet<PostId> = out.iter().map(|e| e.post.clone()).collect();
            for posts in self.pulled_posts(ctx, &pulled).await? {
                out.extend(posts.iter().filter(|p| seen.insert(p.post_id.clone())).map(entry));
            }
            out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| b.post.cmp(&a.post)));
            out.truncate(self.config.cap);
            candidates.merged = Some(out);
        }
        Ok(candidates)
    }

    /// Recent posts of pulled authors, from the short-lived cache, and one request (per
    /// hundred authors) for those it does not hold.
    async fn pulled_posts(&self, ctx: &Ctx, authors: &[UserId]) -> ServiceResult<Vec<Arc<Vec<PostRef>>>> {
        let ttl = Duration::from_millis(self.config.pull_cache_ms);
        let mut found: HashMap<UserId, Arc<Vec<PostRef>>> = HashMap::new();
        let mut misses: Vec<UserId> = Vec::new();
        for author in authors {
            match self.pulled.get(author) {
                Some((at, posts)) if at.elapsed() < ttl => {
                    found.insert(author.clone(), posts);
                }
                _ => misses.push(author.clone()),
            }
        }
        let fetches = misses.chunks(MAX_RECENT_AUTHORS_EACH).map(|chunk| {
            let query =
                RecentByAuthors { authors: chunk.to_vec(), limit: self.config.pull_posts_per_author, each: true };
            async move { self.mesh.call::<RecentPosts>(ctx, &query).await }
        });
        let fetched: Vec<PostRef> = futures::future::try_join_all(fetches).await?.into_iter().flatten().collect();
        let mut by_author: HashMap<UserId, Vec<PostRef>> = misses.iter().map(|a| (a.clone(), Vec::new())).collect();
        for post in fetched {
            if let Some(posts) = by_author.get_mut(&post.author) {
                posts.push(post);
            }
        }
        let now = Instant::now();
        for (author, posts) in by_author {
            let posts = Arc::new(posts);
            self.pulled.insert(author.clone(), (now, posts.clone()));
            found.insert(author, posts);
        }
        Ok(authors.iter().filter_map(|a| found.get(a).cloned()).collect())
    }

    /// Counts of a page of posts, for the reader.
    async fn counts(&self, ctx: &Ctx, posts: &[PostId]) -> ServiceResult<HashMap<PostId, PostCounts>> {
        if posts.is_empty() {
            return Ok(HashMap::new());
        }
        let signals = self
            .mesh
            .call_owned::<GetSignals>(ctx, SignalsQuery { post_ids: posts.to_vec(), ..Default::default() })
            .await?;
        Ok(signals.counts.into_iter().map(|c| (c.post_id.clone(), c)).collect())
    }

    /// Post bodies in the order asked, from the cache or one request for all the misses,
    /// with the reader's counts. Posts deleted meanwhile drop out.
    async fn hydrate(
        &self,
        ctx: &Ctx,
        ids: &[PostId],
        counts: &HashMap<PostId, PostCounts>,
    ) -> ServiceResult<Vec<Post>> {
        let ttl = Duration::from_millis(self.config.post_cache_ms);
        let mut found: HashMap<PostId, Arc<Post>> = HashMap::new();
        let mut misses: Vec<PostId> = Vec::new();
        for id in ids {
            match self.posts.get(id) {
                Some((at, post)) if at.elapsed() < ttl => {
                    found.insert(id.clone(), post);
                }
                _ => misses.push(id.clone()),
            }
        }
        if !misses.is_empty() {
            for post in self.mesh.call_owned::<GetPosts>(ctx, PostsByIds { ids: misses }).await? {
                let post = Arc::new(post);
                self.posts.insert(post.id.clone(), (Instant::now(), post.clone()));
                found.insert(post.id.clone(), post);
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| found.get(id))
            .map(|post| {
                let mut post = Post::clone(post);
                let c = counts.get(&post.id);
                post.like_count = c.map_or(0, |c| c.like_count);
                post.comment_count = c.map_or(0, |c| c.comment_count);
                post.liked_by_me = c.is_some_and(|c| c.liked_by_me);
                post
            })
            .collect())
    }
}

/// One read's candidate posts, newest first, filtered as they are taken: a page needs the
/// first hundred at most, and checking all five hundred authors on every read was a
/// twentieth of the service's CPU.
pub(crate) struct Candidates {
    doc: Arc<FeedDoc>,
    /// The feed with pulled authors' posts merged in, when the reader follows any.
    merged: Option<Vec<Entry>>,
    viewer: UserId,
}

impl Candidates {
    /// Every candidate, hidden ones included.
    fn all(&self) -> &[Entry] {
        self.merged.as_deref().unwrap_or(&self.doc.entries)
    }

    /// The candidates the reader may see: their own posts and those of authors they follow
    /// and do not hide.
    fn visible(&self) -> impl Iterator<Item = &Entry> {
        self.visible_from(0)
    }

    fn visible_from(&self, from: usize) -> impl Iterator<Item = &Entry> {
        self.all().get(from..).unwrap_or_default().iter().filter(|e| self.shows(e))
    }

    fn shows(&self, e: &Entry) -> bool {
        e.author == self.viewer || self.doc.graph.shows(&e.author)
    }
}

/// A ranked listing: the scored head, then the rest in time order, filtered only when a
/// page reaches it.
pub(crate) struct Order {
    head: Vec<Entry>,
    candidates: Candidates,
    /// Where in [`Candidates::all`] the rest starts.
    tail_from: usize,
    /// The listing's clock: newer posts stay out.
    until_ms: i64,
}

impl Order {
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        let until = self.until_ms;
        self.head.iter().chain(self.candidates.visible_from(self.tail_from).filter(move |e| e.created_ms <= until))
    }

    /// Entries held, at most: what the order costs to keep.
    pub(crate) fn len_bound(&self) -> usize {
        self.head.len() + self.candidates.all().len().saturating_sub(self.tail_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_cursors_round_trip_and_reject_others() {
        let c = RankCursor {
            snapshot: EventId::generate().to_string(),
            offset: 40,
            at_ms: 1_700_000_000_000,
            maker: Some(EventId::generate().to_string()),
        };
        assert_eq!(RankCursor::decode(&c.encode()).unwrap(), c);
        let older = RankCursor { maker: None, ..c.clone() };
        assert_eq!(RankCursor::decode(&older.encode()).unwrap(), older);
        assert!(RankCursor::decode(&URL_SAFE_NO_PAD.encode(format!("r|{}|40|1|a.b", c.snapshot))).is_err());
        assert!(RankCursor::decode(&TimeCursor::new(Utc::now(), "abc").encode()).is_err());
        assert!(RankCursor::decode("garbage").is_err());
    }

    #[test]
    fn a_listing_shows_only_what_the_reader_may_see_and_filters_its_tail_late() {
        let [me, friend, blocked, stranger] =
            ["me", "friend", "blocked", "stranger"].map(|u| UserId::parse(u).unwrap());
        let graph = crate::codec::Graph::new(Vec::new(), vec![friend.clone(), blocked.clone()], vec![blocked.clone()]);
        let authors = [&friend, &blocked, &me, &stranger];
        // Newest first, as feeds are kept: time 100, 99, ... with authors in turn.
        let entries: Vec<Entry> = (0..40)
            .map(|i| Entry::new(PostId::generate(), authors[i % 4].clone(), 100 - i as i64, Vec::new()))
            .collect();
        let doc = Arc::new(FeedDoc { touched_ms: 0, graph: Arc::new(graph), entries: entries.clone() });
        let candidates = Candidates { doc, merged: None, viewer: me.clone() };
        let visible: Vec<&Entry> = candidates.visible().collect();
        assert_eq!(visible.len(), 20);
        assert!(visible.iter().all(|e| e.author == friend || e.author == me));

        // A head of the first four shown, then a tail cut at time 80 (entries 20 and on).
        let head: Vec<Entry> = visible[..4].iter().map(|e| (*e).clone()).collect();
        let from = entries.iter().position(|e| e.post == visible[3].post).unwrap() + 1;
        let order = Order { head, candidates, tail_from: from, until_ms: 80 };
        let listed: Vec<i64> = order.entries().map(|e| e.created_ms).collect();
        assert_eq!(listed, [100, 98, 96, 94, 80, 78, 76, 74, 72, 70, 68, 66, 64, 62]);
        assert!(order.len_bound() >= listed.len());
    }
}

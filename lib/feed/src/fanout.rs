//! The write side: post events fan out into cached feeds and live frames; graph events
//! reconcile the feeds they touch.

use crate::FeedService;
use crate::codec::{Entry, Graph};
use crate::store::entry;
use futures::StreamExt as _;
use mosaic_api::content::{GetPosts, PostCreated, PostDeleted, PostRef, PostsByIds, RecentByAuthors, RecentPosts};
use mosaic_api::stream::{ConsumerSpec, EVENTS_POST, EVENTS_USER};
use mosaic_api::user::{
    Audience, AudienceQuery, Blocked, ByUser, Followed, GetFeedSeed, MAX_GRAPH_IDS, Muted, ProfileUpdated, Unblocked,
    Unfollowed, Unmuted,
};
use mosaic_api::ws::ServerFrame;
use mosaic_api::{Envelope, EventSet as _, UserId};
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::{Ctx, Lifecycle, Mesh};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mosaic_api::event_set! {
    /// What the fan-out reads from the posts stream.
    enum PostEvent { Created(PostCreated), Deleted(PostDeleted) }
}

mosaic_api::event_set! {
    /// The graph and preference changes that reconcile cached feeds.
    enum GraphEvent {
        Followed(Followed),
        Unfollowed(Unfollowed),
        Blocked(Blocked),
        Unblocked(Unblocked),
        Muted(Muted),
        Unmuted(Unmuted),
        ProfileUpdated(ProfileUpdated),
    }
}

// A fan-out to a few thousand feeds takes seconds; it must not be redelivered meanwhile.
// Two batches of up to `POST_BATCH` in flight.
const POSTS: ConsumerSpec = ConsumerSpec::new(&EVENTS_POST, "feed-fanout", PostEvent::SUBJECTS)
    .ack_wait(Duration::from_secs(120))
    .in_flight(1024);

const GRAPH: ConsumerSpec = ConsumerSpec::new(&EVENTS_USER, "feed-graph", GraphEvent::SUBJECTS).in_flight(512);

/// New posts handled together at most (one fan-out batch).
const POST_BATCH: usize = 256;
/// Fan-out batches in flight: the next one gathers while one writes.
const POST_BATCHES_IN_FLIGHT: usize = 2;

pub(crate) async fn spawn(state: Arc<FeedService>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    let posts = state.clone();
    let linger = Duration::from_millis(state.config.fanout_linger_ms);
    mesh.consume_event_batches(POSTS, POST_BATCH, linger, POST_BATCHES_IN_FLIGHT, lifecycle, move |batch| {
        let state = posts.clone();
        async move { state.on_post_events(batch).await }
    })
    .await?;
    mesh.consume_events(GRAPH, 8, lifecycle, move |_, e: Envelope<GraphEvent>| {
        let state = state.clone();
        async move { state.on_graph_event(e.data).await }
    })
    .await
}

fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

/// A new post on its way into feeds: its entry, and the followers whose feeds take it.
struct Announced {
    entry: Entry,
    followers: Vec<UserId>,
}

impl FeedService {
    /// A batch of post events: new posts first, all at once, then deletions (a post created
    /// and deleted within one batch ends up deleted).
    async fn on_post_events(
        &self,
        batch: Vec<(usize, Envelope<PostEvent>)>,
    ) -> Result<Vec<(usize, String)>, HandlerError> {
        let mut created = Vec::new();
        let mut deleted = Vec::new();
        for (_, e) in batch {
            match e.data {
                PostEvent::Created(e) => created.push(e),
                PostEvent::Deleted(e) => deleted.push(e),
            }
        }
        if !created.is_empty() {
            self.fan_out(created).await?;
        }
        for e in deleted {
            self.retract(e).await?;
        }
        Ok(Vec::new())
    }

    /// Announces new posts to their authors' online followers and writes them into the
    /// cached feeds of active followers (and their authors'), one write per feed for all
    /// the posts it takes: written one by one, a post cost each follower's ~30 KB document
    /// another compare-and-set, and a busy follower gets several posts a second.
    async fn fan_out(&self, posts: Vec<PostCreated>) -> Result<(), HandlerError> {
        // One post after the other, so live frames keep the order of the posts.
        let mut announced = Vec::with_capacity(posts.len());
        for e in posts {
            announced.push(self.announce(e).await?);
        }
        self.mesh.flush().await.map_err(transient)?;
        let mut feeds: HashMap<UserId, Vec<Entry>> = HashMap::new();
        for a in announced.into_iter().flatten() {
            feeds.entry(a.entry.author.clone()).or_default().push(a.entry.clone());
            for follower in a.followers {
                feeds.entry(follower).or_default().push(a.entry.clone());
            }
        }
        let cap = self.config.cap;
        let mut writes = futures::stream::iter(feeds)
            .map(|(user, entries)| async move {
                self.modify(&user, |doc| {
                    let graph = doc.graph.clone();
                    doc.merge(entries.iter().filter(|e| !graph.hidden.contains(&e.author)).cloned(), cap)
                })
                .await
            })
            .buffer_unordered(self.config.fanout_concurrency);
        while let Some(result) = writes.next().await {
            result.map_err(transient)?;
        }
        Ok(())
    }

    /// Sends a new post to every online follower's socket, and names the followers whose
    /// feeds take it: none when the author is big enough to be pulled instead, or the post
    /// is gone already (`None` then).
    async fn announce(&self, e: PostCreated) -> Result<Option<Announced>, HandlerError> {
        // Background work: the feed asks as itself, for the body every follower sees (a new
        // post has no likes or comments to count yet).
        let ctx = Ctx::new().with_timeout(Duration::from_secs(10));
        let bodies =
            self.mesh.call::<GetPosts>(&ctx, &PostsByIds { ids: vec![e.post_id.clone()] }).await.map_err(transient)?;
        // Deleted (or its author suspended) before we got to it: nothing to announce.
        let Some(post) = bodies.into_iter().next() else { return Ok(None) };
        let frame = serde_json::to_vec(&ServerFrame::FeedPost { post: Box::new(post) })
            .map_err(|err| transient(anyhow::Error::new(err)))?;
        let entry =
            entry(&PostRef { post_id: e.post_id, author: e.author.clone(), tags: e.tags, created_at: e.created_at });
        let mut followers = Vec::new();
        let mut after = None;
        let mut pull = None;
        loop {
            let page = self
                .mesh
                .call::<Audience>(&ctx, &AudienceQuery { author: e.author.clone(), after, limit: MAX_GRAPH_IDS })
                .await
                .map_err(transient)?;
            let pull = *pull.get_or_insert(page.followers >= self.config.fanout_threshold);
            // Live frames first: they are what an online follower is waiting for. Only to
            // followers with a socket open (most are not): a frame published to nobody still
            // costs a message through the server, one per follower however large the
            // audience. An edge stores a socket's presence before it completes the upgrade,
            // and the mirror follows the bucket within moments.
            for follower in page.ids.iter().filter(|f| self.presence.is_online(f)) {
                self.mesh.push_raw(follower, frame.clone().into()).await.map_err(transient)?;
            }
            if pull {
                self.mark_pulled(&e.author).await.map_err(transient)?;
            } else {
                followers.extend(page.ids);
            }
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        Ok(Some(Announced { entry, followers }))
    }

    /// Applies `change` to many feeds, `fanout_concurrency` at a time.
    async fn modify_all(
        &self,
        users: Vec<UserId>,
        change: impl Fn(&mut crate::codec::FeedDoc) -> bool + Clone + Send + Sync,
    ) -> anyhow::Result<()> {
        let mut writes = futures::stream::iter(users)
            .map(|user| {
                let change = change.clone();
                async move { self.modify(&user, change).await }
            })
            .buffer_unordered(self.config.fanout_concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// Marks an author as pulled, once: every feed read from now on merges their posts in.
    async fn mark_pulled(&self, author: &UserId) -> anyhow::Result<()> {
        if !self.is_pulled(author) {
            self.pull_marks.put(&format!("author.{author}"), bytes::Bytes::from_static(b"1")).await?;
            self.pull_authors.write().expect("pull set poisoned").insert(author.clone());
        }
        Ok(())
    }

    /// Takes a deleted post out of the feeds it was pushed into. Posts of pulled authors were
    /// never pushed (feeds that picked them up in a rebuild drop them when reading finds them
    /// gone), so their followers are not walked.
    async fn retract(&self, e: PostDeleted) -> Result<(), HandlerError> {
        self.posts.remove(&e.post_id);
        self.pulled.remove(&e.author);
        let gone = |doc: &mut crate::codec::FeedDoc| doc.remove(|x| x.post == e.post_id);
        self.modify(&e.author, gone).await.map_err(transient)?;
        if self.is_pulled(&e.author) {
            return Ok(());
        }
        let ctx = Ctx::new().with_timeout(Duration::from_secs(10));
        let mut after = None;
        loop {
            let page = self
                .mesh
                .call::<Audience>(&ctx, &AudienceQuery { author: e.author.clone(), after, limit: MAX_GRAPH_IDS })
                .await
                .map_err(transient)?;
            let post = e.post_id.clone();
            self.modify_all(page.ids, move |doc| doc.remove(|x| x.post == post)).await.map_err(transient)?;
            after = page.next;
            if after.is_none() {
                return Ok(());
            }
        }
    }

    async fn on_graph_event(&self, event: GraphEvent) -> Result<(), HandlerError> {
        match event {
            GraphEvent::Followed(e) => self.reconcile(&e.follower, Some(&e.followee)).await,
            GraphEvent::Unfollowed(e) => self.reconcile(&e.follower, None).await,
            GraphEvent::Blocked(Blocked { blocker, blocked })
            | GraphEvent::Unblocked(Unblocked { blocker, blocked }) => {
                self.reconcile(&blocker, None).await?;
                self.reconcile(&blocked, None).await
            }
            GraphEvent::Muted(e) => self.reconcile(&e.muter, None).await,
            GraphEvent::Unmuted(e) => self.reconcile(&e.muter, None).await,
            GraphEvent::ProfileUpdated(e) => self.reconcile(&e.user_id, None).await,
        }
    }

    /// Brings `user`'s cached feed in line with the graph as it is now (follows, blocks,
    /// mutes, topics), adding the newest posts of `followed` when that is a new follow.
    /// Reading the whole seed rather than applying the event keeps redelivered or reordered
    /// events harmless.
    async fn reconcile(&self, user: &UserId, followed: Option<&UserId>) -> Result<(), HandlerError> {
        if !matches!(self.load(user).await.map_err(transient)?, crate::store::Loaded::Active(_)) {
            return Ok(());
        }
        let ctx = Ctx::new().with_timeout(Duration::from_secs(10));
        let cap = self.config.cap;
        // The newest posts of a new followee, merged only if the graph read with the feed
        // still shows them.
        let backfill = match followed {
            Some(f) if self.config.follow_backfill > 0 => {
                let query =
                    RecentByAuthors { authors: vec![f.clone()], limit: self.config.follow_backfill, each: false };
                self.mesh.call::<RecentPosts>(&ctx, &query).await.map_err(transient)?
            }
            _ => Vec::new(),
        };
        let read = || async {
            let seed = self.mesh.call::<GetFeedSeed>(&ctx, &ByUser { user_id: user.clone() }).await?;
            Ok(Arc::new(Graph::new(seed.topics, seed.following, seed.hidden)))
        };
        self.modify_with(user, read, |doc, graph: &Arc<Graph>| {
            doc.graph = graph.clone();
            doc.remove(|e| &e.author != user && !graph.shows(&e.author));
            doc.merge(backfill.iter().filter(|p| graph.shows(&p.author)).map(entry), cap);
            true
        })
        .await
        .map_err(transient)
    }
}

//! What timeline reads and post hydration would otherwise ask the database (and the user
//! service) for on every request: the newest posts of each author, posts by id, the media
//! of live posts, and authors as posts show them. Coherent across instances
//! ([`mosaic_mesh::cache`]): creating or deleting a post drops the author's timeline, and
//! deleting it also the post and its media, on every instance ([`PostsChanged`]); a profile
//! change or suspension, heard as the user service's event, drops the author.

use crate::ContentService;
use crate::store::PostRow;
use mosaic_api::content::{Author, Media, PostsChanged};
use mosaic_api::user::{ProfileUpdated, Suspended, Unsuspended};
use mosaic_api::{MediaId, PostId, UserId};
use mosaic_mesh::cache::Coherent;
use mosaic_mesh::{Lifecycle, Mesh};
use std::sync::Arc;
use std::time::Duration;

/// Rows of an author's timeline kept: a first page of up to this many is served from memory
/// (one more is kept to know whether a next page exists).
pub(crate) const TIMELINE_HEAD: usize = 50;
const TIMELINES: usize = 10_000;
const POSTS: usize = 50_000;
const MEDIA: usize = 100_000;
const AUTHORS: usize = 50_000;
/// Longest an entry lives if the notice that should have dropped it was lost.
const TTL: Duration = Duration::from_secs(60);

pub(crate) struct ContentCache {
    /// Newest live posts of an author, newest first, at most `TIMELINE_HEAD + 1`.
    pub(crate) timelines: Coherent<UserId, Option<Arc<Vec<PostRow>>>>,
    /// Posts by id, as stored (a post never changes but for its deletion).
    pub(crate) posts: Coherent<PostId, Option<PostRow>>,
    /// Media of live posts as clients see it (it no longer changes once posted).
    pub(crate) media: Coherent<MediaId, Option<Media>>,
    /// Authors as posts show them; `Some(None)` for a suspended or unknown author.
    pub(crate) authors: Coherent<UserId, Option<Option<Author>>>,
}

impl ContentCache {
    pub(crate) fn new() -> Self {
        Self {
            timelines: Coherent::new(TIMELINES, TTL),
            posts: Coherent::new(POSTS, TTL),
            media: Coherent::new(MEDIA, TTL),
            authors: Coherent::new(AUTHORS, TTL),
        }
    }

    pub(crate) fn forget(&self, notice: &PostsChanged) {
        // A new post this instance holds (it wrote it) goes into the cached timeline: its
        // author's next timeline read would otherwise query the database again. Others drop it.
        let created = notice.created.as_ref().and_then(|p| self.posts.slot(p).read(Clone::clone));
        match created {
            Some(row) => self
                .timelines
                .update(&notice.author, |head| head.as_ref().map(|head| Some(Arc::new(with_new_post(head, row))))),
            None => self.timelines.invalidate(&notice.author),
        }
        for p in &notice.post_ids {
            self.posts.invalidate(p);
        }
        for m in &notice.media_ids {
            self.media.invalidate(m);
        }
    }

    /// Listens for what makes entries stale on other instances and in other services.
    pub(crate) async fn listen(
        service: &Arc<ContentService>,
        mesh: &Mesh,
        lifecycle: &Lifecycle,
    ) -> anyhow::Result<()> {
        let s = service.clone();
        mesh.on_broadcast(lifecycle, move |n: PostsChanged| s.cache.forget(&n)).await?;
        let s = service.clone();
        mesh.on_event_notice(lifecycle, move |e: ProfileUpdated| s.cache.authors.invalidate(&e.user_id)).await?;
        let s = service.clone();
        mesh.on_event_notice(lifecycle, move |e: Suspended| s.cache.authors.invalidate(&e.user_id)).await?;
        let s = service.clone();
        mesh.on_event_notice(lifecycle, move |e: Unsuspended| s.cache.authors.invalidate(&e.user_id)).await
    }
}

/// `head` (newest first, at most `TIMELINE_HEAD + 1` rows) with `row` in its place, once.
fn with_new_post(head: &[PostRow], row: PostRow) -> Vec<PostRow> {
    let mut out = head.to_vec();
    if row.deleted || out.iter().any(|p| p.key == row.key) {
        return out;
    }
    let newer = |p: &PostRow| (p.created_at, p.key.as_str()) > (row.created_at, row.key.as_str());
    let at = out.iter().position(|p| !newer(p)).unwrap_or(out.len());
    out.insert(at, row);
    // Past the last row of a full head it was not among the newest anyway.
    out.truncate(TIMELINE_HEAD + 1);
    out
}

impl ContentService {
    /// After a committed create or delete: drops the stale entries here and everywhere else.
    pub(crate) async fn posts_changed(
        &self,
        author: &UserId,
        created: Option<PostId>,
        post_ids: Vec<PostId>,
        media_ids: Vec<MediaId>,
    ) {
        let notice = PostsChanged { author: author.clone(), created, media_ids, post_ids };
        self.cache.forget(&notice);
        if let Err(e) = self.mesh.broadcast(&notice).await {
            tracing::warn!(author = %author, error = %e, "could not tell other instances of a changed timeline");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn row(key: &str, at: i64) -> PostRow {
        PostRow {
            key: key.to_owned(),
            author: "a".to_owned(),
            caption: String::new(),
            tags: Vec::new(),
            mentions: Vec::new(),
            media: Vec::new(),
            deleted: false,
            created_at: DateTime::<Utc>::from_timestamp(at, 0).unwrap(),
        }
    }

    fn keys(rows: &[PostRow]) -> Vec<&str> {
        rows.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn a_new_post_goes_into_a_cached_head_once_and_in_order() {
        let head = vec![row("c", 30), row("a", 10)];
        let added = with_new_post(&head, row("d", 40));
        assert_eq!(keys(&added), ["d", "c", "a"]);
        assert_eq!(keys(&with_new_post(&added, row("d", 40))), ["d", "c", "a"], "heard twice");
        assert_eq!(keys(&with_new_post(&head, row("b", 20))), ["c", "b", "a"]);

        let full: Vec<PostRow> = (0..=TIMELINE_HEAD as i64).rev().map(|n| row(&format!("p{n:03}"), 100 + n)).collect();
        let newest = with_new_post(&full, row("new", 1000));
        assert_eq!((newest.len(), newest[0].key.as_str()), (TIMELINE_HEAD + 1, "new"));
        assert_eq!(keys(&with_new_post(&full, row("old", 1))), keys(&full), "older than a full head");
    }
}

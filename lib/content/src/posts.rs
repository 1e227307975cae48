//! Posts and user timelines.

use crate::ContentService;
use crate::cache::TIMELINE_HEAD;
use crate::store::{self, MentionRow, PostRow, Refused, post_rid};
use anyhow::Context as _;
use chrono::Utc;
use mosaic_api::content::{
    Author, ByPost, CreatePostRequest, MAX_RECENT_AUTHORS_EACH, MAX_RECENT_POSTS, Media, MediaStatus, Mention, Post,
    PostCreated, PostDeleted, PostMentioned, PostRef, PostsByIds, RecentByAuthors, Timeline,
};
use mosaic_api::endpoint::Empty;
use mosaic_api::interaction::{GetSignals, SignalsQuery};
use mosaic_api::page::TimeCursor;
use mosaic_api::text::{hashtags, mentions};
use mosaic_api::user::{self as users, ProfilesByIds, ProfilesByUsername, RelationsQuery, Role};
use mosaic_api::{ApiError, ErrorCode, Id, MediaId, Page, PostId, UserId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, WriteError};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use surrealdb::types::RecordId;

const MAX_CAPTION: usize = 2200;
const MAX_MEDIA: usize = 10;
const MAX_TAGS: usize = 30;

impl ContentService {
    pub(crate) async fn create_post(self: Arc<Self>, ctx: Ctx, req: CreatePostRequest) -> ServiceResult<Post> {
        let author = ctx.require_user()?.clone();
        let caption = req.caption.trim().to_owned();
        if caption.chars().count() > MAX_CAPTION {
            return Err(ApiError::validation(format!("caption must be at most {MAX_CAPTION} characters")).into());
        }
        self.posts.take(author.as_str()).await?;
        if caption.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::validation("caption must not contain control characters").into());
        }
        if req.media_ids.is_empty() || req.media_ids.len() > MAX_MEDIA {
            return Err(ApiError::validation(format!("a post has 1 to {MAX_MEDIA} media")).into());
        }
        let unique: HashSet<&MediaId> = req.media_ids.iter().collect();
        if unique.len() != req.media_ids.len() {
            return Err(ApiError::validation("media_ids lists an item twice").into());
        }
        let tags = tags(&caption, req.tags.as_deref().unwrap_or_default())?;

        // Taken before the write (see mosaic_mesh::cache): the media, ready and about to be
        // posted, is what every follower's hydration of the new post asks for next.
        let media_slots: Vec<_> = req.media_ids.iter().map(|m| self.cache.media.slot(m)).collect();
        let mentions = self.resolve_mentions(&ctx, &author, &caption).await?;
        let post_id = PostId::generate();
        let now = Utc::now();
        let mut events = vec![Staged::new(PostCreated {
            post_id: post_id.clone(),
            author: author.clone(),
            tags: tags.clone(),
            created_at: now,
        })];
        events.extend(mentions.iter().map(|m| {
            Staged::new(PostMentioned { post_id: post_id.clone(), author: author.clone(), mentioned: m.id.clone() })
        }));
        let row = PostRow {
            key: post_id.to_string(),
            author: author.to_string(),
            caption,
            tags,
            mentions: mentions
                .iter()
                .map(|m| MentionRow { id: m.id.to_string(), username: m.username.clone() })
                .collect(),
            media: req.media_ids.iter().map(|m| m.to_string()).collect(),
            deleted: false,
            created_at: now,
        };
        // The transaction is the check (see `store::create_post`). Why it refused is looked
        // up after, so a post that goes through costs one statement batch.
        let result = store::create_post(&self.outbox, &row).stage_inserted(events).run::<Refused>().await;
        let mut res = match result {
            Ok(res) => res,
            Err(WriteError::Refused(Refused::MediaTaken)) => {
                return Err(self.refused_media(&author, &req.media_ids).await?.into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("creating post").into()),
        };
        let media = store::claimed_media(&mut res)?;
        for (id, slot) in req.media_ids.iter().zip(&media_slots) {
            if let Some(m) = media.iter().find(|m| &m.id() == id) {
                slot.write(|v| *v = Some(m.to_api()));
            }
        }
        // What was just written, without reading it back; followers' feeds ask for it next,
        // and the author's cached timeline takes it from here.
        self.cache.posts.slot(&post_id).write(|v| *v = Some(row.clone()));
        self.posts_changed(&author, Some(post_id), Vec::new(), Vec::new()).await;
        // Nobody can have liked or commented on it yet: no need to ask for its counts.
        Ok(self.hydrate_rows(&ctx, vec![row], false).await?.pop().context("new post vanished")?)
    }

    /// Why a new post could not claim `media_ids`: the first item (in the order asked) that
    /// is missing, someone else's, not ready or in a post already.
    async fn refused_media(&self, author: &UserId, media_ids: &[MediaId]) -> ServiceResult<ApiError> {
        let media = store::media_by_ids(&self.db, media_ids).await?;
        for id in media_ids {
            let Some(m) = media.iter().find(|m| &m.id() == id).filter(|m| !m.deleted) else {
                return Ok(ApiError::not_found(format!("no such media: {id}")));
            };
            if m.owner != author.as_str() {
                return Ok(ApiError::forbidden(format!("media {id} belongs to someone else")));
            }
            match m.status() {
                MediaStatus::Ready => {}
                MediaStatus::Processing => {
                    return Ok(ApiError::new(ErrorCode::MediaNotReady, format!("media {id} is still processing")));
                }
                MediaStatus::Failed => {
                    return Ok(ApiError::new(ErrorCode::MediaNotReady, format!("media {id} failed processing")));
                }
            }
            if m.post.is_some() {
                return Ok(ApiError::new(ErrorCode::Conflict, format!("media {id} is already in a post")));
            }
        }
        // All fine now: another post held one when the transaction ran, and let it go since.
        Ok(ApiError::new(ErrorCode::Conflict, "a media item was used by another post meanwhile"))
    }

    pub(crate) async fn get_post(self: Arc<Self>, ctx: Ctx, req: ByPost) -> ServiceResult<Post> {
        let viewer = ctx.require_user()?.clone();
        let row = self.posts_of(std::slice::from_ref(&req.post_id)).await?.pop().filter(|p| !p.deleted);
        let Some(row) = row else { return Err(ApiError::not_found("no such post").into()) };
        let visible = self.visible_authors(&ctx, &viewer, &[row.author()]).await?;
        if !visible.contains(&row.author()) {
            return Err(ApiError::not_found("no such post").into());
        }
        Ok(self.hydrate(&ctx, vec![row]).await?.pop().context("post vanished")?)
    }

    /// Post bodies for the feed, which has already left out whom the reader blocks or mutes
    /// and reads counts itself (and caches bodies for every reader): no counts, no relation
    /// check here, only the hiding of deleted posts and suspended authors. An internal
    /// endpoint: the feed asks for a reader, or as itself when it announces a new post.
    pub(crate) async fn get_posts(self: Arc<Self>, ctx: Ctx, req: PostsByIds) -> ServiceResult<Vec<Post>> {
        if req.ids.len() > 100 {
            return Err(ApiError::validation("at most 100 posts per request").into());
        }
        let rows: Vec<PostRow> = self.posts_of(&req.ids).await?.into_iter().filter(|p| !p.deleted).collect();
        self.hydrate_rows(&ctx, rows, false).await
    }

    /// The posts a socket may watch for live counts: those `get_post` would show the caller.
    pub(crate) async fn watchable_posts(self: Arc<Self>, ctx: Ctx, req: PostsByIds) -> ServiceResult<Vec<PostId>> {
        let viewer = ctx.require_user()?.clone();
        if req.ids.len() > 100 {
            return Err(ApiError::validation("at most 100 posts per request").into());
        }
        let rows: Vec<PostRow> = self.posts_of(&req.ids).await?.into_iter().filter(|p| !p.deleted).collect();
        let authors: Vec<UserId> = rows.iter().map(PostRow::author).collect();
        let visible = self.visible_authors(&ctx, &viewer, &authors).await?;
        // Suspended authors' posts are hidden with them.
        let shown = self.authors_of(&ctx, &rows).await?;
        Ok(rows
            .iter()
            .filter(|p| visible.contains(&p.author()) && shown.get(&p.author()).is_some_and(Option::is_some))
            .map(PostRow::id)
            .collect())
    }

    pub(crate) async fn delete_post(self: Arc<Self>, ctx: Ctx, req: ByPost) -> ServiceResult<Empty> {
        let caller = ctx.require_user()?.clone();
        let row = store::posts_by_ids(&self.db, std::slice::from_ref(&req.post_id)).await?.pop().filter(|p| !p.deleted);
        let Some(row) = row else { return Err(ApiError::not_found("no such post").into()) };
        if row.author != caller.as_str() && ctx.role() != Role::Admin {
            return Err(ApiError::forbidden("only the author or an administrator may delete this post").into());
        }
        let events = vec![Staged::new(PostDeleted { post_id: req.post_id.clone(), author: row.author() })];
        let media_rids: Vec<RecordId> = row.media.iter().map(|m| RecordId::new("media", m.as_str())).collect();
        self.outbox
            .write(store::DELETE_POST)
            .bind("post", post_rid(&req.post_id))
            .bind("media", media_rids)
            .stage(events)
            .run::<NoRefusal>()
            .await
            .context("deleting post")?;
        let media = row.media.iter().map(|m| MediaId::from_trusted(m.clone())).collect();
        self.posts_changed(&row.author(), None, vec![req.post_id.clone()], media).await;
        // Objects go with the next sweep; nothing links to them any more.
        self.sweep_soon();
        Ok(Empty {})
    }

    pub(crate) async fn user_posts(self: Arc<Self>, ctx: Ctx, req: Timeline) -> ServiceResult<Page<Post>> {
        let viewer = ctx.require_user()?.clone();
        if !self.visible_authors(&ctx, &viewer, std::slice::from_ref(&req.user_id)).await?.contains(&req.user_id) {
            return Err(ApiError::not_found("no such user").into());
        }
        let limit = req.page.limit() as usize;
        if req.page.cursor.is_none() && limit <= TIMELINE_HEAD {
            let head = self.timeline_head(&req.user_id).await?;
            let head = head.iter().take(limit + 1).cloned().collect();
            let (rows, next_cursor) =
                mosaic_api::page::cut(head, limit, |p| TimeCursor::new(p.created_at, p.key.as_str()).encode());
            return Ok(Page { items: self.hydrate(&ctx, rows).await?, next_cursor });
        }
        let (rows, next_cursor) = store::timeline_page(&self.db, &req.user_id, &req.page).await?;
        Ok(Page { items: self.hydrate(&ctx, rows).await?, next_cursor })
    }

    /// The newest `TIMELINE_HEAD + 1` live posts of `author`, from the cache or one query.
    async fn timeline_head(&self, author: &UserId) -> anyhow::Result<Arc<Vec<PostRow>>> {
        let slot = self.cache.timelines.slot(author);
        if let Some(head) = slot.read(Clone::clone) {
            return Ok(head);
        }
        let head = Arc::new(store::timeline_head(&self.db, author, TIMELINE_HEAD + 1).await?);
        slot.write(|v| *v = Some(head.clone()));
        Ok(head)
    }

    pub(crate) async fn post_refs(self: Arc<Self>, _ctx: Ctx, req: PostsByIds) -> ServiceResult<Vec<PostRef>> {
        if req.ids.len() > MAX_RECENT_POSTS as usize {
            return Err(ApiError::validation(format!("at most {MAX_RECENT_POSTS} posts per request")).into());
        }
        let rows = self.posts_of(&req.ids).await?;
        Ok(rows.into_iter().filter(|p| !p.deleted).map(|p| p.to_ref()).collect())
    }

    pub(crate) async fn recent_posts(self: Arc<Self>, _ctx: Ctx, req: RecentByAuthors) -> ServiceResult<Vec<PostRef>> {
        if req.limit == 0 || req.limit > MAX_RECENT_POSTS {
            return Err(ApiError::validation(format!("limit must be 1 to {MAX_RECENT_POSTS}")).into());
        }
        if req.authors.is_empty() {
            return Ok(Vec::new());
        }
        if req.each {
            if req.authors.len() > MAX_RECENT_AUTHORS_EACH {
                return Err(ApiError::validation(format!("at most {MAX_RECENT_AUTHORS_EACH} authors with each")).into());
            }
            let rows = store::newest_posts_of_each(&self.db, &req.authors, req.limit).await?;
            return Ok(rows.into_iter().map(|p| p.to_ref()).collect());
        }
        let rows = store::newest_posts(&self.db, &req.authors, req.limit).await?;
        Ok(rows.into_iter().map(|p| p.to_ref()).collect())
    }

    /// The posts of `ids` that exist (deleted ones included), in that order: from the cache,
    /// and one lookup for the rest.
    async fn posts_of(&self, ids: &[PostId]) -> anyhow::Result<Vec<PostRow>> {
        let slots: Vec<_> = ids.iter().map(|p| self.cache.posts.slot(p)).collect();
        let mut found: Vec<Option<PostRow>> = slots.iter().map(|s| s.read(Clone::clone)).collect();
        let misses: Vec<PostId> =
            ids.iter().zip(&found).filter(|(_, row)| row.is_none()).map(|(id, _)| id.clone()).collect();
        if !misses.is_empty() {
            let mut loaded: HashMap<String, PostRow> =
                store::posts_by_ids(&self.db, &misses).await?.into_iter().map(|r| (r.key.clone(), r)).collect();
            for ((id, slot), row) in ids.iter().zip(&slots).zip(&mut found) {
                if row.is_none()
                    && let Some(r) = loaded.remove(id.as_str())
                {
                    slot.write(|v| *v = Some(r.clone()));
                    *row = Some(r);
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Posts with their media, authors and counts: media and authors from the cache, what
    /// it lacks in one lookup each, and counts in one request, however many posts there are.
    async fn hydrate(&self, ctx: &Ctx, rows: Vec<PostRow>) -> ServiceResult<Vec<Post>> {
        self.hydrate_rows(ctx, rows, true).await
    }

    /// [`Self::hydrate`], asking for counts only when `counted`.
    async fn hydrate_rows(&self, ctx: &Ctx, rows: Vec<PostRow>, counted: bool) -> ServiceResult<Vec<Post>> {
        let media = self.media_of(&rows).await?;
        let authors = self.authors_of(ctx, &rows).await?;
        let counts: HashMap<PostId, _> = if rows.is_empty() || !counted {
            HashMap::new()
        } else {
            let query = SignalsQuery {
                post_ids: rows.iter().map(PostRow::id).collect(),
                authors: Vec::new(),
                post_authors: rows.iter().map(PostRow::author).collect(),
            };
            let signals = self.mesh.call_owned::<GetSignals>(ctx, query).await?;
            signals.counts.into_iter().map(|c| (c.post_id.clone(), c)).collect()
        };
        Ok(rows
            .into_iter()
            .filter_map(|p| {
                // A suspended author's posts are hidden with them.
                let author = authors.get(&p.author())?.clone()?;
                let count = counts.get(&p.id());
                Some(Post {
                    id: p.id(),
                    author,
                    media: p.media.iter().filter_map(|m| media.get(m.as_str())).cloned().collect(),
                    mentions: p
                        .mentions
                        .iter()
                        .map(|m| Mention { id: UserId::from_trusted(m.id.clone()), username: m.username.clone() })
                        .collect(),
                    caption: p.caption,
                    tags: p.tags,
                    like_count: count.map_or(0, |c| c.like_count),
                    comment_count: count.map_or(0, |c| c.comment_count),
                    liked_by_me: count.is_some_and(|c| c.liked_by_me),
                    created_at: p.created_at,
                })
            })
            .collect())
    }

    /// The media of `rows` by id, from the cache or one lookup for the rest.
    async fn media_of(&self, rows: &[PostRow]) -> anyhow::Result<HashMap<String, Media>> {
        let ids: Vec<MediaId> =
            rows.iter().flat_map(|p| p.media.iter().map(|m| MediaId::from_trusted(m.clone()))).collect();
        let slots: Vec<_> = ids.iter().map(|m| self.cache.media.slot(m)).collect();
        let mut out: HashMap<String, Media> = HashMap::with_capacity(ids.len());
        let mut misses: Vec<MediaId> = Vec::new();
        for (id, slot) in ids.iter().zip(&slots) {
            match slot.read(Clone::clone) {
                Some(m) => {
                    out.insert(id.to_string(), m);
                }
                None => misses.push(id.clone()),
            }
        }
        if !misses.is_empty() {
            for row in store::media_by_ids(&self.db, &misses).await? {
                let media = row.to_api();
                if let Some(slot) = ids.iter().position(|m| m.as_str() == row.key).map(|i| &slots[i]) {
                    slot.write(|v| *v = Some(media.clone()));
                }
                out.insert(row.key, media);
            }
        }
        Ok(out)
    }

    /// The authors of `rows` as posts show them (`None` when suspended), from the cache or
    /// one request for the rest.
    async fn authors_of(&self, ctx: &Ctx, rows: &[PostRow]) -> ServiceResult<HashMap<UserId, Option<Author>>> {
        let mut ids: Vec<UserId> = rows.iter().map(PostRow::author).collect();
        ids.sort();
        ids.dedup();
        let slots: Vec<_> = ids.iter().map(|a| self.cache.authors.slot(a)).collect();
        let mut out: HashMap<UserId, Option<Author>> = HashMap::with_capacity(ids.len());
        let mut misses: Vec<UserId> = Vec::new();
        for (id, slot) in ids.iter().zip(&slots) {
            match slot.read(Clone::clone) {
                Some(a) => {
                    out.insert(id.clone(), a);
                }
                None => misses.push(id.clone()),
            }
        }
        if !misses.is_empty() {
            let profiles = self.mesh.call::<users::GetProfiles>(ctx, &ProfilesByIds { ids: misses.clone() }).await?;
            let mut found: HashMap<UserId, Author> = profiles
                .into_iter()
                .map(|p| (p.id.clone(), Author { id: p.id, username: p.username, display_name: p.display_name }))
                .collect();
            for id in misses {
                // Asked for and not returned: suspended (or gone), so their posts are hidden.
                let author = found.remove(&id);
                if let Some(i) = ids.iter().position(|a| *a == id) {
                    slots[i].write(|v| *v = Some(author.clone()));
                }
                out.insert(id, author);
            }
        }
        Ok(out)
    }

    /// The authors among `authors` whose posts `viewer` may see (no block either way).
    async fn visible_authors(&self, ctx: &Ctx, viewer: &UserId, authors: &[UserId]) -> ServiceResult<HashSet<UserId>> {
        let others: Vec<UserId> =
            authors.iter().filter(|a| *a != viewer).cloned().collect::<HashSet<_>>().into_iter().collect();
        let mut visible: HashSet<UserId> = authors.iter().filter(|a| *a == viewer).cloned().collect();
        if others.is_empty() {
            return Ok(visible);
        }
        let relations =
            self.mesh.call::<users::Relations>(ctx, &RelationsQuery { viewer: viewer.clone(), others }).await?;
        visible.extend(
            relations.into_iter().filter(|r| !r.relation.blocking && !r.relation.blocked_by).map(|r| r.user_id),
        );
        Ok(visible)
    }

    /// `@names` of the caption that are users who have not blocked the author.
    async fn resolve_mentions(&self, ctx: &Ctx, author: &UserId, caption: &str) -> ServiceResult<Vec<Mention>> {
        let names = mentions(caption);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let found =
            self.mesh.call::<users::LookupUsernames>(ctx, &ProfilesByUsername { usernames: names.clone() }).await?;
        let ids: Vec<UserId> = found.iter().map(|p| p.id.clone()).filter(|id| id != author).collect();
        let allowed = self.visible_authors(ctx, author, &ids).await?;
        let mut out: Vec<Mention> = found
            .into_iter()
            .filter(|p| allowed.contains(&p.id) && &p.id != author)
            .map(|p| Mention { id: p.id, username: p.username })
            .collect();
        out.sort_by_key(|m| names.iter().position(|n| *n == m.username));
        Ok(out)
    }
}

/// Tags: the caption's `#hashtags` then the extra tags, lowercase, deduplicated.
fn tags(caption: &str, extra: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for tag in
        hashtags(caption).into_iter().chain(extra.iter().map(|t| t.trim().trim_start_matches('#').to_lowercase()))
    {
        if tag.is_empty() || tag.chars().count() > 32 || !tag.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(ApiError::validation(format!("{tag:?} is not a valid tag")));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ApiError::validation(format!("a post has at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_and_mentions_come_from_the_caption() {
        let caption = "Sunset at the #Beach with @Ana_B and @tom.k. #beach #golden_hour mail me: x@y.io #";
        assert_eq!(tags(caption, &["Travel".into()]).unwrap(), vec!["beach", "golden_hour", "travel"]);
        assert!(tags("", &["no spaces".into()]).is_err());
    }
}

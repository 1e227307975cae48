//! Likes and comments.

use crate::InteractionService;
use crate::store::{self, CommentRow, Refused};
use anyhow::Context as _;
use chrono::Utc;
use mosaic_api::content::{Author, PostRef, PostRefs, PostsByIds};
use mosaic_api::endpoint::Empty;
use mosaic_api::interaction::{
    ByComment, Comment, CommentDeleted, Commented, Liked, MAX_COMMENT_CHARS, NewComment, NotificationKind, NotifyUser,
    OnPost, PostPage, SignalsChanged, Unliked,
};
use mosaic_api::user::{self as users, Profile, ProfilesByIds, ProfilesByUsername, RelationsQuery, Role};
use mosaic_api::ws::ServerFrame;
use mosaic_api::{ApiError, CommentId, Id, Page, PostId, UserId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write, WriteError};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl InteractionService {
    pub(crate) async fn like(self: Arc<Self>, ctx: Ctx, req: OnPost) -> ServiceResult<Empty> {
        let user = ctx.require_user()?.clone();
        let post = self.reachable_post(&ctx, &user, &req.post_id).await?;
        let mut events =
            vec![Staged::new(Liked { post_id: post.post_id.clone(), owner: post.author.clone(), user: user.clone() })];
        if user != post.author {
            events.push(Staged::new(NotifyUser {
                recipient: post.author.clone(),
                kind: NotificationKind::Like,
                actor: user.clone(),
                post_id: post.post_id.clone(),
                comment_id: None,
            }));
        }
        let write = self.outbox.write(store::LIKE);
        self.record_like(write, &post, &user, events).await
    }

    pub(crate) async fn unlike(self: Arc<Self>, ctx: Ctx, req: OnPost) -> ServiceResult<Empty> {
        let user = ctx.require_user()?.clone();
        let post = self.reachable_post(&ctx, &user, &req.post_id).await?;
        let events = vec![Staged::new(Unliked {
            post_id: post.post_id.clone(),
            owner: post.author.clone(),
            user: user.clone(),
        })];
        let write = self.outbox.write(store::UNLIKE);
        self.record_like(write, &post, &user, events).await
    }

    /// Runs a like's or unlike's transaction on the post's records for `user`. Conflicts with
    /// concurrent writers of the same post are retried, which is what keeps the counter exact.
    async fn record_like(
        &self,
        write: Write<'_>,
        post: &PostRef,
        user: &UserId,
        events: Vec<Staged>,
    ) -> ServiceResult<Empty> {
        write
            .bind("like", store::like_rid(&post.post_id, user))
            .bind("stats", store::stats_rid(&post.post_id))
            .bind("affinity", store::affinity_rid(user, &post.author))
            .bind("post", post.post_id.to_string())
            .bind("user", user.to_string())
            .bind("owner", post.author.to_string())
            .stage(events)
            .run::<NoRefusal>()
            .await
            .context("recording like")?;
        self.changed(&post.post_id, std::slice::from_ref(user)).await;
        Ok(Empty {})
    }

    pub(crate) async fn likers(self: Arc<Self>, ctx: Ctx, req: PostPage) -> ServiceResult<Page<Profile>> {
        let viewer = ctx.require_user()?.clone();
        self.reachable_post(&ctx, &viewer, &req.post_id).await?;
        let (rows, next_cursor) = store::likers_page(&self.db, &req.post_id, &req.page).await?;
        let ids: Vec<UserId> = rows.iter().map(|r| UserId::from_trusted(r.user.clone())).collect();
        let mut profiles: HashMap<UserId, Profile> = self
            .mesh
            .call::<users::GetProfiles>(&ctx, &ProfilesByIds { ids: ids.clone() })
            .await?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        Ok(Page { items: ids.iter().filter_map(|id| profiles.remove(id)).collect(), next_cursor })
    }

    pub(crate) async fn add_comment(self: Arc<Self>, ctx: Ctx, req: NewComment) -> ServiceResult<Comment> {
        let user = ctx.require_user()?.clone();
        let text = req.body.text.trim().to_owned();
        if text.is_empty() || text.chars().count() > MAX_COMMENT_CHARS {
            return Err(ApiError::validation(format!("text must be 1 to {MAX_COMMENT_CHARS} characters")).into());
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::validation("text must not contain control characters").into());
        }
        self.comments.take(user.as_str()).await?;
        let post = self.reachable_post(&ctx, &user, &req.post_id).await?;

        // A reply to a reply answers the thread's top-level comment: threads are one level deep.
        let parent = match &req.body.reply_to {
            Some(id) => {
                let row = store::comment(&self.db, id).await?.filter(|c| c.post == post.post_id.as_str());
                let Some(row) = row else { return Err(ApiError::not_found("no such comment on this post").into()) };
                Some(row)
            }
            None => None,
        };
        let thread = parent.as_ref().map(|p| CommentId::from_trusted(p.reply_to.clone().unwrap_or(p.key.clone())));

        let id = CommentId::generate();
        let now = Utc::now();
        let recipients = self.comment_recipients(&ctx, &user, &post, parent.as_ref(), &text).await?;
        let mut events = vec![Staged::new(Commented {
            comment_id: id.clone(),
            post_id: post.post_id.clone(),
            owner: post.author.clone(),
            user: user.clone(),
            reply_to: thread.clone(),
        })];
        events.extend(recipients.into_iter().map(|(recipient, kind)| {
            Staged::new(NotifyUser {
                recipient,
                kind,
                actor: user.clone(),
                post_id: post.post_id.clone(),
                comment_id: Some(id.clone()),
            })
        }));
        let result = self
            .outbox
            .write(store::ADD_COMMENT)
            .bind("thread", thread.as_ref().map(|t| t.to_string()))
            .bind("thread_rid", thread.as_ref().map(store::comment_rid))
            .bind("comment", store::comment_rid(&id))
            .bind("post", post.post_id.to_string())
            .bind("user", user.to_string())
            .bind("owner", post.author.to_string())
            .bind("text", text.clone())
            .bind("now", now)
            .bind("stats", store::stats_rid(&post.post_id))
            .bind("affinity", store::affinity_rid(&user, &post.author))
            .stage_inserted(events)
            .run::<Refused>()
            .await;
        match result {
            Ok(_) => {}
            Err(WriteError::Refused(Refused::ThreadGone)) => {
                return Err(ApiError::not_found("the comment replied to was deleted").into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("adding comment").into()),
        }
        self.changed(&post.post_id, std::slice::from_ref(&user)).await;
        let author =
            self.authors(&ctx, std::slice::from_ref(&user)).await?.remove(&user).context("commenter vanished")?;
        Ok(Comment { id, post_id: post.post_id, author, text, reply_to: thread, created_at: now })
    }

    /// Who hears of a new comment, and why: the post's owner, the author of the comment
    /// answered, and the users mentioned; each once (the most specific reason wins), never
    /// the commenter, and nobody on either side of a block with the commenter.
    async fn comment_recipients(
        &self,
        ctx: &Ctx,
        user: &UserId,
        post: &PostRef,
        parent: Option<&CommentRow>,
        text: &str,
    ) -> ServiceResult<Vec<(UserId, NotificationKind)>> {
        let mut out: Vec<(UserId, NotificationKind)> = Vec::new();
        let mut add = |who: UserId, kind: NotificationKind| {
            if &who != user && !out.iter().any(|(w, _)| *w == who) {
                out.push((who, kind));
            }
        };
        if let Some(parent) = parent {
            add(UserId::from_trusted(parent.author.clone()), NotificationKind::Reply);
        }
        add(post.author.clone(), NotificationKind::Comment);
        let names = mosaic_api::text::mentions(text);
        if !names.is_empty() {
            let found = self.mesh.call::<users::LookupUsernames>(ctx, &ProfilesByUsername { usernames: names }).await?;
            for p in found {
                add(p.id, NotificationKind::Mention);
            }
        }
        if out.is_empty() {
            return Ok(out);
        }
        let others: Vec<UserId> = out.iter().map(|(w, _)| w.clone()).collect();
        let relations =
            self.mesh.call::<users::Relations>(ctx, &RelationsQuery { viewer: user.clone(), others }).await?;
        let blocked: HashSet<UserId> =
            relations.into_iter().filter(|r| r.relation.blocking || r.relation.blocked_by).map(|r| r.user_id).collect();
        out.retain(|(w, _)| !blocked.contains(w));
        Ok(out)
    }

    pub(crate) async fn comments(self: Arc<Self>, ctx: Ctx, req: PostPage) -> ServiceResult<Page<Comment>> {
        let viewer = ctx.require_user()?.clone();
        self.reachable_post(&ctx, &viewer, &req.post_id).await?;
        let (rows, next_cursor) = store::comments_page(&self.db, &req.post_id, &req.page).await?;
        let ids: Vec<UserId> = rows.iter().map(|r| UserId::from_trusted(r.author.clone())).collect();
        let authors = self.authors(&ctx, &ids).await?;
        let items = rows
            .into_iter()
            .filter_map(|r| {
                // Comments of suspended users are hidden with them.
                let author = authors.get(&UserId::from_trusted(r.author.clone()))?.clone();
                Some(Comment {
                    id: CommentId::from_trusted(r.key),
                    post_id: PostId::from_trusted(r.post),
                    author,
                    text: r.text,
                    reply_to: r.reply_to.map(CommentId::from_trusted),
                    created_at: r.created_at,
                })
            })
            .collect();
        Ok(Page { items, next_cursor })
    }

    pub(crate) async fn delete_comment(self: Arc<Self>, ctx: Ctx, req: ByComment) -> ServiceResult<Empty> {
        let caller = ctx.require_user()?.clone();
        let Some(row) = store::comment(&self.db, &req.comment_id).await? else {
            return Err(ApiError::not_found("no such comment").into());
        };
        let post_id = PostId::from_trusted(row.post.clone());
        // Every commented post has a stats row naming its owner (written with the first
        // comment), so the delete rules need no request to the content service.
        let owner = store::stats_owner(&self.db, &post_id).await?.context("commented post has no stats row")?;
        let allowed = row.author == caller.as_str() || owner == caller || ctx.role() == Role::Admin;
        if !allowed {
            return Err(ApiError::forbidden(
                "only the comment's author, the post's author or an administrator may delete it",
            )
            .into());
        }
        let replies = if row.reply_to.is_none() { store::reply_count(&self.db, &req.comment_id).await? } else { 0 };
        let events = vec![Staged::new(CommentDeleted {
            comment_id: req.comment_id.clone(),
            post_id: post_id.clone(),
            owner: owner.clone(),
            by: caller.clone(),
            removed: replies + 1,
        })];
        let result = self
            .outbox
            .write(store::DELETE_COMMENT)
            .bind("comment", store::comment_rid(&req.comment_id))
            .bind("key", req.comment_id.to_string())
            .bind("stats", store::stats_rid(&post_id))
            .bind("author", row.author.clone())
            .bind("owner", owner.to_string())
            .bind("affinity", store::affinity_rid(&UserId::from_trusted(row.author.clone()), &owner))
            .stage(events)
            .run::<Refused>()
            .await;
        match result {
            Ok(_) => {}
            Err(WriteError::Refused(Refused::CommentGone)) => {
                return Err(ApiError::not_found("no such comment").into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("deleting comment").into()),
        }
        self.changed(&post_id, &[UserId::from_trusted(row.author.clone())]).await;
        Ok(Empty {})
    }

    /// The post if `viewer` may act on it: it exists and no block stands between the viewer
    /// and its author. Otherwise not found, as for a post that does not exist.
    async fn reachable_post(&self, ctx: &Ctx, viewer: &UserId, post: &PostId) -> ServiceResult<PostRef> {
        let found = self.mesh.call::<PostRefs>(ctx, &PostsByIds { ids: vec![post.clone()] }).await?;
        let Some(post) = found.into_iter().next() else { return Err(ApiError::not_found("no such post").into()) };
        if &post.author != viewer {
            let relations = self
                .mesh
                .call::<users::Relations>(
                    ctx,
                    &RelationsQuery { viewer: viewer.clone(), others: vec![post.author.clone()] },
                )
                .await?;
            if relations.iter().any(|r| r.relation.blocking || r.relation.blocked_by) {
                return Err(ApiError::not_found("no such post").into());
            }
        }
        Ok(post)
    }

    async fn authors(&self, ctx: &Ctx, ids: &[UserId]) -> ServiceResult<HashMap<UserId, Author>> {
        let mut unique: Vec<UserId> = ids.to_vec();
        unique.sort();
        unique.dedup();
        if unique.is_empty() {
            return Ok(HashMap::new());
        }
        let profiles = self.mesh.call::<users::GetProfiles>(ctx, &ProfilesByIds { ids: unique }).await?;
        Ok(profiles
            .into_iter()
            .map(|p| (p.id.clone(), Author { id: p.id, username: p.username, display_name: p.display_name }))
            .collect())
    }

    /// After a committed change to `post`'s counters by `users`: drops what every instance
    /// caches about them, then tells the sockets watching the post its new counts.
    async fn changed(&self, post: &PostId, users: &[UserId]) {
        let notice = SignalsChanged { post_id: post.clone(), users: users.to_vec() };
        self.forget(&notice);
        if let Err(e) = self.mesh.broadcast(&notice).await {
            tracing::warn!(post = %post, error = %e, "could not tell other instances of changed signals");
        }
        self.announce_counts(post).await;
    }

    /// Tells the sockets watching the post its new counts. Best effort: clients that miss it
    /// see the counts the next time they load the post.
    async fn announce_counts(&self, post: &PostId) {
        let frame = match store::counters(&self.db, post).await {
            Ok(Some(c)) => ServerFrame::PostCounts {
                post_id: post.clone(),
                like_count: c.likes.max(0) as u64,
                comment_count: c.comments.max(0) as u64,
            },
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(post = %post, error = %e, "could not read counts to announce");
                return;
            }
        };
        if let Err(e) = self.mesh.push_post(post, &frame).await {
            tracing::warn!(post = %post, error = %e, "could not announce counts");
        }
    }
}

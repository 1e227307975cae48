//! Likes and comments.

use crate::InteractionService;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::{Author, PostRef, PostRefs, PostsByIds};
use mosaic_api::endpoint::Empty;
use mosaic_api::interaction::{
    ByComment, Comment, CommentDeleted, Commented, Liked, MAX_COMMENT_CHARS, NewComment, NotificationKind, NotifyUser,
    OnPost, PostPage, SignalsChanged, Unliked,
};
use mosaic_api::page::TimeCursor;
use mosaic_api::user::{self as users, Profile, ProfilesByIds, ProfilesByUsername, RelationsQuery, Role};
use mosaic_api::ws::ServerFrame;
use mosaic_api::{ApiError, CommentId, Id, Page, PostId, UserId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write, WriteError};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use surrealdb::types::{Array, RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// What the interaction transactions refuse (the codes their SurrealQL `THROW`s).
    pub(crate) enum Refused {
        /// The comment a reply answers was deleted before the reply was written.
        ThreadGone = "thread_gone",
        /// The comment to delete was deleted already.
        CommentGone = "comment_gone",
    }
}

pub(crate) fn stats_rid(post: &PostId) -> RecordId {
    RecordId::new("post_stats", post.as_str())
}

pub(crate) fn like_rid(post: &PostId, user: &UserId) -> RecordId {
    RecordId::new("post_like", Array::from(vec![post.to_string(), user.to_string()]))
}

pub(crate) fn affinity_rid(reader: &UserId, author: &UserId) -> RecordId {
    RecordId::new("affinity", Array::from(vec![reader.to_string(), author.to_string()]))
}

fn comment_rid(id: &CommentId) -> RecordId {
    RecordId::new("comment", id.as_str())
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct CommentRow {
    key: String,
    post: String,
    author: String,
    text: String,
    reply_to: Option<String>,
    created_at: DateTime<Utc>,
}

const COMMENT_FIELDS: &str = "record::id(id) AS key, post, author, text, reply_to, created_at";

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Counters {
    likes: i64,
    comments: i64,
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct LikeRow {
    user: String,
    created_at: DateTime<Utc>,
}

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
        let write = self.outbox.write(
            "BEGIN TRANSACTION;
             IF !record::exists($like) {
                CREATE $like SET post = $post, user = $user, created_at = time::now();
                IF !record::exists($stats) { CREATE $stats SET owner = $owner; };
                UPDATE $stats SET likes += 1;
                IF $user != $owner {
                    IF !record::exists($affinity) { CREATE $affinity SET reader = $user; };
                    UPDATE $affinity SET likes += 1;
                };
                INSERT INTO outbox $events;
             };
             COMMIT TRANSACTION;",
        );
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
        let write = self.outbox.write(
            "BEGIN TRANSACTION;
             IF record::exists($like) {
                DELETE $like;
                UPDATE $stats SET likes -= 1;
                IF $user != $owner AND record::exists($affinity) {
                    UPDATE $affinity SET likes = math::max([likes - 1, 0]);
                };
                INSERT INTO outbox $events;
             };
             COMMIT TRANSACTION;",
        );
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
            .bind("like", like_rid(&post.post_id, user))
            .bind("stats", stats_rid(&post.post_id))
            .bind("affinity", affinity_rid(user, &post.author))
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
        let limit = req.page.limit() as usize;
        let cursor = req.page.cursor.as_deref().map(TimeCursor::decode).transpose()?;
        let after =
            if cursor.is_some() { "AND (created_at < $at OR (created_at = $at AND user < $after_key))" } else { "" };
        let cursor = cursor.unwrap_or_else(|| TimeCursor::new(Utc::now(), ""));
        let mut res = self
            .db
            .query(format!(
                "SELECT user, created_at FROM post_like WHERE post = $post {after}
                 ORDER BY created_at DESC, user DESC LIMIT $limit"
            ))
            .bind(("post", req.post_id.to_string()))
            .bind(("at", cursor.at))
            .bind(("after_key", cursor.key))
            .bind(("limit", mosaic_api::page::fetch_limit(limit)))
            .await
            .context("listing likes")?;
        let rows: Vec<LikeRow> = res.take(0).context("listing likes")?;
        let (rows, next_cursor) =
            mosaic_api::page::cut(rows, limit, |r| TimeCursor::new(r.created_at, r.user.clone()).encode());
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
        let post = self.reachable_post(&ctx, &user, &req.post_id).await?;

        // A reply to a reply answers the thread's top-level comment: threads are one level deep.
        let parent = match &req.body.reply_to {
            Some(id) => {
                let row = self.comment_row(id).await?.filter(|c| c.post == post.post_id.as_str());
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
            .write(
                "BEGIN TRANSACTION;
                 IF $thread != NONE AND !record::exists($thread_rid) { THROW 'thread_gone'; };
                 CREATE $comment SET post = $post, author = $user, text = $text, reply_to = $thread,
                    created_at = $now;
                 IF !record::exists($stats) { CREATE $stats SET owner = $owner; };
                 UPDATE $stats SET comments += 1;
                 IF $user != $owner {
                    IF !record::exists($affinity) { CREATE $affinity SET reader = $user; };
                    UPDATE $affinity SET comments += 1;
                 };
                 INSERT INTO outbox $events;
                 COMMIT TRANSACTION;",
            )
            .bind("thread", thread.as_ref().map(|t| t.to_string()))
            .bind("thread_rid", thread.as_ref().map(comment_rid))
            .bind("comment", comment_rid(&id))
            .bind("post", post.post_id.to_string())
            .bind("user", user.to_string())
            .bind("owner", post.author.to_string())
            .bind("text", text.clone())
            .bind("now", now)
            .bind("stats", stats_rid(&post.post_id))
            .bind("affinity", affinity_rid(&user, &post.author))
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
        let limit = req.page.limit() as usize;
        let cursor = req.page.cursor.as_deref().map(TimeCursor::decode).transpose()?;
        let after = if cursor.is_some() {
            "AND (created_at > $at OR (created_at = $at AND record::id(id) > $after_key))"
        } else {
            ""
        };
        let cursor = cursor.unwrap_or_else(|| TimeCursor::new(Utc::now(), ""));
        let mut res = self
            .db
            .query(format!(
                "SELECT {COMMENT_FIELDS} FROM comment WHERE post = $post {after}
                 ORDER BY created_at ASC, key ASC LIMIT $limit"
            ))
            .bind(("post", req.post_id.to_string()))
            .bind(("at", cursor.at))
            .bind(("after_key", cursor.key))
            .bind(("limit", mosaic_api::page::fetch_limit(limit)))
            .await
            .context("listing comments")?;
        let rows: Vec<CommentRow> = res.take(0).context("listing comments")?;
        let (rows, next_cursor) =
            mosaic_api::page::cut(rows, limit, |r| TimeCursor::new(r.created_at, r.key.clone()).encode());
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
        let Some(row) = self.comment_row(&req.comment_id).await? else {
            return Err(ApiError::not_found("no such comment").into());
        };
        let post_id = PostId::from_trusted(row.post.clone());
        // Every commented post has a stats row naming its owner (written with the first
        // comment), so the delete rules need no request to the content service.
        let owner = self.stats_owner(&post_id).await?.context("commented post has no stats row")?;
        let allowed = row.author == caller.as_str() || owner == caller || ctx.role == Role::Admin;
        if !allowed {
            return Err(ApiError::forbidden(
                "only the comment's author, the post's author or an administrator may delete it",
            )
            .into());
        }
        let replies = if row.reply_to.is_none() { self.reply_count(&req.comment_id).await? } else { 0 };
        let events = vec![Staged::new(CommentDeleted {
            comment_id: req.comment_id.clone(),
            post_id: post_id.clone(),
            owner: owner.clone(),
            by: caller.clone(),
            removed: replies + 1,
        })];
        let result = self
            .outbox
            .write(
                "BEGIN TRANSACTION;
                 IF !record::exists($comment) { THROW 'comment_gone'; };
                 LET $replies = (DELETE comment WHERE reply_to = $key RETURN BEFORE);
                 DELETE $comment;
                 IF record::exists($stats) {
                    UPDATE $stats SET comments = math::max([comments - 1 - array::len($replies), 0]);
                 };
                 IF $author != $owner AND record::exists($affinity) {
                    UPDATE $affinity SET comments = math::max([comments - 1, 0]);
                 };
                 INSERT INTO outbox $events;
                 COMMIT TRANSACTION;",
            )
            .bind("comment", comment_rid(&req.comment_id))
            .bind("key", req.comment_id.to_string())
            .bind("stats", stats_rid(&post_id))
            .bind("author", row.author.clone())
            .bind("owner", owner.to_string())
            .bind("affinity", affinity_rid(&UserId::from_trusted(row.author.clone()), &owner))
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

    async fn stats_owner(&self, post: &PostId) -> anyhow::Result<Option<UserId>> {
        let mut res = self
            .db
            .query("SELECT VALUE owner FROM $stats")
            .bind(("stats", stats_rid(post)))
            .await
            .context("reading owner")?;
        let owners: Vec<String> = res.take(0).context("reading owner")?;
        Ok(owners.into_iter().next().map(UserId::from_trusted))
    }

    async fn comment_row(&self, id: &CommentId) -> anyhow::Result<Option<CommentRow>> {
        let mut res = self
            .db
            .query(format!("SELECT {COMMENT_FIELDS} FROM $rid"))
            .bind(("rid", comment_rid(id)))
            .await
            .context("reading comment")?;
        let rows: Vec<CommentRow> = res.take(0).context("reading comment")?;
        Ok(rows.into_iter().next())
    }

    async fn reply_count(&self, id: &CommentId) -> anyhow::Result<u64> {
        let mut res = self
            .db
            .query("SELECT VALUE count() FROM comment WHERE reply_to = $key GROUP ALL")
            .bind(("key", id.to_string()))
            .await
            .context("counting replies")?;
        let n: Vec<i64> = res.take(0).context("counting replies")?;
        Ok(n.first().copied().unwrap_or(0).max(0) as u64)
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
        let counts = async {
            let mut res = self
                .db
                .query("SELECT likes, comments FROM $stats")
                .bind(("stats", stats_rid(post)))
                .await
                .context("reading counts")?;
            let rows: Vec<Counters> = res.take(0).context("reading counts")?;
            anyhow::Ok(rows.into_iter().next())
        };
        let frame = match counts.await {
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

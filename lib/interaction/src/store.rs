//! The `interaction` database: its rows, the record ids that name them, and every SurrealQL
//! statement the service runs.
//!
//! Reads are functions that take typed arguments and return typed rows. Transactions that
//! go through the one write path ([`mosaic_mesh::write`]) are documented constants, each
//! saying what it binds and what it `THROW`s; the handlers bind and run them. The handlers
//! hold no SurrealQL.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::page::{PageRequest, TimeCursor};
use mosaic_api::{CommentId, Id as _, PostId, UserId};
use mosaic_mesh::ServiceResult;
use mosaic_mesh::db::{Db, Keyset};
use mosaic_mesh::db::{first, rows};
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

pub(crate) fn comment_rid(id: &CommentId) -> RecordId {
    RecordId::new("comment", id.as_str())
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct CommentRow {
    pub key: String,
    pub post: String,
    pub author: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COMMENT_FIELDS: &str = "record::id(id) AS key, post, author, text, reply_to, created_at";

/// A post's counters as stored.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct CounterRow {
    pub likes: i64,
    pub comments: i64,
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct LikeRow {
    pub user: String,
    pub created_at: DateTime<Utc>,
}

/// A post's counters, by the post's id.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct StatsRow {
    pub key: String,
    pub likes: i64,
    pub comments: i64,
}

/// A reader's affinity to one author.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct AffinityRow {
    pub author: String,
    pub likes: i64,
    pub comments: i64,
}

/// Likes a post, once per user: creates the like, counts it on the post (creating its stats
/// row, which names the owner) and, for someone else's post, in the liker's affinity to
/// the owner, and inserts the events. Liking again changes nothing.
///
/// Binds `$like`, `$stats`, `$affinity` (record ids), `$post`, `$user`, `$owner` and
/// `$events`. Throws nothing.
pub(crate) const LIKE: &str = "BEGIN TRANSACTION;
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
     COMMIT TRANSACTION;";

/// Takes a like back: deletes it, uncounts it on the post and in the affinity, and inserts
/// the events. Unliking what is not liked changes nothing.
///
/// Binds what [`LIKE`] binds. Throws nothing.
pub(crate) const UNLIKE: &str = "BEGIN TRANSACTION;
     IF record::exists($like) {
        DELETE $like;
        UPDATE $stats SET likes -= 1;
        IF $user != $owner AND record::exists($affinity) {
            UPDATE $affinity SET likes = math::max([likes - 1, 0]);
        };
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// Adds a comment: creates it, counts it on the post (creating its stats row, which names
/// the owner) and, on someone else's post, in the commenter's affinity to the owner, and
/// inserts the events.
///
/// Binds `$comment`, `$stats`, `$affinity` (record ids), `$thread` (the top-level comment's
/// key, or NONE) and `$thread_rid`, `$post`, `$user`, `$owner`, `$text`, `$now` and
/// `$events`. Throws `thread_gone` ([`Refused::ThreadGone`]) when the thread's comment is
/// deleted.
pub(crate) const ADD_COMMENT: &str = "BEGIN TRANSACTION;
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
     COMMIT TRANSACTION;";

/// Deletes a comment with its replies, uncounts them on the post and the comment in its
/// author's affinity to the owner, and inserts the events.
///
/// Binds `$comment`, `$stats`, `$affinity` (record ids), `$key` (the comment's key),
/// `$author`, `$owner` and `$events`. Throws `comment_gone` ([`Refused::CommentGone`]) when
/// the comment is deleted already.
pub(crate) const DELETE_COMMENT: &str = "BEGIN TRANSACTION;
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
     COMMIT TRANSACTION;";

/// A page of the users who liked `post`, newest like first (ties by user id), and the next
/// page's cursor.
pub(crate) async fn likers_page(
    db: &Db,
    post: &PostId,
    page: &PageRequest,
) -> ServiceResult<(Vec<LikeRow>, Option<String>)> {
    Keyset::newest_first("created_at", "user", "user")
        .page(
            db,
            "SELECT user, created_at FROM post_like WHERE post = $post",
            page,
            |q| q.bind(("post", post.to_string())),
            |r: &LikeRow| TimeCursor::new(r.created_at, r.user.clone()),
        )
        .await
}

/// A page of the comments on `post`, oldest first (ties by comment id), and the next page's
/// cursor.
pub(crate) async fn comments_page(
    db: &Db,
    post: &PostId,
    page: &PageRequest,
) -> ServiceResult<(Vec<CommentRow>, Option<String>)> {
    Keyset::oldest_first("created_at", "record::id(id)", "key")
        .page(
            db,
            &format!("SELECT {COMMENT_FIELDS} FROM comment WHERE post = $post"),
            page,
            |q| q.bind(("post", post.to_string())),
            |r: &CommentRow| TimeCursor::new(r.created_at, r.key.clone()),
        )
        .await
}

/// The comment `id`, if it was not deleted.
pub(crate) async fn comment(db: &Db, id: &CommentId) -> anyhow::Result<Option<CommentRow>> {
    let query = db.query(format!("SELECT {COMMENT_FIELDS} FROM $rid")).bind(("rid", comment_rid(id)));
    first(query, "reading comment").await
}

/// How many replies answer the top-level comment `id`.
pub(crate) async fn reply_count(db: &Db, id: &CommentId) -> anyhow::Result<u64> {
    let query =
        db.query("SELECT VALUE count() FROM comment WHERE reply_to = $key GROUP ALL").bind(("key", id.to_string()));
    let n: Option<i64> = first(query, "counting replies").await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// The owner named by `post`'s stats row; none before the post's first like or comment.
pub(crate) async fn stats_owner(db: &Db, post: &PostId) -> anyhow::Result<Option<UserId>> {
    let query = db.query("SELECT VALUE owner FROM $stats").bind(("stats", stats_rid(post)));
    let owner: Option<String> = first(query, "reading owner").await?;
    Ok(owner.map(UserId::from_trusted))
}

/// `post`'s counters; none before its first like or comment.
pub(crate) async fn counters(db: &Db, post: &PostId) -> anyhow::Result<Option<CounterRow>> {
    let query = db.query("SELECT likes, comments FROM $stats").bind(("stats", stats_rid(post)));
    first(query, "reading counts").await
}

/// Up to `limit` of `viewer`'s affinity rows, in no particular order.
pub(crate) async fn affinity_of(db: &Db, viewer: &UserId, limit: usize) -> anyhow::Result<Vec<AffinityRow>> {
    let query = db
        .query(
            "SELECT record::id(id)[1] AS author, likes, comments FROM affinity WHERE reader = $viewer
                LIMIT $limit;",
        )
        .bind(("viewer", viewer.to_string()))
        .bind(("limit", limit as i64));
    rows(query, "reading a viewer's affinity").await
}

/// What [`signals`] found: the counters of the posts that have any, the posts the viewer
/// liked, and the viewer's affinity to the authors engaged with.
#[derive(Debug, Default)]
pub(crate) struct SignalRows {
    pub stats: Vec<StatsRow>,
    pub liked: Vec<String>,
    pub affinity: Vec<AffinityRow>,
}

/// Reads, in one round trip, the counters of `posts`, which of `likes` `viewer` liked, and
/// `viewer`'s affinity to `authors`.
pub(crate) async fn signals(
    db: &Db,
    viewer: &UserId,
    posts: &[&PostId],
    likes: &[&PostId],
    authors: &[&UserId],
) -> anyhow::Result<SignalRows> {
    let stats: Vec<RecordId> = posts.iter().map(|p| stats_rid(p)).collect();
    let likes: Vec<RecordId> = likes.iter().map(|p| like_rid(p, viewer)).collect();
    let affinity: Vec<RecordId> = authors.iter().map(|a| affinity_rid(viewer, a)).collect();
    const COUNTS: &str = "SELECT record::id(id) AS key, likes, comments FROM $stats;";
    // A viewer held whole misses only counters (of posts new to this instance): the one
    // statement the database then needs to parse and plan.
    let viewer_misses = !likes.is_empty() || !affinity.is_empty();
    let sql = if !viewer_misses {
        COUNTS.to_owned()
    } else {
        format!(
            "{COUNTS}
             SELECT VALUE post FROM $likes;
             SELECT record::id(id)[1] AS author, likes, comments FROM $affinity;"
        )
    };
    let mut res = db
        .query(sql)
        .bind(("stats", stats))
        .bind(("likes", likes))
        .bind(("affinity", affinity))
        .await
        .context("reading signals")?;
    let stats: Vec<StatsRow> = res.take(0).context("reading counts")?;
    if !viewer_misses {
        return Ok(SignalRows { stats, ..SignalRows::default() });
    }
    Ok(SignalRows {
        stats,
        liked: res.take(1).context("reading likes")?,
        affinity: res.take(2).context("reading affinity")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_mesh::db::{DbConfig, connect, migrate};

    async fn db() -> Db {
        let db = connect(&DbConfig { url: "mem://".into(), ..Default::default() }, "interaction").await.unwrap();
        migrate(&db, crate::MIGRATIONS).await.unwrap();
        db
    }

    fn request(cursor: Option<String>) -> PageRequest {
        PageRequest { limit: Some(2), cursor }
    }

    /// Pages through a list whose rows share their times: every row once, in order.
    #[tokio::test]
    async fn pages_break_ties_by_key_and_lose_no_row() {
        let db = db().await;
        let post = PostId::generate();
        let t0 = Utc::now() - chrono::Duration::minutes(1);
        let t1 = t0 + chrono::Duration::seconds(1);
        let mut users: Vec<(DateTime<Utc>, UserId)> =
            (0..5).map(|i| (if i < 3 { t0 } else { t1 }, UserId::generate())).collect();
        let mut comments: Vec<(DateTime<Utc>, CommentId)> =
            (0..5).map(|i| (if i < 3 { t0 } else { t1 }, CommentId::generate())).collect();
        for ((at, user), (c_at, comment)) in users.iter().zip(&comments) {
            db.query(
                "CREATE $like SET post = $post, user = $user, created_at = $at;
                 CREATE $comment SET post = $post, author = $user, text = 'hi', reply_to = NONE, created_at = $c_at;",
            )
            .bind(("like", like_rid(&post, user)))
            .bind(("comment", comment_rid(comment)))
            .bind(("post", post.to_string()))
            .bind(("user", user.to_string()))
            .bind(("at", *at))
            .bind(("c_at", *c_at))
            .await
            .unwrap()
            .check()
            .unwrap();
        }

        let (mut seen, mut cursor) = (Vec::new(), None);
        for pages in 1.. {
            assert!(pages <= 3, "five rows in pages of two take three pages, not more");
            let (rows, next) = likers_page(&db, &post, &request(cursor)).await.unwrap();
            seen.extend(rows.into_iter().map(|r| r.user));
            let Some(next) = next else { break };
            cursor = Some(next);
        }
        users.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.as_str().cmp(a.1.as_str())));
        assert_eq!(seen, users.iter().map(|(_, u)| u.to_string()).collect::<Vec<_>>(), "newest first");

        let (mut seen, mut cursor) = (Vec::new(), None);
        for pages in 1.. {
            assert!(pages <= 3, "five rows in pages of two take three pages, not more");
            let (rows, next) = comments_page(&db, &post, &request(cursor)).await.unwrap();
            seen.extend(rows.into_iter().map(|r| r.key));
            let Some(next) = next else { break };
            cursor = Some(next);
        }
        comments.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.as_str().cmp(b.1.as_str())));
        assert_eq!(seen, comments.iter().map(|(_, c)| c.to_string()).collect::<Vec<_>>(), "oldest first");
    }
}

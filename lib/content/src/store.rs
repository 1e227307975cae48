//! The `content` database: its rows, their client-facing forms, and every SurrealQL
//! statement the service runs.
//!
//! Reads and plain writes are functions that take typed arguments. Transactions that go
//! through the one write path ([`mosaic_mesh::write`]) are documented constants (or, where
//! the statement is built, functions that return the `Write`); each says what it binds and
//! what it `THROW`s. The handlers hold no SurrealQL.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::{Media, MediaError, MediaKind, MediaStatus, Variant, layout};
use mosaic_api::page::{PageRequest, TimeCursor};
use mosaic_api::{Id, MediaId, PostId, UploadId, UserId};
use mosaic_mesh::ServiceResult;
use mosaic_mesh::db::{Db, Keyset};
use mosaic_mesh::db::{exec, rows};
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::write::Write;
use surrealdb::IndexedResults;
use surrealdb::types::{RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// What the content transactions refuse (the codes their SurrealQL `THROW`s).
    pub(crate) enum Refused {
        /// A media item a new post names is missing, someone else's, not ready, deleted or
        /// in a post already.
        MediaTaken = "media_taken",
    }
}

const MEDIA_FIELDS: &str = "record::id(id) AS key, owner, kind, mime, blob, bytes, status, error, attempts, variants, width, height, blurhash, duration_ms, post, deleted, created_at, updated_at";
const POST_FIELDS: &str = "record::id(id) AS key, author, caption, tags, mentions, media, deleted, created_at";

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct VariantRow {
    pub name: String,
    pub mime: String,
    pub width: i64,
    pub height: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct MediaRow {
    pub key: String,
    pub owner: String,
    pub kind: String,
    pub mime: String,
    pub blob: String,
    pub bytes: i64,
    pub status: String,
    pub error: Option<String>,
    pub attempts: i64,
    pub variants: Vec<VariantRow>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub blurhash: Option<String>,
    pub duration_ms: Option<i64>,
    pub post: Option<String>,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MediaRow {
    pub fn id(&self) -> MediaId {
        MediaId::from_trusted(self.key.clone())
    }

    pub fn kind(&self) -> MediaKind {
        if self.kind == "video" { MediaKind::Video } else { MediaKind::Image }
    }

    pub fn status(&self) -> MediaStatus {
        match self.status.as_str() {
            "ready" => MediaStatus::Ready,
            "failed" => MediaStatus::Failed,
            _ => MediaStatus::Processing,
        }
    }

    pub fn to_api(&self) -> Media {
        let id = self.id();
        let u32_of = |v: i64| u32::try_from(v).unwrap_or(0);
        Media {
            kind: self.kind(),
            status: self.status(),
            variants: self
                .variants
                .iter()
                .map(|v| Variant {
                    url: layout::url(&id, &v.name),
                    name: v.name.clone(),
                    mime: v.mime.clone(),
                    width: u32_of(v.width),
                    height: u32_of(v.height),
                    bytes: u64::try_from(v.bytes).unwrap_or(0),
                })
                .collect(),
            blurhash: self.blurhash.clone(),
            width: self.width.map(u32_of),
            height: self.height.map(u32_of),
            duration_ms: self.duration_ms.and_then(|d| u64::try_from(d).ok()),
            error: self.error.as_deref().and_then(parse_error),
            created_at: self.created_at,
            id,
        }
    }
}

pub fn error_name(e: MediaError) -> String {
    serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn parse_error(s: &str) -> Option<MediaError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct MentionRow {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct PostRow {
    pub key: String,
    pub author: String,
    pub caption: String,
    pub tags: Vec<String>,
    pub mentions: Vec<MentionRow>,
    pub media: Vec<String>,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
}

impl PostRow {
    pub fn id(&self) -> PostId {
        PostId::from_trusted(self.key.clone())
    }
    pub fn author(&self) -> UserId {
        UserId::from_trusted(self.author.clone())
    }
    pub fn to_ref(&self) -> mosaic_api::content::PostRef {
        mosaic_api::content::PostRef {
            post_id: self.id(),
            author: self.author(),
            tags: self.tags.clone(),
            created_at: self.created_at,
        }
    }
}

pub fn media_rid(id: &MediaId) -> RecordId {
    RecordId::new("media", id.as_str())
}

pub fn post_rid(id: &PostId) -> RecordId {
    RecordId::new("post", id.as_str())
}

// Media.

pub async fn media_by_ids(db: &Db, ids: &[MediaId]) -> anyhow::Result<Vec<MediaRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(media_rid).collect();
    let found: Vec<MediaRow> =
        rows(db.query(format!("SELECT {MEDIA_FIELDS} FROM $rids")).bind(("rids", rids)), "reading media").await?;
    let mut by_id: std::collections::HashMap<String, MediaRow> =
        found.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

pub async fn media(db: &Db, id: &MediaId) -> anyhow::Result<Option<MediaRow>> {
    Ok(media_by_ids(db, std::slice::from_ref(id)).await?.pop())
}

/// Up to 100 items still `processing` that were last touched before `horizon`.
pub async fn stuck_media(db: &Db, horizon: DateTime<Utc>) -> anyhow::Result<Vec<MediaRow>> {
    let query = db
        .query(format!(
            "SELECT {MEDIA_FIELDS} FROM media WHERE status = 'processing' AND updated_at < $horizon LIMIT 100"
        ))
        .bind(("horizon", horizon));
    rows(query, "finding stuck media").await
}

/// Up to 200 deleted items, whose storage is still to be released.
pub async fn deleted_media(db: &Db) -> anyhow::Result<Vec<MediaRow>> {
    rows(db.query(format!("SELECT {MEDIA_FIELDS} FROM media WHERE deleted = true LIMIT 200")), "finding deleted media")
        .await
}

/// Marks deleted the items created before `horizon` that were never attached to a post.
pub async fn expire_unattached_media(db: &Db, horizon: DateTime<Utc>) -> anyhow::Result<()> {
    let query = db
        .query("UPDATE media SET deleted = true WHERE post = NONE AND deleted = false AND created_at < $horizon")
        .bind(("horizon", horizon));
    exec(query, "expiring unattached media").await
}

/// Adds an attempt to the item `$rid` and returns the attempts so far (`RETURN VALUE
/// attempts`). Throws nothing.
pub const COUNT_ATTEMPT: &str = "UPDATE $rid SET attempts += 1, updated_at = time::now() RETURN VALUE attempts";

/// Records the item `$rid` as ready with `$variants`, `$width`, `$height`, `$blurhash` and
/// `$duration`, if it is still `processing`. Throws nothing.
pub const MEDIA_READY: &str = "UPDATE $rid SET status = 'ready', error = NONE, variants = $variants, width = $width,
        height = $height, blurhash = $blurhash, duration_ms = $duration, updated_at = time::now()
     WHERE status = 'processing'";

/// Records the item `$rid` as failed with `$error`, if it is still `processing`. Throws
/// nothing.
pub const MEDIA_FAILED: &str =
    "UPDATE $rid SET status = 'failed', error = $error, updated_at = time::now() WHERE status = 'processing'";

/// Touches the item `$rid`, if still `processing`, and inserts `$events` (its job, queued
/// again). Throws nothing.
pub const REQUEUE_MEDIA: &str = "BEGIN TRANSACTION;
     UPDATE $rid SET updated_at = time::now() WHERE status = 'processing';
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// Forgets the item `$rid`, if it still exists, releasing its original `$blob` and its
/// `$bytes` from its owner's `$usage`. Throws nothing.
pub const RELEASE_MEDIA: &str = "BEGIN TRANSACTION;
     IF record::exists($rid) {
        UPDATE $blob SET refs -= 1;
        UPDATE $usage SET bytes -= $bytes, media -= 1;
        DELETE $rid;
     };
     COMMIT TRANSACTION;";

// Uploads, originals and quotas.

/// An upload ticket: who may complete it, with what type, up to how many bytes.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct TicketRow {
    pub owner: String,
    pub mime: String,
    pub max_bytes: i64,
}

/// A user's storage use.
#[derive(Debug, Default, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct UsageRow {
    pub bytes: i64,
    pub media: i64,
}

fn upload_rid(id: &UploadId) -> RecordId {
    RecordId::new("upload", id.as_str())
}

/// Issues the ticket `upload` to `owner` for up to `max_bytes` of `mime`.
pub async fn create_upload(
    db: &Db,
    upload: &UploadId,
    owner: &UserId,
    mime: &str,
    max_bytes: i64,
) -> anyhow::Result<()> {
    let query = db
        .query("CREATE $rid SET owner = $owner, mime = $mime, max_bytes = $max, created_at = time::now()")
        .bind(("rid", upload_rid(upload)))
        .bind(("owner", owner.to_string()))
        .bind(("mime", mime.to_owned()))
        .bind(("max", max_bytes));
    exec(query, "creating upload ticket").await
}

/// The ticket `upload`, if it exists.
pub async fn upload(db: &Db, upload: &UploadId) -> anyhow::Result<Option<TicketRow>> {
    let query = db.query("SELECT owner, mime, max_bytes FROM $rid").bind(("rid", upload_rid(upload)));
    Ok(rows(query, "reading upload ticket").await?.into_iter().next())
}

/// Deletes the ticket `upload`.
pub async fn delete_upload(db: &Db, upload: &UploadId) -> anyhow::Result<()> {
    exec(db.query("DELETE $rid").bind(("rid", upload_rid(upload))), "deleting upload ticket").await
}

/// Deletes the tickets issued before `horizon`.
pub async fn expire_uploads(db: &Db, horizon: DateTime<Utc>) -> anyhow::Result<()> {
    exec(db.query("DELETE upload WHERE created_at < $horizon").bind(("horizon", horizon)), "expiring upload tickets")
        .await
}

/// Registers a completed upload as the item `$media` (`$owner`, `$kind`, `$mime`, `$bytes`)
/// of the original `$blob` (named `$sha`; stored once, counted by reference), counts it in
/// the owner's `$usage`, spends the ticket `$upload` and inserts `$events` (its processing
/// job). Throws nothing.
pub const REGISTER_MEDIA: &str = "BEGIN TRANSACTION;
     IF record::exists($blob) { UPDATE $blob SET refs += 1; }
     ELSE { CREATE $blob SET bytes = $bytes, mime = $mime, refs = 1, created_at = time::now(); };
     CREATE $media SET owner = $owner, kind = $kind, mime = $mime, blob = $sha, bytes = $bytes,
        status = 'processing', attempts = 0, variants = [], deleted = false,
        created_at = time::now(), updated_at = time::now();
     UPSERT $usage SET bytes = (bytes ?? 0) + $bytes, media = (media ?? 0) + 1;
     DELETE $upload;
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// `owner`'s storage use (none yet: zero).
pub async fn usage(db: &Db, owner: &UserId) -> anyhow::Result<UsageRow> {
    let query = db.query("SELECT bytes, media FROM $rid").bind(("rid", RecordId::new("usage", owner.as_str())));
    Ok(rows(query, "reading storage usage").await?.into_iter().next().unwrap_or_default())
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct BlobRow {
    key: String,
}

/// Up to 200 originals no media item uses any more, by key.
pub async fn unused_blobs(db: &Db) -> anyhow::Result<Vec<String>> {
    let query = db.query("SELECT record::id(id) AS key FROM blob WHERE refs <= 0 LIMIT 200");
    let found: Vec<BlobRow> = rows(query, "finding unused originals").await?;
    Ok(found.into_iter().map(|b| b.key).collect())
}

/// Forgets the original `key`, only if nobody re-used it meanwhile.
pub async fn forget_blob(db: &Db, key: &str) -> anyhow::Result<()> {
    let query = db.query("DELETE $rid WHERE refs <= 0").bind(("rid", RecordId::new("blob", key)));
    exec(query, "forgetting unused original").await
}

// Posts.

pub async fn posts_by_ids(db: &Db, ids: &[PostId]) -> anyhow::Result<Vec<PostRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(post_rid).collect();
    let found: Vec<PostRow> =
        rows(db.query(format!("SELECT {POST_FIELDS} FROM $rids")).bind(("rids", rids)), "reading posts").await?;
    let mut by_id: std::collections::HashMap<String, PostRow> = found.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

/// Creates `post` and claims its media for it, and inserts `$events`. The transaction is the
/// check: it claims the media only if each is the author's, ready, live and in no post, and
/// returns them (read with [`claimed_media`]); otherwise it throws `media_taken`.
pub fn create_post<'a>(outbox: &'a Outbox, post: &PostRow) -> Write<'a> {
    let media: Vec<RecordId> = post.media.iter().map(|m| RecordId::new("media", m.as_str())).collect();
    outbox
        .write(format!(
            "BEGIN TRANSACTION;
             LET $claimed = (UPDATE $media SET post = $key, updated_at = time::now()
                WHERE post = NONE AND owner = $author AND status = 'ready' AND deleted = false
                RETURN {MEDIA_FIELDS});
             IF array::len($claimed) != array::len($media) {{ THROW 'media_taken'; }};
             CREATE $post SET author = $author, caption = $caption, tags = $tags, mentions = $mentions,
                media = $media_keys, deleted = false, created_at = $now;
             INSERT INTO outbox $events;
             $claimed;
             COMMIT TRANSACTION;"
        ))
        .bind("media", media)
        .bind("key", post.key.clone())
        .bind("author", post.author.clone())
        .bind("post", post_rid(&post.id()))
        .bind("caption", post.caption.clone())
        .bind("tags", post.tags.clone())
        .bind("mentions", post.mentions.clone())
        .bind("media_keys", post.media.clone())
        .bind("now", post.created_at)
}

/// The media a [`create_post`] claimed, as they are now.
pub fn claimed_media(res: &mut IndexedResults) -> anyhow::Result<Vec<MediaRow>> {
    // BEGIN and COMMIT have results too: `$claimed` is the one before COMMIT.
    let claimed = res.num_statements().saturating_sub(2);
    res.take(claimed).context("creating post")
}

/// Marks the post `$post` and its media `$media` deleted and inserts `$events`, if the post
/// is live. Throws nothing.
pub const DELETE_POST: &str = "BEGIN TRANSACTION;
     IF (SELECT VALUE deleted FROM ONLY $post) == false {
        UPDATE $post SET deleted = true;
        UPDATE $media SET deleted = true, updated_at = time::now();
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// The newest `limit` live posts of `author`, newest first.
pub async fn timeline_head(db: &Db, author: &UserId, limit: usize) -> anyhow::Result<Vec<PostRow>> {
    let query = db
        .query(format!(
            "SELECT {POST_FIELDS} FROM post WHERE author = $author AND deleted = false
             ORDER BY created_at DESC, key DESC LIMIT $limit"
        ))
        .bind(("author", author.to_string()))
        .bind(("limit", limit as i64));
    rows(query, "reading timeline").await
}

/// The page of `author`'s live posts that `page` asks for, newest first (ties broken by
/// id), and the next page's cursor.
pub async fn timeline_page(
    db: &Db,
    author: &UserId,
    page: &PageRequest,
) -> ServiceResult<(Vec<PostRow>, Option<String>)> {
    let select = format!("SELECT {POST_FIELDS} FROM post WHERE author = $author AND deleted = false");
    Keyset::newest_first("created_at", "record::id(id)", "key")
        .page(
            db,
            &select,
            page,
            |q| q.bind(("author", author.to_string())),
            |p: &PostRow| TimeCursor::new(p.created_at, p.key.as_str()),
        )
        .await
}

/// The newest `limit` live posts of each of `authors`, author by author.
pub async fn newest_posts_of_each(db: &Db, authors: &[UserId], limit: u32) -> anyhow::Result<Vec<PostRow>> {
    // One statement per author, each a bounded scan of that author's newest posts, all in
    // one round trip.
    let statement = |i: usize| {
        format!(
            "SELECT {POST_FIELDS} FROM post WHERE author = $a{i} AND deleted = false
             ORDER BY created_at DESC LIMIT $limit;"
        )
    };
    let sql: String = (0..authors.len()).map(statement).collect();
    let mut query = db.query(sql).bind(("limit", i64::from(limit)));
    for (i, author) in authors.iter().enumerate() {
        query = query.bind((format!("a{i}"), author.to_string()));
    }
    let mut res = query.await.context("reading recent posts")?;
    let mut posts = Vec::new();
    for i in 0..authors.len() {
        let found: Vec<PostRow> = res.take(i).context("reading recent posts")?;
        posts.extend(found);
    }
    Ok(posts)
}

/// The newest `limit` live posts of all of `authors` together.
pub async fn newest_posts(db: &Db, authors: &[UserId], limit: u32) -> anyhow::Result<Vec<PostRow>> {
    let authors: Vec<String> = authors.iter().map(|a| a.to_string()).collect();
    let query = db
        .query(format!(
            "SELECT {POST_FIELDS} FROM post WHERE author IN $authors AND deleted = false
             ORDER BY created_at DESC LIMIT $limit"
        ))
        .bind(("authors", authors))
        .bind(("limit", i64::from(limit)));
    rows(query, "reading recent posts").await
}

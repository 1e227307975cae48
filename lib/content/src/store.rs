//! Rows of the `content` database and their client-facing forms.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::content::{Media, MediaError, MediaKind, MediaStatus, Variant, layout};
use mosaic_api::{Id, MediaId, PostId, UserId};
use mosaic_mesh::db::Db;
use surrealdb::types::{RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// What the content transactions refuse (the codes their SurrealQL `THROW`s).
    pub(crate) enum Refused {
        /// A media item a new post names is missing, someone else's, not ready, deleted or
        /// in a post already.
        MediaTaken = "media_taken",
    }
}

pub const MEDIA_FIELDS: &str = "record::id(id) AS key, owner, kind, mime, blob, bytes, status, error, attempts, variants, width, height, blurhash, duration_ms, post, deleted, created_at, updated_at";
pub const POST_FIELDS: &str = "record::id(id) AS key, author, caption, tags, mentions, media, deleted, created_at";

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

pub async fn media_by_ids(db: &Db, ids: &[MediaId]) -> anyhow::Result<Vec<MediaRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(media_rid).collect();
    let mut res =
        db.query(format!("SELECT {MEDIA_FIELDS} FROM $rids")).bind(("rids", rids)).await.context("reading media")?;
    let rows: Vec<MediaRow> = res.take(0).context("reading media")?;
    let mut by_id: std::collections::HashMap<String, MediaRow> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

pub async fn media(db: &Db, id: &MediaId) -> anyhow::Result<Option<MediaRow>> {
    Ok(media_by_ids(db, std::slice::from_ref(id)).await?.pop())
}

pub async fn posts_by_ids(db: &Db, ids: &[PostId]) -> anyhow::Result<Vec<PostRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(post_rid).collect();
    let mut res =
        db.query(format!("SELECT {POST_FIELDS} FROM $rids")).bind(("rids", rids)).await.context("reading posts")?;
    let rows: Vec<PostRow> = res.take(0).context("reading posts")?;
    let mut by_id: std::collections::HashMap<String, PostRow> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

//! The content service: uploads, media processing, posts and user timelines; and the object
//! store layout the content service and the edge share.

use crate::endpoint::Empty;
use crate::ids::{MediaId, PostId, UploadId, UserId};
use crate::page::{Page, PageRequest};
use crate::stream::{EVENTS_POST, MEDIA_JOBS};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "content";

/// Upload types accepted, as `Content-Type` values.
pub const ACCEPTED_TYPES: &[&str] =
    &["image/jpeg", "image/png", "image/webp", "image/gif", "video/mp4", "video/quicktime", "video/webm"];

/// Photo or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
}

impl MediaKind {
    /// The kind of an accepted `Content-Type`.
    pub fn of_mime(mime: &str) -> Option<Self> {
        match mime {
            "image/jpeg" | "image/png" | "image/webp" | "image/gif" => Some(Self::Image),
            "video/mp4" | "video/quicktime" | "video/webm" => Some(Self::Video),
            _ => None,
        }
    }
}

/// Where processing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    Processing,
    Ready,
    Failed,
}

/// Why processing failed (machine-readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaError {
    /// The bytes are not a supported image or video after all.
    UnsupportedFormat,
    /// The file is damaged or truncated.
    CorruptFile,
    /// The image has more pixels than allowed (decompression bomb guard).
    TooManyPixels,
    /// The video is longer than allowed.
    TooLong,
    /// The file has no video stream.
    NotAVideo,
    /// Processing took longer than allowed.
    Timeout,
    /// Every attempt failed (the worker crashed or was killed each time).
    TooManyAttempts,
}

/// One rendition of a media item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Variant {
    /// `thumb`, `medium`, `large` (images); `mp4`, `poster`, `thumb` (videos).
    pub name: String,
    /// Where to fetch it (`/v1/media/{id}/{name}`).
    pub url: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// A media item: `GET /v1/media/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Media {
    pub id: MediaId,
    pub kind: MediaKind,
    pub status: MediaStatus,
    pub variants: Vec<Variant>,
    /// Compact placeholder of the image (blurhash), once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<String>,
    /// Display width and height after orientation, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Videos: duration in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Set when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MediaError>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/media` reply (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MediaAccepted {
    pub id: MediaId,
    pub status: MediaStatus,
}

/// The edge asks to start an upload; the content service checks type, size and quota.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginUpload {
    /// The claimed `Content-Type`.
    pub mime: String,
    /// `Content-Length`, when the client sent one.
    #[serde(default)]
    pub declared_bytes: Option<u64>,
}

/// Where and how much the edge may write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadTicket {
    pub upload_id: UploadId,
    /// Object-store key to stream the bytes to.
    pub staging_key: String,
    /// Bytes allowed (kind limit and remaining quota).
    pub max_bytes: u64,
}

/// The edge finished streaming an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteUpload {
    pub upload_id: UploadId,
    /// The claimed `Content-Type` (already checked against the bytes by the edge).
    pub mime: String,
    pub bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// A media item by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByMedia {
    pub media_id: MediaId,
}

/// `GET /v1/users/me/storage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StorageUsage {
    /// Bytes of the user's uploads still stored.
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub media_count: u64,
}

/// The author of a post, as shown with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Author {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
}

/// A user mentioned in a caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Mention {
    pub id: UserId,
    pub username: String,
}

/// A post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Post {
    pub id: PostId,
    pub author: Author,
    pub caption: String,
    pub tags: Vec<String>,
    pub mentions: Vec<Mention>,
    pub media: Vec<Media>,
    pub like_count: u64,
    pub comment_count: u64,
    pub liked_by_me: bool,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/posts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePostRequest {
    /// Up to 2 200 characters; `#tags` become tags, `@names` mentions.
    #[serde(default)]
    pub caption: String,
    /// 1 to 10 of the caller's ready media, in display order.
    pub media_ids: Vec<MediaId>,
    /// Extra tags (without `#`).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A post by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByPost {
    pub post_id: PostId,
}

/// Many posts by id (for feed hydration).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostsByIds {
    pub ids: Vec<PostId>,
}

/// A page of a user's posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    pub user_id: UserId,
    #[serde(default)]
    pub page: PageRequest,
}

/// What the feed and interaction services need to know of a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRef {
    pub post_id: PostId,
    pub author: UserId,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Most post references one [`RecentPosts`] request returns.
pub const MAX_RECENT_POSTS: u32 = 1000;

/// Most authors one [`RecentPosts`] request with `each` names.
pub const MAX_RECENT_AUTHORS_EACH: usize = 100;

/// The newest posts of some authors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentByAuthors {
    pub authors: Vec<UserId>,
    /// At most [`MAX_RECENT_POSTS`]: in all, or per author with `each`.
    pub limit: u32,
    /// `limit` posts of every author (at most [`MAX_RECENT_AUTHORS_EACH`] of them), newest
    /// first per author, instead of the newest `limit` of all: one request for what would
    /// otherwise be one per author.
    #[serde(default)]
    pub each: bool,
}

/// Told to every content instance after a post was created or deleted, so each drops the
/// author's cached timeline (or adds a new post to it) and the deleted post's cached media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostsChanged {
    pub author: UserId,
    /// The new post, when one was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<PostId>,
    /// Media of a deleted post (empty for a new one).
    #[serde(default)]
    pub media_ids: Vec<MediaId>,
    /// The deleted post (empty for a new one).
    #[serde(default)]
    pub post_ids: Vec<PostId>,
}

impl crate::event::Broadcast for PostsChanged {
    const SUBJECT: &'static str = "mosaic.content.v1.posts_changed";
}

crate::endpoint! {
    /// Checks type, size and quota, and names where the edge streams the bytes.
    pub BeginUploadEp => "content" . "begin_upload" : BeginUpload => UploadTicket;
    /// Registers streamed bytes as media and queues processing.
    pub CompleteUploadEp => "content" . "complete_upload" : CompleteUpload => MediaAccepted;
    /// A media item (others' media only once ready).
    pub GetMedia => "content" . "media" : ByMedia => Media;
    /// The caller's storage use and quota.
    pub GetStorage => "content" . "storage" : Empty => StorageUsage;
    /// Creates a post from the caller's ready media.
    pub CreatePost => "content" . "create_post" : CreatePostRequest => Post;
    /// A post.
    pub GetPost => "content" . "post" : ByPost => Post;
    /// Post bodies by id, in the order asked, leaving out missing, deleted and suspended
    /// authors' posts; counts are zero and no relation is checked (the feed, its one caller,
    /// applies the reader's graph and reads counts itself).
    pub GetPosts => "content" . "posts" : PostsByIds => Vec<Post>;
    /// Which of these posts the caller may see (not deleted, author not suspended, no block
    /// either way), in the order asked: what a socket may watch.
    pub WatchablePosts => "content" . "watchable" : PostsByIds => Vec<PostId>;
    /// Deletes a post (author or admin).
    pub DeletePost => "content" . "delete_post" : ByPost => Empty;
    /// A user's posts, newest first.
    pub UserPosts => "content" . "user_posts" : Timeline => Page<Post>;
    /// Authors, tags and times of posts (deleted ones left out); for other services.
    pub PostRefs => "content" . "post_refs" : PostsByIds => Vec<PostRef>;
    /// The newest posts of some authors, newest first; for feed building.
    pub RecentPosts => "content" . "recent_posts" : RecentByAuthors => Vec<PostRef>;
}

crate::event::events! {
    /// A post was published.
    PostCreated = "events.post.created" on EVENTS_POST {
        post_id: PostId, author: UserId, tags: Vec<String>, created_at: DateTime<Utc>,
    }
    /// A post was deleted.
    PostDeleted = "events.post.deleted" on EVENTS_POST { post_id: PostId, author: UserId }
    /// A caption mentions a user.
    PostMentioned = "events.post.mentioned" on EVENTS_POST { post_id: PostId, author: UserId, mentioned: UserId }
    /// Process (or re-process) a media item; idempotent.
    ProcessMedia = "jobs.media.process" on MEDIA_JOBS { media_id: MediaId }
}

/// The object-store layout shared by the content service (writer) and the edge (reader).
pub mod layout {
    use crate::ids::{MediaId, UploadId};

    /// Where an upload streams to before it is registered.
    pub fn staging(upload: &UploadId) -> String {
        format!("staging/{upload}")
    }

    /// Prefix of all staging objects (for the sweeper).
    pub const STAGING_PREFIX: &str = "staging";

    /// Original bytes, stored once per content hash.
    pub fn blob(sha256: &str) -> String {
        format!("blobs/{sha256}")
    }

    /// A variant of a media item.
    pub fn variant(media: &MediaId, name: &str) -> Option<String> {
        let (ext, _) = variant_file(name)?;
        Some(format!("media/{media}/{name}.{ext}"))
    }

    /// Prefix of a media item's variants.
    pub fn media_prefix(media: &MediaId) -> String {
        format!("media/{media}")
    }

    /// File extension and MIME type of a variant name.
    pub fn variant_file(name: &str) -> Option<(&'static str, &'static str)> {
        match name {
            "thumb" | "medium" | "large" | "poster" => Some(("webp", "image/webp")),
            "mp4" => Some(("mp4", "video/mp4")),
            _ => None,
        }
    }

    /// The public URL path of a variant.
    pub fn url(media: &MediaId, name: &str) -> String {
        format!("/v1/media/{media}/{name}")
    }
}

/// Deciding a file's type from its first bytes (magic numbers), never from what the client
/// claims. Both the edge (to refuse a lie before storing it) and the content service (to
/// check again before processing) use this one definition.
pub mod sniff {
    /// Bytes needed to decide.
    pub const PREFIX_LEN: usize = 32;

    /// The MIME type the bytes are, among the accepted ones.
    pub fn sniff(head: &[u8]) -> Option<&'static str> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Some("image/jpeg");
        }
        if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Some("image/png");
        }
        if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
            return Some("image/gif");
        }
        if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
            return Some("image/webp");
        }
        if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
            return Some("video/webm");
        }
        if head.len() >= 12 && &head[4..8] == b"ftyp" {
            let brand = &head[8..12];
            if brand == b"qt  " {
                return Some("video/quicktime");
            }
            // HEIF/AVIF images share the container; they are not accepted as video.
            if [b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"].iter().any(|b| brand == *b) {
                return None;
            }
            return Some("video/mp4");
        }
        None
    }

    /// Whether bytes sniffed as `actual` may be uploaded as `claimed`. Images must match
    /// exactly; MP4 and QuickTime share one container and are interchangeable.
    pub fn matches(claimed: &str, actual: &str) -> bool {
        let iso = |m: &str| m == "video/mp4" || m == "video/quicktime";
        claimed == actual || (iso(claimed) && iso(actual))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn magic_numbers_decide_the_type() {
            assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("image/jpeg"));
            assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
            assert_eq!(sniff(b"GIF89a......"), Some("image/gif"));
            assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
            assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0\0\0"), Some("video/mp4"));
            assert_eq!(sniff(b"\0\0\0\x14ftypqt  \0\0\0\0"), Some("video/quicktime"));
            assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0"), None);
            assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1]), Some("video/webm"));
            assert_eq!(sniff(b"<html><script>"), None);
            assert_eq!(sniff(b""), None);
        }

        #[test]
        fn claims_must_match_the_bytes() {
            assert!(matches("image/jpeg", "image/jpeg"));
            assert!(!matches("image/jpeg", "image/png"));
            assert!(matches("video/mp4", "video/quicktime"));
            assert!(!matches("video/mp4", "video/webm"));
        }
    }
}

//! WebSocket frames between the edge and clients, and the subjects that feed them.
//!
//! Services publish a serialized [`ServerFrame`] on [`push_subject`]; the edge forwards the
//! bytes unchanged to every socket of that user.

use crate::content::Post;
use crate::ids::{PostId, UserId};
use serde::{Deserialize, Serialize};

/// Core NATS subject carrying frames for one user's sockets.
pub fn push_subject(user: &UserId) -> String {
    format!("push.user.{user}")
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientFrame {
    /// Liveness check; answered with `pong` carrying the same id.
    #[serde(rename = "ping")]
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The posts on the client's screen: their `post.counts` frames reach this socket until
    /// the next `posts.watch` replaces the set (an empty list stops them).
    #[serde(rename = "posts.watch")]
    WatchPosts { post_ids: Vec<PostId> },
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// Answer to `ping`.
    #[serde(rename = "pong")]
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Live frames were dropped because the socket could not keep up; the client should
    /// reload what it shows (or reconnect with `?since=`).
    #[serde(rename = "resync")]
    Resync { missed: u64 },
    /// A client frame could not be handled.
    #[serde(rename = "error")]
    Error { code: crate::ErrorCode, detail: String },
    /// A new post for the home feed, as `GET /v1/posts/{id}` shows it.
    #[serde(rename = "feed.post")]
    FeedPost { post: Box<Post> },
    /// Answer to `posts.watch`: these posts' `post.counts` frames now reach this socket.
    #[serde(rename = "posts.watching")]
    Watching { post_ids: Vec<PostId> },
    /// A post's like or comment count changed.
    #[serde(rename = "post.counts")]
    PostCounts { post_id: PostId, like_count: u64, comment_count: u64 },
}

/// Core NATS subject carrying `post.counts` frames for everyone watching one post.
pub fn post_subject(post: &PostId) -> String {
    format!("push.post.{post}")
}

/// Most posts one socket may watch at once.
pub const MAX_WATCHED_POSTS: usize = 100;

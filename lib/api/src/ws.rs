//! WebSocket frames between the edge and clients, and the subjects that feed them.
//!
//! Services publish a serialized [`ServerFrame`] on [`push_subject`]; the edge forwards the
//! bytes unchanged to every socket of that user.

use crate::content::Post;
use crate::ids::{ConversationId, MessageId, NotificationId, PostId, UserId};
use crate::messaging::Message;
use crate::notification::Notification;
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
    /// Sends a chat message; answered with `chat.sent` (or `error` carrying the `client_id`).
    #[serde(rename = "chat.send")]
    ChatSend {
        conversation_id: ConversationId,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The user is typing in a conversation (ephemeral; repeated at most every few seconds).
    #[serde(rename = "chat.typing")]
    ChatTyping { conversation_id: ConversationId },
    /// This device received messages up to `up_to` (delivery receipt).
    #[serde(rename = "chat.delivered")]
    ChatDelivered { conversation_id: ConversationId, up_to: MessageId },
    /// The user read messages up to `up_to` (read receipt).
    #[serde(rename = "chat.read")]
    ChatRead { conversation_id: ConversationId, up_to: MessageId },
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
    /// A client frame could not be handled; `client_id` names the `chat.send` it answers.
    #[serde(rename = "error")]
    Error {
        code: crate::ErrorCode,
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The socket is live: sent once after connecting, after any frames replayed for `?since=`.
    /// Keep `cursor` (and then the `cursor` of every kept frame) to resume from; `null` when
    /// the frame store could not be asked (reconnect without `?since=` and reload then).
    #[serde(rename = "ready")]
    Ready { cursor: Option<String>, replayed: u64 },
    /// The `?since=` cursor is older than what is kept (or unknown): nothing was replayed;
    /// reload state over HTTP, then continue from the `cursor` of the `ready` frame that follows.
    #[serde(rename = "cursor.expired")]
    CursorExpired { since: String },
    /// A new post for the home feed, as `GET /v1/posts/{id}` shows it.
    #[serde(rename = "feed.post")]
    FeedPost { post: Box<Post> },
    /// Answer to `posts.watch`: these posts' `post.counts` frames now reach this socket.
    #[serde(rename = "posts.watching")]
    Watching { post_ids: Vec<PostId> },
    /// A post's like or comment count changed.
    #[serde(rename = "post.counts")]
    PostCounts { post_id: PostId, like_count: u64, comment_count: u64 },
    /// A new chat message in one of the user's conversations (kept).
    #[serde(rename = "chat.message")]
    ChatMessage { message: Box<Message> },
    /// Answer to `chat.send` on the socket that sent it.
    #[serde(rename = "chat.sent")]
    ChatSent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        message: Box<Message>,
    },
    /// A member read a conversation up to `seq` (kept). For the reader's own devices
    /// `unread` is their new unread count there.
    #[serde(rename = "chat.read")]
    ChatRead {
        conversation_id: ConversationId,
        user_id: UserId,
        up_to: MessageId,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unread: Option<u64>,
    },
    /// A member's device received a conversation up to `seq`.
    #[serde(rename = "chat.delivered")]
    ChatDelivered { conversation_id: ConversationId, user_id: UserId, seq: u64 },
    /// A member is typing (ephemeral).
    #[serde(rename = "chat.typing")]
    ChatTyping { conversation_id: ConversationId, user_id: UserId },
    /// A new or updated inbox entry (kept).
    #[serde(rename = "notification")]
    Notification { notification: Box<Notification> },
    /// Inbox entries were marked read on another device (`all`: every entry).
    #[serde(rename = "notifications.read")]
    NotificationsRead {
        #[serde(default)]
        ids: Vec<NotificationId>,
        all: bool,
    },
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(code: crate::ErrorCode, detail: impl Into<String>) -> Self {
        Self::Error { code, detail: detail.into(), client_id: None }
    }
}

/// Core NATS subject of the kept frames of one user; the [`crate::stream::USER_FRAMES`]
/// stream stores them, and edges subscribe to it like to [`push_subject`].
pub fn kept_subject(user: &UserId) -> String {
    format!("frames.user.{user}")
}

/// A kept frame as published and as the client sees it: the frame's fields plus `cursor`,
/// which a client passes back as `?since=` to resume after this frame. The cursor is also
/// the message's `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub cursor: String,
    #[serde(flatten)]
    pub frame: ServerFrame,
}

/// Core NATS subject carrying `post.counts` frames for everyone watching one post.
pub fn post_subject(post: &PostId) -> String {
    format!("push.post.{post}")
}

/// Most posts one socket may watch at once.
pub const MAX_WATCHED_POSTS: usize = 100;

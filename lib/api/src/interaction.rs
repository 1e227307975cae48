//! The interaction service: likes, comments, their counts, and what they tell the feed.

use crate::content::Author;
use crate::event::Broadcast;
use crate::ids::{CommentId, PostId, UserId};
use crate::page::{Page, PageRequest};
use crate::stream::{EVENTS_INTERACTION, EVENTS_VIEW, NOTIFY_JOBS};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "interaction";

/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2200;

/// A comment (`reply_to` set on replies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub id: CommentId,
    pub post_id: PostId,
    pub author: Author,
    pub text: String,
    /// The top-level comment this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<CommentId>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/posts/{id}/comments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// 1 to 2 200 characters; `@names` notify those users.
    pub text: String,
    /// Answer this comment (a reply to a reply answers its top-level comment).
    #[serde(default)]
    pub reply_to: Option<CommentId>,
}

/// A comment to add.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewComment {
    pub post_id: PostId,
    pub body: CommentBody,
}

/// A post by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnPost {
    pub post_id: PostId,
}

/// A page of a post's likes or comments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostPage {
    pub post_id: PostId,
    #[serde(default)]
    pub page: PageRequest,
}

/// A comment by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByComment {
    pub comment_id: CommentId,
}

/// Counts of a post, and whether the caller likes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostCounts {
    pub post_id: PostId,
    pub like_count: u64,
    pub comment_count: u64,
    pub liked_by_me: bool,
}

/// How much the caller engages with an author's posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub author: UserId,
    pub likes: u64,
    pub comments: u64,
}

/// Most posts or authors one [`Signals`] request asks about.
pub const MAX_SIGNAL_ITEMS: usize = 1000;

/// What ranking and display need, for the caller: counts of posts, affinity with authors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignalsQuery {
    pub post_ids: Vec<PostId>,
    #[serde(default)]
    pub authors: Vec<UserId>,
    /// The author of each of `post_ids`, in order, when the caller knows them (or empty):
    /// a viewer who never liked anything of an author has not liked this post of theirs,
    /// which spares looking it up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_authors: Vec<UserId>,
}

/// Answer to [`SignalsQuery`], in no particular order; posts never liked or commented on
/// and authors never engaged with are left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Signals {
    pub counts: Vec<PostCounts>,
    pub affinity: Vec<Affinity>,
}

crate::endpoint! {
    /// Likes a post (idempotent).
    pub Like => "interaction" . "like" : OnPost => crate::endpoint::Empty;
    /// Takes a like back (idempotent).
    pub Unlike => "interaction" . "unlike" : OnPost => crate::endpoint::Empty;
    /// Who liked a post, newest first.
    pub Likers => "interaction" . "likers" : PostPage => Page<crate::user::Profile>;
    /// Comments on a post.
    pub AddComment => "interaction" . "add_comment" : NewComment => Comment;
    /// A post's comments, oldest first.
    pub Comments => "interaction" . "comments" : PostPage => Page<Comment>;
    /// Deletes a comment and its replies (comment author, post author or admin).
    pub DeleteComment => "interaction" . "delete_comment" : ByComment => crate::endpoint::Empty;
    /// Counts and affinity for the caller.
    pub GetSignals => "interaction" . "signals" : SignalsQuery => Signals;
}

/// Told to every interaction instance after `post`'s counters changed (a like, an unlike,
/// a comment or its deletion), so each drops the post's cached counts and the cached likes
/// and affinity of the users whose engagement changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalsChanged {
    pub post_id: PostId,
    /// Whose likes or affinity changed (a deleted comment takes its replies, and their
    /// authors' affinity, with it).
    pub users: Vec<UserId>,
}

impl Broadcast for SignalsChanged {
    const SUBJECT: &'static str = "mosaic.interaction.v1.signals_changed";
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Like,
    Comment,
    Reply,
    Mention,
}

crate::event::events! {
    /// `user` liked `post` of `owner`.
    Liked = "events.interaction.liked" on EVENTS_INTERACTION { post_id: PostId, owner: UserId, user: UserId }
    /// `user` took their like of `post` back.
    Unliked = "events.interaction.unliked" on EVENTS_INTERACTION { post_id: PostId, owner: UserId, user: UserId }
    /// `user` commented on `post` (a reply when `reply_to` is set).
    Commented = "events.interaction.commented" on EVENTS_INTERACTION {
        comment_id: CommentId, post_id: PostId, owner: UserId, user: UserId, reply_to: Option<CommentId>,
    }
    /// A comment (and `removed - 1` replies with it) was deleted by `by`.
    CommentDeleted = "events.interaction.comment_deleted" on EVENTS_INTERACTION {
        comment_id: CommentId, post_id: PostId, owner: UserId, by: UserId, removed: u64,
    }
    /// Tell `recipient` that `actor` did something to their post or comment; never sent for
    /// one's own actions.
    NotifyUser = "jobs.notify.interaction" on NOTIFY_JOBS {
        recipient: UserId, kind: NotificationKind, actor: UserId, post_id: PostId, comment_id: Option<CommentId>,
    }
    /// `viewer` saw `post` (recorded by the edge, unchecked: analytics drops unknown posts).
    PostViewed = "events.view.post" on EVENTS_VIEW { post_id: PostId, viewer: UserId }
}

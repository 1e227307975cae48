//! The messaging service: conversations (1:1 and groups), messages, receipts and typing.

use crate::content::Author;
use crate::endpoint::Empty;
use crate::ids::{ConversationId, MessageId, UserId};
use crate::page::{Page, PageRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "messaging";

/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// Longest group title, in characters.
pub const MAX_TITLE_CHARS: usize = 100;
/// Most members of a group, the creator included.
pub const MAX_GROUP_MEMBERS: usize = 100;
/// Longest `client_id`; it must also have the shape of an id (`[A-Za-z0-9_-]`).
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// One conversation per pair of users, or a named group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// A member of a conversation and how far they have received and read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user: Author,
    pub joined_at: DateTime<Utc>,
    /// Sequence number of the last message their devices received (delivery receipt).
    pub delivered_seq: u64,
    /// Sequence number of the last message they read (read receipt).
    pub read_seq: u64,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    /// Position in the conversation: 1, 2, 3… with no gaps, so the order is total.
    pub seq: u64,
    pub sender: Author,
    pub text: String,
    /// The sender's idempotency key, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A conversation as its member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Current members.
    pub members: Vec<Member>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    /// Time of the last message (or of creation).
    pub last_activity_at: DateTime<Utc>,
    /// Sequence number of the last message (0 when empty).
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Message>,
    /// Messages by others the caller has not read.
    pub unread_count: u64,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationBody {
    /// The other members: one id for a 1:1 conversation (returned if it exists), more (or a
    /// title) for a group.
    pub member_ids: Vec<UserId>,
    /// Makes a group even with one other member; at most 100 characters.
    #[serde(default)]
    pub title: Option<String>,
}

/// Reply of [`CreateConversation`]: the conversation, and whether it is new.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedConversation {
    pub conversation: Conversation,
    pub created: bool,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    /// 1 to 4 000 characters.
    pub text: String,
    /// Idempotency key chosen by the client (`[A-Za-z0-9_-]`, ≤ 64): a retry with the same
    /// key returns the first message instead of sending another.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `POST /v1/conversations/{id}/read` and `…/delivered`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpToBody {
    /// The newest message read (or received); everything before it counts too.
    pub up_to: MessageId,
}

/// `POST /v1/conversations/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembersBody {
    pub member_ids: Vec<UserId>,
}

/// A conversation by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByConversation {
    pub conversation_id: ConversationId,
}

/// A page of the caller's conversations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListConversations {
    #[serde(default)]
    pub page: PageRequest,
}

/// A page of a conversation's history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub conversation_id: ConversationId,
    #[serde(default)]
    pub page: PageRequest,
}

/// A message to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub body: SendMessageBody,
}

/// A read or delivery receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub conversation_id: ConversationId,
    pub up_to: MessageId,
}

/// Members to add to a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMembers {
    pub conversation_id: ConversationId,
    pub member_ids: Vec<UserId>,
}

crate::endpoint! {
    /// Starts a conversation, or returns the existing 1:1 one.
    pub CreateConversation => "messaging" . "create" : CreateConversationBody => CreatedConversation;
    /// The caller's conversations, most recent activity first.
    pub Conversations => "messaging" . "conversations" : ListConversations => Page<Conversation>;
    /// One conversation (members only).
    pub GetConversation => "messaging" . "conversation" : ByConversation => Conversation;
    /// History, newest first (members only).
    pub History => "messaging" . "history" : HistoryQuery => Page<Message>;
    /// Sends a message; idempotent with a `client_id`.
    pub SendMessage => "messaging" . "send" : NewMessage => Message;
    /// Marks messages read up to one; other members and the caller's devices are told.
    pub MarkRead => "messaging" . "read" : Receipt => Empty;
    /// Marks messages received by the caller's device up to one.
    pub MarkDelivered => "messaging" . "delivered" : Receipt => Empty;
    /// Tells the other members the caller is typing (ephemeral, rate-limited).
    pub Typing => "messaging" . "typing" : ByConversation => Empty;
    /// Adds members to a group.
    pub AddGroupMembers => "messaging" . "add_members" : AddMembers => Conversation;
    /// The caller leaves a group.
    pub Leave => "messaging" . "leave" : ByConversation => Empty;
}

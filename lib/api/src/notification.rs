//! The notification service: the in-app inbox, preferences, devices, and the jobs other
//! services queue for it.

use crate::content::Author;
use crate::endpoint::Empty;
use crate::ids::{CommentId, ConversationId, DeviceId, MessageId, NotificationId, PostId, UserId};
use crate::page::{Page, PageRequest};
use crate::stream::{DELIVERY_JOBS, NOTIFY_JOBS};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "notification";

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    /// Someone liked the user's post.
    Like,
    /// Someone commented on the user's post or replied to their comment.
    Comment,
    /// Someone followed the user.
    Follow,
    /// Someone sent the user a chat message while they were offline.
    Message,
    /// Someone mentioned the user in a caption or comment.
    Mention,
    /// A daily report (analytics) is ready.
    Report,
}

impl NotificationType {
    /// Every type, in a stable order.
    pub const ALL: [NotificationType; 6] =
        [Self::Like, Self::Comment, Self::Follow, Self::Message, Self::Mention, Self::Report];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Like => "like",
            Self::Comment => "comment",
            Self::Follow => "follow",
            Self::Message => "message",
            Self::Mention => "mention",
            Self::Report => "report",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Where a notification can reach the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The inbox (`GET /v1/notifications`) and `notification` WebSocket frames.
    InApp,
    /// Mobile push (FCM) and browser push (Web Push).
    Push,
    /// Email.
    Email,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Push => "push",
            Self::Email => "email",
        }
    }
}

/// An inbox entry. Bursts of the same kind on the same subject are coalesced into one entry
/// ("A and 12 others liked your post"): `actor` is the latest, `others` counts the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    #[serde(rename = "type")]
    pub kind: NotificationType,
    /// Who did it (the most recent one when coalesced); absent for system notifications.
    pub actor: Option<Author>,
    /// The most recent actors, newest first (at most 3).
    pub actors: Vec<Author>,
    /// How many actors besides `actor`.
    pub others: u64,
    /// What it is about: a post id (like, comment, mention), a user id (follow), a
    /// conversation id (message), a date (report).
    pub subject_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<PostId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<CommentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// A human-readable summary.
    pub text: String,
    pub read: bool,
    pub created_at: DateTime<Utc>,
    /// When the last actor joined a coalesced entry.
    pub updated_at: DateTime<Utc>,
}

/// How a notification went out on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for a sender (or retrying).
    Queued,
    /// Held by quiet hours; released in one digest when they end.
    Held,
    /// Handed to the provider (stored in the inbox, for `in_app`).
    Sent,
    /// Older than its time-to-live before it could be sent; dropped.
    Expired,
    /// Over the user's rate limit; dropped (the inbox still has it).
    RateLimited,
    /// Turned off by the user's preferences.
    Disabled,
    /// The user has no device (push) or no usable address (email).
    NoRecipient,
    /// Every attempt failed; parked in the dead-letter stream.
    Failed,
}

/// One channel's delivery of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub channel: Channel,
    pub status: DeliveryStatus,
    /// Send attempts so far.
    pub attempts: u32,
    /// Why it failed or was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/notifications/{id}`: the entry and how it went out on each channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationDetail {
    #[serde(flatten)]
    pub notification: Notification,
    /// Newest first; a coalesced entry has one delivery per channel per update.
    pub deliveries: Vec<Delivery>,
}

/// Channels on or off for one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPrefs {
    pub in_app: bool,
    pub push: bool,
    pub email: bool,
}

impl ChannelPrefs {
    /// Whether `channel` is on.
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::InApp => self.in_app,
            Channel::Push => self.push,
            Channel::Email => self.email,
        }
    }
}

/// A daily window in the user's time zone in which non-urgent pushes are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local start, `HH:MM` (24 h).
    pub start: String,
    /// Local end, `HH:MM`; before `start` means the window spans midnight.
    pub end: String,
    /// IANA time zone (`Europe/Berlin`); daylight-saving changes are followed.
    pub time_zone: String,
}

fn on_all() -> ChannelPrefs {
    ChannelPrefs { in_app: true, push: true, email: false }
}
fn on_with_email() -> ChannelPrefs {
    ChannelPrefs { in_app: true, push: true, email: true }
}
fn report_default() -> ChannelPrefs {
    ChannelPrefs { in_app: true, push: false, email: true }
}

/// Per type × channel switches, and quiet hours. Absent types take their defaults: every
/// type in-app and by push; email only for messages and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationPreferences {
    #[serde(default = "on_all")]
    pub like: ChannelPrefs,
    #[serde(default = "on_all")]
    pub comment: ChannelPrefs,
    #[serde(default = "on_all")]
    pub follow: ChannelPrefs,
    #[serde(default = "on_with_email")]
    pub message: ChannelPrefs,
    #[serde(default = "on_all")]
    pub mention: ChannelPrefs,
    #[serde(default = "report_default")]
    pub report: ChannelPrefs,
    /// `null`: no quiet hours.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        Self {
            like: on_all(),
            comment: on_all(),
            follow: on_all(),
            message: on_with_email(),
            mention: on_all(),
            report: report_default(),
            quiet_hours: None,
        }
    }
}

impl NotificationPreferences {
    /// The switches of one type.
    pub fn of(&self, kind: NotificationType) -> ChannelPrefs {
        match kind {
            NotificationType::Like => self.like,
            NotificationType::Comment => self.comment,
            NotificationType::Follow => self.follow,
            NotificationType::Message => self.message,
            NotificationType::Mention => self.mention,
            NotificationType::Report => self.report,
        }
    }

    /// The switches of one type, to change.
    pub fn of_mut(&mut self, kind: NotificationType) -> &mut ChannelPrefs {
        match kind {
            NotificationType::Like => &mut self.like,
            NotificationType::Comment => &mut self.comment,
            NotificationType::Follow => &mut self.follow,
            NotificationType::Message => &mut self.message,
            NotificationType::Mention => &mut self.mention,
            NotificationType::Report => &mut self.report,
        }
    }
}

/// Kinds of push device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Firebase Cloud Messaging registration token (Android, iOS, web through Firebase).
    Fcm,
    /// A browser's Push API subscription (RFC 8030 + RFC 8291 + VAPID).
    Webpush,
}

/// The keys of a Push API subscription (base64url, as browsers give them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebPushKeys {
    /// The browser's P-256 public key (65 bytes uncompressed).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebPushSubscription {
    /// The push service URL to POST to (`https://` only, except loopback in tests).
    pub endpoint: String,
    pub keys: WebPushKeys,
    /// Ignored (browsers include it).
    #[serde(default, rename = "expirationTime", skip_serializing)]
    pub expiration_time: Option<serde_json::Value>,
}

/// `POST /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceBody {
    pub platform: Platform,
    /// FCM registration token (platform `fcm`).
    #[serde(default)]
    pub token: Option<String>,
    /// Push subscription (platform `webpush`).
    #[serde(default)]
    pub subscription: Option<WebPushSubscription>,
}

/// `POST /v1/devices` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRegistered {
    pub id: DeviceId,
}

/// A registered device (`GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    pub id: DeviceId,
    pub platform: Platform,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/notifications/read`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkReadBody {
    /// These entries.
    #[serde(default)]
    pub ids: Option<Vec<NotificationId>>,
    /// Every entry.
    #[serde(default)]
    pub all: bool,
}

/// A page of the caller's inbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InboxQuery {
    #[serde(default)]
    pub page: PageRequest,
    /// Only unread entries.
    #[serde(default)]
    pub unread_only: bool,
}

/// A notification by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByNotification {
    pub notification_id: NotificationId,
}

/// A device by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByDevice {
    pub device_id: DeviceId,
}

/// Unread inbox entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnreadCount {
    pub unread: u64,
}

/// An unsubscribe link's token (no login needed).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnsubscribeRequest {
    pub token: String,
}

/// What an unsubscribe link turned off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Unsubscribed {
    /// The type whose emails stop; absent: every email.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NotificationType>,
}

/// The VAPID public key browsers pass as `applicationServerKey` when subscribing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VapidKey {
    /// Uncompressed P-256 point, base64url without padding.
    pub public_key: String,
}

crate::endpoint! {
    /// The caller's inbox, most recently updated first.
    pub Inbox => "notification" . "inbox" : InboxQuery => Page<Notification>;
    /// Unread entries of the caller's inbox.
    pub GetUnreadCount => "notification" . "unread_count" : Empty => UnreadCount;
    /// One entry with its deliveries per channel.
    pub GetNotification => "notification" . "get" : ByNotification => NotificationDetail;
    /// Marks entries (or all) read.
    pub MarkNotificationsRead => "notification" . "mark_read" : MarkReadBody => Empty;
    /// The caller's preferences.
    pub GetPreferences => "notification" . "preferences" : Empty => NotificationPreferences;
    /// Replaces the caller's preferences.
    pub PutPreferences => "notification" . "put_preferences" : NotificationPreferences => NotificationPreferences;
    /// Registers a push device (the same token or endpoint twice is one device).
    pub RegisterDevice => "notification" . "register_device" : RegisterDeviceBody => DeviceRegistered;
    /// The caller's devices.
    pub Devices => "notification" . "devices" : Empty => Vec<Device>;
    /// Removes one of the caller's devices.
    pub RemoveDevice => "notification" . "remove_device" : ByDevice => Empty;
    /// Turns email off for what an unsubscribe link names (anonymous; the token is signed).
    pub Unsubscribe => "notification" . "unsubscribe" : UnsubscribeRequest => Unsubscribed;
    /// The VAPID public key for browser subscriptions (anonymous).
    pub GetVapidKey => "notification" . "vapid_key" : Empty => VapidKey;
}

/// An inline image of an email (a chart, say), referenced from the HTML as `cid:<cid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineImage {
    pub cid: String,
    /// `image/png`.
    pub mime: String,
    /// The bytes, base64 (standard alphabet).
    pub base64: String,
}

crate::event::events! {
    /// Tell `recipient` that `actor` sent a message while the recipient had no socket open.
    NotifyMessage = "jobs.notify.message" on NOTIFY_JOBS {
        recipient: UserId,
        actor: UserId,
        conversation_id: ConversationId,
        message_id: MessageId,
        /// The start of the message, for the push text.
        preview: String,
    }
    /// An email composed by another service (a daily report, say), sent through the
    /// notification service's email path: preferences, unsubscribe link, rate limits, retries,
    /// dead letters. The envelope id doubles as the de-duplication key, so a service that
    /// derives it from what the email is (report + day + recipient) never sends it twice.
    SendEmail = "jobs.notify.email" on NOTIFY_JOBS {
        recipient: UserId,
        /// Whose preference decides (`report` for reports).
        kind: NotificationType,
        /// What the inbox entry points at (the report's date, say).
        subject_id: String,
        subject: String,
        text: String,
        html: String,
        #[serde(default)]
        images: Vec<InlineImage>,
        /// Also add an inbox entry with this text.
        #[serde(default)]
        inbox_text: Option<String>,
    }
    /// One channel's send of one notification (internal work queue of the notification
    /// service; any instance may pick it up).
    Deliver = "jobs.deliver.send" on DELIVERY_JOBS {
        /// The job the delivery belongs to (its event id, or a digest's id).
        job: String,
        channel: Channel,
    }
}

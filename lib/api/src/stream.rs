//! JetStream streams, consumers and key-value buckets as plain data.
//!
//! A definition says what the contract needs (name, subjects, retention, limits); `mosaic-mesh`
//! turns it into server configuration and creates or updates it idempotently at start.

use std::time::Duration;

/// How a stream retains messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep messages up to the stream's age and size limits; many consumers each see all.
    Limits,
    /// A work queue: a message is removed once one consumer acknowledges it.
    WorkQueue,
}

/// A JetStream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (upper snake case by convention).
    pub name: &'static str,
    /// What the stream is for.
    pub description: &'static str,
    /// Subjects captured by the stream.
    pub subjects: &'static [&'static str],
    /// Retention policy.
    pub retention: Retention,
    /// Oldest message kept.
    pub max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
}

/// A durable pull consumer on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream consumed.
    pub stream: &'static StreamSpec,
    /// Durable name, shared by every instance of the consuming service.
    pub durable: &'static str,
    /// Only these subjects are delivered (empty: the whole stream).
    pub filter_subjects: &'static [&'static str],
    /// Deliveries before the message is parked in the dead-letter stream.
    pub max_deliver: i64,
    /// Redelivery delays, one per attempt (the last repeats).
    pub backoff: &'static [Duration],
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Messages in flight across all instances.
    pub max_ack_pending: i64,
}

/// A JetStream key-value bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSpec {
    /// Bucket name.
    pub bucket: &'static str,
    /// What the bucket holds.
    pub description: &'static str,
    /// Revisions kept per key.
    pub history: i64,
    /// Entries older than this disappear (`Duration::ZERO`: never).
    pub max_age: Duration,
    /// Whether entries may carry their own time-to-live.
    pub per_key_ttl: bool,
    /// Where the NATS server keeps the entries.
    pub storage: KvStorage,
}

/// Where a key-value bucket lives on the NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvStorage {
    /// On disk: entries survive a restart of the server.
    File,
    /// In memory, at most `max_bytes` (the default; a service may size it from its settings).
    /// A full bucket drops the entries written longest ago instead of refusing writes, and a
    /// restart of the server empties it: only for caches whose owner rebuilds a missing entry.
    /// A bucket that exists with other storage is deleted and created again.
    Cache {
        /// Bytes of entries (keys, values, headers) the server keeps.
        max_bytes: i64,
    },
}

/// Dead letters: messages that exhausted their deliveries or could never be processed.
/// Subjects are `dlq.<stream>.<consumer>`; headers name the reason and the original subject.
pub const DEAD_LETTERS: StreamSpec = StreamSpec {
    name: "DEAD_LETTERS",
    description: "Messages parked after failing every delivery attempt, with the reason",
    subjects: &["dlq.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(30 * 24 * 3600),
    duplicate_window: Duration::from_secs(120),
};

/// Header on a dead letter: why it was parked.
pub const DLQ_REASON: &str = "Mosaic-Dlq-Reason";
/// Header on a dead letter: the subject it was originally published on.
pub const DLQ_SUBJECT: &str = "Mosaic-Dlq-Subject";
/// Header on a dead letter: its sequence in the original stream.
pub const DLQ_STREAM_SEQ: &str = "Mosaic-Dlq-Stream-Seq";

/// Events of the user domain (`events.user.*`).
pub const EVENTS_USER: StreamSpec = StreamSpec {
    name: "EVENTS_USER",
    description: "Account and social-graph events of the user service",
    subjects: &["events.user.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(14 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Access-token revocations, watched by every edge so token checks need no request.
///
/// Keys are `user.<user_id>` (every token of the user issued before the stored Unix second is
/// void: suspension, password change) and `session.<session_id>` (every token of the session
/// is void: logout, refresh-token reuse). Entries only have to outlive the access tokens they
/// void, so the bucket keeps them a little longer than the longest access-token lifetime.
pub const REVOCATIONS: KvSpec = KvSpec {
    bucket: "revocations",
    description: "Revoked users and sessions; edges watch it to refuse tokens locally",
    history: 1,
    max_age: Duration::from_secs(24 * 3600),
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Shared login-throttle counters of the user service (per account and per client IP).
pub const LOGIN_THROTTLE: KvSpec = KvSpec {
    bucket: "login_throttle",
    description: "Failed-login counters per account and per IP, in fixed windows",
    history: 1,
    max_age: Duration::from_secs(3600),
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Stored replies of requests made with an `Idempotency-Key`, so a retry gets the first result.
pub const IDEMPOTENCY: KvSpec = KvSpec {
    bucket: "idempotency",
    description: "First replies of requests carrying an Idempotency-Key",
    history: 1,
    max_age: Duration::from_secs(24 * 3600),
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Events of posts (`events.post.*`).
pub const EVENTS_POST: StreamSpec = StreamSpec {
    name: "EVENTS_POST",
    description: "Post events of the content service",
    subjects: &["events.post.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(14 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Media processing jobs: a work queue shared by every content worker.
pub const MEDIA_JOBS: StreamSpec = StreamSpec {
    name: "MEDIA_JOBS",
    description: "Photo and video processing jobs (work queue)",
    subjects: &["jobs.media.>"],
    retention: Retention::WorkQueue,
    max_age: Duration::from_secs(7 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Events of likes and comments (`events.interaction.*`).
pub const EVENTS_INTERACTION: StreamSpec = StreamSpec {
    name: "EVENTS_INTERACTION",
    description: "Likes and comments of the interaction service",
    subjects: &["events.interaction.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(14 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Post views (`events.view.*`): high volume, read by analytics.
pub const EVENTS_VIEW: StreamSpec = StreamSpec {
    name: "EVENTS_VIEW",
    description: "Post views recorded by the edge, for analytics",
    subjects: &["events.view.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(7 * 24 * 3600),
    duplicate_window: Duration::from_secs(120),
};

/// Notifications to deliver: a work queue the notification service drains.
pub const NOTIFY_JOBS: StreamSpec = StreamSpec {
    name: "NOTIFY_JOBS",
    description: "Notifications to deliver to users (work queue)",
    subjects: &["jobs.notify.>"],
    retention: Retention::WorkQueue,
    max_age: Duration::from_secs(7 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Cached home feeds, one key per reader (`feed.<user_id>`).
///
/// An entry that nobody reads or writes for `max_age` disappears, and so does the one written
/// longest ago when the bucket is full: the feed service rebuilds a missing feed from the
/// graph on its next read. Being a cache, it lives in the server's memory: each post of a
/// small account rewrites the feed of every active follower, which on disk cost the server
/// a file write and a tombstone per feed (most of the fifth of its CPU that went to storing
/// messages in the social benchmark).
pub const FEEDS: KvSpec = KvSpec {
    bucket: "feeds",
    description: "Home-feed cache: recent post references per reader",
    history: 1,
    max_age: Duration::from_secs(14 * 24 * 3600),
    per_key_ttl: false,
    storage: KvStorage::Cache { max_bytes: 1 << 30 },
};

/// Authors whose posts are merged into feeds at read time instead of pushed (`author.<id>`).
pub const FEED_PULL_AUTHORS: KvSpec = KvSpec {
    bucket: "feed_pull_authors",
    description: "Authors with too many followers to fan out to; feeds pull their posts",
    history: 1,
    max_age: Duration::ZERO,
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Sends of notifications on one channel (push, email): the notification service's own
/// work queue, so a slow or failing provider never holds up the inbox.
pub const DELIVERY_JOBS: StreamSpec = StreamSpec {
    name: "DELIVERY_JOBS",
    description: "Push and email sends of the notification service (work queue)",
    subjects: &["jobs.deliver.>"],
    retention: Retention::WorkQueue,
    max_age: Duration::from_secs(7 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Frames a user must not miss (chat messages, read receipts, notifications), one subject
/// per user (`frames.user.<id>`). Edges forward them live like `push.user.<id>` frames, and
/// replay them to a socket that reconnects with a cursor.
pub const USER_FRAMES: StreamSpec = StreamSpec {
    name: "USER_FRAMES",
    description: "Kept WebSocket frames per user, replayed to sockets that reconnect with a cursor",
    subjects: &["frames.user.*"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(7 * 24 * 3600),
    duplicate_window: Duration::from_secs(600),
};

/// Who has a socket open: keys `<user_id>.<edge_id>`, refreshed by each edge while the user
/// is connected there and deleted when their last socket there closes; a crashed edge's
/// keys age out.
pub const PRESENCE: KvSpec = KvSpec {
    bucket: "presence",
    description: "Users with an open WebSocket, per edge",
    history: 1,
    max_age: Duration::from_secs(90),
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Per-user send counters of the notification service (fixed windows).
pub const NOTIFY_LIMITS: KvSpec = KvSpec {
    bucket: "notify_limits",
    description: "Push and email sends per user and window, for rate limits",
    history: 1,
    max_age: Duration::from_secs(26 * 3600),
    per_key_ttl: false,
    storage: KvStorage::File,
};

/// Leases and completion marks of the analytics service's daily work (report runs,
/// compaction), so several instances do each once.
pub const ANALYTICS_LEASES: KvSpec = KvSpec {
    bucket: "analytics_leases",
    description: "Who runs which day's reports and compaction, and which are done",
    history: 1,
    max_age: Duration::from_secs(40 * 24 * 3600),
    per_key_ttl: false,
    storage: KvStorage::File,
};

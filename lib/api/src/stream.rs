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

impl StreamSpec {
    /// A stream that keeps messages for `max_age` whoever has read them (events, kept
    /// frames), dropping repeats of a `Nats-Msg-Id` within ten minutes.
    pub const fn limits(
        name: &'static str,
        description: &'static str,
        subjects: &'static [&'static str],
        max_age: Duration,
    ) -> Self {
        Self { name, description, subjects, retention: Retention::Limits, max_age, duplicate_window: TEN_MINUTES }
    }

    /// A work queue: a message is gone once one worker acknowledges it, or after a week.
    pub const fn work_queue(name: &'static str, description: &'static str, subjects: &'static [&'static str]) -> Self {
        Self { retention: Retention::WorkQueue, ..Self::limits(name, description, subjects, DAYS_7) }
    }

    /// The same stream with another duplicate window.
    pub const fn duplicate_window(self, duplicate_window: Duration) -> Self {
        Self { duplicate_window, ..self }
    }
}

impl ConsumerSpec {
    /// The redelivery delays most consumers use: quick retries for a blip, then backing off
    /// to half a minute.
    pub const BACKOFF: &'static [Duration] =
        &[Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)];

    /// A durable consumer of `filter_subjects` on `stream` with the usual policy: ten
    /// deliveries spaced by [`Self::BACKOFF`], thirty seconds to acknowledge, 256 in flight.
    pub const fn new(
        stream: &'static StreamSpec,
        durable: &'static str,
        filter_subjects: &'static [&'static str],
    ) -> Self {
        Self {
            stream,
            durable,
            filter_subjects,
            max_deliver: 10,
            backoff: Self::BACKOFF,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
        }
    }

    /// The same consumer with `max_ack_pending` messages in flight.
    pub const fn in_flight(self, max_ack_pending: i64) -> Self {
        Self { max_ack_pending, ..self }
    }

    /// The same consumer with another acknowledgement deadline.
    pub const fn ack_wait(self, ack_wait: Duration) -> Self {
        Self { ack_wait, ..self }
    }

    /// The same consumer with `max_deliver` deliveries spaced by `backoff`.
    pub const fn retries(self, max_deliver: i64, backoff: &'static [Duration]) -> Self {
        Self { max_deliver, backoff, ..self }
    }
}

impl KvSpec {
    /// A bucket on disk keeping the latest value of each key until it is deleted or
    /// outlives `max_age` (`Duration::ZERO`: never).
    pub const fn new(bucket: &'static str, description: &'static str, max_age: Duration) -> Self {
        Self { bucket, description, history: 1, max_age, per_key_ttl: false, storage: KvStorage::File }
    }

    /// The same bucket with entries that carry their own time-to-live.
    pub const fn per_key_ttl(self) -> Self {
        Self { per_key_ttl: true, ..self }
    }

    /// The same bucket as a cache in the server's memory of at most `max_bytes`.
    pub const fn cache(self, max_bytes: i64) -> Self {
        Self { storage: KvStorage::Cache { max_bytes }, ..self }
    }
}

const TEN_MINUTES: Duration = Duration::from_secs(600);
const DAYS_7: Duration = Duration::from_secs(7 * 24 * 3600);

/// Dead letters: messages that exhausted their deliveries or could never be processed.
/// Subjects are `dlq.<stream>.<consumer>`; headers name the reason and the original subject.
pub const DEAD_LETTERS: StreamSpec = StreamSpec::limits(
    "DEAD_LETTERS",
    "Messages parked after failing every delivery attempt, with the reason",
    &["dlq.>"],
    Duration::from_secs(30 * 24 * 3600),
)
.duplicate_window(Duration::from_secs(120));

/// Header on a dead letter: why it was parked.
pub const DLQ_REASON: &str = "Mosaic-Dlq-Reason";
/// Header on a dead letter: the subject it was originally published on.
pub const DLQ_SUBJECT: &str = "Mosaic-Dlq-Subject";
/// Header on a dead letter: its sequence in the original stream.
pub const DLQ_STREAM_SEQ: &str = "Mosaic-Dlq-Stream-Seq";

/// Events of the user domain (`events.user.*`).
pub const EVENTS_USER: StreamSpec = StreamSpec::limits(
    "EVENTS_USER",
    "Account and social-graph events of the user service",
    &["events.user.>"],
    Duration::from_secs(14 * 24 * 3600),
);

/// Access-token revocations, watched by every edge so token checks need no request.
///
/// Keys are `user.<user_id>` (every token of the user issued before the stored Unix second is
/// void: suspension, password change) and `session.<session_id>` (every token of the session
/// is void: logout, refresh-token reuse). Entries only have to outlive the access tokens they
/// void, so the bucket keeps them a little longer than the longest access-token lifetime.
pub const REVOCATIONS: KvSpec = KvSpec::new(
    "revocations",
    "Revoked users and sessions; edges watch it to refuse tokens locally",
    Duration::from_secs(24 * 3600),
);

/// Shared login-throttle counters of the user service (per account and per client IP).
pub const LOGIN_THROTTLE: KvSpec = KvSpec::new(
    "login_throttle",
    "Failed-login counters per account and per IP, in fixed windows",
    Duration::from_secs(3600),
);

/// Per-actor action counters of the user service (signups per client network, follows per
/// user), in windows of up to an hour (see `mosaic_mesh::quota`).
pub const USER_QUOTAS: KvSpec = KvSpec::new(
    "user_quotas",
    "Signups per client network and follows per user, in fixed windows",
    Duration::from_secs(3600),
);

/// Posts per user, in windows of up to an hour.
pub const CONTENT_QUOTAS: KvSpec =
    KvSpec::new("content_quotas", "Posts per user, in fixed windows", Duration::from_secs(3600));

/// Comments per user, in windows of up to an hour.
pub const INTERACTION_QUOTAS: KvSpec =
    KvSpec::new("interaction_quotas", "Comments per user, in fixed windows", Duration::from_secs(3600));

/// Stored replies of requests made with an `Idempotency-Key`, so a retry gets the first result.
pub const IDEMPOTENCY: KvSpec =
    KvSpec::new("idempotency", "First replies of requests carrying an Idempotency-Key", Duration::from_secs(24 * 3600));

/// Events of posts (`events.post.*`).
pub const EVENTS_POST: StreamSpec = StreamSpec::limits(
    "EVENTS_POST",
    "Post events of the content service",
    &["events.post.>"],
    Duration::from_secs(14 * 24 * 3600),
);

/// Media processing jobs: a work queue shared by every content worker.
pub const MEDIA_JOBS: StreamSpec =
    StreamSpec::work_queue("MEDIA_JOBS", "Photo and video processing jobs (work queue)", &["jobs.media.>"]);

/// Events of likes and comments (`events.interaction.*`).
pub const EVENTS_INTERACTION: StreamSpec = StreamSpec::limits(
    "EVENTS_INTERACTION",
    "Likes and comments of the interaction service",
    &["events.interaction.>"],
    Duration::from_secs(14 * 24 * 3600),
);

/// Post views (`events.view.*`): high volume, read by analytics.
pub const EVENTS_VIEW: StreamSpec = StreamSpec::limits(
    "EVENTS_VIEW",
    "Post views recorded by the edge, for analytics",
    &["events.view.>"],
    Duration::from_secs(7 * 24 * 3600),
)
.duplicate_window(Duration::from_secs(120));

/// Notifications to deliver: a work queue the notification service drains.
pub const NOTIFY_JOBS: StreamSpec =
    StreamSpec::work_queue("NOTIFY_JOBS", "Notifications to deliver to users (work queue)", &["jobs.notify.>"]);

/// Cached home feeds, one key per reader (`feed.<user_id>`).
///
/// An entry that nobody reads or writes for `max_age` disappears, and so does the one written
/// longest ago when the bucket is full: the feed service rebuilds a missing feed from the
/// graph on its next read. Being a cache, it lives in the server's memory: each post of a
/// small account rewrites the feed of every active follower, which on disk cost the server
/// a file write and a tombstone per feed (most of the fifth of its CPU that went to storing
/// messages in the social benchmark).
pub const FEEDS: KvSpec =
    KvSpec::new("feeds", "Home-feed cache: recent post references per reader", Duration::from_secs(14 * 24 * 3600))
        .cache(1 << 30);

/// Authors whose posts are merged into feeds at read time instead of pushed (`author.<id>`).
pub const FEED_PULL_AUTHORS: KvSpec = KvSpec::new(
    "feed_pull_authors",
    "Authors with too many followers to fan out to; feeds pull their posts",
    Duration::ZERO,
);

/// Sends of notifications on one channel (push, email): the notification service's own
/// work queue, so a slow or failing provider never holds up the inbox.
pub const DELIVERY_JOBS: StreamSpec = StreamSpec::work_queue(
    "DELIVERY_JOBS",
    "Push and email sends of the notification service (work queue)",
    &["jobs.deliver.>"],
);

/// Frames a user must not miss (chat messages, read receipts, notifications), one subject
/// per user (`frames.user.<id>`). Edges forward them live like `push.user.<id>` frames, and
/// replay them to a socket that reconnects with a cursor.
pub const USER_FRAMES: StreamSpec = StreamSpec::limits(
    "USER_FRAMES",
    "Kept WebSocket frames per user, replayed to sockets that reconnect with a cursor",
    &["frames.user.*"],
    Duration::from_secs(7 * 24 * 3600),
);

/// Who has a socket open: keys `<user_id>.<edge_id>`, refreshed by each edge while the user
/// is connected there and deleted when their last socket there closes; a crashed edge's
/// keys age out.
pub const PRESENCE: KvSpec = KvSpec::new("presence", "Users with an open WebSocket, per edge", Duration::from_secs(90));

/// Per-user send counters of the notification service (fixed windows).
pub const NOTIFY_LIMITS: KvSpec = KvSpec::new(
    "notify_limits",
    "Push and email sends per user and window, for rate limits",
    Duration::from_secs(26 * 3600),
);

/// Leases and completion marks of the analytics service's daily work (report runs,
/// compaction), so several instances do each once.
pub const ANALYTICS_LEASES: KvSpec = KvSpec::new(
    "analytics_leases",
    "Who runs which day's reports and compaction, and which are done",
    Duration::from_secs(40 * 24 * 3600),
);

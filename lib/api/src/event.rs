//! Domain events published to JetStream.

use crate::ids::{EventId, Id};
use crate::stream::StreamSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A domain event: its subject and the stream that captures it are part of its type.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Subject the event is published on (`events.<domain>.<what>`).
    const SUBJECT: &'static str;
    /// The stream that stores it.
    const STREAM: &'static StreamSpec;
}

/// What is published: the event with a unique id (also its `Nats-Msg-Id`, so a republished
/// event is dropped as a duplicate) and the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Unique event id.
    pub id: EventId,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// The event itself.
    pub data: T,
}

impl<T: Event> Envelope<T> {
    /// Wraps an event with a fresh id and the current time.
    pub fn new(data: T) -> Self {
        Self { id: EventId::generate(), at: Utc::now(), data }
    }
}

/// A notice every instance of a service hears at most once, over core NATS (no stream,
/// no queue group): a change it must drop from its in-memory caches. Losing one costs
/// freshness for at most the cache's time to live, never data, which is why these need no
/// JetStream.
pub trait Broadcast: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Subject the notice is published on (`mosaic.<service>.v1.<what>`).
    const SUBJECT: &'static str;
}

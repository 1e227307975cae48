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

/// The events one consumer reads, as one enum: a message is decoded by its subject into
/// the variant of its type, so handlers match on types, never on subject strings. Declared
/// with [`event_set!`](crate::event_set).
pub trait EventSet: Sized + Send + 'static {
    /// The subjects of the set's events (a consumer's filter).
    const SUBJECTS: &'static [&'static str];

    /// Decodes a message published on `subject`: `Ok(None)` when the subject is not one of
    /// the set's (a consumer whose filter is wider than what it handles), an error when the
    /// payload is not that event's envelope.
    fn decode(subject: &str, payload: &[u8]) -> Result<Option<Envelope<Self>>, serde_json::Error>;
}

/// Declares an [`EventSet`]: an enum with one variant per event type.
///
/// ```
/// use mosaic_api::event::EventSet;
/// use mosaic_api::user::{Blocked, Unblocked};
/// mosaic_api::event_set! {
///     /// Block changes.
///     pub enum Blocks { Blocked(Blocked), Unblocked(Unblocked) }
/// }
/// assert_eq!(Blocks::SUBJECTS, ["events.user.blocked", "events.user.unblocked"]);
/// assert!(Blocks::decode("events.user.muted", b"{}").unwrap().is_none());
/// ```
#[macro_export]
macro_rules! event_set {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident($ty:ty)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis enum $name { $($variant($ty)),+ }

        impl $crate::event::EventSet for $name {
            const SUBJECTS: &'static [&'static str] = &[$(<$ty as $crate::event::Event>::SUBJECT),+];

            fn decode(
                subject: &str,
                payload: &[u8],
            ) -> Result<Option<$crate::event::Envelope<Self>>, $crate::__serde_json::Error> {
                $(
                    if subject == <$ty as $crate::event::Event>::SUBJECT {
                        let e: $crate::event::Envelope<$ty> = $crate::__serde_json::from_slice(payload)?;
                        return Ok(Some($crate::event::Envelope { id: e.id, at: e.at, data: $name::$variant(e.data) }));
                    }
                )+
                Ok(None)
            }
        }
    };
}

/// Declares events: each a struct of public fields, published on `$subject` into the
/// stream `$stream`.
macro_rules! events {
    ($($(#[$meta:meta])* $name:ident = $subject:literal on $stream:ident {
        $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)?
    })+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }
        impl $crate::event::Event for $name {
            const SUBJECT: &'static str = $subject;
            const STREAM: &'static $crate::stream::StreamSpec = &$stream;
        }
    )+};
}
pub(crate) use events;

/// A notice every instance of a service hears at most once, over core NATS (no stream,
/// no queue group): a change it must drop from its in-memory caches. Losing one costs
/// freshness for at most the cache's time to live, never data, which is why these need no
/// JetStream.
pub trait Broadcast: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Subject the notice is published on (`mosaic.<service>.v1.<what>`).
    const SUBJECT: &'static str;
}

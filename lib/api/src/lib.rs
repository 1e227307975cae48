//! Mosaic's wire contract.
//!
//! Everything that crosses a process boundary is defined here and nowhere else: request/reply
//! subjects bound to their payload types ([`endpoint`]), domain events and the JetStream
//! streams that carry them ([`event`], [`stream`]), the stable error codes ([`error`]), the
//! NATS headers services read ([`headers`]), and the WebSocket frames clients see ([`ws`]).
//! Service crates depend on this crate and on `mosaic-mesh`, never on each other.

pub mod analytics;
pub mod content;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod feed;
pub mod headers;
pub mod ids;
pub mod interaction;
pub mod messaging;
pub mod notification;
pub mod page;
pub mod stream;
pub mod subject;
pub mod text;
pub mod user;
pub mod ws;

pub use endpoint::Endpoint;
pub use error::{ApiError, ErrorCode};
pub use event::{Broadcast, Envelope, Event, EventSet};
pub use ids::{
    CommentId, ConversationId, DeviceId, EventId, Id, MediaId, MessageId, NotificationId, PostId, SessionId, UploadId,
    UserId,
};
pub use page::{Page, PageRequest};
#[doc(hidden)]
pub use serde_json as __serde_json;

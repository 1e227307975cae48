//! The service runtime every Mosaic service stands on, and the only code that knows NATS.
//!
//! * [`Mesh`]: one NATS connection per process with typed calls ([`Mesh::call`]), pushes to
//!   user sockets, and JetStream helpers ([`jetstream`]).
//! * [`service`]: serving typed endpoints through the NATS micro service API in a queue group,
//!   with deadlines, trace context and stable error codes; graceful drain on stop. Calls to a
//!   service the calling process serves skip the wire (`local`).
//! * [`db`]: SurrealDB connections and the migration runner; [`outbox`]: the transactional
//!   outbox that ties a database write to the event it implies.
//! * [`frames`]: kept WebSocket frames (stored per user, replayed from a cursor);
//!   [`presence`]: who has a socket open, mirrored in memory by services that ask.
//! * [`component`]: components as data — each service's declaration, and the host that
//!   starts, migrates and checks them from one list.
//! * [`config`], [`telemetry`]: the bootstrap every binary shares.
//!
//! The error policy lives in [`mosaic_api::error`]; [`ServiceError`] and [`CallError`] are its
//! in-process halves.

pub mod authz;
pub mod cache;
mod client;
pub mod clock;
pub mod component;
pub mod config;
pub mod ctx;
pub mod db;
pub mod directory;
pub mod error;
pub mod frames;
pub mod identity;
pub mod instance;
pub mod jetstream;
pub mod kv;
mod local;
pub mod outbox;
pub mod presence;
pub mod quota;
pub mod runtime;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod trace;
pub mod write;

pub use client::{Mesh, NatsConfig, PushSubscription};
pub use component::{Component, Host, Unit};
pub use ctx::Ctx;
pub use error::{CallError, ServiceError, ServiceResult};
pub use service::{FirstRun, Lifecycle, ServiceBuilder, ServiceHandle};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

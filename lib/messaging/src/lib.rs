//! The messaging service: 1:1 and group conversations, messages with a total order,
//! delivery and read receipts, typing indicators, and real-time delivery.
//!
//! * A message takes the conversation's next sequence number in the transaction that
//!   stores it, so the order is total and gap-free; a `client_id` makes a send idempotent.
//! * Each member's `unread` count changes in the same transactions as the messages and read
//!   receipts that move it, so it stays exact; reading on one device tells the others.
//! * Every member gets the message as a kept `chat.message` frame (replayed to a socket that
//!   reconnects with a cursor). Frames and the offline members' notification jobs are staged
//!   in the transactional outbox with the message and published right after the commit.
//! * Members without an open socket anywhere (see [`mosaic_mesh::presence`]) also get a
//!   `jobs.notify.message` job for the notification service (push, email).

pub mod config;
mod conversations;
mod messages;
mod store;

pub use config::Config;

use mosaic_api::Event as _;

use mosaic_api::messaging::{self as api, SERVICE};
use mosaic_api::stream::{ConsumerSpec, EVENTS_USER};
use mosaic_api::user::{Blocked, Unblocked};
use mosaic_api::{Envelope, EventSet as _, UserId};
use mosaic_mesh::component::{self, Component, Unit};
use mosaic_mesh::db::{Db, Migration};
use mosaic_mesh::directory::Directory;
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::presence::PresenceMirror;
use mosaic_mesh::{Lifecycle, Mesh, ServiceHandle};
use std::sync::Arc;

/// The service's schema, applied in order by [`mosaic_mesh::db::migrate`].
pub const MIGRATIONS: &[Migration] = mosaic_mesh::migrations!("messaging": "0001_init");

mosaic_api::event_set! {
    /// Block and unblock events, mirrored so a send checks blocks in its own transaction.
    enum BlockEvent { Blocked(Blocked), Unblocked(Unblocked) }
}

const BLOCKS: ConsumerSpec = ConsumerSpec::new(&EVENTS_USER, "messaging-blocks", BlockEvent::SUBJECTS);

/// Shared state of one instance.
pub(crate) struct MessagingService {
    config: Config,
    db: Db,
    mesh: Mesh,
    outbox: Outbox,
    directory: Directory,
    presence: PresenceMirror,
    limits: messages::SendLimits,
}

/// The messaging service as a component (see [`mosaic_mesh::component`]).
pub const COMPONENT: Component = Component {
    name: SERVICE,
    about: "Conversations, messages, receipts and typing",
    migrations: Some(MIGRATIONS),
    serves: mosaic_api::subjects![
        api::CreateConversation,
        api::Conversations,
        api::GetConversation,
        api::History,
        api::SendMessage,
        api::MarkRead,
        api::MarkDelivered,
        api::Typing,
        api::AddGroupMembers,
        api::Leave,
    ],
    instances: &[],
    calls: mosaic_api::subjects![mosaic_api::user::Relations, mosaic_api::user::GetProfiles],
    publishes: &[
        mosaic_api::subject::USER_FRAMES,
        mosaic_api::subject::USER_PUSHES,
        mosaic_api::notification::NotifyMessage::SUBJECT,
        mosaic_api::subject::DEAD_LETTERS,
    ],
    subscribes: &[],
    streams: &[
        &mosaic_api::stream::USER_FRAMES,
        &mosaic_api::stream::NOTIFY_JOBS,
        &mosaic_api::stream::EVENTS_USER,
        &mosaic_api::stream::DEAD_LETTERS,
    ],
    buckets: &[&mosaic_api::stream::PRESENCE],
    check: component::check::<Config>,
    start: |unit| Box::pin(start(unit)),
};

/// Starts one instance.
async fn start(unit: Unit) -> anyhow::Result<ServiceHandle> {
    let config: Config = unit.config()?;
    let db = unit.database().await?;
    let mesh = unit.mesh();
    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);
    let presence = PresenceMirror::spawn(mesh, &lifecycle).await?;
    let state = Arc::new(MessagingService {
        limits: messages::SendLimits::new(config.max_messages_per_minute),
        config,
        db,
        mesh: mesh.clone(),
        outbox,
        directory: Directory::new(mesh.clone(), 50_000),
        presence,
    });
    let blocks = state.clone();
    mesh.consume_events(BLOCKS, 4, &lifecycle, move |_, e: Envelope<BlockEvent>| {
        let state = blocks.clone();
        async move { state.on_block_event(e.data).await }
    })
    .await?;
    let rpc = unit
        .service(state)
        .endpoint(api::CreateConversation, MessagingService::create)
        .endpoint(api::Conversations, MessagingService::conversations)
        .endpoint(api::GetConversation, MessagingService::conversation)
        .endpoint(api::History, MessagingService::history)
        .endpoint(api::SendMessage, MessagingService::send)
        .endpoint(api::MarkRead, MessagingService::mark_read)
        .endpoint(api::MarkDelivered, MessagingService::mark_delivered)
        .endpoint(api::Typing, MessagingService::typing)
        .endpoint(api::AddGroupMembers, MessagingService::add_members)
        .endpoint(api::Leave, MessagingService::leave)
        .start()
        .await?;
    Ok(ServiceHandle::new(SERVICE, Some(rpc), lifecycle))
}

impl MessagingService {
    async fn on_block_event(&self, event: BlockEvent) -> Result<(), HandlerError> {
        let (blocker, blocked, on) = match event {
            BlockEvent::Blocked(e) => (e.blocker, e.blocked, true),
            BlockEvent::Unblocked(e) => (e.blocker, e.blocked, false),
        };
        store::set_block(&self.db, &blocker, &blocked, on).await.map_err(HandlerError::Transient)
    }

    pub(crate) fn is_online(&self, user: &UserId) -> bool {
        self.presence.is_online(user)
    }
}

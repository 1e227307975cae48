//! Taking notifications in: jobs from other services and graph events become inbox entries
//! (coalesced), per-channel deliveries, and a kept `notification` frame, in one transaction
//! per job; a job seen before changes nothing.

use crate::NotificationService;
use crate::quiet::Window;
use crate::store::deliveries::{DeliveryRow, NewDelivery};
use crate::store::inbox::{self, NotificationRow};
use crate::store::{self, Refused, delivery_rid, entry_actor_rid, job_rid, notification_rid, status_name};
use chrono::{DateTime, Utc};
use mosaic_api::content::PostMentioned;
use mosaic_api::interaction::{NotificationKind, NotifyUser};
use mosaic_api::notification::{Channel, Deliver, DeliveryStatus, NotificationType, NotifyMessage, SendEmail};
use mosaic_api::stream::{ConsumerSpec, DELIVERY_JOBS, EVENTS_POST, EVENTS_USER, NOTIFY_JOBS};
use mosaic_api::user::{Blocked, Followed, Muted, Relations, RelationsQuery};
use mosaic_api::ws::ServerFrame;
use mosaic_api::{Envelope, Event as _, EventSet as _, UserId};
use mosaic_mesh::db::is_conflict;
use mosaic_mesh::jetstream::{Delivery, HandlerError};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::WriteError;
use mosaic_mesh::{Ctx, Lifecycle, Mesh};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;

mosaic_api::event_set! {
    /// Notification jobs queued by other services.
    enum Job { Interaction(NotifyUser), Message(NotifyMessage), Email(SendEmail) }
}

mosaic_api::event_set! {
    /// Follows notify; blocks and mutes take the other side's entries out of the inbox.
    enum GraphEvent { Followed(Followed), Blocked(Blocked), Muted(Muted) }
}

/// Notification jobs queued by other services; with no filter, a job of an unknown kind is
/// parked rather than left in the queue.
const JOBS: ConsumerSpec = ConsumerSpec::new(&NOTIFY_JOBS, "notification-intake", &[]).in_flight(512);

const GRAPH: ConsumerSpec = ConsumerSpec::new(&EVENTS_USER, "notification-graph", GraphEvent::SUBJECTS);

/// Mentions in captions.
const MENTIONS: ConsumerSpec = ConsumerSpec::new(&EVENTS_POST, "notification-mentions", &[PostMentioned::SUBJECT]);

/// Starts the consumers that take notifications in, and the delivery workers.
pub(crate) async fn spawn(state: Arc<NotificationService>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    let jobs = state.clone();
    mesh.consume_events(JOBS, 16, lifecycle, move |_, e: Envelope<Job>| {
        let state = jobs.clone();
        async move { state.on_job(e).await }
    })
    .await?;
    let graph = state.clone();
    mesh.consume_events(GRAPH, 8, lifecycle, move |_, e: Envelope<GraphEvent>| {
        let state = graph.clone();
        async move { state.on_graph(e).await }
    })
    .await?;
    mesh.consume::<PostMentioned, _, _, _>(MENTIONS, 8, state.clone(), lifecycle, |state, _, e| async move {
        state.on_mention(e).await
    })
    .await?;
    let spec = ConsumerSpec::new(&DELIVERY_JOBS, "notification-delivery", &[])
        .retries(state.config.max_attempts, state.backoff)
        .ack_wait(Duration::from_secs(state.config.send_ack_wait_secs))
        .in_flight(1024);
    let senders = state.config.senders;
    mesh.consume_raw(spec, senders, lifecycle, move |d: Delivery| {
        let state = state.clone();
        async move { state.on_delivery(d, spec.max_deliver).await }
    })
    .await
}

fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

/// A notification to take in, whatever its source.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// The job's id (its event id): taking it in twice changes nothing.
    pub job: String,
    pub at: DateTime<Utc>,
    pub recipient: UserId,
    pub kind: NotificationType,
    pub actor: Option<UserId>,
    pub subject_id: String,
    /// Entries of the same kind and group within the window coalesce.
    pub group: String,
    pub post_id: Option<String>,
    pub comment_id: Option<String>,
    pub conversation_id: Option<String>,
    pub preview: Option<String>,
    /// Text of entries that carry their own.
    pub text: Option<String>,
    /// A composed email, sent instead of the generated one.
    pub email: Option<SendEmail>,
    /// Whether the entry belongs in the inbox at all.
    pub in_app: bool,
}

impl Incoming {
    fn about(job: String, at: DateTime<Utc>, recipient: UserId, kind: NotificationType, actor: UserId) -> Self {
        Self {
            job,
            at,
            recipient,
            kind,
            actor: Some(actor),
            subject_id: String::new(),
            group: String::new(),
            post_id: None,
            comment_id: None,
            conversation_id: None,
            preview: None,
            text: None,
            email: None,
            in_app: true,
        }
    }
}

impl NotificationService {
    async fn on_job(&self, job: Envelope<Job>) -> Result<(), HandlerError> {
        let (id, at) = (job.id, job.at);
        let incoming = match job.data {
            Job::Interaction(e) => {
                let kind = match e.kind {
                    NotificationKind::Like => NotificationType::Like,
                    NotificationKind::Comment | NotificationKind::Reply => NotificationType::Comment,
                    NotificationKind::Mention => NotificationType::Mention,
                };
                let post = e.post_id.to_string();
                let mut inc = Incoming::about(id.to_string(), at, e.recipient, kind, e.actor);
                inc.group = match kind {
                    // Every mention is its own entry: each points somewhere else.
                    NotificationType::Mention => e.comment_id.as_ref().map(|c| c.to_string()).unwrap_or(post.clone()),
                    _ => post.clone(),
                };
                inc.subject_id = post.clone();
                inc.post_id = Some(post);
                inc.comment_id = e.comment_id.map(|c| c.to_string());
                inc
            }
            Job::Message(e) => {
                let conversation = e.conversation_id.to_string();
                let mut inc = Incoming::about(id.to_string(), at, e.recipient, NotificationType::Message, e.actor);
                inc.group = conversation.clone();
                inc.subject_id = conversation.clone();
                inc.conversation_id = Some(conversation);
                inc.preview = Some(e.preview);
                inc
            }
            Job::Email(e) => Incoming {
                job: id.to_string(),
                at,
                recipient: e.recipient.clone(),
                kind: e.kind,
                actor: None,
                subject_id: e.subject_id.clone(),
                group: format!("email-{id}"),
                post_id: None,
                comment_id: None,
                conversation_id: None,
                preview: None,
                text: e.inbox_text.clone(),
                in_app: e.inbox_text.is_some(),
                email: Some(e),
            },
        };
        self.accept(incoming).await
    }

    async fn on_graph(&self, event: Envelope<GraphEvent>) -> Result<(), HandlerError> {
        match event.data {
            GraphEvent::Followed(e) => {
                let mut inc = Incoming::about(
                    event.id.to_string(),
                    event.at,
                    e.followee,
                    NotificationType::Follow,
                    e.follower.clone(),
                );
                inc.group = "followers".into();
                inc.subject_id = e.follower.to_string();
                self.accept(inc).await
            }
            GraphEvent::Blocked(e) => inbox::forget_actor(&self.db, &e.blocker, &e.blocked).await.map_err(transient),
            GraphEvent::Muted(e) => inbox::forget_actor(&self.db, &e.muter, &e.muted).await.map_err(transient),
        }
    }

    async fn on_mention(&self, e: Envelope<PostMentioned>) -> Result<(), HandlerError> {
        let post = e.data.post_id.to_string();
        let mut inc =
            Incoming::about(e.id.to_string(), e.at, e.data.mentioned, NotificationType::Mention, e.data.author);
        inc.group = post.clone();
        inc.subject_id = post.clone();
        inc.post_id = Some(post);
        self.accept(inc).await
    }

    /// Takes one notification in; see the module docs.
    pub(crate) async fn accept(&self, inc: Incoming) -> Result<(), HandlerError> {
        if inbox::job_seen(&self.db, &inc.job).await.map_err(transient)? {
            return Ok(());
        }
        let ctx = Ctx::new().with_timeout(Duration::from_secs(20));
        if let Some(actor) = &inc.actor {
            // Never for one's own actions; never from someone the recipient blocks, is
            // blocked by, or mutes.
            let unwanted = actor == &inc.recipient || {
                let relations = self
                    .mesh
                    .call::<Relations>(
                        &ctx,
                        &RelationsQuery { viewer: inc.recipient.clone(), others: vec![actor.clone()] },
                    )
                    .await
                    .map_err(transient)?;
                relations.iter().any(|r| r.relation.blocking || r.relation.blocked_by || r.relation.muting)
            };
            if unwanted {
                return inbox::mark_job_seen(&self.db, &inc.job).await.map_err(transient);
            }
        }
        let prefs = store::prefs(&self.db, &inc.recipient).await.map_err(transient)?;
        let channels = prefs.of(inc.kind);
        let quiet = prefs.quiet_hours.as_ref().and_then(|q| Window::parse(q).ok());
        let urgent = self.config.urgent_types.contains(&inc.kind);
        let id = self.entry_id(&inc);
        let actor_key = inc.actor.as_ref().map(|a| entry_actor_rid(&id, a));
        for _ in 0..16 {
            let (existing, counted) = inbox::coalescing(&self.db, &id, actor_key.as_ref()).await.map_err(transient)?;
            let now = Utc::now();
            let row = merge(existing.as_ref(), counted, &inc, &id, channels.in_app && inc.in_app, now);
            let fresh = existing.is_none();
            let mut deliveries = Vec::new();
            let mut events = Vec::new();
            let expires_at = inc.at + chrono::Duration::seconds(self.config.push_ttl_secs as i64);
            let mut add =
                |channel: Channel, status: DeliveryStatus, hold_until: Option<DateTime<Utc>>, email: Option<String>| {
                    deliveries.push(NewDelivery {
                        id: delivery_rid(&inc.job, channel),
                        row: DeliveryRow {
                            notification: id.clone(),
                            recipient: inc.recipient.to_string(),
                            channel: channel.as_str().to_owned(),
                            status: status_name(status).to_owned(),
                            attempts: 0,
                            detail: None,
                            urgent,
                            expires_at,
                            hold_until,
                            digest: None,
                            items: 0,
                            sent_devices: Vec::new(),
                            email,
                            created_at: now,
                            updated_at: now,
                        },
                    });
                    if status == DeliveryStatus::Queued && channel != Channel::InApp {
                        events.push(Staged::new(Deliver { job: inc.job.clone(), channel }));
                    }
                };
            add(Channel::InApp, if row.visible { DeliveryStatus::Sent } else { DeliveryStatus::Disabled }, None, None);
            if channels.push && inc.email.is_none() {
                match quiet.and_then(|w| (!urgent).then(|| w.hold_until(now)).flatten()) {
                    Some(until) => add(Channel::Push, DeliveryStatus::Held, Some(until), None),
                    None => add(Channel::Push, DeliveryStatus::Queued, None, None),
                }
            } else {
                add(Channel::Push, DeliveryStatus::Disabled, None, None);
            }
            // A coalesced update pushes again (replacing the device's copy), but emails once.
            if !channels.email {
                add(Channel::Email, DeliveryStatus::Disabled, None, None);
            } else if inc.email.is_some() || fresh {
                let composed = inc.email.as_ref().map(|e| serde_json::to_string(e).expect("emails serialize"));
                add(Channel::Email, DeliveryStatus::Queued, None, composed);
            }
            if row.visible {
                let authors = self.directory.authors(&ctx, &row.actor_ids()).await.map_err(transient)?;
                let frame = ServerFrame::Notification { notification: Box::new(row.wire(&authors)) };
                events.push(Staged::frame(&inc.recipient, frame));
            }
            let result = self
                .outbox
                .write(inbox::ACCEPT)
                .bind("job", job_rid(&inc.job))
                .bind("entry", notification_rid(&id))
                .bind("expected", existing.as_ref().map(|e| e.updated_at))
                .bind("row", row.content())
                .bind("actor_key", actor_key.clone())
                .bind("recipient", inc.recipient.to_string())
                .bind("actor", inc.actor.as_ref().map(|a| a.to_string()))
                .bind("deliveries", deliveries)
                .dispatch(events)
                // A moved entry or a conflict means reading the entry again.
                .once()
                .run::<Refused>()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(WriteError::Refused(Refused::JobSeen)) => return Ok(()),
                Err(WriteError::Refused(Refused::EntryMoved)) => continue,
                Err(WriteError::Failed(e)) if is_conflict(&e) => continue,
                Err(e) => return Err(transient(anyhow::Error::new(e).context("taking a notification in"))),
            }
        }
        Err(transient(anyhow::anyhow!("inbox entry {id} too contended")))
    }

    /// The entry a notification coalesces into: one per recipient, kind and group within
    /// each coalescing window.
    fn entry_id(&self, inc: &Incoming) -> String {
        let window = inc.at.timestamp().div_euclid(self.config.coalesce_window_secs as i64);
        let digest = Sha256::digest(format!("{}|{}|{}|{window}", inc.recipient, inc.kind.as_str(), inc.group));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("n-{hex}")
    }
}

/// The entry after taking `inc` in: a new one, or `existing` with the actor moved to the
/// front (counted once) and marked unread again.
fn merge(
    existing: Option<&NotificationRow>,
    counted: bool,
    inc: &Incoming,
    id: &str,
    visible: bool,
    now: DateTime<Utc>,
) -> NotificationRow {
    let actor = inc.actor.as_ref().map(|a| a.to_string());
    match existing {
        Some(e) => {
            let mut row = e.clone();
            if let Some(actor) = actor {
                row.actors.retain(|a| *a != actor);
                row.actors.insert(0, actor);
                row.actors.truncate(inbox::MAX_ACTORS);
                if !counted {
                    row.actor_count += 1;
                }
            }
            row.count += 1;
            row.subject_id = if inc.kind == NotificationType::Follow { inc.subject_id.clone() } else { row.subject_id };
            row.preview = inc.preview.clone().or(row.preview);
            row.comment_id = inc.comment_id.clone().or(row.comment_id);
            row.read = false;
            row.visible = row.visible || visible;
            row.updated_at = now.max(e.updated_at);
            row
        }
        None => NotificationRow {
            key: id.to_owned(),
            recipient: inc.recipient.to_string(),
            kind: inc.kind.as_str().to_owned(),
            actors: actor.into_iter().collect(),
            actor_count: i64::from(inc.actor.is_some()),
            count: 1,
            subject_id: inc.subject_id.clone(),
            post_id: inc.post_id.clone(),
            comment_id: inc.comment_id.clone(),
            conversation_id: inc.conversation_id.clone(),
            preview: inc.preview.clone(),
            text: inc.text.clone(),
            visible,
            read: false,
            created_at: now,
            updated_at: now,
        },
    }
}

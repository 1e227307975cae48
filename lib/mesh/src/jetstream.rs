//! JetStream: typed streams, buckets and durable consumers, created or updated idempotently
//! at start; event publishing with de-duplication ids; consumers with explicit acks,
//! redelivery backoff, and a dead-letter stream for what never succeeds.

use crate::client::Mesh;
use crate::ctx::Ctx;
use crate::service::Lifecycle;
use anyhow::{Context as _, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use mosaic_api::headers as h;
use mosaic_api::stream::{
    ConsumerSpec, DEAD_LETTERS, DLQ_REASON, DLQ_STREAM_SEQ, DLQ_SUBJECT, KvSpec, KvStorage, Retention, StreamSpec,
};
use mosaic_api::{Envelope, Event, EventSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Events [`Mesh::publish_batch`] sends before awaiting their acks: well under the client's
/// 5 000 ack permits, which every other publisher on the connection shares.
pub const PUBLISH_WINDOW: usize = 1024;

/// How a message handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a dependency was down, a conflict): redelivered with backoff until
    /// `max_deliver`, then dead-lettered.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
    /// Will never succeed (malformed, refers to nothing): dead-lettered at once.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Worth retrying, but not before the given delay (a provider's `Retry-After`); counts
    /// against `max_deliver` like a transient failure.
    #[error("retry after {0:?}: {1:#}")]
    RetryAfter(Duration, anyhow::Error),
}

/// A message delivered to a raw consumer handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// Its headers.
    pub headers: Option<HeaderMap>,
    /// Its body.
    pub payload: Bytes,
    /// 1 on the first delivery.
    pub attempt: i64,
}

/// Decodes a delivery into set `S`; the error is the reason a message is parked.
fn decode_set<S: EventSet>(d: &Delivery) -> Result<Envelope<S>, String> {
    match S::decode(&d.subject, &d.payload) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(format!("{} is not one of the events this consumer reads", d.subject)),
        Err(e) => Err(format!("undecodable {}: {e}", d.subject)),
    }
}

/// The replicas to declare a stream with: the configured count, but never fewer than it
/// already has (a process configured for one replica must not strip a cluster's copies).
fn replicas(configured: usize, existing: Option<usize>) -> usize {
    configured.max(1).max(existing.unwrap_or(0))
}

impl Mesh {
    /// The replicas to declare stream `name` with (see [`replicas`]).
    async fn replicas_for(&self, name: &str) -> usize {
        let existing = match self.jetstream().get_stream(name).await {
            Ok(mut stream) => stream.info().await.ok().map(|i| i.config.num_replicas),
            Err(_) => None,
        };
        replicas(self.config().replicas, existing)
    }

    /// Creates or updates a stream so it matches `spec`. Cheap after the first call.
    pub async fn ensure_stream(&self, spec: &'static StreamSpec) -> anyhow::Result<()> {
        self.check(crate::component::Use::Stream(spec))?;
        if self.ensured().lock().expect("ensured set poisoned").contains(spec.name) {
            return Ok(());
        }
        let config = stream::Config {
            name: spec.name.to_owned(),
            description: Some(spec.description.to_owned()),
            subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
            retention: match spec.retention {
                Retention::Limits => stream::RetentionPolicy::Limits,
                Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
            },
            // Events age out anyway; a job nobody did yet must not be dropped for space.
            discard: match spec.retention {
                Retention::Limits => stream::DiscardPolicy::Old,
                Retention::WorkQueue => stream::DiscardPolicy::New,
            },
            max_age: spec.max_age,
            max_bytes: self.config().stream_max_bytes,
            duplicate_window: spec.duplicate_window,
            storage: stream::StorageType::File,
            num_replicas: self.replicas_for(spec.name).await,
            ..Default::default()
        };
        self.jetstream()
            .create_or_update_stream(config)
            .await
            .map_err(|e| anyhow!("declaring stream {}: {e}", spec.name))?;
        self.ensured().lock().expect("ensured set poisoned").insert(spec.name);
        Ok(())
    }

    /// Opens a key-value bucket, creating or updating it to match `spec`; a
    /// [`KvStorage::Cache`] bucket holds at most `max_bytes` (the spec's when `None`).
    pub async fn kv(&self, spec: &'static KvSpec, max_bytes: Option<i64>) -> anyhow::Result<kv::Store> {
        self.check(crate::component::Use::Bucket(spec))?;
        let (storage, max_bytes) = match spec.storage {
            KvStorage::File => (stream::StorageType::File, self.config().bucket_max_bytes),
            KvStorage::Cache { max_bytes: default } => (stream::StorageType::Memory, max_bytes.unwrap_or(default)),
        };
        let config = kv::Config {
            bucket: spec.bucket.to_owned(),
            description: spec.description.to_owned(),
            history: spec.history,
            max_age: spec.max_age,
            max_bytes,
            storage,
            num_replicas: self.replicas_for(&format!("KV_{}", spec.bucket)).await,
            limit_markers: spec.per_key_ttl.then_some(Duration::from_secs(1)),
            ..Default::default()
        };
        let js = self.jetstream();
        let stream_name = format!("KV_{}", spec.bucket);
        let cache = matches!(spec.storage, KvStorage::Cache { .. });
        if cache && let Ok(mut existing) = js.get_stream(&stream_name).await {
            // The server cannot move a stream between disk and memory; a cache may start over.
            let found = existing.info().await.map(|i| i.config.storage).ok();
            if found.is_some_and(|found| found != storage) {
                tracing::warn!(bucket = spec.bucket, "recreating cache bucket with its new storage");
                js.delete_stream(&stream_name)
                    .await
                    .map_err(|e| anyhow!("deleting key-value bucket {} to recreate it: {e}", spec.bucket))?;
            }
        }
        let store = js
            .create_or_update_key_value(config)
            .await
            .map_err(|e| anyhow!("declaring key-value bucket {}: {e}", spec.bucket))?;
        if cache {
            // Key-value buckets refuse writes once full; a cache makes room instead.
            let mut info = store.stream.cached_info().config.clone();
            if info.discard != stream::DiscardPolicy::Old {
                info.discard = stream::DiscardPolicy::Old;
                js.update_stream(info)
                    .await
                    .map_err(|e| anyhow!("letting key-value bucket {} evict: {e}", spec.bucket))?;
            }
        }
        Ok(store)
    }

    /// Publishes an event and waits for JetStream to store it. The envelope id is the
    /// `Nats-Msg-Id`, so publishing the same envelope twice stores it once.
    pub async fn publish_event<E: Event>(&self, envelope: &Envelope<E>) -> anyhow::Result<()> {
        self.ensure_stream(E::STREAM).await?;
        let payload = serde_json::to_vec(envelope).context("encoding event")?;
        self.publish_with_id(E::SUBJECT, envelope.id.as_ref(), payload.into()).await
    }

    /// Publishes a stored message with its de-duplication id and waits for the ack.
    pub async fn publish_with_id(&self, subject: &str, msg_id: &str, payload: Bytes) -> anyhow::Result<()> {
        self.check(crate::component::Use::Publish(subject))?;
        let mut headers = HeaderMap::new();
        headers.insert(h::NATS_MSG_ID, msg_id);
        self.jetstream()
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .with_context(|| format!("publishing to {subject}"))?
            .await
            .with_context(|| format!("waiting for JetStream ack on {subject}"))?;
        Ok(())
    }

    /// Publishes many events, [`PUBLISH_WINDOW`] at a time: each window is sent before any
    /// of its acknowledgements is awaited, so a batch costs a few round trips rather than
    /// one per event. Fails if any was not stored.
    ///
    /// Not "send all, then await all acks": every unacknowledged publish holds one of the
    /// connection's 5 000 ack permits until its ack is read, so a batch bigger than the
    /// free permits would wait for one forever.
    pub async fn publish_batch<E: Event>(&self, envelopes: &[Envelope<E>]) -> anyhow::Result<()> {
        for window in envelopes.chunks(PUBLISH_WINDOW) {
            let acks = window.iter().map(|envelope| self.publish_envelope(envelope));
            for result in futures::future::join_all(acks).await {
                result?;
            }
        }
        Ok(())
    }

    async fn publish_envelope<E: Event>(&self, envelope: &Envelope<E>) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(envelope).context("encoding event")?;
        self.publish_with_id(E::SUBJECT, envelope.id.as_ref(), payload.into()).await
    }

    /// Consumes events of type `E` from a durable consumer: each envelope goes to `handler`;
    /// success acks, [`HandlerError::Transient`] redelivers with the spec's backoff,
    /// [`HandlerError::Permanent`] (or an undecodable message, or the last allowed delivery)
    /// parks the message in the dead-letter stream.
    pub async fn consume<E, S, F, Fut>(
        &self,
        spec: ConsumerSpec,
        concurrency: usize,
        state: Arc<S>,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        E: Event,
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Ctx, Envelope<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.consume_raw(spec, concurrency, lifecycle, move |delivery: Delivery| {
            let handler = handler.clone();
            let state = state.clone();
            async move {
                let envelope: Envelope<E> = serde_json::from_slice(&delivery.payload)
                    .map_err(|e| HandlerError::Permanent(format!("undecodable {}: {e}", E::SUBJECT)))?;
                let ctx = Ctx::from_headers(delivery.headers.as_ref()).0.with_timeout(spec.ack_wait);
                handler(state, ctx, envelope).await
            }
        })
        .await
    }

    /// Consumes the events of set `S` (one enum over several event types, see
    /// [`mosaic_api::event_set!`]): each decoded envelope goes to `handler`, with the
    /// publisher's context. A message outside the set (the consumer's filter should be the
    /// set's subjects) or undecodable is parked in the dead-letter stream; the handler's
    /// result is treated as in [`Mesh::consume`].
    pub async fn consume_events<S, F, Fut>(
        &self,
        spec: ConsumerSpec,
        concurrency: usize,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        S: EventSet,
        F: Fn(Ctx, Envelope<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.consume_raw(spec, concurrency, lifecycle, move |d: Delivery| {
            let work = decode_set::<S>(&d).map(|e| {
                let ctx = Ctx::from_headers(d.headers.as_ref()).0.with_timeout(spec.ack_wait);
                handler(ctx, e)
            });
            async move { work.map_err(HandlerError::Permanent)?.await }
        })
        .await
    }

    /// [`Mesh::consume_batches`] over the events of set `S`: the handler gets each batch's
    /// decoded events with their positions in the batch, and returns the positions it
    /// rejects. Undecodable messages and messages outside the set are rejected (parked)
    /// without reaching it.
    pub async fn consume_event_batches<S, F, Fut>(
        &self,
        spec: ConsumerSpec,
        batch: usize,
        linger: Duration,
        in_flight: usize,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        S: EventSet,
        F: Fn(Vec<(usize, Envelope<S>)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<(usize, String)>, HandlerError>> + Send + 'static,
    {
        self.consume_batches(spec, batch, linger, in_flight, lifecycle, move |deliveries: Vec<Delivery>| {
            let mut events = Vec::with_capacity(deliveries.len());
            let mut rejected = Vec::new();
            for (i, d) in deliveries.iter().enumerate() {
                match decode_set::<S>(d) {
                    Ok(e) => events.push((i, e)),
                    Err(reason) => rejected.push((i, reason)),
                }
            }
            let handled = handler(events);
            async move {
                rejected.extend(handled.await?);
                Ok(rejected)
            }
        })
        .await
    }

    /// Like [`Mesh::consume`], for consumers that dispatch on the subject themselves.
    pub async fn consume_raw<F, Fut>(
        &self,
        spec: ConsumerSpec,
        concurrency: usize,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let consumer = self.durable_consumer(&spec).await?;
        let mesh = self.clone();
        let handler = Arc::new(handler);
        let groups = Grouping { pull: None, size: 1, linger: Duration::ZERO, in_flight: concurrency };
        pull_loop(consumer, spec, groups, lifecycle, move |mut messages| {
            let (mesh, handler) = (mesh.clone(), handler.clone());
            async move {
                if let Some(message) = messages.pop() {
                    process(&mesh, spec, message, handler.as_ref()).await;
                }
            }
        });
        Ok(())
    }

    /// Consumes in batches, for handlers that write many messages at once (a warehouse
    /// writing files): up to `batch` messages, or what arrived within `linger`, go to
    /// `handler` together; on success every message is acknowledged, except those the
    /// handler rejects, which are parked in the dead-letter stream. A failed batch is
    /// redelivered whole (handlers must tolerate seeing messages again). Up to `in_flight`
    /// batches are handled at once, so reading continues while a batch is being written.
    pub async fn consume_batches<F, Fut>(
        &self,
        spec: ConsumerSpec,
        batch: usize,
        linger: Duration,
        in_flight: usize,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<(usize, String)>, HandlerError>> + Send + 'static,
    {
        let consumer = self.durable_consumer(&spec).await?;
        let mesh = self.clone();
        let handler = Arc::new(handler);
        let batch = batch.max(1);
        let groups = Grouping { pull: Some(batch.min(10_000)), size: batch, linger, in_flight };
        pull_loop(consumer, spec, groups, lifecycle, move |chunk| {
            let (mesh, handler) = (mesh.clone(), handler.clone());
            async move { process_batch(&mesh, spec, chunk, handler.as_ref()).await }
        });
        Ok(())
    }

    /// The durable pull consumer `spec` declares, its stream and the dead-letter stream
    /// created first.
    async fn durable_consumer(&self, spec: &ConsumerSpec) -> anyhow::Result<consumer::PullConsumer> {
        self.ensure_stream(spec.stream).await?;
        self.ensure_stream(&DEAD_LETTERS).await?;
        let stream = self
            .jetstream()
            .get_stream(spec.stream.name)
            .await
            .map_err(|e| anyhow!("opening stream {}: {e}", spec.stream.name))?;
        let config = consumer::pull::Config {
            durable_name: Some(spec.durable.to_owned()),
            filter_subjects: spec.filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| anyhow!("declaring consumer {} on {}: {e}", spec.durable, spec.stream.name))
    }
}

/// How a pull loop groups messages for its handler.
#[derive(Debug, Clone, Copy)]
struct Grouping {
    /// Messages asked of the server per pull request (`None`: the client's default).
    pull: Option<usize>,
    /// Most messages in one group.
    size: usize,
    /// How long a group waits for more after its first message.
    linger: Duration,
    /// Most groups handled at once.
    in_flight: usize,
}

/// Reads `consumer` until shutdown, hands each group of messages to `dispatch` on a task of
/// its own, at most `in_flight` at once. A failed pull is retried after a second. An
/// aborted instance leaves its messages unacknowledged, as a crashed process would;
/// JetStream redelivers them after `ack_wait`.
fn pull_loop<D, Fut>(
    consumer: consumer::PullConsumer,
    spec: ConsumerSpec,
    groups: Grouping,
    lifecycle: &Lifecycle,
    dispatch: D,
) where
    D: Fn(Vec<jetstream::Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let inner = lifecycle.clone();
    let shutdown = lifecycle.shutdown().clone();
    lifecycle.spawn(async move {
        let limit = Arc::new(Semaphore::new(groups.in_flight.max(1)));
        loop {
            let mut request = consumer.stream().heartbeat(Duration::from_secs(15));
            if let Some(pull) = groups.pull {
                request = request.max_messages_per_batch(pull);
            }
            let messages = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = request.messages() => m,
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(consumer = spec.durable, error = %e, "pull subscription failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                // The first message of a group waits as long as it takes; the rest at most
                // `linger` after it.
                let first = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = messages.next() => next,
                };
                let first = match first {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(consumer = spec.durable, error = %e, "pull error");
                        continue;
                    }
                    None => break,
                };
                let mut group = vec![first];
                let until = tokio::time::Instant::now() + groups.linger;
                while group.len() < groups.size {
                    match tokio::time::timeout_at(until, messages.next()).await {
                        Ok(Some(Ok(m))) => group.push(m),
                        Ok(Some(Err(e))) => tracing::debug!(consumer = spec.durable, error = %e, "pull error"),
                        Ok(None) | Err(_) => break,
                    }
                }
                let Ok(permit) = limit.clone().acquire_owned().await else { return };
                let handled = dispatch(group);
                let aborted = inner.aborted().clone();
                inner.spawn(async move {
                    tokio::select! {
                        _ = handled => {}
                        _ = aborted.cancelled() => {}
                    }
                    drop(permit);
                });
            }
        }
    });
}

async fn process<F, Fut>(mesh: &Mesh, spec: ConsumerSpec, message: jetstream::Message, handler: &F)
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let (attempt, stream_seq) = match message.info() {
        Ok(info) => (info.delivered, info.stream_sequence),
        Err(_) => (1, 0),
    };
    let delivery = Delivery {
        subject: message.subject.to_string(),
        headers: message.headers.clone(),
        payload: message.payload.clone(),
        attempt,
    };
    // Long handlers keep their delivery: tell the server we're still on it.
    let keepalive = async {
        let mut tick = tokio::time::interval(spec.ack_wait / 2);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = message.ack_with(AckKind::Progress).await;
        }
    };
    let outcome = tokio::select! {
        r = handler(delivery) => r,
        _ = keepalive => unreachable!("keepalive never ends"),
    };
    let result = match outcome {
        Ok(()) => message.ack().await,
        Err(HandlerError::RetryAfter(delay, e)) if attempt < spec.max_deliver => {
            let delay = delay.max(backoff_for(&spec, attempt) / 2);
            tracing::warn!(consumer = spec.durable, attempt, error = format!("{e:#}"), ?delay, "told to retry later");
            message.ack_with(AckKind::Nak(Some(delay))).await
        }
        Err(HandlerError::Transient(e)) if attempt < spec.max_deliver => {
            let delay = backoff_for(&spec, attempt);
            tracing::warn!(
                consumer = spec.durable,
                attempt,
                error = format!("{e:#}"),
                ?delay,
                "handler failed; will retry"
            );
            message.ack_with(AckKind::Nak(Some(delay))).await
        }
        Err(err) => {
            let reason = match &err {
                HandlerError::Transient(e) | HandlerError::RetryAfter(_, e) => {
                    format!("gave up after {attempt} attempts: {e:#}")
                }
                HandlerError::Permanent(r) => r.clone(),
            };
            tracing::error!(consumer = spec.durable, attempt, %reason, "parking message in dead letters");
            match dead_letter(mesh, &spec, &message, stream_seq, &reason).await {
                Ok(()) => message.ack_with(AckKind::Term).await,
                Err(e) => {
                    // Never drop a message we could not park: let it come back later.
                    tracing::error!(error = format!("{e:#}"), "dead-lettering failed");
                    message.ack_with(AckKind::Nak(Some(backoff_for(&spec, attempt)))).await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(consumer = spec.durable, error = %e, "acknowledgement failed; the message will be redelivered");
    }
}

/// The spec's delay for this attempt, with ±20 % jitter so messages that failed together
/// (a provider outage) don't all come back at the same instant.
async fn process_batch<F, Fut>(mesh: &Mesh, spec: ConsumerSpec, messages: Vec<jetstream::Message>, handler: &F)
where
    F: Fn(Vec<Delivery>) -> Fut,
    Fut: Future<Output = Result<Vec<(usize, String)>, HandlerError>>,
{
    let deliveries: Vec<Delivery> = messages
        .iter()
        .map(|m| Delivery {
            subject: m.subject.to_string(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            attempt: m.info().map(|i| i.delivered).unwrap_or(1),
        })
        .collect();
    let attempt = deliveries.iter().map(|d| d.attempt).max().unwrap_or(1);
    let keepalive = async {
        let mut tick = tokio::time::interval(spec.ack_wait / 2);
        tick.tick().await;
        loop {
            tick.tick().await;
            for m in &messages {
                let _ = m.ack_with(AckKind::Progress).await;
            }
        }
    };
    let outcome = tokio::select! {
        r = handler(deliveries) => r,
        _ = keepalive => unreachable!("keepalive never ends"),
    };
    match outcome {
        Ok(rejected) => {
            let rejected: std::collections::HashMap<usize, String> = rejected.into_iter().collect();
            for (i, message) in messages.iter().enumerate() {
                let result = match rejected.get(&i) {
                    Some(reason) => {
                        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                        match dead_letter(mesh, &spec, message, seq, reason).await {
                            Ok(()) => message.ack_with(AckKind::Term).await,
                            Err(e) => {
                                tracing::error!(error = format!("{e:#}"), "dead-lettering failed");
                                message.ack_with(AckKind::Nak(Some(backoff_for(&spec, attempt)))).await
                            }
                        }
                    }
                    None => message.ack().await,
                };
                if let Err(e) = result {
                    tracing::warn!(consumer = spec.durable, error = %e, "acknowledgement failed; the message will be redelivered");
                }
            }
        }
        Err(err) if attempt >= spec.max_deliver || matches!(err, HandlerError::Permanent(_)) => {
            let reason = format!("batch gave up after {attempt} attempts: {err}");
            tracing::error!(consumer = spec.durable, size = messages.len(), %reason, "parking a batch in dead letters");
            for message in &messages {
                let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                let result = match dead_letter(mesh, &spec, message, seq, &reason).await {
                    Ok(()) => message.ack_with(AckKind::Term).await,
                    Err(_) => message.ack_with(AckKind::Nak(Some(backoff_for(&spec, attempt)))).await,
                };
                let _ = result;
            }
        }
        Err(err) => {
            let delay = match &err {
                HandlerError::RetryAfter(d, _) => *d,
                _ => backoff_for(&spec, attempt),
            };
            tracing::warn!(consumer = spec.durable, attempt, size = messages.len(), error = %err, ?delay, "batch failed; will retry");
            for message in &messages {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }
}

fn backoff_for(spec: &ConsumerSpec, attempt: i64) -> Duration {
    let idx = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    let base = spec.backoff.get(idx).or(spec.backoff.last()).copied().unwrap_or(Duration::from_secs(1));
    base.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

async fn dead_letter(
    mesh: &Mesh,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    stream_seq: u64,
    reason: &str,
) -> anyhow::Result<()> {
    let mut headers = message.headers.clone().unwrap_or_default();
    // The original id would make JetStream drop this as a duplicate of nothing in DEAD_LETTERS
    // only within the window; a dead-letter id of its own keeps re-parking idempotent.
    headers.insert(h::NATS_MSG_ID, format!("{}-{}-{}", spec.stream.name, spec.durable, stream_seq).as_str());
    headers.insert(DLQ_REASON, truncate(reason, 1024).as_str());
    headers.insert(DLQ_SUBJECT, message.subject.as_str());
    headers.insert(DLQ_STREAM_SEQ, stream_seq.to_string().as_str());
    let subject = format!("dlq.{}.{}", spec.stream.name, spec.durable);
    mesh.check(crate::component::Use::Publish(&subject))?;
    mesh.jetstream().publish_with_headers(subject, headers, message.payload.clone()).await?.await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    // Header values must be single-line.
    let s: String = s.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::replicas;

    #[test]
    fn declaring_never_shrinks_a_streams_replicas() {
        assert_eq!(replicas(1, None), 1, "a new stream gets the configured count");
        assert_eq!(replicas(3, Some(1)), 3, "more replicas are added");
        assert_eq!(replicas(1, Some(3)), 3, "a process configured for one keeps a cluster's three");
        assert_eq!(replicas(0, None), 1, "never zero");
    }
}

//! Serving typed endpoints through the NATS micro service API.
//!
//! Every instance of a service joins the same queue group, so requests spread across
//! instances and `$SRV.PING|INFO|STATS` discover each one. A service serves on a connection of
//! its own: stopping drains it (the server stops routing to this instance, requests already
//! on the wire are still delivered and answered) before the instance goes away, so a scale-down
//! or rolling restart fails no request.

use crate::client::Mesh;
use crate::ctx::Ctx;
use crate::error::ServiceError;
use crate::local::{AnyEndpoint, Gate, LocalEndpoint, Registry, rpc_span, run};
use anyhow::Context as _;
use async_nats::service::{self, ServiceExt};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use mosaic_api::headers as h;
use mosaic_api::{ApiError, Endpoint, ErrorCode};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Requests one instance works on at once; more wait in the subscription buffer, which is
/// the backpressure NATS expects.
const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// How long a stopping instance waits for in-flight requests.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

trait Handler<S>: Send + Sync {
    fn call(&self, state: Arc<S>, ctx: Ctx, payload: Bytes) -> BoxFuture<Result<Bytes, ServiceError>>;
}

struct Typed<E, F> {
    f: Arc<F>,
    _endpoint: PhantomData<fn() -> E>,
}

impl<S, E, F, Fut> Handler<S> for Typed<E, F>
where
    S: Send + Sync + 'static,
    E: Endpoint,
    F: Fn(Arc<S>, Ctx, E::Request) -> Fut + Send + Sync,
    Fut: Future<Output = Result<E::Reply, ServiceError>> + Send + 'static,
{
    fn call(&self, state: Arc<S>, ctx: Ctx, payload: Bytes) -> BoxFuture<Result<Bytes, ServiceError>> {
        let request: E::Request = match serde_json::from_slice(&payload) {
            Ok(r) => r,
            Err(e) => {
                let err = ApiError::new(ErrorCode::BadRequest, format!("invalid request for {}: {e}", E::SUBJECT));
                return Box::pin(std::future::ready(Err(err.into())));
            }
        };
        let fut = (self.f)(state, ctx, request);
        Box::pin(async move {
            let reply = fut.await?;
            let body = serde_json::to_vec(&reply).context("encoding reply")?;
            Ok(Bytes::from(body))
        })
    }
}

struct Registered<S> {
    name: &'static str,
    subject: &'static str,
    handler: Arc<dyn Handler<S>>,
    /// The same handler for calls from this process (see [`crate::local`]).
    local: Box<dyn FnOnce(Arc<S>, Gate) -> AnyEndpoint + Send>,
}

/// Builds a service: its name, version and endpoints, each handled by a function of the
/// shared state `S`.
pub struct ServiceBuilder<S> {
    mesh: Mesh,
    name: &'static str,
    description: String,
    state: Arc<S>,
    endpoints: Vec<Registered<S>>,
    max_in_flight: usize,
    /// The subjects the component declares it serves (see [`crate::component`]).
    declared: Option<&'static [&'static str]>,
}

impl Mesh {
    /// Starts describing service `name` whose handlers share `state`.
    pub fn service<S: Send + Sync + 'static>(
        &self,
        name: &'static str,
        description: impl Into<String>,
        state: Arc<S>,
    ) -> ServiceBuilder<S> {
        ServiceBuilder {
            mesh: self.clone(),
            name,
            description: description.into(),
            state,
            endpoints: Vec::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            declared: None,
        }
    }
}

impl<S: Send + Sync + 'static> ServiceBuilder<S> {
    /// Serves endpoint `E` with `handler`.
    ///
    /// # Panics
    /// If `E` belongs to another service: a wiring mistake that must not reach production.
    pub fn endpoint<E, F, Fut>(mut self, _endpoint: E, handler: F) -> Self
    where
        E: Endpoint,
        F: Fn(Arc<S>, Ctx, E::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Reply, ServiceError>> + Send + 'static,
    {
        assert_eq!(E::SERVICE, self.name, "{} registered on service {}", E::SUBJECT, self.name);
        let f = Arc::new(handler);
        self.endpoints.push(Registered {
            name: E::NAME,
            subject: E::SUBJECT,
            handler: Arc::new(Typed::<E, F> { f: f.clone(), _endpoint: PhantomData }),
            local: Box::new(move |state, gate| Arc::new(LocalEndpoint::<E>::new(state, f, gate))),
        });
        self
    }

    /// Caps how many requests this instance handles at once.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Holds the service to the endpoints its component declares: [`Self::start`] fails if
    /// the registered set differs, so the declaration other tools read cannot drift.
    pub fn declared(mut self, subjects: &'static [&'static str]) -> Self {
        self.declared = Some(subjects);
        self
    }

    /// Registers with the micro service API and starts serving.
    pub async fn start(self) -> anyhow::Result<RpcServer> {
        if let Some(declared) = self.declared {
            let served: std::collections::BTreeSet<&str> = self.endpoints.iter().map(|e| e.subject).collect();
            let declared: std::collections::BTreeSet<&str> = declared.iter().copied().collect();
            if served != declared {
                anyhow::bail!(
                    "service {} serves undeclared endpoints {:?} and lacks declared ones {:?}",
                    self.name,
                    served.difference(&declared).collect::<Vec<_>>(),
                    declared.difference(&served).collect::<Vec<_>>()
                );
            }
        }
        let client = self.mesh.connect_dedicated(&format!("{}-rpc", self.name)).await?;
        let service = client
            .service_builder()
            .description(self.description)
            .queue_group(format!("mosaic.{}", self.name))
            .start(self.name, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| anyhow::anyhow!("starting micro service {}: {e}", self.name))?;
        let group = service.group(mosaic_api::endpoint::group(self.name));
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(self.max_in_flight));
        let draining = Arc::new(tokio::sync::RwLock::new(false));
        let mut loops = Vec::with_capacity(self.endpoints.len());
        let mut local = Vec::with_capacity(self.endpoints.len());
        for registered in self.endpoints {
            if self.mesh.local_calls().is_some() {
                let gate = Gate { limit: limit.clone(), tracker: tracker.clone() };
                local.push((registered.subject, (registered.local)(self.state.clone(), gate)));
            }
            let endpoint = group
                .endpoint_builder()
                .name(registered.name)
                .add(registered.name)
                .await
                .map_err(|e| anyhow::anyhow!("adding endpoint {}: {e}", registered.name))?;
            loops.push(tokio::spawn(serve_endpoint(
                endpoint,
                registered.handler,
                self.state.clone(),
                limit.clone(),
                tracker.clone(),
                Responder { mesh: self.mesh.clone(), draining: draining.clone() },
            )));
        }
        // Make sure the subscriptions exist on the server before callers are told we're up.
        client.flush().await.context("flushing service subscriptions")?;
        // Only a started instance takes local calls (a failed start leaves nothing behind).
        let instance = Registry::instance_id();
        if let Some(registry) = self.mesh.local_calls() {
            for (subject, endpoint) in local {
                registry.add(instance, subject, endpoint);
            }
        }
        tracing::info!(service = self.name, "serving");
        Ok(RpcServer {
            name: self.name,
            instance,
            client,
            _service: service,
            loops,
            tracker,
            draining,
            mesh: self.mesh,
        })
    }
}

async fn serve_endpoint<S: Send + Sync + 'static>(
    mut endpoint: service::endpoint::Endpoint,
    handler: Arc<dyn Handler<S>>,
    state: Arc<S>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    responder: Responder,
) {
    while let Some(request) = endpoint.next().await {
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let handler = handler.clone();
        let state = state.clone();
        let responder = responder.clone();
        tracker.spawn(async move {
            handle(request, handler, state, responder).await;
            drop(permit);
        });
    }
}

/// Sends replies: on the service connection (so `$SRV.STATS` counts them) until a drain
/// starts, then on the process's main connection.
///
/// A publish queued on a connection that is finishing its drain can be dropped without an
/// error, so no reply may be queued there once the drain has begun: repliers hold the read
/// side of `draining` while they queue, and [`RpcServer::stop`] takes the write side to flip
/// it before it asks for the drain.
#[derive(Clone)]
struct Responder {
    mesh: Mesh,
    draining: Arc<tokio::sync::RwLock<bool>>,
}

async fn handle<S>(request: service::Request, handler: Arc<dyn Handler<S>>, state: Arc<S>, responder: Responder) {
    let ctx = match crate::identity::receive(&responder.mesh, request.message.headers.as_ref()).await {
        Ok(ctx) => ctx,
        Err(refused) => return respond(&request, Err(refused), &responder).await,
    };
    let subject = &request.message.subject;
    if ctx.expired() {
        // The caller has given up; doing the work would only add load.
        tracing::debug!(%subject, "dropping request received after its deadline");
        return;
    }
    let span = rpc_span(subject, &ctx);
    let remaining = ctx.remaining();
    let result = run(&span, remaining, handler.call(state, ctx, request.message.payload.clone()))
        .await
        .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Timeout, "the deadline passed while handling the request")));
    respond(&request, result, &responder).await;
}

async fn respond(request: &service::Request, result: Result<Bytes, ApiError>, responder: &Responder) {
    let Some(reply) = request.message.reply.clone() else { return };
    let (payload, micro, headers) = match result {
        Ok(body) => (body.clone(), Ok(body), HeaderMap::new()),
        Err(e) => {
            let mut headers = HeaderMap::new();
            headers.insert(h::ERROR_CODE, e.code.as_str());
            if let Some(secs) = e.retry_after {
                headers.insert(h::RETRY_AFTER, secs.to_string().as_str());
            }
            let micro = service::error::Error { status: e.detail.clone(), code: e.status() as usize };
            (Bytes::new(), Err(micro), headers)
        }
    };
    {
        let draining = responder.draining.read().await;
        if !*draining && request.respond_with_headers(micro.clone(), headers.clone()).await.is_ok() {
            return;
        }
    }
    // The service connection is draining: answer on the process's main connection, so a
    // request accepted during shutdown still gets its reply.
    let mut headers = headers;
    let payload = match micro {
        Ok(body) => body,
        Err(e) => {
            headers.insert(h::NATS_SERVICE_ERROR, e.status.as_str());
            headers.insert(h::NATS_SERVICE_ERROR_CODE, e.code.to_string().as_str());
            payload
        }
    };
    if let Err(e) = responder.mesh.client().publish_with_headers(reply, headers, payload).await {
        tracing::warn!(error = %e, "could not deliver reply");
    }
}

/// A running set of endpoints; see [`RpcServer::stop`].
pub struct RpcServer {
    name: &'static str,
    /// Its registrations for local calls.
    instance: u64,
    client: Client,
    // Keeps the micro service (its PING/INFO/STATS responder) alive for as long as we serve.
    _service: service::Service,
    loops: Vec<JoinHandle<()>>,
    tracker: TaskTracker,
    draining: Arc<tokio::sync::RwLock<bool>>,
    mesh: Mesh,
}

impl Drop for RpcServer {
    /// An instance dropped without `stop` (a failed start's caller, a panic) takes no more
    /// local calls either.
    fn drop(&mut self) {
        self.withdraw_local();
    }
}

impl RpcServer {
    fn withdraw_local(&self) {
        if let Some(registry) = self.mesh.local_calls() {
            registry.remove(self.instance);
        }
    }

    /// Vanishes without draining (see [`ServiceHandle::abort`]).
    pub fn abort(self) {
        self.withdraw_local();
        for l in &self.loops {
            l.abort();
        }
    }

    /// Stops taking requests, answers every request already received, then returns.
    pub async fn stop(mut self) {
        // Local callers go to the wire from now on (another instance, or no responders);
        // local calls already running hold the tracker open like wire requests do.
        self.withdraw_local();
        *self.draining.write().await = true;
        if let Err(e) = self.client.drain().await {
            tracing::warn!(service = self.name, error = %e, "drain failed");
        }
        for l in std::mem::take(&mut self.loops) {
            let _ = l.await;
        }
        self.tracker.close();
        if tokio::time::timeout(DRAIN_GRACE, self.tracker.wait()).await.is_err() {
            tracing::warn!(service = self.name, "in-flight requests outlived the drain grace period");
        }
        // Replies sent on the main connection must leave the process before we say we're done.
        if let Err(e) = self.mesh.flush().await {
            tracing::debug!(service = self.name, error = format!("{e:#}"), "flush after drain failed");
        }
        tracing::info!(service = self.name, "stopped serving");
    }
}

/// The lifetime of one service instance's background work (consumers, relays, schedulers).
///
/// `shutdown` asks work to stop taking new items and finish what it holds; `abort` tells it
/// to drop what it holds, unacknowledged, as a crashed process would (JetStream then
/// redelivers to another instance).
#[derive(Clone, Default)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    abort: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle").field("stopping", &self.shutdown.is_cancelled()).finish()
    }
}

impl Lifecycle {
    /// A fresh lifecycle.
    pub fn new() -> Self {
        Self::default()
    }
    /// Cancelled when the instance stops gracefully (and when it is aborted).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
    /// Cancelled when the instance is aborted.
    pub fn aborted(&self) -> &CancellationToken {
        &self.abort
    }
    /// Runs `task` as part of the instance; stopping waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Runs `run` every `period` until the instance stops, the first time as `first` says.
    /// A run that overruns its period delays the next rather than causing a burst.
    pub fn every<F, Fut>(&self, period: Duration, first: FirstRun, mut run: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.spawn(async move {
            let start = match first {
                FirstRun::Now => tokio::time::Instant::now(),
                FirstRun::AfterPeriod => tokio::time::Instant::now() + period,
            };
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => run().await,
                }
            }
        });
    }
}

/// When [`Lifecycle::every`] first runs its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// As the instance starts.
    Now,
    /// One period after it started.
    AfterPeriod,
}

/// The uniform handle of a running service instance: its endpoints and its background
/// work, stopped together.
pub struct ServiceHandle {
    name: &'static str,
    rpc: Option<RpcServer>,
    lifecycle: Lifecycle,
}

impl ServiceHandle {
    /// Wraps a started service whose background work runs under `lifecycle`.
    pub fn new(name: &'static str, rpc: Option<RpcServer>, lifecycle: Lifecycle) -> Self {
        Self { name, rpc, lifecycle }
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Drains the endpoints, then stops background work and waits for it.
    pub async fn stop(self) {
        if let Some(rpc) = self.rpc {
            rpc.stop().await;
        }
        self.lifecycle.shutdown.cancel();
        self.lifecycle.tasks.close();
        if tokio::time::timeout(DRAIN_GRACE, self.lifecycle.tasks.wait()).await.is_err() {
            tracing::warn!(service = self.name, "background tasks outlived the grace period");
        }
    }

    /// Stops at once, as a crash would: endpoints vanish without draining and work in
    /// progress is dropped unacknowledged. For failure testing and emergency stops.
    pub async fn abort(self) {
        self.lifecycle.abort.cancel();
        self.lifecycle.shutdown.cancel();
        if let Some(rpc) = self.rpc {
            rpc.abort();
        }
        self.lifecycle.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.lifecycle.tasks.wait()).await;
    }
}

//! Calls to a service that the calling process serves itself skip the wire.
//!
//! `mosaic up` runs every service and the edge in one process on one [`Mesh`]. Without this,
//! a home-feed read would be encoded to JSON, sent through the NATS server and decoded four
//! times over (edge to feed, feed to interaction and content, content to interaction), for
//! nothing: at 1 000 requests/s that traffic was a third of the NATS server's CPU and a
//! fifth of the process's. With `nats.local_calls` on (the default), a service registers its
//! endpoints with the mesh it was started on, and [`Mesh::call`] through that mesh (or any
//! clone of it) hands the typed request straight to the handler.
//!
//! The contract is the wire's: the callee sees the caller's context as a child span with the
//! same deadline and identity; it is refused once the deadline has passed; an internal
//! failure or a panic reaches the caller as `internal` and is logged on the callee's span;
//! the handler runs as a task of the instance, so a caller that goes away does not cancel
//! it; the instance's `max_in_flight` bounds wire and local requests together; stopping an
//! instance withdraws its local endpoints before the drain and waits for local calls in
//! flight as it waits for wire ones. Several instances of one service on one mesh (tests do
//! this) take local calls in turn. What differs: `$SRV.STATS` counts only requests that came
//! over NATS, and replies are not bound by the server's `max_payload`.
//!
//! Other processes still reach these endpoints over NATS, and the endpoints are still served
//! there, so a deployment that runs services apart changes nothing.

use crate::ctx::Ctx;
use crate::error::{CallError, ServiceError};
use futures::FutureExt as _;
use mosaic_api::{ApiError, Endpoint};
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument as _;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Serve<E> =
    dyn Fn(Ctx, <E as Endpoint>::Request) -> BoxFuture<Result<<E as Endpoint>::Reply, ServiceError>> + Send + Sync;

/// What a running instance shares between its wire and local requests.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) tracker: TaskTracker,
}

/// One endpoint of one instance, callable in process.
pub(crate) struct LocalEndpoint<E: Endpoint> {
    serve: Box<Serve<E>>,
    gate: Gate,
}

impl<E: Endpoint> LocalEndpoint<E> {
    pub(crate) fn new<F, Fut, S>(state: Arc<S>, f: Arc<F>, gate: Gate) -> Self
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Ctx, E::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Reply, ServiceError>> + Send + 'static,
    {
        Self { serve: Box::new(move |ctx, req| Box::pin(f(state.clone(), ctx, req))), gate }
    }

    /// Counts a call in on the instance, so a stop that has begun waiting for its calls in
    /// flight waits for this one too; `None` once the instance is stopping (the caller then
    /// takes the wire, to another instance).
    pub(crate) fn enter(&self) -> Option<TaskTrackerToken> {
        let token = self.gate.tracker.token();
        (!self.gate.tracker.is_closed()).then_some(token)
    }

    /// Runs the handler on behalf of `ctx`, as a request over the wire would.
    pub(crate) async fn call(
        self: Arc<Self>,
        entered: TaskTrackerToken,
        ctx: &Ctx,
        req: E::Request,
    ) -> Result<E::Reply, CallError> {
        let remaining = ctx.remaining();
        if remaining.is_zero() {
            return Err(CallError::Timeout);
        }
        // A wire request past the limit waits in the subscription; this one waits here, as
        // long as its deadline allows.
        let permit = match tokio::time::timeout(remaining, self.gate.limit.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(CallError::NoResponders),
            Err(_) => return Err(CallError::Timeout),
        };
        let callee = ctx.for_callee();
        // A task of the instance, as a wire request gets: a caller that goes away (a client
        // hanging up on the edge) does not cancel the handler halfway through its writes, and
        // a stopping instance waits for it.
        let tracker = self.gate.tracker.clone();
        let task = tracker.spawn(async move {
            let span = rpc_span(E::SUBJECT, &callee);
            let remaining = callee.remaining();
            let outcome = run(&span, remaining, async move { (self.serve)(callee, req).await }).await;
            drop((permit, entered));
            outcome
        });
        match task.await {
            Ok(Some(result)) => result.map_err(CallError::Api),
            // A wire caller's own timer fires at the same deadline: it sees a timeout.
            Ok(None) => Err(CallError::Timeout),
            // Only when the runtime is going away.
            Err(e) => Err(CallError::Transport(format!("local call to {} did not finish: {e}", E::SUBJECT))),
        }
    }
}

/// A [`LocalEndpoint`] of some endpoint type, as the registry holds it.
pub(crate) type AnyEndpoint = Arc<dyn Any + Send + Sync>;

/// The instances serving one subject in this process, taken in turn.
#[derive(Default)]
struct Instances {
    turn: AtomicUsize,
    /// By instance id.
    list: Vec<(u64, AnyEndpoint)>,
}

/// The endpoints served in this process, by subject.
#[derive(Default)]
pub(crate) struct Registry {
    endpoints: RwLock<HashMap<&'static str, Instances>>,
}

impl Registry {
    /// A number that tells one instance's registrations from another's.
    pub(crate) fn instance_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add(&self, instance: u64, subject: &'static str, endpoint: AnyEndpoint) {
        self.endpoints
            .write()
            .expect("local endpoints poisoned")
            .entry(subject)
            .or_default()
            .list
            .push((instance, endpoint));
    }

    /// Withdraws every endpoint of `instance`.
    pub(crate) fn remove(&self, instance: u64) {
        let mut map = self.endpoints.write().expect("local endpoints poisoned");
        map.retain(|_, instances| {
            instances.list.retain(|(i, _)| *i != instance);
            !instances.list.is_empty()
        });
    }

    /// An instance serving `E` in this process, if any.
    pub(crate) fn pick<E: Endpoint>(&self) -> Option<Arc<LocalEndpoint<E>>> {
        let map = self.endpoints.read().expect("local endpoints poisoned");
        let Instances { turn, list } = map.get(E::SUBJECT)?;
        let i = if list.len() == 1 { 0 } else { turn.fetch_add(1, Ordering::Relaxed) % list.len() };
        list[i].1.clone().downcast::<LocalEndpoint<E>>().ok()
    }
}

/// Runs a handler within `remaining` on `span`: its reply, or the error its failure becomes
/// for the caller (logged here); `None` once the deadline passed.
pub(crate) async fn run<T>(
    span: &tracing::Span,
    remaining: Duration,
    handler: impl Future<Output = Result<T, ServiceError>>,
) -> Option<Result<T, ApiError>> {
    // A panicking handler must still answer, or its caller waits out the whole deadline.
    let call = std::panic::AssertUnwindSafe(handler).catch_unwind();
    let Ok(outcome) = tokio::time::timeout(remaining, call).instrument(span.clone()).await else {
        span.in_scope(|| tracing::warn!("request exceeded its deadline"));
        return None;
    };
    Some(match outcome {
        Ok(Ok(reply)) => Ok(reply),
        Err(_panic) => {
            span.in_scope(|| tracing::error!("handler panicked"));
            Err(ApiError::internal())
        }
        Ok(Err(ServiceError::Api(e))) => {
            span.in_scope(|| tracing::debug!(code = %e.code, detail = %e.detail, "request refused"));
            Err(e)
        }
        Ok(Err(ServiceError::Internal(e))) => {
            span.in_scope(|| tracing::error!(error = format!("{e:#}"), "request failed"));
            Err(ApiError::internal())
        }
    })
}

/// The span a request is handled on, wherever it came from.
pub(crate) fn rpc_span(subject: &str, ctx: &Ctx) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        subject = %subject,
        trace_id = %ctx.trace.trace_id(),
        user = ctx.user().map(|u| u.to_string()),
        request_id = ctx.request_id.clone(),
    )
}

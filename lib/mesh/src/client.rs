//! The process's NATS connection and typed calls.

use crate::ctx::Ctx;
use crate::error::CallError;
use crate::identity::Authenticator;
use crate::local::{LocalEndpoint, Registry};
use anyhow::Context as _;
use async_nats::{Client, ConnectOptions, RequestErrorKind, jetstream};
use bytes::Bytes;
use mosaic_api::headers as h;
use mosaic_api::{ApiError, Endpoint, ErrorCode, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Clock difference tolerated between the user service, which issues tokens, and the
/// services that verify them.
const IDENTITY_CLOCK_SKEW_SECS: u64 = 5;

/// How to reach NATS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated (`nats://host:4222`, `tls://…`).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed) for decentralised auth.
    pub creds_file: Option<PathBuf>,
    /// User name, for servers with user/password accounts (see `nats/accounts.conf`).
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<crate::config::Secret>,
    /// JetStream replicas for streams and buckets this process declares (3 in a cluster).
    pub replicas: usize,
    /// Calls to a service this process serves go straight to its handler instead of through
    /// the NATS server (`lib/mesh/src/local.rs`); off, every call takes the wire.
    pub local_calls: bool,
    /// Size limit of each stream this process declares: a full event stream drops its
    /// oldest messages, a full job queue refuses new jobs (their writers retry).
    pub stream_max_bytes: i64,
    /// Size limit of each file-backed key-value bucket this process declares (a cache
    /// bucket has its own, see [`mosaic_api::stream::KvStorage`]).
    pub bucket_max_bytes: i64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            user: None,
            password: None,
            replicas: 1,
            local_calls: true,
            stream_max_bytes: 256 << 20,
            bucket_max_bytes: 64 << 20,
        }
    }
}

/// A process's handle on the mesh. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
    /// The component this handle acts for; in debug builds each use is checked against its
    /// declaration.
    scope: Option<&'static crate::component::Component>,
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    config: NatsConfig,
    name: String,
    process: Arc<Process>,
}

/// What every connection of one process shares (see [`Mesh::connect_also`]).
struct Process {
    /// Streams already declared by this process, so hot paths don't re-declare them.
    ensured: Mutex<HashSet<&'static str>>,
    /// Endpoints served by services started in this process, when local calls are on.
    local: Option<Registry>,
    /// The verifier of callers of every service in this process, started on first use.
    identity: tokio::sync::OnceCell<Arc<Authenticator>>,
}

/// A handle on the mesh that does not keep it open (see [`Mesh::downgrade`]).
#[derive(Clone)]
pub(crate) struct WeakMesh(Weak<Inner>);

impl WeakMesh {
    /// The mesh, unless every strong handle is gone.
    pub(crate) fn upgrade(&self) -> Option<Mesh> {
        self.0.upgrade().map(|inner| Mesh { inner, scope: None })
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

impl Mesh {
    /// Connects to NATS as `name` (shown in server monitoring).
    pub async fn connect(config: &NatsConfig, name: &str) -> anyhow::Result<Self> {
        let process = Process {
            ensured: Mutex::new(HashSet::new()),
            local: config.local_calls.then(Registry::default),
            identity: tokio::sync::OnceCell::new(),
        };
        Self::open(config, name, Arc::new(process)).await
    }

    /// Another connection of this process, as `name` with `config`'s credentials (each
    /// component of `mosaic up` connects as its own NATS user). It shares this one's local
    /// endpoints (so calls between the process's components still skip the wire, whatever
    /// `config.local_calls` says) and its verifier of callers.
    pub async fn connect_also(&self, config: &NatsConfig, name: &str) -> anyhow::Result<Self> {
        Self::open(config, name, self.inner.process.clone()).await
    }

    async fn open(config: &NatsConfig, name: &str, process: Arc<Process>) -> anyhow::Result<Self> {
        let client = connect_client(config, name, name).await?;
        let js = jetstream::new(client.clone());
        let inner = Inner { client, js, config: config.clone(), name: name.to_owned(), process };
        Ok(Self { inner: Arc::new(inner), scope: None })
    }

    /// This connection as `component` uses it. In debug builds (the test suite), every call,
    /// publish, subscription, stream and bucket it uses through this handle must be in its
    /// declaration: anything else fails, is logged, and is recorded in
    /// [`crate::component::violations`]. Release builds skip the check.
    pub fn scoped(&self, component: &'static crate::component::Component) -> Mesh {
        Mesh { inner: self.inner.clone(), scope: Some(component) }
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakMesh {
        WeakMesh(Arc::downgrade(&self.inner))
    }

    /// The process's verifier of callers' access tokens, started on first use. Every
    /// endpoint served on this mesh checks a call's token with it.
    pub async fn identity(&self) -> anyhow::Result<Arc<Authenticator>> {
        let auth = self
            .inner
            .process
            .identity
            .get_or_try_init(|| Authenticator::start(self, IDENTITY_CLOCK_SKEW_SECS))
            .await?;
        Ok(auth.clone())
    }

    /// Fails when this handle's component did not declare `what` (debug builds).
    pub(crate) fn check(&self, what: crate::component::Use<'_>) -> anyhow::Result<()> {
        #[cfg(debug_assertions)]
        if let Some(component) = self.scope
            && !component.declares(&what)
        {
            let message = format!("component {} {what} without declaring it", component.name);
            tracing::error!("{message}");
            crate::component::record_violation(message.clone());
            anyhow::bail!(message);
        }
        #[cfg(not(debug_assertions))]
        let _ = what;
        Ok(())
    }

    /// A second connection with the same settings; services serve on their own connection
    /// so they can drain it on stop without cutting the rest of the process off.
    pub(crate) async fn connect_dedicated(&self, name: &str) -> anyhow::Result<Client> {
        connect_client(&self.inner.config, name, &self.inner.name).await
    }

    /// The raw client, for code that speaks plain NATS (tests, benchmarks, the edge's
    /// socket subscriptions).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The connection settings.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Where services started on this mesh register for local calls, if they do.
    pub(crate) fn local_calls(&self) -> Option<&Registry> {
        self.inner.process.local.as_ref()
    }

    pub(crate) fn ensured(&self) -> &Mutex<HashSet<&'static str>> {
        &self.inner.process.ensured
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Calls endpoint `E` with `req` on behalf of `ctx`, within `ctx`'s deadline.
    ///
    /// A call that finds no responder is retried briefly: during a rolling restart or a
    /// scale-down there is a moment with no instance subscribed, and nobody received the
    /// request, so sending it again is safe.
    pub async fn call<E: Endpoint>(&self, ctx: &Ctx, req: &E::Request) -> Result<E::Reply, CallError> {
        self.check_call(E::SUBJECT)?;
        if let Some((local, entered)) = self.local::<E>() {
            return local.call(entered, ctx, req.clone()).await;
        }
        let msg = self.request::<E>(ctx, req).await?;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// [`Mesh::call`] with a request the caller is done with: an instance in this process
    /// takes it as it is. A feed read asks for the signals of a hundred posts, and copying
    /// the request cost a few hundred allocations per read.
    pub async fn call_owned<E: Endpoint>(&self, ctx: &Ctx, req: E::Request) -> Result<E::Reply, CallError> {
        self.check_call(E::SUBJECT)?;
        if let Some((local, entered)) = self.local::<E>() {
            return local.call(entered, ctx, req).await;
        }
        let msg = self.request::<E>(ctx, &req).await?;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// [`Mesh::call`], keeping the reply as the JSON the service sent (an `E::Reply`): for
    /// a gateway that passes it on unchanged, parsing and re-encoding it would be wasted.
    pub async fn call_json<E: Endpoint>(&self, ctx: &Ctx, req: &E::Request) -> Result<Bytes, CallError> {
        self.check_call(E::SUBJECT)?;
        if let Some((local, entered)) = self.local::<E>() {
            let reply = local.call(entered, ctx, req.clone()).await?;
            return Ok(Bytes::from(serde_json::to_vec(&reply)?));
        }
        Ok(self.request::<E>(ctx, req).await?.payload)
    }

    fn check_call(&self, subject: &str) -> Result<(), CallError> {
        self.check(crate::component::Use::Call(subject)).map_err(|e| CallError::Undeclared(e.to_string()))
    }

    /// An instance of `E`'s service in this process, with the call counted in on it.
    fn local<E: Endpoint>(&self) -> Option<(Arc<LocalEndpoint<E>>, TaskTrackerToken)> {
        let local = self.inner.process.local.as_ref()?.pick::<E>()?;
        let entered = local.enter()?;
        Some((local, entered))
    }

    /// Sends the request, retrying while nobody answers yet; returns the reply if it is not
    /// an error.
    async fn request<E: Endpoint>(&self, ctx: &Ctx, req: &E::Request) -> Result<async_nats::Message, CallError> {
        self.request_on(E::SUBJECT, ctx, req, true).await
    }

    /// Sends `req` on `subject` within `ctx`'s deadline; while nobody answers, retries when
    /// `wait_for_responders` (a restarting service), fails at once otherwise.
    pub(crate) async fn request_on(
        &self,
        subject: &str,
        ctx: &Ctx,
        req: &impl Serialize,
        wait_for_responders: bool,
    ) -> Result<async_nats::Message, CallError> {
        let body = Bytes::from(serde_json::to_vec(req)?);
        let headers = ctx.to_headers();
        let mut backoff = Duration::from_millis(20);
        loop {
            let remaining = ctx.remaining();
            if remaining.is_zero() {
                return Err(CallError::Timeout);
            }
            let request =
                async_nats::Request::new().payload(body.clone()).headers(headers.clone()).timeout(Some(remaining));
            match self.inner.client.send_request(subject.to_owned(), request).await {
                Ok(msg) => return check_reply(msg),
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    if !wait_for_responders || ctx.remaining() <= backoff * 2 {
                        return Err(CallError::NoResponders);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) if e.kind() == RequestErrorKind::TimedOut => return Err(CallError::Timeout),
                Err(e) => return Err(CallError::Transport(e.to_string())),
            }
        }
    }

    /// Publishes a frame to every socket of `user` (core NATS, at most once: anything the
    /// user must not miss is also stored by the service that sent it).
    pub async fn push<T: Serialize>(&self, user: &UserId, frame: &T) -> anyhow::Result<()> {
        self.check(crate::component::Use::Publish(mosaic_api::subject::USER_PUSHES))?;
        let payload = serde_json::to_vec(frame).context("encoding push frame")?;
        self.inner
            .client
            .publish(mosaic_api::ws::push_subject(user), payload.into())
            .await
            .context("publishing push frame")
    }

    /// Publishes an already encoded frame to every socket of `user`: a fan-out encodes once
    /// for all recipients.
    pub async fn push_raw(&self, user: &UserId, frame: bytes::Bytes) -> anyhow::Result<()> {
        self.check(crate::component::Use::Publish(mosaic_api::subject::USER_PUSHES))?;
        self.inner.client.publish(mosaic_api::ws::push_subject(user), frame).await.context("publishing push frame")
    }

    /// Publishes a frame to every socket watching `post` (core NATS, at most once).
    pub async fn push_post<T: Serialize>(&self, post: &mosaic_api::PostId, frame: &T) -> anyhow::Result<()> {
        self.check(crate::component::Use::Publish(mosaic_api::subject::POST_PUSHES))?;
        let payload = serde_json::to_vec(frame).context("encoding push frame")?;
        self.inner
            .client
            .publish(mosaic_api::ws::post_subject(post), payload.into())
            .await
            .context("publishing post frame")
    }

    /// Waits until everything published so far reached the server.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.inner.client.flush().await.context("flushing NATS connection")
    }
}

/// A connection named `name` whose replies arrive under the inbox prefix of `owner` (the
/// component it belongs to).
async fn connect_client(config: &NatsConfig, name: &str, owner: &str) -> anyhow::Result<Client> {
    let mut opts = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .with_context(|| format!("reading nats.creds_file {}", path.display()))?,
        None => match (&config.user, &config.password) {
            (Some(user), Some(password)) => {
                ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
            }
            _ => ConnectOptions::new(),
        },
    };
    opts = opts
        .name(name)
        // Replies to this connection's requests arrive under a prefix of its own, so
        // generated permissions can let it (and no other component) read them.
        .custom_inbox_prefix(crate::authz::inbox_prefix(owner))
        .connection_timeout(Duration::from_secs(5))
        // Services outlive NATS restarts: keep reconnecting rather than dying.
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    let servers: Vec<&str> = config.url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    opts.connect(servers.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {} (setting nats.url)", config.url))
}

pub(crate) fn check_reply(msg: async_nats::Message) -> Result<async_nats::Message, CallError> {
    if let Some(headers) = &msg.headers
        && let Some(status) = headers.get(h::NATS_SERVICE_ERROR_CODE)
    {
        let status: u16 = status.as_str().parse().unwrap_or(500);
        let code = headers
            .get(h::ERROR_CODE)
            .and_then(|c| ErrorCode::parse(c.as_str()))
            .unwrap_or_else(|| ErrorCode::from_status(status));
        let detail = headers.get(h::NATS_SERVICE_ERROR).map(|d| d.as_str().to_owned()).unwrap_or_default();
        let retry_after = headers.get(h::RETRY_AFTER).and_then(|v| v.as_str().parse().ok());
        return Err(CallError::Api(ApiError { code, detail, retry_after }));
    }
    Ok(msg)
}

/// Frames published for one user (see [`Mesh::subscribe_push`]) or for some posts (see
/// [`Mesh::subscribe_posts`]).
pub struct PushSubscription {
    inner: futures::stream::SelectAll<async_nats::Subscriber>,
}

impl futures::Stream for PushSubscription {
    type Item = Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx).map(|m| m.map(|m| m.payload))
    }
}

impl Mesh {
    /// Subscribes to `user`'s push frames. Returns once the server knows about the
    /// subscription, so nothing published after this returns is missed.
    /// Both the ephemeral (`push.user.<id>`) and the kept (`frames.user.<id>`) frames arrive.
    pub async fn subscribe_push(&self, user: &UserId) -> anyhow::Result<PushSubscription> {
        self.check(crate::component::Use::Subscribe(mosaic_api::subject::USER_PUSHES))?;
        self.check(crate::component::Use::Subscribe(mosaic_api::subject::USER_FRAMES))?;
        let client = &self.inner.client;
        let push = client.subscribe(mosaic_api::ws::push_subject(user)).await.context("subscribing to push frames")?;
        let kept = client.subscribe(mosaic_api::ws::kept_subject(user)).await.context("subscribing to kept frames")?;
        client.flush().await.context("flushing push subscription")?;
        Ok(PushSubscription { inner: futures::stream::select_all([push, kept]) })
    }

    /// Subscribes to the `post.counts` frames of `posts`. Returns once the server knows.
    pub async fn subscribe_posts(&self, posts: &[mosaic_api::PostId]) -> anyhow::Result<PushSubscription> {
        self.check(crate::component::Use::Subscribe(mosaic_api::subject::POST_PUSHES))?;
        let mut subs = Vec::with_capacity(posts.len());
        for post in posts {
            let sub = self
                .inner
                .client
                .subscribe(mosaic_api::ws::post_subject(post))
                .await
                .context("subscribing to post frames")?;
            subs.push(sub);
        }
        self.inner.client.flush().await.context("flushing post subscriptions")?;
        Ok(PushSubscription { inner: futures::stream::select_all(subs) })
    }
}

impl Mesh {
    /// Whether at least one instance of service `name` answers `$SRV.PING` within `timeout`.
    pub async fn ping_service(&self, name: &str, timeout: Duration) -> bool {
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(timeout));
        self.inner.client.send_request(format!("$SRV.PING.{name}"), request).await.is_ok()
    }
}

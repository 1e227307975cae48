//! The edge: Mosaic's only door for clients.
//!
//! Stateless HTTP + WebSocket gateway. It verifies access tokens locally
//! ([`mosaic_mesh::identity`]) and passes them on with each call, maps routes to service
//! endpoints over NATS ([`routes`]), holds WebSockets and forwards each connected user's
//! `push.user.<id>` frames to them ([`hub`], [`ws`]). Errors leave as problem+json
//! ([`error`]). Nothing it holds is lost by a restart: caches refill from NATS, clients
//! reconnect.

pub mod config;
pub mod error;
pub mod extract;
pub mod hub;
pub mod middleware;
pub mod routes;
pub mod sockets;
pub mod views;
pub mod ws;

pub use config::Config;

use mosaic_api::Event as _;

use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mosaic_api::stream::IDEMPOTENCY;
use mosaic_api::{ApiError, ErrorCode};
use mosaic_mesh::component::Section as _;
use mosaic_mesh::identity::Authenticator;
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::presence::Presence;
use mosaic_mesh::storage::Storage;
use mosaic_mesh::{CancellationToken, FirstRun, Lifecycle, Mesh};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Services whose health `/readyz` reports.
pub const SERVICES: &[&str] = &[
    mosaic_api::user::SERVICE,
    mosaic_api::content::SERVICE,
    mosaic_api::feed::SERVICE,
    mosaic_api::interaction::SERVICE,
    mosaic_api::messaging::SERVICE,
    mosaic_api::notification::SERVICE,
    mosaic_api::analytics::SERVICE,
];

/// What every request handler can reach.
pub struct AppState {
    pub(crate) mesh: Mesh,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) hub: Arc<hub::Hub>,
    pub(crate) config: Config,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) idempotency: Option<Bucket>,
    pub(crate) storage: Option<mosaic_mesh::storage::Storage>,
    pub(crate) limiter: Option<Arc<middleware::Limiter>>,
    pub(crate) services: &'static [&'static str],
    pub(crate) shutdown: CancellationToken,
    pub(crate) views: views::Views,
    pub(crate) sockets: Arc<sockets::SocketCounts>,
}

/// A running edge.
pub struct EdgeHandle {
    addr: SocketAddr,
    lifecycle: Lifecycle,
}

impl EdgeHandle {
    /// The address the edge listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes sockets with "going away", lets in-flight requests finish.
    pub async fn stop(self) {
        mosaic_mesh::ServiceHandle::from(self).stop().await;
    }
}

impl From<EdgeHandle> for mosaic_mesh::ServiceHandle {
    fn from(edge: EdgeHandle) -> Self {
        mosaic_mesh::ServiceHandle::new("edge", None, edge.lifecycle)
    }
}

/// The edge as a component (see [`mosaic_mesh::component`]): it serves no endpoints, only
/// HTTP and WebSocket clients, on `edge.http` or the listener its host was given.
pub const COMPONENT: mosaic_mesh::Component = mosaic_mesh::Component {
    name: "edge",
    about: "HTTP and WebSocket gateway",
    migrations: None,
    serves: &[],
    instances: &[],
    calls: mosaic_api::subjects![
        mosaic_api::user::GetJwks,
        mosaic_api::user::Signup,
        mosaic_api::user::Login,
        mosaic_api::user::Refresh,
        mosaic_api::user::Logout,
        mosaic_api::user::GetMe,
        mosaic_api::user::UpdateMe,
        mosaic_api::user::ChangePassword,
        mosaic_api::user::GetProfile,
        mosaic_api::user::Follow,
        mosaic_api::user::Unfollow,
        mosaic_api::user::Followers,
        mosaic_api::user::Following,
        mosaic_api::user::Block,
        mosaic_api::user::Unblock,
        mosaic_api::user::Mute,
        mosaic_api::user::Unmute,
        mosaic_api::user::Suspend,
        mosaic_api::user::Unsuspend,
        mosaic_api::content::BeginUploadEp,
        mosaic_api::content::CompleteUploadEp,
        mosaic_api::content::GetMedia,
        mosaic_api::content::GetStorage,
        mosaic_api::content::CreatePost,
        mosaic_api::content::GetPost,
        mosaic_api::content::WatchablePosts,
        mosaic_api::content::DeletePost,
        mosaic_api::content::UserPosts,
        mosaic_api::feed::GetFeed,
        mosaic_api::interaction::Like,
        mosaic_api::interaction::Unlike,
        mosaic_api::interaction::Likers,
        mosaic_api::interaction::AddComment,
        mosaic_api::interaction::Comments,
        mosaic_api::interaction::DeleteComment,
        mosaic_api::messaging::CreateConversation,
        mosaic_api::messaging::Conversations,
        mosaic_api::messaging::GetConversation,
        mosaic_api::messaging::History,
        mosaic_api::messaging::SendMessage,
        mosaic_api::messaging::MarkRead,
        mosaic_api::messaging::MarkDelivered,
        mosaic_api::messaging::Typing,
        mosaic_api::messaging::AddGroupMembers,
        mosaic_api::messaging::Leave,
        mosaic_api::notification::Inbox,
        mosaic_api::notification::GetUnreadCount,
        mosaic_api::notification::GetNotification,
        mosaic_api::notification::MarkNotificationsRead,
        mosaic_api::notification::GetPreferences,
        mosaic_api::notification::PutPreferences,
        mosaic_api::notification::RegisterDevice,
        mosaic_api::notification::Devices,
        mosaic_api::notification::RemoveDevice,
        mosaic_api::notification::GetVapidKey,
        mosaic_api::notification::Unsubscribe,
        mosaic_api::analytics::CreatorDaily,
        mosaic_api::analytics::PlatformDaily,
        mosaic_api::analytics::RunReports,
    ],
    publishes: &[mosaic_api::interaction::PostViewed::SUBJECT],
    subscribes: &[mosaic_api::subject::USER_PUSHES, mosaic_api::subject::USER_FRAMES, mosaic_api::subject::POST_PUSHES],
    streams: &[&mosaic_api::stream::EVENTS_VIEW, &mosaic_api::stream::USER_FRAMES],
    buckets: &[&mosaic_api::stream::IDEMPOTENCY, &mosaic_api::stream::PRESENCE],
    check: mosaic_mesh::component::check::<Config>,
    start: |unit| Box::pin(start_unit(unit)),
};

async fn start_unit(unit: mosaic_mesh::Unit) -> anyhow::Result<mosaic_mesh::ServiceHandle> {
    let config: Config = unit.config()?;
    let storage = Some(unit.storage()?);
    let edge = match unit.host().take_listener() {
        Some(listener) => serve(unit.mesh(), config, storage, listener).await?,
        None => start(unit.mesh(), config, storage).await?,
    };
    tracing::info!(addr = %edge.local_addr(), "edge listening");
    Ok(edge.into())
}

/// Binds `config.http` and serves; media is read from and uploaded to `storage`.
pub async fn start(mesh: &Mesh, config: Config, storage: Option<Storage>) -> anyhow::Result<EdgeHandle> {
    config.validate()?;
    let listener = bind(config.http, config.listen_backlog)
        .with_context(|| format!("binding edge.http {} (is the port in use?)", config.http))?;
    serve(mesh, config, storage, listener).await
}

/// A listener with the given accept queue. `TcpListener::bind` queues 128 connections,
/// which a client opening a few hundred at once overflows: the kernel then drops their
/// SYNs and each waits out a one-second retransmit.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Lets a restarted edge bind while the old one's connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(
    mesh: &Mesh,
    config: Config,
    storage: Option<Storage>,
    listener: TcpListener,
) -> anyhow::Result<EdgeHandle> {
    config.validate()?;
    let addr = listener.local_addr()?;
    let lifecycle = Lifecycle::new();

    let auth = Authenticator::start(mesh, config.clock_skew_secs).await?;
    if !auth.wait_ready(Duration::from_secs(5)).await {
        tracing::warn!("edge started before signing keys and revocations were loaded; /readyz says so");
    }
    let limiter = limiter(&config, &lifecycle);
    let presence = Presence::open(mesh, &format!("edge-{}", uuid::Uuid::now_v7().simple())).await?;
    let hub = hub::Hub::new(mesh.clone(), config.ws_buffer, Some(presence.clone()));
    let connected = hub.clone();
    presence.spawn_refresh(&lifecycle, move || connected.connected_user_ids());
    let sockets = sockets::SocketCounts::new(config.ws_max_per_user, config.ws_max_per_ip);
    let views = views::Views::spawn(mesh.clone(), &lifecycle, config.views_per_user_per_min).await?;
    let state = Arc::new(AppState {
        mesh: mesh.clone(),
        auth,
        hub,
        idempotency: Some(mesh.bucket(&IDEMPOTENCY).await?),
        storage,
        metrics: prometheus(),
        limiter,
        services: SERVICES,
        config,
        shutdown: lifecycle.shutdown().clone(),
        views,
        sockets,
    });
    let app = app(state);

    let stop = lifecycle.shutdown().clone();
    lifecycle.spawn(async move {
        // Without TCP_NODELAY a small write (a WebSocket frame right after another) waits
        // for the client's delayed ACK of the one before, up to 40 ms on Linux.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        });
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "edge server failed");
        }
    });
    tracing::info!(%addr, "edge listening");
    Ok(EdgeHandle { addr, lifecycle })
}

/// The full application: routes, `/openapi.json`, fallbacks and middleware.
pub fn app(state: Arc<AppState>) -> Router {
    let (router, openapi) = routes::all().split_for_parts();
    let openapi_json = Arc::new(openapi.to_pretty_json().expect("OpenAPI document serializes"));
    let timeout = Duration::from_secs(state.config.request_timeout_secs + 5);
    let cors = cors(&state.config);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()) }
            }),
        )
        .fallback(|| async { error::problem(ApiError::not_found("no such route")) })
        .method_not_allowed_fallback(|| async {
            error::problem(ApiError::new(ErrorCode::MethodNotAllowed, "this route does not support that method"))
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::idempotency))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_json_body_bytes))
        .layer(axum::middleware::from_fn(middleware::metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::security_headers))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
                .layer(SetRequestIdLayer::new(HeaderName::from_static("x-request-id"), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(HeaderName::from_static("x-request-id")))
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("handler panicked");
                    error::problem(ApiError::internal())
                }))
                .layer(cors)
                .layer(CompressionLayer::new())
                .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, timeout)),
        )
        .with_state(state)
}

fn cors(config: &Config) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(3600));
    if config.cors_origins.is_empty() {
        layer.allow_origin(Any)
    } else {
        let origins: Vec<HeaderValue> =
            config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

fn limiter(config: &Config, lifecycle: &Lifecycle) -> Option<Arc<middleware::Limiter>> {
    let rate = NonZeroU32::new(config.rate_limit_per_sec)?;
    let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
    let limiter = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst)));
    let sweeper = limiter.clone();
    // Forget clients whose buckets are full again, so memory tracks active clients.
    lifecycle.every(Duration::from_secs(60), FirstRun::AfterPeriod, move || {
        sweeper.retain_recent();
        sweeper.shrink_to_fit();
        std::future::ready(())
    });
    Some(limiter)
}

/// The process-wide Prometheus recorder; `None` if something else installed a recorder.
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

impl IntoResponse for error::Problem {
    fn into_response(self) -> Response {
        error::problem(ApiError::new(self.code, self.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections larger than the default queue of 128 all complete before the
    /// edge accepts any; with the default queue the kernel drops the SYNs past it and those
    /// clients only retry after a second.
    #[tokio::test]
    async fn a_burst_of_connections_fits_the_accept_queue() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1024).expect("binds");
        let addr = listener.local_addr().expect("address");
        let connects =
            (0..400).map(|_| tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)));
        let done = futures::future::join_all(connects).await;
        let waiting = done.iter().filter(|c| !matches!(c, Ok(Ok(_)))).count();
        assert_eq!(waiting, 0, "connections left waiting for a retransmit");
        drop(listener);
    }
}

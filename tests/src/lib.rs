//! The test kit: one call starts a world of real processes and real services.
//!
//! * [`NatsServer`]: a real `nats-server` with JetStream on a free port and a temporary
//!   store, killed and cleaned up on drop.
//! * [`World`]: that server, user-service instances in-process on `mem://` SurrealDB, and an
//!   edge on a free port; plus an HTTP client and helpers that act like a client app.

pub mod client;
pub mod mail;
pub mod media;
pub mod push;
pub mod socket;

use anyhow::Context as _;
use mosaic_edge::EdgeHandle;
use mosaic_mesh::db::{Db, DbConfig};
use mosaic_mesh::storage::{Storage, StorageConfig};
use mosaic_mesh::{Mesh, NatsConfig, ServiceHandle};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub use client::{Client, TestUser};

/// A `nats-server -js` child process on its own port and store.
pub struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port (chosen by the server itself, read back from its
    /// ports file, so there is no race for the port).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], &[]).await
    }

    /// Starts a server with extra arguments (e.g. `-c <config>`) and environment.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store: PathBuf = dir.path().join("jetstream");
        let child = Command::new("nats-server")
            .args(args)
            .envs(env.iter().copied())
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning nats-server (is it on PATH? see README)")?;
        let pid = child.id().context("nats-server has no pid")?;
        let ports = dir.path().join(format!("nats-server_{pid}.ports"));
        for _ in 0..400 {
            if let Ok(raw) = std::fs::read_to_string(&ports)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&raw)
                && let Some(url) = v["nats"][0].as_str()
            {
                return Ok(Self { child, url: url.to_owned(), _dir: dir });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("nats-server did not report its port")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connection settings for this server.
    /// Settings to reach this server; calls take the wire (see `WorldOptions::local_calls`).
    pub fn config(&self) -> NatsConfig {
        NatsConfig { url: self.url.clone(), local_calls: false, ..Default::default() }
    }

    /// Kills the server now.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// How a [`World`] is set up.
#[derive(Clone)]
pub struct WorldOptions {
    /// User-service instances to start.
    pub user_instances: usize,
    /// User-service settings (the database URL is filled per instance if empty).
    pub user: mosaic_user::Config,
    /// Edge settings (the address is always a free port).
    pub edge: mosaic_edge::Config,
    /// Content-service instances to start.
    pub content_instances: usize,
    /// Content-service settings.
    pub content: mosaic_content::Config,
    /// Media storage; `None`: a fresh local directory.
    pub storage: Option<StorageConfig>,
    /// Feed-service settings.
    pub feed: mosaic_feed::Config,
    /// Feed-service instances to start (each on its own connection after the first).
    pub feed_instances: usize,
    /// Messaging-service settings.
    pub messaging: mosaic_messaging::Config,
    /// Notification-service settings (`public_url` is set to the edge's).
    pub notification: mosaic_notification::Config,
    /// Analytics instances to start (sharing the world's storage).
    pub analytics_instances: usize,
    /// Interaction-service instances to start (sharing the world's interaction database).
    pub interaction_instances: usize,
    /// Analytics settings.
    pub analytics: mosaic_analytics::Config,
    /// Whether calls between the world's services skip the NATS server, as in `mosaic up`.
    /// Off by default, so the suite exercises the wire contract that separately deployed
    /// services speak; `mesh::local_calls_*` tests the shortcut.
    pub local_calls: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            user_instances: 1,
            user: test_user_config(),
            edge: mosaic_edge::Config { rate_limit_per_sec: 0, ..Default::default() },
            content_instances: 1,
            content: test_content_config(),
            storage: None,
            feed: mosaic_feed::Config::default(),
            feed_instances: 1,
            messaging: mosaic_messaging::Config {
                db: DbConfig { url: "mem://".into(), ..Default::default() },
                ..Default::default()
            },
            notification: test_notification_config(),
            analytics_instances: 1,
            analytics: test_analytics_config(),
            interaction_instances: 1,
            local_calls: false,
        }
    }
}

/// Analytics settings for tests: files written a moment after events arrive, no schedule
/// (tests run reports through the admin endpoint, the schedule's code path).
pub fn test_analytics_config() -> mosaic_analytics::Config {
    mosaic_analytics::Config { flush_interval_ms: 200, schedule: false, ..Default::default() }
}

/// Notification-service settings for tests: retries and digests in fractions of a second,
/// so failure paths finish quickly; providers unset (logged) unless a test sets them.
pub fn test_notification_config() -> mosaic_notification::Config {
    mosaic_notification::Config {
        db: DbConfig { url: "mem://".into(), ..Default::default() },
        retry_backoff_ms: vec![100, 200, 400],
        max_attempts: 4,
        digest_interval_secs: 1,
        send_ack_wait_secs: 3,
        ..Default::default()
    }
}

/// User-service settings for tests: a cheaper Argon2 cost (the algorithm and code path are
/// the production ones) and an admin named `boss`.
pub fn test_user_config() -> mosaic_user::Config {
    mosaic_user::Config {
        db: DbConfig { url: "mem://".into(), ..Default::default() },
        argon2_memory_kib: 4096,
        argon2_iterations: 1,
        admins: vec!["boss".into()],
        ..Default::default()
    }
}

/// Content-service settings for tests: short redelivery and retry delays so crash and
/// retry paths finish in seconds.
pub fn test_content_config() -> mosaic_content::Config {
    mosaic_content::Config {
        db: DbConfig { url: "mem://".into(), ..Default::default() },
        workers: 2,
        job_ack_wait_secs: 3,
        job_retry_backoff_ms: vec![100, 200],
        sweep_interval_secs: 2,
        ..Default::default()
    }
}

/// A running Mosaic: NATS, services and an edge.
pub struct World {
    pub nats: NatsServer,
    pub mesh: Mesh,
    /// The user database every user-service instance of this world shares.
    pub user_db: Db,
    /// The content database every content instance of this world shares.
    pub content_db: Db,
    /// Media storage shared by the content instances and the edge.
    pub storage: Storage,
    pub content: Vec<ServiceHandle>,
    /// The content settings instances of this world start with.
    pub content_config: mosaic_content::Config,
    _media_dir: tempfile::TempDir,
    pub users: Vec<ServiceHandle>,
    /// The interaction database.
    pub interaction_db: Db,
    /// Interaction, feed, messaging, notification and analytics instances (in that order),
    /// then any further interaction and feed instances.
    pub social: Vec<ServiceHandle>,
    /// The messaging database.
    pub messaging_db: Db,
    /// The notification database.
    pub notification_db: Db,
    pub edge: Option<EdgeHandle>,
    pub client: Client,
}

impl World {
    /// The default world: one user service and an edge.
    pub async fn start() -> Self {
        Self::start_with(WorldOptions::default()).await
    }

    /// A world set up by `options`.
    pub async fn start_with(options: WorldOptions) -> Self {
        init_logs();
        let nats = NatsServer::start().await.expect("nats-server starts");
        let mesh = Mesh::connect(&NatsConfig { local_calls: options.local_calls, ..nats.config() }, "test")
            .await
            .expect("mesh connects");
        let user_db = mosaic_mesh::db::connect(&options.user.db, "user").await.expect("user database opens");
        let mut users = Vec::new();
        for _ in 0..options.user_instances {
            users.push(
                mosaic_user::start_with_db(&mesh, options.user.clone(), user_db.clone())
                    .await
                    .expect("user service starts"),
            );
        }
        let media_dir = tempfile::tempdir().expect("temp dir");
        let storage_config = options.storage.clone().unwrap_or_else(|| StorageConfig {
            url: format!("file://{}", media_dir.path().display()),
            ..Default::default()
        });
        let storage = Storage::open(&storage_config).expect("storage opens");
        let content_db =
            mosaic_mesh::db::connect(&options.content.db, "content").await.expect("content database opens");
        let mut content = Vec::new();
        for _ in 0..options.content_instances {
            content.push(
                mosaic_content::start_with_db(&mesh, options.content.clone(), storage.clone(), content_db.clone())
                    .await
                    .expect("content service starts"),
            );
        }
        let interaction_db =
            mosaic_mesh::db::connect(&DbConfig { url: "mem://".into(), ..Default::default() }, "interaction")
                .await
                .expect("interaction database opens");
        let messaging_db =
            mosaic_mesh::db::connect(&options.messaging.db, "messaging").await.expect("messaging database opens");
        let notification_db = mosaic_mesh::db::connect(&options.notification.db, "notification")
            .await
            .expect("notification database opens");
        // The edge's address is known before anything starts, so emails can link to it.
        let listener = mosaic_edge::bind(([127, 0, 0, 1], 0).into(), options.edge.listen_backlog).expect("edge port");
        let base = format!("http://{}", listener.local_addr().expect("edge address"));
        let mut notification = options.notification.clone();
        notification.public_url = base.clone();
        let social = vec![
            mosaic_interaction::start_with_db(&mesh, interaction_db.clone()).await.expect("interaction service starts"),
            mosaic_feed::start(&mesh, options.feed.clone()).await.expect("feed service starts"),
            mosaic_messaging::start_with_db(&mesh, options.messaging.clone(), messaging_db.clone())
                .await
                .expect("messaging service starts"),
            mosaic_notification::start_with_db(&mesh, notification, notification_db.clone())
                .await
                .expect("notification service starts"),
        ];
        let mut social = social;
        for _ in 0..options.analytics_instances {
            // Each instance on its own connection, as separate processes would be.
            let own = Mesh::connect(&nats.config(), "test-analytics").await.expect("mesh connects");
            social.push(
                mosaic_analytics::start(&own, options.analytics.clone(), storage.clone())
                    .await
                    .expect("analytics service starts"),
            );
        }
        for _ in 1..options.interaction_instances {
            let own = Mesh::connect(&nats.config(), "test-interaction").await.expect("mesh connects");
            social.push(
                mosaic_interaction::start_with_db(&own, interaction_db.clone())
                    .await
                    .expect("interaction service starts"),
            );
        }
        for _ in 1..options.feed_instances {
            let own = Mesh::connect(&nats.config(), "test-feed").await.expect("mesh connects");
            social.push(mosaic_feed::start(&own, options.feed.clone()).await.expect("feed service starts"));
        }
        let edge = mosaic_edge::serve(&mesh, options.edge.clone(), Some(storage.clone()), listener)
            .await
            .expect("edge starts");
        let client = Client::new(base);
        Self {
            nats,
            mesh,
            user_db,
            users,
            content_db,
            storage,
            content,
            content_config: options.content,
            interaction_db,
            social,
            messaging_db,
            notification_db,
            _media_dir: media_dir,
            edge: Some(edge),
            client,
        }
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// Starts one more user-service instance on this world's NATS and database, with its own
    /// NATS connection as a separate process would have.
    pub async fn add_user_instance(&mut self, config: mosaic_user::Config) -> anyhow::Result<()> {
        let mesh = Mesh::connect(&self.nats.config(), "test-extra").await?;
        self.users.push(mosaic_user::start_with_db(&mesh, config, self.user_db.clone()).await?);
        Ok(())
    }

    /// The directory of the default (local) media storage.
    pub fn media_dir(&self) -> &std::path::Path {
        self._media_dir.path()
    }

    /// Starts one more content instance (own NATS connection, shared database and storage).
    pub async fn add_content_instance(&mut self) -> anyhow::Result<()> {
        let mesh = Mesh::connect(&self.nats.config(), "test-content").await?;
        self.content.push(
            mosaic_content::start_with_db(
                &mesh,
                self.content_config.clone(),
                self.storage.clone(),
                self.content_db.clone(),
            )
            .await?,
        );
        Ok(())
    }

    /// Stops everything in order.
    pub async fn stop(mut self) {
        if let Some(edge) = self.edge.take() {
            edge.stop().await;
        }
        for s in self.social.drain(..) {
            s.stop().await;
        }
        for c in self.content.drain(..) {
            c.stop().await;
        }
        for u in self.users.drain(..) {
            u.stop().await;
        }
    }
}

/// Logs from tests go to the test harness's captured output (`RUST_LOG` to tune).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mosaic=info")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real S3-compatible server (moto) on a free port, with one bucket; killed on drop.
pub struct S3Server {
    child: Child,
    endpoint: String,
    bucket: String,
}

impl S3Server {
    /// Starts `moto_server` and creates `bucket`.
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning moto_server (pip install 'moto[server]'; see scripts/deps.sh)")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.put(format!("{endpoint}/{bucket}")).send().await
                && r.status().is_success()
            {
                return Ok(Self { child, endpoint, bucket: bucket.to_owned() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("moto_server did not come up on port {port}")
    }

    /// Storage settings pointing at the bucket.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            url: format!("s3://{}", self.bucket),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some(mosaic_mesh::config::Secret::new("test")),
            allow_http: true,
            virtual_hosted_style: false,
        }
    }

    /// Lists the keys under `prefix` straight from the server.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let body = reqwest::get(format!("{}/{}?list-type=2&prefix={prefix}", self.endpoint, self.bucket))
            .await
            .and_then(|r| r.error_for_status())
            .expect("list objects");
        let text = body.text().await.unwrap_or_default();
        text.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

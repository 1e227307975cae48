//! The test kit: one call starts a world of real processes and real services.
//!
//! * [`NatsServer`]: a real `nats-server` with JetStream on a free port and a temporary
//!   store, killed and cleaned up on drop.
//! * [`World`]: that server, every component of [`mosaic::COMPONENTS`] in-process on `mem://`
//!   SurrealDB, and an edge on a free port; plus an HTTP client and helpers that act like a
//!   client app.

pub mod client;
pub mod mail;
pub mod media;
pub mod push;
pub mod socket;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::Serialized;
use mosaic_mesh::component::{Running, start_each};
use mosaic_mesh::db::Db;
use mosaic_mesh::storage::{Storage, StorageConfig};
use mosaic_mesh::{Component, Host, Mesh, NatsConfig, ServiceHandle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub use client::{Client, TestUser};

/// A `nats-server -js` child process on its own port and store.
pub struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    /// Whether it admits only the users of the generated configuration (see
    /// [`NatsServer::start_closed`]); their password is `<user>-test-password`.
    closed: bool,
    config_dir: Option<tempfile::TempDir>,
}

fn test_password(user: &str) -> String {
    format!("{user}-test-password")
}

impl NatsServer {
    /// Starts a server that lets anyone in, on a free port (chosen by the server itself,
    /// read back from its ports file, so there is no race for the port).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], &[]).await
    }

    /// Starts a server as `mosaic up` does: closed to all but the users of the
    /// configuration generated from the component declarations, each held to its
    /// permissions.
    pub async fn start_closed() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("accounts.conf");
        std::fs::write(&conf, mosaic_mesh::authz::accounts_conf(mosaic::COMPONENTS))?;
        let env: Vec<(String, String)> =
            mosaic::nats::users().map(|u| (mosaic_mesh::authz::password_env(u), test_password(u))).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut server = Self::start_with(&["-c", conf.to_str().context("a UTF-8 temp path")?], &env).await?;
        server.closed = true;
        // The configuration's directory lives as long as the server.
        server.config_dir = Some(dir);
        Ok(server)
    }

    /// Settings to connect as `user` of a closed server.
    pub fn login(&self, user: &str) -> NatsConfig {
        NatsConfig {
            user: Some(user.to_owned()),
            password: Some(mosaic_mesh::config::Secret::new(test_password(user))),
            ..self.open_config()
        }
    }

    /// A plain client of a closed server logged in as `user` (a component's name), with
    /// that component's inbox prefix: it may do what the component may.
    pub async fn connect_as(&self, user: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(user.to_owned(), test_password(user))
            .custom_inbox_prefix(mosaic_mesh::authz::inbox_prefix(user))
            .connect(&self.url)
            .await
            .expect("connecting to the test nats-server")
    }

    /// A plain client of this server: the operators' user of a closed one.
    pub async fn connect(&self) -> async_nats::Client {
        let options = match self.closed {
            true => async_nats::ConnectOptions::with_user_and_password(
                mosaic_mesh::authz::ADMIN_USER.to_owned(),
                test_password(mosaic_mesh::authz::ADMIN_USER),
            ),
            false => async_nats::ConnectOptions::new(),
        };
        options.connect(&self.url).await.expect("connecting to the test nats-server")
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
            .arg("--log")
            .arg(dir.path().join("nats-server.log"))
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
                return Ok(Self { child, url: url.to_owned(), dir, closed: false, config_dir: None });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("nats-server did not report its port")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Settings to reach this server (as the operators' user of a closed one); calls take
    /// the wire (see `WorldOptions::local_calls`).
    pub fn config(&self) -> NatsConfig {
        match self.closed {
            true => self.login(mosaic_mesh::authz::ADMIN_USER),
            false => self.open_config(),
        }
    }

    fn open_config(&self) -> NatsConfig {
        NatsConfig { url: self.url.clone(), local_calls: false, ..Default::default() }
    }

    /// The lines of the server's log that report a client refused by its permissions.
    pub fn permission_violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("nats-server.log"))
            .unwrap_or_default()
            .lines()
            // e.g. `... "MOSAIC/user:edge" - Publish Violation - Subject "$KV.x.y"`
            .filter(|l| l.contains("Publish Violation") || l.contains("Subscription Violation"))
            .map(str::to_owned)
            .collect()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Kills the server now.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// How a [`World`] is set up.
#[derive(Clone)]
pub struct WorldOptions {
    /// Components to run; `None`: every one of [`mosaic::COMPONENTS`].
    pub only: Option<Vec<&'static str>>,
    /// Instances per component, by name (one for any not named).
    pub instances: HashMap<&'static str, usize>,
    /// Settings layered over the test defaults, in order: (dotted key, value).
    pub settings: Vec<(String, serde_json::Value)>,
    /// Media storage; `None`: a fresh local directory.
    pub storage: Option<StorageConfig>,
    /// Whether calls between the world's services skip the NATS server, as in `mosaic up`.
    /// Off by default, so the suite exercises the wire contract that separately deployed
    /// services speak; `mesh::local_calls_*` tests the shortcut.
    pub local_calls: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        let mut options =
            Self { only: None, instances: HashMap::new(), settings: Vec::new(), storage: None, local_calls: false };
        // Every database in memory, fresh per world.
        for c in mosaic::COMPONENTS.iter().filter(|c| c.has_database()) {
            options = options.set(&format!("{}.db.url", c.name), "mem://");
        }
        options
            .set("user", test_user_config())
            .set("content", test_content_config())
            .set("notification", test_notification_config())
            .set("analytics", test_analytics_config())
            .set("edge.rate_limit_per_sec", 0)
    }
}

impl WorldOptions {
    /// Sets `key` (dotted: `feed.known_fresh_ms`, or a whole section: `notification`).
    pub fn set(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.settings.push((key.to_owned(), serde_json::to_value(value).expect("settings serialize")));
        self
    }

    /// Runs `n` instances of `component`.
    pub fn instances(mut self, component: &'static str, n: usize) -> Self {
        self.instances.insert(component, n);
        self
    }

    /// Runs only `components` (in the list's order).
    pub fn only(mut self, components: &[&'static str]) -> Self {
        self.only = Some(components.to_vec());
        self
    }

    /// The components this world runs, in start order.
    fn components(&self) -> Vec<&'static Component> {
        mosaic::COMPONENTS
            .iter()
            .copied()
            .filter(|c| self.only.as_ref().is_none_or(|only| only.contains(&c.name)))
            .collect()
    }

    /// The host these options describe, with its data under `data_dir`.
    pub fn host(&self, data_dir: &std::path::Path) -> anyhow::Result<Host> {
        let storage = self.storage.clone().unwrap_or_else(|| StorageConfig {
            url: format!("file://{}", data_dir.join("media").display()),
            ..Default::default()
        });
        let mut figment = Figment::from(Serialized::defaults(serde_json::json!({
            "data_dir": data_dir,
            "storage": storage,
        })));
        for (key, value) in &self.settings {
            figment = figment.merge(Serialized::default(key, value));
        }
        Host::new(figment)
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
        retry_backoff_ms: vec![100, 200, 400],
        max_attempts: 4,
        digest_interval_secs: 1,
        send_ack_wait_secs: 3,
        ..Default::default()
    }
}

/// User-service settings for tests: a cheaper Argon2 cost (the algorithm and code path are
/// the production ones), and no cap on signups per address (every test client is
/// 127.0.0.1; `limits::*` tests the cap).
pub fn test_user_config() -> mosaic_user::Config {
    mosaic_user::Config {
        argon2_memory_kib: 4096,
        argon2_iterations: 1,
        signups_per_ip_per_hour: 0,
        ..Default::default()
    }
}

/// Content-service settings for tests: short redelivery and retry delays so crash and
/// retry paths finish in seconds.
pub fn test_content_config() -> mosaic_content::Config {
    mosaic_content::Config {
        workers: 2,
        job_ack_wait_secs: 3,
        job_retry_backoff_ms: vec![100, 200],
        sweep_interval_secs: 2,
        ..Default::default()
    }
}

/// A running Mosaic: NATS, every component (as [`mosaic::COMPONENTS`] lists them) and an
/// edge on a free port.
pub struct World {
    pub nats: NatsServer,
    /// The connection the first instance of every component serves on (further instances
    /// have their own, as separate processes would).
    pub mesh: Mesh,
    /// The world's configuration, databases and storage, shared by every instance.
    pub host: Host,
    /// Every running instance.
    pub running: Running,
    data_dir: tempfile::TempDir,
    pub client: Client,
}

impl World {
    /// The default world: every component once.
    pub async fn start() -> Self {
        Self::start_with(WorldOptions::default()).await
    }

    /// A world set up by `options`.
    pub async fn start_with(options: WorldOptions) -> Self {
        Self::try_start_with(options).await.expect("the world starts")
    }

    /// A world set up by `options`, or why it could not start.
    pub async fn try_start_with(options: WorldOptions) -> anyhow::Result<Self> {
        init_logs();
        let nats = NatsServer::start_closed().await.context("nats-server starts")?;
        // Each component logs in as itself, held to the permissions generated from its
        // declaration; the connections share one process (local calls, caller verification)
        // as in `mosaic up`. The test's own handle is the operators' user.
        let components = options.components();
        let base = NatsConfig { local_calls: options.local_calls, ..nats.config() };
        let mesh = Mesh::connect(&base, "test").await?;
        let mut units = Vec::new();
        for &component in &components {
            let login = NatsConfig { local_calls: options.local_calls, ..nats.login(component.name) };
            units.push((component, mesh.connect_also(&login, component.name).await?));
        }

        let data_dir = tempfile::tempdir()?;
        // The edge's address is known before anything starts, so emails can link to it.
        let listener = mosaic_edge::bind(([127, 0, 0, 1], 0).into(), 1024).context("edge port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let host = options.clone().set("public_url", &base).host(data_dir.path())?.with_listener(listener);
        let mut running = start_each(&host, units).await?;
        let mut world = Self { nats, mesh, host, running: Running::default(), data_dir, client: Client::new(base) };
        std::mem::swap(&mut world.running, &mut running);
        for component in components {
            for _ in 1..options.instances.get(component.name).copied().unwrap_or(1) {
                world.add_instance(component.name).await?;
            }
        }
        Ok(world)
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// Starts one more instance of `component` on this world's NATS, databases and storage,
    /// with its own NATS connection as a separate process would have.
    pub async fn add_instance(&mut self, component: &str) -> anyhow::Result<()> {
        let component = mosaic::component(component).with_context(|| format!("no component {component}"))?;
        let mesh = Mesh::connect(&self.nats.login(component.name), component.name).await?;
        let handle = component.run(self.host.unit(component, mesh)).await?;
        self.running.push(component, handle);
        Ok(())
    }

    /// Takes the newest instance of `component` out of the world (to stop or abort it).
    pub fn take_instance(&mut self, component: &str) -> ServiceHandle {
        self.running.take(component).unwrap_or_else(|| panic!("no {component} instance runs"))
    }

    /// A new account made an administrator the way an operator does it (`mosaic admin
    /// grant`), logged in again so its tokens carry the role.
    pub async fn admin(&self, name: &str) -> TestUser {
        let user = self.client.signup(name).await;
        let granted = mosaic_user::admin::set_admin(&self.db("user").await, &user.username, true).await;
        assert!(granted.expect("granting the role").is_some(), "the account exists");
        self.client.login(&user).await
    }

    /// The database of `component` that every instance of it shares.
    pub async fn db(&self, component: &str) -> Db {
        let component = mosaic::component(component).expect("a component of that name");
        self.host.database(component).await.expect("the component's database")
    }

    /// The media storage every instance shares.
    pub fn storage(&self) -> Storage {
        self.host.storage().expect("storage opens")
    }

    /// The directory of the default (local) media storage.
    pub fn media_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join("media")
    }

    /// Stops everything, the edge first.
    pub async fn stop(mut self) {
        self.running.stop().await;
    }
}

impl Drop for World {
    /// Every test's traffic is held to the components' declarations: a use of NATS that a
    /// component did not declare (recorded by its scoped mesh, see
    /// `mosaic_mesh::Mesh::scoped`) fails the test that sees it, and so does anything the
    /// NATS server refused a component under the permissions generated from them.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let undeclared = mosaic_mesh::component::violations();
        if !undeclared.is_empty() {
            panic!("components used NATS beyond their declarations: {undeclared:#?}");
        }
        let refused = self.nats.permission_violations();
        if !refused.is_empty() {
            panic!("the NATS server refused components under their generated permissions: {refused:#?}");
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

/// Waits, if need be, until the current view window (see `mosaic_edge::views::VIEW_WINDOW`)
/// has `room` left, so that views a test makes next fall in one window and count once.
pub async fn within_one_view_window(room: Duration) {
    let window = mosaic_edge::views::VIEW_WINDOW.as_millis() as i64;
    let into = chrono::Utc::now().timestamp_millis().rem_euclid(window);
    let left = Duration::from_millis((window - into) as u64);
    if left < room {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

//! `mosaic up` as a user runs it: the real binary as a child process, not the services
//! wired in-process. It must start every component of the list, answer through the edge,
//! and stop cleanly on SIGTERM.

use mosaic_tests::{Client, NatsServer, eventually};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `mosaic` binary of this build: `MOSAIC_BIN`, or the one beside the test binary's
/// directory (`target/<profile>/mosaic`, built by `scripts/test`).
fn mosaic_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSAIC_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").join("mosaic");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p mosaic`, as scripts/test does)",
        bin.display()
    );
    bin
}

/// A running `mosaic up`, killed on drop if the test did not stop it.
struct Up {
    child: Child,
    base: String,
}

/// A local NATS URL on a port nothing listens on now, for the server `mosaic up` starts.
fn free_nats_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("nats://{}", listener.local_addr().unwrap())
}

/// Connects to the NATS of the `mosaic up` on `data_dir` as `user`, with the password it
/// keeps there.
async fn login(
    url: &str,
    data_dir: &std::path::Path,
    user: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let config = mosaic::nats::Credentials::load_or_create(data_dir).unwrap().login(&Default::default(), user);
    let password = config.password.unwrap().expose().to_owned();
    async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password)
        .custom_inbox_prefix(mosaic_mesh::authz::inbox_prefix(user))
        .max_reconnects(Some(0))
        .connect(url)
        .await
}

impl Up {
    /// `mosaic up` on `data_dir`, starting its own NATS server at `nats_url`.
    async fn start(nats_url: &str, data_dir: &std::path::Path) -> Self {
        Self::start_with(nats_url, data_dir, &[]).await
    }

    async fn start_with(nats_url: &str, data_dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(mosaic_bin())
            .args(["up", "--http", "127.0.0.1:0", "--nats-url", nats_url, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("MOSAIC_ANALYTICS__FLUSH_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("mosaic starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let banner = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.expect("reading mosaic's output") {
                if line.starts_with("Mosaic is up at ") {
                    return line;
                }
            }
            panic!("mosaic exited before it was up")
        })
        .await
        .expect("mosaic is up within two minutes");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = banner.trim_start_matches("Mosaic is up at ").split_whitespace().next().unwrap().to_owned();
        Self { child, base }
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running");
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("mosaic stops within 40 s of SIGTERM")
            .unwrap()
    }
}

/// The service names that answer `$SRV.PING` within `within`, once all of `want` did.
async fn ping_until(nats: &async_nats::Client, want: &BTreeSet<&str>, within: Duration) -> BTreeSet<String> {
    use futures::StreamExt as _;
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline && !want.iter().all(|w| seen.contains(*w)) {
        let inbox = nats.new_inbox();
        let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
        nats.publish_with_reply("$SRV.PING", inbox, "".into()).await.unwrap();
        let round = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(round);
        loop {
            tokio::select! {
                _ = &mut round => break,
                Some(m) = replies.next() => {
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    seen.insert(v["name"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosaic_up_runs_every_service_and_serves_a_creator_report() {
    mosaic_tests::init_logs();
    let nats = free_nats_url();
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(&nats, data.path()).await;

    // Its NATS lets in only the users of the generated configuration.
    let anonymous = async_nats::ConnectOptions::new().max_reconnects(Some(0)).connect(&nats).await;
    assert!(anonymous.is_err(), "an anonymous client got into mosaic up's NATS");
    // With one replica, a write is on disk before JetStream acknowledges it.
    let conf = std::fs::read_to_string(data.path().join("nats").join("server.conf")).unwrap();
    assert!(conf.contains("sync_interval: always"), "{conf}");

    // Every service of the component list answers discovery, analytics included.
    let raw = login(&nats, data.path(), "admin").await.expect("the operators' login works");
    let services: BTreeSet<&str> = mosaic::COMPONENTS.iter().filter(|c| !c.serves.is_empty()).map(|c| c.name).collect();
    assert_eq!(services.len(), 7, "seven services in the list: {services:?}");
    let seen = ping_until(&raw, &services, Duration::from_secs(20)).await;
    let missing: Vec<_> = services.iter().filter(|s| !seen.contains(**s)).collect();
    assert!(missing.is_empty(), "no $SRV.PING answer from {missing:?} (answered: {seen:?})");

    // A creator's report through the edge counts a view of their post.
    let client = Client::new(up.base.clone());
    client.send(reqwest::Method::GET, "/healthz", None, None).await.assert_status(200);
    let creator = client.signup("creator").await;
    let viewer = client.signup("viewer").await;
    let post = client.create_post(&creator.access_token, "seen once", &[]).await;
    let views = format!("/v1/posts/{}/views", post["id"].as_str().unwrap());
    client.post(&views, Some(&viewer.access_token), json!({})).await.assert_status(202);
    let counted = eventually(Duration::from_secs(30), || async {
        let r = client.get("/v1/analytics/me/daily", &creator.access_token).await;
        r.status == 200 && r.body["views"] == 1
    })
    .await;
    let last = client.get("/v1/analytics/me/daily", &creator.access_token).await;
    assert!(counted, "the creator report never counted the view: {} {}", last.status, last.body);

    let status = up.stop().await;
    assert!(status.success(), "mosaic up exited with {status}");
}

/// Reads a component process's JSON log lines until its "ready" line; returns the edge's
/// listening address when it logged one.
async fn wait_ready(child: &mut Child, name: &str) -> Option<String> {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut addr = None;
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("reading the component's log") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if v["message"] == "edge listening" {
                addr = v["addr"].as_str().map(str::to_owned);
            }
            if v["message"] == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(ready, Ok(true)), "{name} never logged that it was ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_runs_as_a_process_of_its_own() {
    mosaic_tests::init_logs();
    // Closed as a deployment's is: each process logs in as its component, with the password
    // its environment holds, and is held to the permissions generated for it.
    let nats = NatsServer::start_closed().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut edge = None;
    for component in mosaic::COMPONENTS {
        let mut child = Command::new(mosaic_bin())
            .args(["serve", component.name, "--http", "127.0.0.1:0", "--nats-url", nats.url(), "--data-dir"])
            .arg(data.path())
            .env(
                mosaic_mesh::authz::password_env(component.name),
                nats.login(component.name).password.unwrap().expose(),
            )
            .env("MOSAIC_LOG_JSON", "true")
            .env("RUST_LOG", "warn,mosaic_mesh=info,mosaic_edge=info")
            .env("MOSAIC_USER__ARGON2_MEMORY_KIB", "4096")
            .env("MOSAIC_USER__ARGON2_ITERATIONS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("mosaic serve starts");
        if let Some(addr) = wait_ready(&mut child, component.name).await {
            edge = Some(addr);
        }
        children.push((component.name, child));
    }
    let edge = edge.expect("the edge logged its address");

    let raw = nats.connect().await;
    let services: BTreeSet<&str> = mosaic::COMPONENTS.iter().filter(|c| !c.serves.is_empty()).map(|c| c.name).collect();
    let seen = ping_until(&raw, &services, Duration::from_secs(20)).await;
    assert!(services.iter().all(|s| seen.contains(*s)), "answered $SRV.PING: {seen:?}");

    // A post made through one process is read back through the others.
    let client = Client::new(format!("http://{edge}"));
    let author = client.signup("apart").await;
    let post = client.create_post(&author.access_token, "from separate processes", &[]).await;
    let read = client.get(&format!("/v1/posts/{}", post["id"].as_str().unwrap()), &author.access_token).await;
    read.assert_status(200);
    assert_eq!(read.body["caption"], "from separate processes");

    // Each stops cleanly on SIGTERM, the edge first.
    for (name, mut child) in children.into_iter().rev() {
        let pid = child.id().expect("still running").to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} stops within 40 s of SIGTERM"))
            .unwrap();
        assert!(status.success(), "{name} exited with {status}");
    }
    let refused = nats.permission_violations();
    assert!(refused.is_empty(), "the server refused the components under their permissions: {refused:#?}");
}

/// Runs `mosaic admin <action> <username>` on `data_dir` and returns its output.
async fn admin_command(nats: &str, data_dir: &std::path::Path, action: &str, username: &str) -> String {
    let out = Command::new(mosaic_bin())
        .args(["admin", action, username, "--nats-url", nats, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("mosaic admin runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mosaic admin {action} {username} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_grant_and_revoke_the_administrator_role() {
    mosaic_tests::init_logs();
    let nats = free_nats_url();
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(&nats, data.path()).await;
    let client = Client::new(up.base.clone());
    // A name claims nothing.
    let alice = client.signup("admin").await;
    assert_eq!(client.get("/v1/users/me", &alice.access_token).await.body["role"], "user");
    let target = client.signup("target").await;
    assert!(up.stop().await.success());

    // The embedded database is the stopped system's: the operator grants, then starts it.
    admin_command(&nats, data.path(), "grant", &alice.username).await;
    let up = Up::start(&nats, data.path()).await;
    let client = Client::new(up.base.clone());
    let alice = client.login(&alice).await;
    assert_eq!(client.get("/v1/users/me", &alice.access_token).await.body["role"], "admin");
    let suspend = format!("/v1/admin/users/{}/suspend", target.id);
    client.post(&suspend, Some(&alice.access_token), json!({})).await.assert_status(204);

    // The grant is on record: the running user service published its audit event.
    let js = async_nats::jetstream::new(login(&nats, data.path(), "admin").await.unwrap());
    let recorded = eventually(Duration::from_secs(30), || async {
        let Ok(stream) = js.get_stream("EVENTS_USER").await else { return false };
        let Ok(m) = stream.get_last_raw_message_by_subject("events.user.admin_granted").await else { return false };
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|e| e["data"]["user_id"] == alice.id.as_str())
    })
    .await;
    assert!(recorded, "no admin_granted event for {}", alice.id);
    assert!(up.stop().await.success());

    // Revoked: the old token is void at once (NATS is up), and a new login is a user's.
    // `mosaic up` is stopped, so its NATS is too: this server, closed the same way, is
    // the one `revoke` reaches (and the next `up` uses).
    let server = nats_like_up(&nats, data.path()).await;
    admin_command(&nats, data.path(), "revoke", &alice.username).await;
    let up = Up::start(&nats, data.path()).await;
    let client = Client::new(up.base.clone());
    client.get("/v1/users/me", &alice.access_token).await.assert_problem(401, "unauthorized");
    let alice = client.login(&alice).await;
    assert_eq!(client.get("/v1/users/me", &alice.access_token).await.body["role"], "user");
    let unsuspend = format!("/v1/admin/users/{}/unsuspend", target.id);
    client.post(&unsuspend, Some(&alice.access_token), json!({})).await.assert_problem(403, "forbidden");
    assert!(up.stop().await.success());
    server.stop().await;
}

/// The NATS server `mosaic up` would start on `data_dir`, started on its own.
async fn nats_like_up(url: &str, data_dir: &std::path::Path) -> mosaic::nats::Embedded {
    let credentials = mosaic::nats::Credentials::load_or_create(data_dir).unwrap();
    mosaic::nats::spawn_secured(url, data_dir, &credentials).await.expect("nats-server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosaic_up_refuses_an_open_nats_server_unless_told() {
    mosaic_tests::init_logs();
    let open = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(mosaic_bin())
        .args(["up", "--http", "127.0.0.1:0", "--nats-url", open.url(), "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("mosaic runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mosaic up ran on an open NATS server");
    assert!(text.contains("lets anyone in") && text.contains("--insecure-nats"), "unclear refusal: {text}");

    // Told to, it runs there, and says so.
    let up = Up::start_with(open.url(), data.path(), &["--insecure-nats"]).await;
    let client = Client::new(up.base.clone());
    client.signup("open").await;
    assert!(up.stop().await.success());
}

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

impl Up {
    async fn start(nats: &NatsServer, data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(mosaic_bin())
            .args(["up", "--http", "127.0.0.1:0", "--nats-url", nats.url(), "--data-dir"])
            .arg(data_dir)
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
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(&nats, data.path()).await;

    // Every service of the component list answers discovery, analytics included.
    let raw = async_nats::connect(nats.url()).await.unwrap();
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

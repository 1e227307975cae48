//! Edge settings (`[edge]` in the configuration file, `MOSAIC_EDGE__*`).

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Settings of one edge node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to listen on (`mosaic up --http` sets it).
    pub http: SocketAddr,
    /// Connections the kernel may hold for the edge before it accepts them; the kernel caps
    /// this at `net.core.somaxconn`. A full queue drops new connections' first packet and
    /// the client retries a whole second later, so a burst of connections (a reconnect
    /// storm, a client opening its pool) must fit in it.
    pub listen_backlog: u32,
    /// Largest JSON body accepted; bigger ones get 413.
    pub max_json_body_bytes: usize,
    /// Time a request may take end to end before the edge answers 504.
    pub request_timeout_secs: u64,
    /// Origins allowed by CORS; empty allows any origin (tokens travel in headers, not
    /// cookies, so there is no ambient authority to protect).
    pub cors_origins: Vec<String>,
    /// Reverse proxies in front of the edge, each appending the address it saw to
    /// `X-Forwarded-For`: the client is the address that many hops from the right. 0 (no
    /// proxy): the socket's peer, and the header, which anyone can write, is ignored.
    pub trusted_proxies: usize,
    /// Removed (it trusted the leftmost `X-Forwarded-For` address, which the client
    /// writes); set, it stops the edge and names `trusted_proxies` instead.
    #[serde(skip_serializing)]
    pub trust_forwarded_for: Option<serde::de::IgnoredAny>,
    /// Sustained requests per second per client IP; 0 disables the limit.
    pub rate_limit_per_sec: u32,
    /// Burst allowance per client IP.
    pub rate_limit_burst: u32,
    /// Post views one user may record per minute on this edge (repeats of one post within
    /// a few minutes count once anyway); beyond it, 429. 0 lifts the limit.
    pub views_per_user_per_min: u32,
    /// Seconds between WebSocket pings; a socket silent for three intervals is closed.
    pub ws_heartbeat_secs: u64,
    /// Frames buffered per user before a slow socket starts losing live frames.
    pub ws_buffer: usize,
    /// Sockets one user may hold open on this edge; 0 lifts the cap. Each costs a task,
    /// buffers and a share of a subscription.
    pub ws_max_per_user: usize,
    /// Sockets one client address (an IPv4 address, an IPv6 /64) may hold open on this
    /// edge, whoever is signed in on them; 0 lifts the cap. Set it above the users behind
    /// one NAT times the sockets each opens.
    pub ws_max_per_ip: usize,
    /// Frames per second a client may send on one socket, sustained; twice as many may come
    /// at once. Frames beyond it are refused with a `rate_limited` error frame.
    pub ws_frames_per_sec: u32,
    /// Clock skew tolerated when checking token expiry.
    pub clock_skew_secs: u64,
    /// Answer media requests with a redirect to a presigned store URL (S3 stores only), so
    /// the bytes bypass the edge.
    pub media_redirect: bool,
    /// Lifetime of those presigned URLs.
    pub media_redirect_ttl_secs: u64,
    /// A secret that opens `/metrics` and the details of `/readyz` to a caller sending it as
    /// `Authorization: Bearer <ops_token>` (a scraper, a probe from elsewhere). Loopback
    /// clients get them without it; everyone else gets the bare readiness status.
    #[serde(skip_serializing)]
    pub ops_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 4096,
            max_json_body_bytes: 64 * 1024,
            request_timeout_secs: 15,
            cors_origins: Vec::new(),
            trusted_proxies: 0,
            trust_forwarded_for: None,
            rate_limit_per_sec: 200,
            rate_limit_burst: 400,
            views_per_user_per_min: 300,
            ws_heartbeat_secs: 30,
            ws_buffer: 256,
            ws_max_per_user: 16,
            ws_max_per_ip: 512,
            ws_frames_per_sec: 20,
            clock_skew_secs: 5,
            media_redirect: false,
            media_redirect_ttl_secs: 3600,
            ops_token: None,
        }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the edge cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if self.trust_forwarded_for.is_some() {
            bail!(
                "edge.trust_forwarded_for is no longer read: set edge.trusted_proxies to the number of proxies in front"
            );
        }
        if self.trusted_proxies > 8 {
            bail!("edge.trusted_proxies counts proxies in front of the edge (at most 8)");
        }
        if self.listen_backlog == 0 || self.listen_backlog > 65_535 {
            bail!("edge.listen_backlog must be between 1 and 65535");
        }
        if self.max_json_body_bytes < 1024 {
            bail!("edge.max_json_body_bytes must be at least 1024");
        }
        if self.request_timeout_secs == 0 {
            bail!("edge.request_timeout_secs must be positive");
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            bail!("edge.rate_limit_burst must be positive when edge.rate_limit_per_sec is set");
        }
        if self.ws_heartbeat_secs == 0 || self.ws_buffer == 0 || self.ws_frames_per_sec == 0 {
            bail!("edge.ws_heartbeat_secs, edge.ws_buffer and edge.ws_frames_per_sec must be positive");
        }
        if self.ops_token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("edge.ops_token must be at least 16 characters");
        }
        for origin in &self.cors_origins {
            if http::HeaderValue::from_str(origin).is_err() {
                bail!("edge.cors_origins: {origin:?} is not a valid origin");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_mesh::component::Section as _;

    #[test]
    fn the_defaults_pass_and_each_bad_setting_is_named() {
        Config::default().validate().expect("defaults are valid");
        let bad = [
            Config { listen_backlog: 0, ..Config::default() },
            Config { listen_backlog: 65_536, ..Config::default() },
            Config { max_json_body_bytes: 10, ..Config::default() },
            Config { request_timeout_secs: 0, ..Config::default() },
            Config { rate_limit_burst: 0, ..Config::default() },
            Config { ws_buffer: 0, ..Config::default() },
            Config { ws_frames_per_sec: 0, ..Config::default() },
            Config { ops_token: Some("short".into()), ..Config::default() },
            Config { cors_origins: vec!["bad\norigin".into()], ..Config::default() },
        ];
        for config in bad {
            let e = config.validate().expect_err("rejected").to_string();
            assert!(e.starts_with("edge."), "{e}");
        }
    }
}

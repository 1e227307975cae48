//! `mosaic bench social`: a DeathStarBench-style social-network load against a running
//! Mosaic edge, over real HTTP and WebSocket, the way a population of clients drives it.
//!
//! Two cases:
//! * the mix: a real friendship graph signed up and followed both ways, seeded with posts,
//!   then an open-loop request mix (home feeds, user timelines, new posts) at a fixed rate;
//! * the fan-out (`--fanout`): one author, N followers on WebSockets, one post, and the delay
//!   until each follower's `feed.post` frame arrives.
//!
//! The generator runs on one thread: the machines this is meant for have two cores, and the
//! server under test needs the other.

use anyhow::{Context as _, bail};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use image::{DynamicImage, ImageFormat, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The long help of `mosaic bench social`.
pub const ABOUT: &str = "\
Drives a running Mosaic edge over real HTTP and WebSocket with a social-network load \
modelled on the DeathStarBench social network.

Start Mosaic first, without the per-IP rate limit (every request of this benchmark comes \
from one address, and the default limit of 200 requests/s would answer most of them 429):

    MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0 target/release/mosaic up --data-dir /tmp/bench-social

then, from the repository root:

    target/release/mosaic bench social --url http://127.0.0.1:8080

The mix (default): every node of the graph (--graph, an edge list; socfb-Reed98: 962 users, \
18 812 friendships) is signed up and each friendship becomes a follow both ways; each user \
gets --posts-per-user posts, and a pool of ready media is uploaded for the posts the timed \
phase creates. None of that is timed. The run then waits (--settle-timeout) until the durable \
consumers on the NATS server (--nats-url) have worked off what setup queued, so the timed \
phase measures the steady state rather than setup's leftovers. Then requests are sent open-loop at --rate per second \
for --warmup seconds (not recorded) and --duration seconds: 60% home feeds (GET /v1/feed), 30% \
user timelines (GET /v1/users/{id}/posts), 10% new posts (POST /v1/posts), as --mix. Latency \
counts from each request's scheduled send time, so a server that falls behind cannot hide its \
queue (no coordinated omission); requests over --max-in-flight are counted as not sent.

The fan-out (--fanout [N], N defaults to 10000): one author and N followers, each follower on \
a WebSocket (GET /v1/ws); the author posts once, and the time from sending the post to each \
follower's feed.post frame is reported. The server needs N file descriptors for the sockets \
too (check `ulimit -n` where it runs).

Each run signs up fresh users under a unique prefix, so runs can repeat against the same data \
directory. Access tokens are refreshed before a phase that would outlive them.";

/// Where the graph lives relative to the repository root (the default assumes the
/// repository root as the working directory).
const DEFAULT_GRAPH: &str = "../shared/data/socfb-Reed98.edges";
/// One password for every benchmark user: strong enough for the signup rules, and never
/// containing a username (they are all `b<hex>_…`).
const PASSWORD: &str = "Open-loop-Bench-Pa55";
/// Page size of feed and timeline reads; DeathStarBench's read scripts ask for 10 posts.
const PAGE: usize = 10;
/// Setup requests answered 429 or 503 are retried this many times before giving up.
const SETUP_RETRIES: u32 = 30;
/// How long an uploaded photo may stay `processing` before setup gives up on it.
const MEDIA_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A long phase prints its progress this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// WebSocket handshakes in flight at once during the fan-out: a few dozen keeps the edge's
/// accept queue short without making 10 000 connections slow.
const WS_CONNECTS_IN_FLIGHT: usize = 64;
/// Sockets, HTTP connections and files beyond the per-request or per-socket ones.
pub(crate) const SPARE_FDS: u64 = 256;

#[derive(Args, Clone, Debug)]
pub struct SocialLoad {
    /// Base URL of the running Mosaic edge (`mosaic up`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Edge list of the social graph: one `a b` pair of node numbers per line, lines
    /// starting with `%` or `#` ignored. A relative path that does not exist from the
    /// current directory is also tried from the repository root.
    #[arg(long, default_value = DEFAULT_GRAPH)]
    graph: PathBuf,
    /// Requests per second in the timed phase.
    #[arg(long, default_value_t = 3000)]
    rate: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds of load before the measurement starts (sent the same way, not recorded).
    /// At 3 000 requests/s a fresh server needs about ten to fill its caches and work off
    /// the queue that built meanwhile.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Percentages of home-feed reads, user-timeline reads and new posts.
    #[arg(long, default_value = "60,30,10", value_parser = parse_mix)]
    mix: Mix,
    /// Posts each user gets before the timed phase.
    #[arg(long, default_value_t = 2)]
    posts_per_user: usize,
    /// Requests in flight at most; a request due while this many are outstanding is counted
    /// as not sent.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Requests in flight during setup (signups cost an Argon2 hash each on the server).
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Seconds a request may take before it counts as a timeout.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Seed of the random choices (users, request kinds), for repeatable runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the fan-out case instead of the mix: one author, this many followers on
    /// WebSockets (10000 when given without a number).
    #[arg(long, value_name = "FOLLOWERS", num_args = 0..=1, default_missing_value = "10000")]
    fanout: Option<usize>,
    /// Seconds the fan-out waits for every follower's `feed.post` frame.
    #[arg(long, default_value_t = 10)]
    fanout_timeout: u64,
    /// NATS server of the Mosaic under test, watched after setup until its durable
    /// consumers have worked off what setup queued (follow notifications, feed updates).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Seconds to wait for that backlog to drain before the timed phase; 0 skips the wait
    /// (and the measurement then shares the machine with setup's leftovers).
    #[arg(long, default_value_t = 900)]
    settle_timeout: u64,
}

/// Shares of the request kinds, in percent.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    feed: u32,
    timeline: u32,
    post: u32,
}

fn parse_mix(raw: &str) -> Result<Mix, String> {
    let parts: Vec<u32> =
        raw.split(',').map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}"))).collect::<Result<_, _>>()?;
    let [feed, timeline, post] = parts[..] else {
        return Err("expected three percentages: feed,timeline,post".into());
    };
    if feed + timeline + post != 100 {
        return Err(format!("the percentages add up to {}, not 100", feed + timeline + post));
    }
    Ok(Mix { feed, timeline, post })
}

impl Mix {
    fn pick(self, rng: &mut StdRng) -> Kind {
        let r = rng.gen_range(0..100);
        if r < self.feed {
            Kind::Feed
        } else if r < self.feed + self.timeline {
            Kind::Timeline
        } else {
            Kind::Post
        }
    }
}

impl SocialLoad {
    fn validate(&self) -> anyhow::Result<()> {
        if self.rate == 0 || self.duration == 0 {
            bail!("--rate and --duration must be positive");
        }
        if self.max_in_flight == 0 || self.setup_concurrency == 0 || self.timeout == 0 {
            bail!("--max-in-flight, --setup-concurrency and --timeout must be positive");
        }
        if self.fanout == Some(0) || self.fanout_timeout == 0 {
            bail!("--fanout and --fanout-timeout must be positive");
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!("--url must start with http:// or https:// (got {:?})", self.url);
        }
        Ok(())
    }
}

/// Runs the benchmark on a thread of its own with a single-threaded runtime, so the
/// generator takes at most one core and its timers are not shared with other work.
pub async fn run(load: SocialLoad) -> anyhow::Result<()> {
    load.validate()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-social".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the load generator's runtime")
                .and_then(|rt| rt.block_on(drive(load)));
            let _ = done_tx.send(result);
        })
        .context("starting the load generator thread")?;
    done_rx.await.context("the load generator thread panicked")?
}

async fn drive(load: SocialLoad) -> anyhow::Result<()> {
    let needed_fds = match load.fanout {
        Some(n) => n as u64 + SPARE_FDS,
        None => load.max_in_flight as u64 + SPARE_FDS,
    };
    let fds = raise_fd_limit(needed_fds)?;
    let base = load.url.trim_end_matches('/').to_owned();
    let edge = Edge::new(&base, &load)?;
    edge.check_up().await?;
    // Unique per run, so repeated runs against one data directory never collide on
    // usernames or upload hashes.
    let nonce = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_millis())
        .context("clock out of range")?;
    let prefix = format!("b{nonce:x}");
    println!(
        "machine: {} cores; file descriptors: {fds}; url={base}; setup concurrency={}; request timeout={} s; user prefix={prefix}",
        cores(),
        load.setup_concurrency,
        load.timeout
    );
    match load.fanout {
        Some(followers) => {
            println!("fan-out: 1 author, {followers} followers on WebSockets, wait {} s", load.fanout_timeout);
            fanout(&edge, &load, followers, &prefix, nonce).await
        }
        None => {
            let Mix { feed, timeline, post } = load.mix;
            println!(
                "mix: rate={} req/s, duration={} s after {} s warm-up, feed/timeline/post={feed}/{timeline}/{post}%, \
                 posts per user={}, max in flight={}, seed={}",
                load.rate, load.duration, load.warmup, load.posts_per_user, load.max_in_flight, load.seed
            );
            mix(&edge, &load, &prefix, nonce).await
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit, and fails clearly if
/// that is still below what the run needs.
pub(crate) fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().context("reading RLIMIT_NOFILE")?;
    // Linux refuses a soft limit above fs.nr_open (2^20 by default) even when the hard
    // limit is unlimited.
    let target = hard.min(1 << 20);
    let limit = if soft < target {
        match rlimit::increase_nofile_limit(target) {
            Ok(limit) => limit,
            Err(e) => {
                eprintln!("warning: could not raise the open-file limit from {soft} to {target}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    if limit < needed {
        bail!(
            "this run needs about {needed} file descriptors but the open-file limit is {limit} (hard limit {hard}); \
             raise it (e.g. `ulimit -n {needed}` in the shell, which may need root for the hard limit) or ask for fewer \
             (--max-in-flight, --fanout)"
        );
    }
    Ok(limit)
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

// ---------------------------------------------------------------------------------------
// The client side of the API, for setup.

/// A signed-up user as the benchmark holds it.
pub(crate) struct Account {
    pub(crate) id: String,
    /// For the WebSocket query string.
    pub(crate) access_token: String,
    /// `Bearer <access token>`, built once: every request of this user sends it.
    pub(crate) bearer: HeaderValue,
    refresh_token: String,
    expires_at: Instant,
}

#[derive(Deserialize)]
struct AuthReply {
    user: UserRef,
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct UserRef {
    id: String,
}

#[derive(Deserialize)]
struct MediaReply {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

impl Account {
    fn from_reply(reply: AuthReply, requested: Instant) -> anyhow::Result<Self> {
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", reply.access_token)).context("access token is not a header")?;
        bearer.set_sensitive(true);
        Ok(Self {
            id: reply.user.id,
            access_token: reply.access_token,
            bearer,
            refresh_token: reply.refresh_token,
            // From when the request left: the server's clock started no earlier.
            expires_at: requested + Duration::from_secs(reply.expires_in),
        })
    }
}

/// The edge, as seen by the benchmark: one HTTP client (connections are pooled across
/// users, as they would be behind a load balancer).
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    /// Setup requests answered 429, to explain a slow setup.
    throttled: Arc<std::sync::atomic::AtomicU64>,
}

impl Edge {
    fn new(base: &str, load: &SocialLoad) -> anyhow::Result<Self> {
        Self::with(base, load.timeout, load.max_in_flight)
    }

    /// An edge client with a request timeout and a pool of idle connections.
    pub(crate) fn with(base: &str, timeout_secs: u64, pool: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout_secs))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base: base.to_owned(), throttled: Arc::default() })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn check_up(&self) -> anyhow::Result<()> {
        let url = self.url("/healthz");
        let resp = self.http.get(&url).send().await.with_context(|| {
            format!(
                "no Mosaic edge answers at {url}; start one first, e.g. \
                 `MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0 target/release/mosaic up --data-dir /tmp/bench-social`"
            )
        })?;
        expect(resp, StatusCode::OK, "GET /healthz").await?;
        Ok(())
    }

    /// Sends a setup request, retrying while the edge answers 429 or 503: both mean the
    /// request was not carried out, and setup should survive a rate limit or a busy moment.
    pub(crate) async fn send(&self, what: &str, make: impl Fn() -> RequestBuilder) -> anyhow::Result<Response> {
        let mut attempt = 0;
        loop {
            let resp = make().send().await.with_context(|| what.to_owned())?;
            let status = resp.status();
            if !(status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
                || attempt >= SETUP_RETRIES
            {
                return Ok(resp);
            }
            attempt += 1;
            if status == StatusCode::TOO_MANY_REQUESTS {
                let before = self.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if before == 0 {
                    eprintln!(
                        "warning: the edge answers 429 (per-IP rate limit); setup will be slow and the timed phase \
                         meaningless: restart Mosaic with MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0"
                    );
                }
            }
            let wait = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Duration::from_millis(500), Duration::from_secs);
            tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
        }
    }

    pub(crate) async fn signup(&self, username: &str) -> anyhow::Result<Account> {
        let what = format!("signing up {username}");
        let body = serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": PASSWORD,
        });
        let url = self.url("/v1/auth/signup");
        let requested = Instant::now();
        let resp = self.send(&what, || self.http.post(&url).json(&body)).await?;
        let reply: AuthReply =
            expect(resp, StatusCode::CREATED, &what).await?.json().await.with_context(|| what.clone())?;
        Account::from_reply(reply, requested)
    }

    async fn refresh(&self, account: &mut Account) -> anyhow::Result<()> {
        let url = self.url("/v1/auth/refresh");
        let body = serde_json::json!({ "refresh_token": account.refresh_token });
        let requested = Instant::now();
        let resp = self.send("refreshing a token", || self.http.post(&url).json(&body)).await?;
        let reply: AuthReply =
            expect(resp, StatusCode::OK, "refreshing a token").await?.json().await.context("refreshing a token")?;
        *account = Account::from_reply(reply, requested)?;
        Ok(())
    }

    async fn follow(&self, follower: &Account, target: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("/v1/users/{target}/follow"));
        let resp =
            self.send("following", || self.http.put(&url).header(AUTHORIZATION, follower.bearer.clone())).await?;
        expect(resp, StatusCode::NO_CONTENT, &format!("PUT /v1/users/{target}/follow")).await?;
        Ok(())
    }

    /// Uploads a photo as `owner` and waits until it is ready to be posted.
    async fn upload_ready(&self, owner: &Account, png: Vec<u8>) -> anyhow::Result<String> {
        let url = self.url("/v1/media");
        let body = bytes::Bytes::from(png);
        let resp = self
            .send("uploading media", || {
                self.http
                    .post(&url)
                    .header(AUTHORIZATION, owner.bearer.clone())
                    .header(CONTENT_TYPE, "image/png")
                    .body(body.clone())
            })
            .await?;
        let mut media: MediaReply =
            expect(resp, StatusCode::ACCEPTED, "POST /v1/media").await?.json().await.context("POST /v1/media")?;
        let id = media.id.clone();
        let url = self.url(&format!("/v1/media/{id}"));
        let give_up = Instant::now() + MEDIA_READY_TIMEOUT;
        // Short first waits: a 64 px photo is processed in milliseconds once a worker
        // takes it; longer ones when the queue is deep, so polls do not add to the load.
        let mut wait = Duration::from_millis(20);
        loop {
            match media.status.as_str() {
                "ready" => return Ok(id),
                "processing" => {}
                "failed" => bail!("media {id} failed to process: {:?}", media.error),
                other => bail!("media {id} has an unknown status {other:?}"),
            }
            if Instant::now() > give_up {
                bail!("media {id} still processing after {MEDIA_READY_TIMEOUT:?}; are the content workers running?");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
            let resp =
                self.send("polling media", || self.http.get(&url).header(AUTHORIZATION, owner.bearer.clone())).await?;
            media = expect(resp, StatusCode::OK, &format!("GET /v1/media/{id}"))
                .await?
                .json()
                .await
                .context("GET /v1/media")?;
        }
    }

    async fn create_post(&self, author: &Account, media_id: &str, caption: &str) -> anyhow::Result<String> {
        let url = self.url("/v1/posts");
        let body = post_body(media_id, caption);
        let resp = self
            .send("creating a post", || self.http.post(&url).header(AUTHORIZATION, author.bearer.clone()).json(&body))
            .await?;
        let post: Created =
            expect(resp, StatusCode::CREATED, "POST /v1/posts").await?.json().await.context("POST /v1/posts")?;
        Ok(post.id)
    }

    /// Refreshes every token that would expire within `needed`, failing if the server's
    /// token lifetime is shorter than that altogether.
    pub(crate) async fn keep_fresh(
        &self,
        accounts: &mut [Account],
        needed: Duration,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let stale: Vec<&mut Account> = accounts.iter_mut().filter(|a| a.expires_at < now + needed).collect();
        if stale.is_empty() {
            return Ok(());
        }
        phase("tokens refreshed", stale, concurrency, |account| self.refresh(account)).await?;
        let shortest = accounts.iter().map(|a| a.expires_at).min().unwrap_or(now + needed);
        if shortest < Instant::now() + needed {
            bail!(
                "access tokens last less than the {} s this phase needs even when fresh; shorten the run or raise \
                 MOSAIC_USER__ACCESS_TOKEN_TTL_SECS on the server",
                needed.as_secs()
            );
        }
        Ok(())
    }
}

fn post_body(media_id: &str, caption: &str) -> serde_json::Value {
    serde_json::json!({ "caption": caption, "media_ids": [media_id], "tags": ["bench"] })
}

/// Passes a reply with the expected status through; anything else becomes an error that
/// carries the start of the body (the problem+json detail).
pub(crate) async fn expect(resp: Response, want: StatusCode, what: &str) -> anyhow::Result<Response> {
    let status = resp.status();
    if status == want {
        return Ok(resp);
    }
    // The body only explains the failure; an unreadable one leaves just the status.
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: expected {want}, got {status}: {}", body.chars().take(400).collect::<String>())
}

/// Runs `f` over `inputs` with at most `concurrency` in flight, printing progress; the first
/// error ends the phase.
pub(crate) async fn phase<A, T, F, Fut>(label: &str, inputs: Vec<A>, concurrency: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(A) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let total = inputs.len();
    let started = Instant::now();
    let mut reported = started;
    let mut out = Vec::with_capacity(total);
    let mut results = futures::stream::iter(inputs).map(f).buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        out.push(result.with_context(|| format!("{label}: {} of {total} done before this failure", out.len()))?);
        if reported.elapsed() >= PROGRESS_EVERY && out.len() < total {
            reported = Instant::now();
            println!("  {label}: {}/{total} ({:.0}/s)", out.len(), out.len() as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{label}: {total} in {secs:.1} s ({:.0}/s)", total as f64 / secs.max(1e-9));
    Ok(out)
}

/// A 64x64 PNG that no other upload of any run shares: its first pixels spell out the run
/// and the index (the content service stores each distinct original once, and identical
/// bytes would not exercise the pipeline).
fn tiny_png(nonce: u64, index: u64) -> anyhow::Result<Vec<u8>> {
    let tag: Vec<u8> = nonce.to_le_bytes().into_iter().chain(index.to_le_bytes()).collect();
    let byte = |k: usize| tag.get(k).copied().unwrap_or(0);
    let tint = index.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    let img = RgbImage::from_fn(64, 64, |x, y| {
        let i = (y * 64 + x) as usize;
        if i * 3 < tag.len() {
            image::Rgb([byte(i * 3), byte(i * 3 + 1), byte(i * 3 + 2)])
        } else {
            image::Rgb([
                (x as u8 * 4).wrapping_add(tint[0]),
                (y as u8 * 4).wrapping_add(tint[1]),
                ((x + y) as u8 * 2).wrapping_add(tint[2]),
            ])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, ImageFormat::Png).context("encoding a PNG")?;
    Ok(out.into_inner())
}

// ---------------------------------------------------------------------------------------
// The mix.

/// An undirected friendship graph with nodes renumbered 0..nodes.
struct Graph {
    nodes: usize,
    edges: Vec<(usize, usize)>,
}

impl Graph {
    fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let path = locate(path)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let graph = Self::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok((graph, path))
    }

    /// Whitespace-separated pairs of node numbers, whatever their base (0 or 1) or gaps;
    /// further columns (weights, times) are ignored, as are self-loops and repeats of a
    /// friendship in either direction.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('%') || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace().map(str::parse::<u64>);
            match (fields.next(), fields.next()) {
                (Some(Ok(a)), Some(Ok(b))) => pairs.push((a, b)),
                _ => bail!("line {}: expected two node numbers, got {line:?}", n + 1),
            }
        }
        let labels: std::collections::BTreeSet<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let index: BTreeMap<u64, usize> = labels.iter().enumerate().map(|(i, &label)| (label, i)).collect();
        let mut seen = HashSet::new();
        let mut edges = Vec::new();
        for (a, b) in pairs {
            let (a, b) = (index[&a], index[&b]);
            if a != b && seen.insert((a.min(b), a.max(b))) {
                edges.push((a, b));
            }
        }
        if edges.is_empty() {
            bail!("no friendships in the file");
        }
        Ok(Self { nodes: labels.len(), edges })
    }
}

/// The graph file as given, or, for a relative path missing from the current directory,
/// the same path from the repository root this binary was built in.
fn locate(path: &Path) -> anyhow::Result<PathBuf> {
    if path.exists() || path.is_absolute() {
        return Ok(path.to_owned());
    }
    let from_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    if from_repo.exists() {
        return Ok(from_repo);
    }
    bail!("graph file {} not found (from the current directory or the repository root); pass --graph", path.display())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Feed,
    Timeline,
    Post,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Feed, Kind::Timeline, Kind::Post];

    fn label(self) -> &'static str {
        match self {
            Kind::Feed => "home feed (GET /v1/feed)",
            Kind::Timeline => "user timeline (GET /v1/users/{id}/posts)",
            Kind::Post => "new post (POST /v1/posts)",
        }
    }
}

/// A ready photo waiting for the post that will use it (a media item belongs to one post).
struct Pooled {
    owner: usize,
    media_id: String,
}

/// One request of the timed phase, chosen before it is due.
enum Planned {
    Feed { reader: usize },
    Timeline { viewer: usize, author: usize },
    Post { media: Pooled, seq: u64 },
}

impl Planned {
    fn kind(&self) -> Kind {
        match self {
            Planned::Feed { .. } => Kind::Feed,
            Planned::Timeline { .. } => Kind::Timeline,
            Planned::Post { .. } => Kind::Post,
        }
    }
}

async fn mix(edge: &Edge, load: &SocialLoad, prefix: &str, nonce: u64) -> anyhow::Result<()> {
    let (graph, path) = Graph::load(&load.graph)?;
    println!(
        "graph: {} users, {} friendships ({} follows) from {}",
        graph.nodes,
        graph.edges.len(),
        graph.edges.len() * 2,
        path.display()
    );
    let conc = load.setup_concurrency;

    let mut signed = phase("signed up", (0..graph.nodes).collect(), conc, |i| async move {
        Ok((i, edge.signup(&format!("{prefix}_{i}")).await?))
    })
    .await?;
    signed.sort_by_key(|(i, _)| *i);
    let mut users: Vec<Account> = signed.into_iter().map(|(_, a)| a).collect();

    let follows: Vec<(usize, usize)> = graph.edges.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
    {
        let users = &users;
        phase("followed", follows, conc, |(from, to)| edge.follow(&users[from], &users[to].id)).await?;
    }

    let mut seq = 0u64;
    let seeds: Vec<(usize, u64)> = (0..load.posts_per_user)
        .flat_map(|_| 0..users.len())
        .map(|user| {
            seq += 1;
            (user, seq)
        })
        .collect();
    {
        let users = &users;
        phase("seed posts (upload, process, post)", seeds, conc, |(user, n)| async move {
            let media = edge.upload_ready(&users[user], tiny_png(nonce, n)?).await?;
            edge.create_post(&users[user], &media, &format!("seed post {n} #bench")).await
        })
        .await?;
    }

    // Enough for every post the run can create: the expected count plus ten percent and a
    // constant, far beyond the binomial spread of the random mix.
    let total_requests = u64::from(load.rate) * (load.warmup + load.duration);
    let expected_posts = total_requests * u64::from(load.mix.post) / 100;
    let pool_size = if load.mix.post == 0 { 0 } else { expected_posts + expected_posts / 10 + 64 };
    let mut rng = StdRng::seed_from_u64(load.seed);
    let owners: Vec<(usize, u64)> = (0..pool_size).map(|j| (rng.gen_range(0..users.len()), seq + 1 + j)).collect();
    let pool = {
        let users = &users;
        phase("media pool for new posts (upload, process)", owners, conc, |(owner, n)| async move {
            let media_id = edge.upload_ready(&users[owner], tiny_png(nonce, n)?).await?;
            Ok(Pooled { owner, media_id })
        })
        .await?
    };

    settle(load).await?;

    // The edge checks a token when a request arrives, so it must last until the last one is
    // sent; the slack covers the scheduling start and the drift between the two clocks.
    let run_time = Duration::from_secs(load.warmup + load.duration + 30);
    edge.keep_fresh(&mut users, run_time, conc).await?;
    let users: Arc<[Account]> = users.into();
    let stats = timed(edge, users, pool, load, &mut rng).await?;
    stats.report(load);
    if edge.throttled.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        println!("note: setup was rate limited (429); restart Mosaic with MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0");
    }
    Ok(())
}

/// Waits until every durable JetStream consumer has worked off its backlog. Setup's 37 624
/// follows queue as many follow notifications and feed reconciliations; timing the mix
/// while they drain would measure setup, not the steady state.
async fn settle(load: &SocialLoad) -> anyhow::Result<()> {
    if load.settle_timeout == 0 {
        println!("settle: skipped (--settle-timeout 0); background work from setup may still be running");
        return Ok(());
    }
    let client = async_nats::connect(&load.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {} (--nats-url) to watch the backlog", load.nats_url))?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.settle_timeout);
    let mut first = None;
    loop {
        let (pending, busiest) = backlog(&js).await?;
        first.get_or_insert(pending);
        if pending == 0 {
            println!(
                "settle: background work drained in {:.1} s ({} messages pending when setup ended)",
                started.elapsed().as_secs_f64(),
                first.unwrap_or(0)
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            println!(
                "settle: {pending} messages still pending after {} s (most in {busiest}); measuring anyway",
                load.settle_timeout
            );
            return Ok(());
        }
        println!("  settle: {pending} messages pending (most in {busiest})");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Messages not yet handled (pending or awaiting an ack) over every consumer of every
/// stream, and the consumer holding the most.
async fn backlog(js: &async_nats::jetstream::Context) -> anyhow::Result<(u64, String)> {
    let mut total = 0u64;
    let mut busiest = (0u64, String::from("none"));
    let mut names = js.stream_names();
    while let Some(stream) = names.next().await {
        let stream = stream.context("listing streams")?;
        let handle = js.get_stream(&stream).await.with_context(|| format!("opening stream {stream}"))?;
        let mut consumers = handle.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.with_context(|| format!("listing consumers of {stream}"))?;
            let pending = info.num_pending + info.num_ack_pending as u64;
            total += pending;
            if pending > busiest.0 {
                busiest = (pending, format!("{stream}/{}", info.name));
            }
        }
    }
    Ok((total, busiest.1))
}

/// Sends the mix open-loop: request i is due at start + i/rate whatever happened to the
/// ones before it, and its latency counts from that moment.
async fn timed(
    edge: &Edge,
    users: Arc<[Account]>,
    mut pool: Vec<Pooled>,
    load: &SocialLoad,
    rng: &mut StdRng,
) -> anyhow::Result<Stats> {
    let total = u64::from(load.rate) * (load.warmup + load.duration);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs(load.warmup);
    let measure_to = measure_from + Duration::from_secs(load.duration);
    let stats = Arc::new(Mutex::new(Stats::new(measure_from, measure_to)?));
    let slots = Arc::new(Semaphore::new(load.max_in_flight));
    // How late the generator itself sends: if this grows, the client, not the server, is
    // the bottleneck.
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    println!("timed phase: {} s warm-up, then {} s measured", load.warmup, load.duration);
    for i in 0..total {
        let due = start + Duration::from_nanos(u64::try_from(u128::from(i) * 1_000_000_000 / u128::from(load.rate))?);
        // Timers tick in milliseconds: one wake-up sends every request that has come due.
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        } else {
            // Everything runs on this one thread: a generator that has fallen behind must
            // still let the requests it started send and read their replies.
            tokio::task::yield_now().await;
        }
        let measured = due >= measure_from;
        let n = users.len();
        let planned = match load.mix.pick(rng) {
            Kind::Feed => Planned::Feed { reader: rng.gen_range(0..n) },
            Kind::Timeline => Planned::Timeline { viewer: rng.gen_range(0..n), author: rng.gen_range(0..n) },
            Kind::Post => match pool.pop() {
                Some(media) => Planned::Post { media, seq: i },
                None => {
                    if measured {
                        lock(&stats).no_media += 1;
                    }
                    continue;
                }
            },
        };
        let kind = planned.kind();
        if measured {
            lock(&stats).scheduled[kind as usize] += 1;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if measured {
                lock(&stats).not_sent[kind as usize] += 1;
            }
            continue;
        };
        if measured {
            lag.saturating_record(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
        tokio::spawn(execute(edge.clone(), users.clone(), planned, due, stats.clone(), permit));
    }
    // Every request ends within the client timeout; the margin covers the last scheduling.
    let all = u32::try_from(load.max_in_flight).context("--max-in-flight is too large")?;
    let drained = tokio::time::timeout(Duration::from_secs(load.timeout + 5), slots.acquire_many(all)).await;
    let mut stats = std::mem::replace(&mut *lock(&stats), Stats::new(measure_from, measure_to)?);
    if drained.is_err() {
        stats.abandoned = load.max_in_flight - slots.available_permits();
    }
    stats.lag = lag;
    Ok(stats)
}

async fn execute(
    edge: Edge,
    users: Arc<[Account]>,
    planned: Planned,
    due: Instant,
    stats: Arc<Mutex<Stats>>,
    _slot: OwnedSemaphorePermit,
) {
    let kind = planned.kind();
    let request = match planned {
        Planned::Feed { reader } => edge
            .http
            .get(edge.url(&format!("/v1/feed?limit={PAGE}")))
            .header(AUTHORIZATION, users[reader].bearer.clone()),
        Planned::Timeline { viewer, author } => edge
            .http
            .get(edge.url(&format!("/v1/users/{}/posts?limit={PAGE}", users[author].id)))
            .header(AUTHORIZATION, users[viewer].bearer.clone()),
        Planned::Post { media, seq } => edge
            .http
            .post(edge.url("/v1/posts"))
            .header(AUTHORIZATION, users[media.owner].bearer.clone())
            .json(&post_body(&media.media_id, &format!("bench post {seq} #bench"))),
    };
    // A reply counts once its whole body has arrived, as a client would need it.
    let outcome = match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            resp.bytes().await.map(|_| status)
        }
        Err(e) => Err(e),
    };
    lock(&stats).record(kind, due, Instant::now(), outcome);
}

/// Samples are recorded from many tasks on one thread; a panicking task must not take the
/// others' samples with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the timed phase measured. Latencies are of 2xx replies only (a fast 404 is not a
/// fast feed), in microseconds from the scheduled send time.
struct Stats {
    measure_from: Instant,
    measure_to: Instant,
    latency: [Histogram<u64>; 3],
    overall: Histogram<u64>,
    scheduled: [u64; 3],
    ok: [u64; 3],
    not_sent: [u64; 3],
    /// (kind, HTTP status or transport failure) → count.
    errors: BTreeMap<(Kind, String), u64>,
    /// Replies of any status that completed inside the measured window.
    completed_in_window: u64,
    ok_in_window: u64,
    /// Posts due when the media pool was empty.
    no_media: u64,
    /// Requests still running when the drain gave up (not counted anywhere else).
    abandoned: usize,
    lag: Histogram<u64>,
    /// Worst 2xx latency of the requests due in each second of the window: a stall shows
    /// as a run of bad seconds, a slow server as all of them.
    worst_by_second: Vec<u64>,
}

impl Stats {
    fn new(measure_from: Instant, measure_to: Instant) -> anyhow::Result<Self> {
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Self {
            measure_from,
            measure_to,
            latency: [h()?, h()?, h()?],
            overall: h()?,
            scheduled: [0; 3],
            ok: [0; 3],
            not_sent: [0; 3],
            errors: BTreeMap::new(),
            completed_in_window: 0,
            ok_in_window: 0,
            no_media: 0,
            abandoned: 0,
            lag: h()?,
            worst_by_second: vec![0; usize::try_from(measure_to.saturating_duration_since(measure_from).as_secs())?],
        })
    }

    fn record(&mut self, kind: Kind, due: Instant, done: Instant, outcome: Result<StatusCode, reqwest::Error>) {
        let in_window = done >= self.measure_from && done <= self.measure_to;
        let ok = matches!(outcome, Ok(s) if s.is_success());
        if in_window && outcome.is_ok() {
            self.completed_in_window += 1;
            self.ok_in_window += u64::from(ok);
        }
        if due < self.measure_from {
            return;
        }
        match outcome {
            Ok(status) if status.is_success() => {
                let micros = done.saturating_duration_since(due).as_micros() as u64;
                self.latency[kind as usize].saturating_record(micros);
                self.overall.saturating_record(micros);
                self.ok[kind as usize] += 1;
                let second = due.saturating_duration_since(self.measure_from).as_secs();
                if let Some(worst) = usize::try_from(second).ok().and_then(|s| self.worst_by_second.get_mut(s)) {
                    *worst = (*worst).max(micros);
                }
            }
            Ok(status) => *self.errors.entry((kind, status.as_u16().to_string())).or_default() += 1,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect error"
                } else {
                    "transport error"
                };
                *self.errors.entry((kind, what.to_owned())).or_default() += 1;
            }
        }
    }

    fn report(&self, load: &SocialLoad) {
        let secs = load.duration as f64;
        println!(
            "\nopen loop at {} req/s for {} s (after {} s warm-up); latency of 2xx replies from the scheduled send time",
            load.rate, load.duration, load.warmup
        );
        println!("| request | scheduled | 2xx | errors | not sent | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for kind in Kind::ALL {
            let i = kind as usize;
            let errors: u64 = self.errors.iter().filter(|((k, _), _)| *k == kind).map(|(_, n)| n).sum();
            row(kind.label(), self.scheduled[i], self.ok[i], errors, self.not_sent[i], &self.latency[i]);
        }
        let errors: u64 = self.errors.values().sum();
        let sum = |a: &[u64; 3]| a.iter().sum::<u64>();
        row("all", sum(&self.scheduled), sum(&self.ok), errors, sum(&self.not_sent), &self.overall);
        println!(
            "\nthroughput: {:.0} replies/s completed in the window ({:.0} 2xx/s), {} req/s offered",
            self.completed_in_window as f64 / secs,
            self.ok_in_window as f64 / secs,
            load.rate
        );
        if !self.errors.is_empty() {
            println!("\n| request | error | count |");
            println!("|---|---|---|");
            for ((kind, what), n) in &self.errors {
                println!("| {} | {what} | {n} |", kind.label());
            }
        }
        if self.no_media > 0 {
            println!("posts skipped for want of pooled media: {}", self.no_media);
        }
        if self.abandoned > 0 {
            println!("requests still running when the drain gave up (not counted): {}", self.abandoned);
        }
        println!(
            "generator send lag (scheduled to sent): p99 {}, max {}; large values mean the generator fell behind",
            ms(self.lag.value_at_quantile(0.99)),
            ms(self.lag.max())
        );
        let worst: Vec<String> = self.worst_by_second.iter().map(|&us| (us / 1000).to_string()).collect();
        println!("worst latency per second of the window (ms): {}", worst.join(" "));
        if self.errors.contains_key(&(Kind::Feed, "404".into())) {
            println!("note: GET /v1/feed answered 404: this server has no home feed yet");
        }
        if self.errors.keys().any(|(_, what)| what == "429") {
            println!(
                "note: 429s come from the edge's per-IP rate limit; run Mosaic with MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0"
            );
        }
    }
}

fn row(label: &str, scheduled: u64, ok: u64, errors: u64, not_sent: u64, h: &Histogram<u64>) {
    let q = |q: f64| if h.is_empty() { "-".to_owned() } else { ms(h.value_at_quantile(q)) };
    let max = if h.is_empty() { "-".to_owned() } else { ms(h.max()) };
    println!(
        "| {label} | {scheduled} | {ok} | {errors} | {not_sent} | {} | {} | {} | {} | {max} |",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999)
    );
}

pub(crate) fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------
// The fan-out.

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Deserialize)]
struct FrameType {
    #[serde(rename = "type")]
    kind: String,
}

pub(crate) fn frame_type(text: &str) -> Option<String> {
    serde_json::from_str::<FrameType>(text).ok().map(|f| f.kind)
}

async fn fanout(edge: &Edge, load: &SocialLoad, followers: usize, prefix: &str, nonce: u64) -> anyhow::Result<()> {
    let ws_base = match edge.base.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        // The WebSocket client is built without TLS: the benchmark targets an edge nearby.
        None => bail!("the fan-out needs an http:// URL (got {})", edge.base),
    };
    let conc = load.setup_concurrency;
    let mut author = edge.signup(&format!("{prefix}_author")).await?;
    let author_id = author.id.clone();
    let author_id = &author_id;
    let mut fans = phase("followers signed up and following", (0..followers).collect(), conc, |i| async move {
        let fan = edge.signup(&format!("{prefix}_f{i}")).await?;
        edge.follow(&fan, author_id).await?;
        Ok(fan)
    })
    .await?;
    // The photo is ready before the clock starts: only the post and its delivery are timed.
    let media = edge.upload_ready(&author, tiny_png(nonce, 0)?).await?;
    // Sockets close when their token expires: keep the tokens valid through the connecting
    // (allowing for as few as a hundred handshakes a second) and the measurement.
    let needed = Duration::from_secs(120 + followers as u64 / 100 + load.fanout_timeout);
    edge.keep_fresh(std::slice::from_mut(&mut author), needed, 1).await?;
    edge.keep_fresh(&mut fans, needed, conc).await?;

    let gate = Arc::new(Semaphore::new(WS_CONNECTS_IN_FLIGHT));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sockets = tokio::task::JoinSet::new();
    let connecting = Instant::now();
    for fan in &fans {
        let url = format!("{ws_base}/v1/ws?access_token={}", fan.access_token);
        sockets.spawn(follower(url, gate.clone(), ready_tx.clone(), arrived_tx.clone(), stop_rx.clone()));
    }
    drop((ready_tx, arrived_tx));
    let (mut connected, mut failed, mut first_failure) = (0usize, 0usize, None);
    let mut reported = Instant::now();
    // Each socket task reports exactly once; the channel stays open while they run.
    while connected + failed < followers {
        let Some(result) = ready_rx.recv().await else { break };
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
        }
        if reported.elapsed() >= PROGRESS_EVERY && connected + failed < followers {
            reported = Instant::now();
            println!("  sockets open: {connected}/{followers}");
        }
    }
    println!(
        "sockets open: {connected} of {followers} in {:.1} s{}",
        connecting.elapsed().as_secs_f64(),
        first_failure.map(|e| format!(" ({failed} failed, first: {e})")).unwrap_or_default()
    );
    if connected == 0 {
        let _ = stop_tx.send(true);
        bail!("no follower could open a WebSocket");
    }

    let sent = Instant::now();
    let posted = edge.create_post(&author, &media, "fan-out bench #bench").await;
    let reply = sent.elapsed();
    let post_id = match posted {
        Ok(id) => id,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let deadline = sent + Duration::from_secs(load.fanout_timeout);
    let mut delays = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    while delays.len() < connected as u64 {
        match tokio::time::timeout_at(deadline.into(), arrived_rx.recv()).await {
            Ok(Some(at)) => delays.saturating_record(at.saturating_duration_since(sent).as_micros() as u64),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    let mut closed_early = 0usize;
    let mut first_close = None;
    let closing = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = sockets.join_next().await {
            if let Ok(Some(reason)) = joined {
                closed_early += 1;
                first_close.get_or_insert(reason);
            }
        }
    })
    .await;
    if closing.is_err() {
        sockets.abort_all();
    }

    println!("\npost {post_id}: POST /v1/posts answered in {}", ms(reply.as_micros() as u64));
    println!("| followers on sockets | got feed.post within {} s | p50 | p90 | p99 | max |", load.fanout_timeout);
    println!("|---|---|---|---|---|---|");
    let q = |q: f64| if delays.is_empty() { "-".to_owned() } else { ms(delays.value_at_quantile(q)) };
    let max = if delays.is_empty() { "-".to_owned() } else { ms(delays.max()) };
    println!("| {connected} | {} | {} | {} | {} | {max} |", delays.len(), q(0.5), q(0.9), q(0.99));
    println!("(delay from sending the post to each follower's feed.post frame)");
    if closed_early > 0 {
        println!(
            "sockets closed before the end: {closed_early} (first: {})",
            first_close.unwrap_or_else(|| "unknown".into())
        );
    }
    if delays.is_empty() {
        println!("note: no follower got a feed.post frame; does this server have the feed service?");
    }
    Ok(())
}

/// One follower's socket: connects (a few at a time, through `gate`), reports whether it
/// is ready, then reports when its first `feed.post` frame arrives, until `stop`. Returns
/// why the socket ended early, if it did.
async fn follower(
    url: String,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    arrived: mpsc::UnboundedSender<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let opened = {
        let Ok(_permit) = gate.acquire().await else { return Some("connect gate closed".into()) };
        tokio::time::timeout(Duration::from_secs(30), open_socket(&url)).await
    };
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return None;
        }
        Err(_) => {
            let _ = ready.send(Err("WebSocket handshake timed out".into()));
            return None;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut got = false;
    let early = loop {
        tokio::select! {
            _ = stop.changed() => break None,
            msg = ws.next() => {
                // Stamped before parsing: with thousands of sockets on one thread, the parse
                // of one frame should not count against the next.
                let at = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        // This follower follows only the author, so any feed.post is the one.
                        if !got && frame_type(text.as_str()).as_deref() == Some("feed.post") {
                            got = true;
                            let _ = arrived.send(at);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Some(frame.map_or("close without a code".into(), |f| format!("close {}: {}", f.code, f.reason)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("connection ended".into()),
                }
            }
        }
    };
    if early.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    early
}

/// Opens a socket and waits for the answer to a ping, so the edge has certainly joined the
/// user to its push channel before the post is sent.
pub(crate) async fn open_socket(url: &str) -> anyhow::Result<Socket> {
    // Small buffers: ten thousand sockets at the default 128 KiB each would be 2.5 GiB.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.context("WebSocket handshake")?;
    ws.send(Message::text(r#"{"type":"ping","id":"ready"}"#)).await.context("sending a ping")?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg.context("waiting for the pong")?
            && frame_type(text.as_str()).as_deref() == Some("pong")
        {
            return Ok(ws);
        }
    }
    bail!("the socket closed before answering a ping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_are_renumbered_deduplicated_and_comments_skipped() {
        let g = Graph::parse("% comment\n# another\n1 2\n2 1\n2 3 0.5\n\n3 3\n5 1\n").unwrap();
        assert_eq!(g.nodes, 4);
        assert_eq!(g.edges, vec![(0, 1), (1, 2), (3, 0)]);
        assert!(Graph::parse("1 x\n").is_err());
        assert!(Graph::parse("% nothing\n").is_err());
    }

    #[test]
    fn the_shipped_graph_is_reed98() {
        // The data lives beside the repository, not in it; a checkout without it skips.
        let Ok(path) = locate(Path::new(DEFAULT_GRAPH)) else { return };
        let (g, _) = Graph::load(&path).unwrap();
        assert_eq!((g.nodes, g.edges.len()), (962, 18_812));
    }

    #[test]
    fn the_mix_must_add_up() {
        let m = parse_mix("60, 30,10").unwrap();
        assert_eq!((m.feed, m.timeline, m.post), (60, 30, 10));
        assert!(parse_mix("60,30").is_err());
        assert!(parse_mix("60,30,20").is_err());
    }

    #[test]
    fn photos_differ_by_run_and_index() {
        let a = tiny_png(1, 1).unwrap();
        assert_ne!(a, tiny_png(1, 2).unwrap());
        assert_ne!(a, tiny_png(2, 1).unwrap());
        assert_eq!(image::load_from_memory(&a).unwrap().width(), 64);
    }
}

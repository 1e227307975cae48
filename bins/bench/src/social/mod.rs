//! `mosaic-bench social`: a DeathStarBench-style social-network load against a running
//! Mosaic edge, over real HTTP and WebSocket, the way a population of clients drives it.
//!
//! Two cases:
//! * the mix: a real friendship graph ([`graph`]) signed up and followed both ways, seeded
//!   with posts ([`setup`]), then an open-loop request mix (home feeds, user timelines, new
//!   posts) at a fixed rate ([`mix`]);
//! * the fan-out (`--fanout`): one author, N followers on WebSockets, one post, and the delay
//!   until each follower's `feed.post` frame arrives ([`fanout`]).
//!
//! The generator runs on one thread: the machines this is meant for have two cores, and the
//! server under test needs the other.

mod fanout;
mod graph;
mod mix;
mod setup;

use crate::client::Edge;
use crate::load::{SPARE_FDS, cores, on_own_thread, raise_fd_limit};
use anyhow::{Context as _, bail};
use clap::Args;
use mix::{Mix, parse_mix};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The long help of `mosaic-bench social`.
pub const ABOUT: &str = "\
Drives a running Mosaic edge over real HTTP and WebSocket with a social-network load \
modelled on the DeathStarBench social network.

Start Mosaic first, without the per-IP rate limit (every request of this benchmark comes \
from one address, and the default limit of 200 requests/s would answer most of them 429):

    MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0 target/release/mosaic up --data-dir /tmp/bench-social

then:

    target/release/mosaic-bench social --url http://127.0.0.1:8080 --data-dir /tmp/bench-social

The mix (default): every node of the graph (--graph, an edge list; by default socfb-Reed98 \
from bins/bench/data: 962 users, 18 812 friendships) is signed up and each friendship becomes \
a follow both ways; each user \
gets --posts-per-user posts, and a pool of ready media is uploaded for the posts the timed \
phase creates. None of that is timed. The run then waits (--settle-timeout) until the durable \
consumers on the NATS server (--nats-url, logged in with the passwords under --data-dir) have worked off what setup queued, so the timed \
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

#[derive(Args, Clone, Debug)]
pub struct SocialLoad {
    /// Base URL of the running Mosaic edge (`mosaic up`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Edge list of the social graph: one `a b` pair of node numbers per line, lines
    /// starting with `%` or `#` ignored. A relative path that does not exist from the
    /// current directory is also tried from the repository root. The default is the
    /// Reed College Facebook graph shipped in bins/bench/data (see its README).
    #[arg(long, default_value = graph::DEFAULT_GRAPH)]
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
    /// Data directory of the `mosaic up` under test: the benchmark watches its NATS as the
    /// operators' user whose password `mosaic up` keeps there (`nats/passwords`; a
    /// `MOSAIC_NATS_ADMIN_PASSWORD` variable overrides it). Without it, NATS is watched
    /// without credentials.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Seconds to wait for that backlog to drain before the timed phase; 0 skips the wait
    /// (and the measurement then shares the machine with setup's leftovers).
    #[arg(long, default_value_t = 900)]
    settle_timeout: u64,
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
    on_own_thread("bench-social", move || drive(load)).await
}

async fn drive(load: SocialLoad) -> anyhow::Result<()> {
    let needed_fds = match load.fanout {
        Some(n) => n as u64 + SPARE_FDS,
        None => load.max_in_flight as u64 + SPARE_FDS,
    };
    let fds = raise_fd_limit(needed_fds)?;
    let base = load.url.trim_end_matches('/').to_owned();
    let edge = Edge::with(&base, load.timeout, load.max_in_flight)?;
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
            fanout::run(&edge, &load, followers, &prefix, nonce).await
        }
        None => {
            let Mix { feed, timeline, post } = load.mix;
            println!(
                "mix: rate={} req/s, duration={} s after {} s warm-up, feed/timeline/post={feed}/{timeline}/{post}%, \
                 posts per user={}, max in flight={}, seed={}",
                load.rate, load.duration, load.warmup, load.posts_per_user, load.max_in_flight, load.seed
            );
            mix_case(&edge, &load, &prefix, nonce).await
        }
    }
}

/// The mix: the graph signed up, followed and seeded, setup's background work drained, then
/// the timed phase.
async fn mix_case(edge: &Edge, load: &SocialLoad, prefix: &str, nonce: u64) -> anyhow::Result<()> {
    let (graph, path) = graph::Graph::load(&load.graph)?;
    println!(
        "graph: {} users, {} friendships ({} follows) from {}",
        graph.nodes,
        graph.edges.len(),
        graph.edges.len() * 2,
        path.display()
    );
    let mut rng = StdRng::seed_from_u64(load.seed);
    let (mut users, pool) = setup::seed(edge, load, &graph, prefix, nonce, &mut rng).await?;

    setup::settle(load).await?;

    // The edge checks a token when a request arrives, so it must last until the last one is
    // sent; the slack covers the scheduling start and the drift between the two clocks.
    let run_time = Duration::from_secs(load.warmup + load.duration + 30);
    edge.keep_fresh(&mut users, run_time, load.setup_concurrency).await?;
    let users: Arc<[crate::client::Account]> = users.into();
    let stats = mix::timed(edge, users, pool, load, &mut rng).await?;
    stats.report(load);
    if edge.throttled() > 0 {
        println!("note: setup was rate limited (429); restart Mosaic with MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0");
    }
    Ok(())
}

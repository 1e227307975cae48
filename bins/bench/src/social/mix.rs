//! The timed phase of the mix: requests chosen by the mix (home feeds, user timelines, new
//! posts), sent open-loop at a fixed rate, and what they measured.

use super::SocialLoad;
use super::setup::Pooled;
use crate::client::{Account, Edge};
use crate::load::{lock, ms};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use mosaic_tests::Client;
use rand::Rng as _;
use rand::rngs::StdRng;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Page size of feed and timeline reads; DeathStarBench's read scripts ask for 10 posts.
const PAGE: usize = 10;

/// Shares of the request kinds, in percent.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub(super) feed: u32,
    pub(super) timeline: u32,
    pub(super) post: u32,
}

pub(super) fn parse_mix(raw: &str) -> Result<Mix, String> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
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

/// Sends the mix open-loop: request i is due at start + i/rate whatever happened to the
/// ones before it, and its latency counts from that moment.
pub(super) async fn timed(
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
            .http()
            .get(edge.url(&format!("/v1/feed?limit={PAGE}")))
            .header(AUTHORIZATION, users[reader].bearer.clone()),
        Planned::Timeline { viewer, author } => edge
            .http()
            .get(edge.url(&format!("/v1/users/{}/posts?limit={PAGE}", users[author].id)))
            .header(AUTHORIZATION, users[viewer].bearer.clone()),
        Planned::Post { media, seq } => edge
            .http()
            .post(edge.url("/v1/posts"))
            .header(AUTHORIZATION, users[media.owner].bearer.clone())
            .json(&Client::post_body(&format!("bench post {seq} #bench"), &[&media.media_id], &["bench"])),
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

/// What the timed phase measured. Latencies are of 2xx replies only (a fast 404 is not a
/// fast feed), in microseconds from the scheduled send time.
pub(super) struct Stats {
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

    pub(super) fn report(&self, load: &SocialLoad) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_must_add_up() {
        let m = parse_mix("60, 30,10").unwrap();
        assert_eq!((m.feed, m.timeline, m.post), (60, 30, 10));
        assert!(parse_mix("60,30").is_err());
        assert!(parse_mix("60,30,20").is_err());
    }
}

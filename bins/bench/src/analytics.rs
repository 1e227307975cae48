//! `mosaic-bench analytics`: the warehouse at scale. Synthetic events for one day are
//! written to Parquet through the service's own writer, the day is compacted, and the
//! daily creator report query is timed in DataFusion and, on the same files with the same
//! SQL, in DuckDB (PyPI `duckdb`), side by side in one run. A second phase measures the
//! collector end to end: events published to JetStream, consumed in batches, written.

use anyhow::{Context as _, bail};
use chrono::{NaiveDate, TimeZone as _, Utc};
use clap::Args;
use mosaic::nats;
use mosaic_analytics::ingest::Ingest;
use mosaic_analytics::reports::creator_sql;
use mosaic_analytics::warehouse::{Event, Kind, RecordBatch, Warehouse, int_at};
use mosaic_api::interaction::Liked;
use mosaic_api::stream::EVENTS_INTERACTION;
use mosaic_api::{Envelope, EventId, Id as _, PostId, UserId};
use mosaic_mesh::{Lifecycle, Mesh, NatsConfig};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Args, Clone, Debug)]
pub struct AnalyticsLoad {
    /// Events generated for the day.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Distinct users (viewers, likers, followers).
    #[arg(long, default_value_t = 200_000)]
    users: u64,
    /// Creators (owners of posts).
    #[arg(long, default_value_t = 20_000)]
    creators: u64,
    /// Posts (each belongs to one creator).
    #[arg(long, default_value_t = 200_000)]
    posts: u64,
    /// Rows per file written (the service's flush size).
    #[arg(long, default_value_t = 100_000)]
    flush_rows: usize,
    /// Query repetitions timed per engine (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Directory of the warehouse (kept afterwards for inspection); default: a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Events pushed through JetStream and the collector in the end-to-end phase (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    pipeline_events: u64,
    /// Python with the `duckdb` package (skipped when it cannot import it).
    #[arg(long, default_value = "python3")]
    python: String,
}

/// The day the synthetic events belong to.
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).expect("a valid date")
}

/// A deterministic stream of events: most of them views, skewed toward popular posts.
struct Generator {
    rng: StdRng,
    load: AnalyticsLoad,
    start_ms: i64,
    next: u64,
}

impl Generator {
    fn new(load: &AnalyticsLoad) -> Self {
        let start = Utc.from_utc_datetime(&day().and_hms_opt(0, 0, 0).expect("midnight"));
        Self { rng: StdRng::seed_from_u64(7), load: load.clone(), start_ms: start.timestamp_millis(), next: 0 }
    }

    /// Skewed pick in 0..n: half the draws from the first tenth.
    fn pick(&mut self, n: u64) -> u64 {
        if self.rng.gen_bool(0.5) { self.rng.gen_range(0..(n / 10).max(1)) } else { self.rng.gen_range(0..n) }
    }

    fn chunk(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let at_ms = self.start_ms + (i as i64 * 86_400_000) / self.load.events as i64;
            let post = self.pick(self.load.posts);
            let owner = post % self.load.creators;
            let user = self.pick(self.load.users);
            let kind = match self.rng.gen_range(0..100) {
                0..80 => Kind::View,
                80..90 => Kind::Like,
                90..94 => Kind::Comment,
                94..97 => Kind::Follow,
                97..99 => Kind::Post,
                _ => Kind::Signup,
            };
            let (owner_id, post_id) = match kind {
                Kind::Signup => (None, None),
                Kind::Follow => (Some(format!("c{owner}")), None),
                _ => (Some(format!("c{owner}")), Some(format!("p{post}"))),
            };
            out.push(Event {
                event_id: format!("e{i:010}"),
                at: Utc.timestamp_millis_opt(at_ms).single().expect("in range"),
                kind,
                user_id: format!("u{user}"),
                owner_id,
                post_id,
            });
        }
        out
    }
}

pub async fn run(load: AnalyticsLoad) -> anyhow::Result<()> {
    if load.events == 0 || load.users == 0 || load.creators == 0 || load.posts == 0 {
        bail!("--events, --users, --creators and --posts must be positive");
    }
    let temp = tempfile::tempdir()?;
    let dir = load.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    println!(
        "machine: {} cores; {} events for {} ({} users, {} creators, {} posts); warehouse in {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.events,
        day(),
        load.users,
        load.creators,
        load.posts,
        dir.display()
    );
    let storage = mosaic_mesh::storage::Storage::open(&mosaic_mesh::storage::StorageConfig {
        url: format!("file://{}", dir.display()),
        ..Default::default()
    })?;
    let warehouse = Warehouse::open(storage.store.clone(), "analytics").await?;

    // 1. Writing: the service's writer (Arrow batch, ZSTD Parquet, object store).
    let mut generator = Generator::new(&load);
    let mut generating = Duration::ZERO;
    let mut writing = Duration::ZERO;
    let mut left = load.events;
    while left > 0 {
        let n = left.min(load.flush_rows as u64) as usize;
        let t = Instant::now();
        let events = generator.chunk(n);
        generating += t.elapsed();
        let t = Instant::now();
        warehouse.write(&events).await?;
        writing += t.elapsed();
        left -= n as u64;
    }
    let files = warehouse.files(day()).await?.len();
    println!(
        "\nwrite: {} events in {:.2} s = {:.0} events/s into Parquet ({} files; generating them took another {:.2} s)",
        load.events,
        writing.as_secs_f64(),
        load.events as f64 / writing.as_secs_f64(),
        files,
        generating.as_secs_f64()
    );
    let t = Instant::now();
    warehouse.compact(day(), 2).await?;
    let bytes: u64 = std::fs::read_dir(dir.join(format!("analytics/events/date={}", day())))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "compact: {files} files -> {} in {:.2} s ({:.1} MiB)",
        warehouse.files(day()).await?.len(),
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0
    );

    // 2. The daily creator report query, both engines, same files, same SQL.
    let sql = creator_sql(&format!("date = '{}'", day()), None);
    let datafusion = time_datafusion(&warehouse, &sql, load.rounds).await?;
    println!(
        "\nthe daily creator report query (every creator's views, unique viewers, likes, comments, new followers):"
    );
    println!("{sql}\n");
    println!("| engine | creators | sum of views | median of {} runs | best |", load.rounds);
    println!("|---|---|---|---|---|");
    println!(
        "| DataFusion (mosaic) | {} | {} | {:.0} ms | {:.0} ms |",
        datafusion.0, datafusion.1, datafusion.2, datafusion.3
    );
    match time_duckdb(&load.python, &dir, &sql, load.rounds) {
        Ok((rows, views, median, best)) => {
            println!("| DuckDB | {rows} | {views} | {median:.0} ms | {best:.0} ms |");
            if (rows, views) != (datafusion.0, datafusion.1) {
                println!("warning: the engines disagree");
            }
            println!("\nDataFusion / DuckDB (median): {:.2}x", datafusion.2 / median);
        }
        Err(e) => println!("| DuckDB | skipped: {e:#} | | | |"),
    }

    // 3. The collector end to end: JetStream -> batches -> Parquet.
    if load.pipeline_events > 0 {
        pipeline(&load, &storage).await?;
    }
    Ok(())
}

async fn time_datafusion(warehouse: &Warehouse, sql: &str, rounds: usize) -> anyhow::Result<(u64, u64, f64, f64)> {
    let summarize = |batches: &[RecordBatch]| {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let views: u64 =
            batches.iter().flat_map(|b| (0..b.num_rows()).map(move |r| int_at(b.column(1).as_ref(), r))).sum();
        (rows as u64, views)
    };
    let warm = warehouse.query(sql).await?;
    let (rows, views) = summarize(&warm);
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let b = warehouse.query(sql).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(summarize(&b) == (rows, views), "DataFusion answers changed between runs");
    }
    times.sort_by(f64::total_cmp);
    Ok((rows, views, times[times.len() / 2], times[0]))
}

/// Runs the query in DuckDB over the same Parquet files; (rows, sum of views, median, best).
fn time_duckdb(python: &str, dir: &std::path::Path, sql: &str, rounds: usize) -> anyhow::Result<(u64, u64, f64, f64)> {
    let glob = dir.join("analytics/events/*/*.parquet");
    let script = format!(
        r#"
import duckdb, time, statistics, sys
con = duckdb.connect()
con.sql("SET enable_progress_bar = false")
con.sql("SET threads = {threads}")
con.sql("CREATE VIEW events AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
q = sys.stdin.read()
rows = con.sql(q).fetchall()
times = []
for _ in range({rounds}):
    t = time.perf_counter()
    rows = con.sql(q).fetchall()
    times.append((time.perf_counter() - t) * 1000)
print(len(rows), sum(r[1] for r in rows), statistics.median(times), min(times))
"#,
        threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        glob = glob.display(),
        rounds = rounds.max(1),
    );
    let mut child = std::process::Command::new(python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python}"))?;
    use std::io::Write as _;
    child.stdin.take().context("stdin")?.write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{} (pip install duckdb)", err.lines().last().unwrap_or("duckdb failed"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line only: DuckDB may still print notices before it.
    let parts: Vec<&str> = text.lines().last().unwrap_or_default().split_whitespace().collect();
    anyhow::ensure!(parts.len() == 4, "unexpected DuckDB output: {text}");
    Ok((parts[0].parse()?, parts[1].parse()?, parts[2].parse()?, parts[3].parse()?))
}

/// Publishes like events to JetStream and times the collector writing them all.
async fn pipeline(load: &AnalyticsLoad, storage: &mosaic_mesh::storage::Storage) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("nats://127.0.0.1:{port}");
    let embedded = nats::ensure_open(&url, dir.path(), true).await?;
    let mesh = Mesh::connect(&NatsConfig { url, ..Default::default() }, "bench-analytics").await?;
    mesh.ensure_stream(&EVENTS_INTERACTION).await?;
    let n = load.pipeline_events;
    println!("\ncollector end to end: {n} like events published to JetStream, then consumed and written");
    let t = Instant::now();
    let owner = UserId::from_trusted("creator".into());
    let mut sent = 0u64;
    while sent < n {
        let chunk = (n - sent).min(10_000);
        let envelopes: Vec<Envelope<Liked>> = (0..chunk)
            .map(|i| Envelope {
                id: EventId::generate(),
                at: Utc::now(),
                data: Liked {
                    post_id: PostId::from_trusted(format!("p{}", (sent + i) % 1000)),
                    owner: owner.clone(),
                    user: UserId::from_trusted(format!("u{}", sent + i)),
                },
            })
            .collect();
        mesh.publish_batch(&envelopes).await?;
        sent += chunk;
    }
    println!("published in {:.2} s ({:.0}/s)", t.elapsed().as_secs_f64(), n as f64 / t.elapsed().as_secs_f64());
    let warehouse = Warehouse::open(storage.store.clone(), "pipeline").await?;
    let lifecycle = Lifecycle::new();
    let ingest = Ingest::new(warehouse, mesh.clone(), load.flush_rows, Duration::from_millis(500));
    let t = Instant::now();
    ingest.spawn(&mesh, &lifecycle).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while ingest.stats.written.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = ingest.stats.written.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "collected: {written} events written in {secs:.2} s = {:.0} events/s (JetStream -> batches -> Parquet, acknowledged)",
        written as f64 / secs
    );
    lifecycle.shutdown().cancel();
    if let Some(e) = embedded {
        e.stop().await;
    }
    Ok(())
}

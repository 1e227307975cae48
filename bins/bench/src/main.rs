//! `mosaic-bench`: Mosaic's benchmarks and load generators, a binary of their own so the
//! product binary (`mosaic`) links none of them. Results belong in BENCHMARKS.md.
//!
//! * `mesh` and `edge` measure a path next to its baseline in one run, against a NATS server
//!   of their own ([`rpc`]);
//! * `media` runs the photo and video pipelines next to vipsthumbnail and bare ffmpeg;
//! * `social` and `chat` drive a Mosaic already running, over real HTTP and WebSocket, from
//!   one thread (the machines they target have two cores, and the server needs the other);
//! * `analytics` writes a day of synthetic events to the warehouse and times the report query.

mod analytics;
mod chat;
mod client;
mod load;
mod media;
mod rpc;
mod social;
mod ws;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mosaic-bench", version, about = "Mosaic's benchmarks (results belong in BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Mesh request/reply (typed endpoint, micro service, headers) vs raw async-nats
    /// request/reply, same server, same payload.
    Mesh(rpc::Load),
    /// Authenticated `GET /v1/users/me` through the edge vs a bare axum handler.
    Edge(rpc::Load),
    /// The photo pipeline vs vipsthumbnail; the video path vs the same ffmpeg run bare.
    Media(media::MediaLoad),
    /// A DeathStarBench-style social-network load (feeds, timelines, posts; WebSocket
    /// fan-out) against a Mosaic already running at --url.
    #[command(long_about = social::ABOUT)]
    Social(social::SocialLoad),
    /// Chat latency: 1:1 conversations on WebSockets, messages at a fixed rate, against a
    /// Mosaic already running at --url.
    #[command(long_about = chat::ABOUT)]
    Chat(chat::ChatLoad),
    /// The warehouse: 10 million synthetic events written to Parquet, the daily creator
    /// report query in DataFusion vs DuckDB on the same files, and the collector end to end.
    Analytics(analytics::AnalyticsLoad),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.which).await {
        eprintln!("mosaic-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Mesh(load) => rpc::run(rpc::Case::Mesh, load).await,
        Which::Edge(load) => rpc::run(rpc::Case::Edge, load).await,
        Which::Media(m) => tokio::task::spawn_blocking(move || media::run(&m)).await?,
        // These drive a server someone else started: no NATS of their own.
        Which::Social(s) => social::run(s).await,
        Which::Chat(c) => chat::run(c).await,
        Which::Analytics(a) => analytics::run(a).await,
    }
}

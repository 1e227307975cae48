//! `mosaic-feed`: one feed-service instance (fan-out workers and feed reads), for
//! deployments that scale services independently. Configuration: `--config <file>` (TOML)
//! and `MOSAIC_*` variables; see the README.

use clap::Parser;
use mosaic_mesh::runtime::{Common, serve_until_signal};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic feed instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    #[serde(flatten)]
    common: Common,
    feed: mosaic_feed::Config,
}

#[derive(Serialize)]
struct NoFlags {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings: Settings = mosaic_mesh::config::load(args.config.as_deref(), &NoFlags {})?;
    serve_until_signal(&settings.common, "feed", |mesh| async move { mosaic_feed::start(&mesh, settings.feed).await })
        .await
}

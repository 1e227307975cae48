//! `mosaic-feed`: one feed-service instance (fan-out workers and feed reads), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[feed]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic feed instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "feed",
        args.config.as_deref(),
        |mesh, _common, config: mosaic_feed::Config| async move { mosaic_feed::start(&mesh, config).await },
    )
    .await
}

//! `mosaic-analytics`: one analytics-service instance (event warehouse, daily reports), for
//! deployments that scale services independently. Configuration: `--config <file>` (TOML:
//! the common keys and `[analytics]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic analytics instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "analytics",
        args.config.as_deref(),
        |mesh, common, config: mosaic_analytics::Config| async move {
            let storage = mosaic_mesh::storage::Storage::open(&common.storage())?;
            mosaic_analytics::start(&mesh, config, storage).await
        },
    )
    .await
}

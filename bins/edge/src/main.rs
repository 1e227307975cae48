//! `mosaic-edge`: one edge node (HTTP + WebSocket gateway), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[edge]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic edge instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "edge",
        args.config.as_deref(),
        |mesh, common, config: mosaic_edge::Config| async move {
            let storage = mosaic_mesh::storage::Storage::open(&common.storage())?;
            Ok(mosaic_edge::start(&mesh, config, Some(storage)).await?.into())
        },
    )
    .await
}

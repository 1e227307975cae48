//! `mosaic-content`: one content-service instance (uploads, media processing, posts), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[content]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic content instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "content",
        args.config.as_deref(),
        |mesh, common, mut config: mosaic_content::Config| async move {
            common.fill_db_url(&mut config.db.url, "content");
            let storage = mosaic_mesh::storage::Storage::open(&common.storage())?;
            mosaic_content::start(&mesh, config, storage).await
        },
    )
    .await
}

//! `mosaic-content`: one content-service instance (uploads, media workers, posts), for
//! deployments that scale services independently. Configuration: `--config <file>` (TOML)
//! and `MOSAIC_*` variables; see the README.

use clap::Parser;
use mosaic_mesh::runtime::{Common, serve_until_signal};
use mosaic_mesh::storage::Storage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic content instance")]
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
    content: mosaic_content::Config,
}

#[derive(Serialize)]
struct NoFlags {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings: Settings = mosaic_mesh::config::load(args.config.as_deref(), &NoFlags {})?;
    settings.common.fill_db_url(&mut settings.content.db.url, "content");
    let storage = Storage::open(&settings.common.storage())?;
    serve_until_signal(&settings.common, "content", |mesh| async move {
        mosaic_content::start(&mesh, settings.content, storage).await
    })
    .await
}

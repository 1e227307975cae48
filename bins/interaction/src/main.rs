//! `mosaic-interaction`: one interaction-service instance (likes, comments, counters), for
//! deployments that scale services independently. Configuration: `--config <file>` (TOML)
//! and `MOSAIC_*` variables; see the README.

use clap::Parser;
use mosaic_mesh::runtime::{Common, serve_until_signal};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic interaction instance")]
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
    interaction: mosaic_interaction::Config,
}

#[derive(Serialize)]
struct NoFlags {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings: Settings = mosaic_mesh::config::load(args.config.as_deref(), &NoFlags {})?;
    settings.common.fill_db_url(&mut settings.interaction.db.url, "interaction");
    serve_until_signal(&settings.common, "interaction", |mesh| async move {
        mosaic_interaction::start(&mesh, settings.interaction).await
    })
    .await
}

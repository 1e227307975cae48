//! `mosaic-interaction`: one interaction-service instance (likes, comments, counters), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[interaction]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic interaction instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "interaction",
        args.config.as_deref(),
        |mesh, common, mut config: mosaic_interaction::Config| async move {
            common.fill_db_url(&mut config.db.url, "interaction");
            mosaic_interaction::start(&mesh, config).await
        },
    )
    .await
}

//! `mosaic-notification`: one notification-service instance (inbox, push, email), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[notification]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic notification instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "notification",
        args.config.as_deref(),
        |mesh, common, mut config: mosaic_notification::Config| async move {
            common.fill_db_url(&mut config.db.url, "notification");
            mosaic_notification::start(&mesh, config).await
        },
    )
    .await
}

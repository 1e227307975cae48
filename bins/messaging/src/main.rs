//! `mosaic-messaging`: one messaging-service instance (conversations, messages, receipts), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[messaging]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic messaging instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "messaging",
        args.config.as_deref(),
        |mesh, common, mut config: mosaic_messaging::Config| async move {
            common.fill_db_url(&mut config.db.url, "messaging");
            mosaic_messaging::start(&mesh, config).await
        },
    )
    .await
}

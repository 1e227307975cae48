//! `mosaic-user`: one user-service instance (accounts, tokens, profiles, the social graph), for deployments that scale services independently. Configuration: `--config
//! <file>` (TOML: the common keys and `[user]`) and `MOSAIC_*` variables; see the README.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Runs one Mosaic user instance")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mosaic_mesh::runtime::service_main(
        "user",
        args.config.as_deref(),
        |mesh, common, mut config: mosaic_user::Config| async move {
            common.fill_db_url(&mut config.db.url, "user");
            mosaic_user::start(&mesh, config).await
        },
    )
    .await
}

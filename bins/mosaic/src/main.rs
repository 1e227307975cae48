//! `mosaic`: the all-in-one command.
//!
//! * `mosaic up` runs the edge and every service in one process with embedded defaults
//!   (a child `nats-server` when none answers, SurrealDB files under the data directory).
//! * `mosaic serve <service>` runs one component, as the per-service binaries do.
//! * `mosaic migrate` applies database migrations and exits.
//! * `mosaic bench …` measures the mesh, the edge, the media pipeline, and a running
//!   Mosaic under a social-network load.

mod bench;
mod bench_analytics;
mod bench_chat;
mod bench_media;
mod bench_social;
mod nats;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use mosaic_mesh::runtime::{Common, serve_until_signal, shutdown_signal};
use mosaic_mesh::storage::Storage;
use mosaic_mesh::{Mesh, ServiceHandle};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mosaic", version, about = "Mosaic: a photo and video social network backend")]
struct Cli {
    /// TOML configuration file (settings: defaults < file < MOSAIC_* environment < flags).
    #[arg(long, global = true, env = "MOSAIC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge and every service in this process.
    Up(Flags),
    /// Run one component.
    Serve {
        #[arg(value_enum)]
        component: Component,
        #[command(flatten)]
        flags: Flags,
    },
    /// Apply pending database migrations of every service, then exit.
    Migrate(Flags),
    /// Benchmarks (results belong in BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Component {
    User,
    Content,
    Interaction,
    Feed,
    Messaging,
    Notification,
    Analytics,
    Edge,
}

/// Flags shared by the commands; each overrides the setting of the same name.
#[derive(clap::Args, Serialize, Default, Clone)]
struct Flags {
    /// Data directory for embedded state [setting: data_dir, env MOSAIC_DATA_DIR].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address of the edge [setting: http, env MOSAIC_HTTP; default 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    /// NATS URL [setting: nats_url, env MOSAIC_NATS_URL; default nats://127.0.0.1:4222].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
}

/// The configuration of the `mosaic` binary.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    #[serde(flatten)]
    common: Common,
    /// Edge listen address; overrides `edge.http` when set.
    http: Option<SocketAddr>,
    /// Spawn `nats-server` when nothing answers at `nats_url` (local URLs only).
    embedded_nats: Option<bool>,
    user: mosaic_user::Config,
    content: mosaic_content::Config,
    interaction: mosaic_interaction::Config,
    feed: mosaic_feed::Config,
    messaging: mosaic_messaging::Config,
    notification: mosaic_notification::Config,
    analytics: mosaic_analytics::Config,
    edge: mosaic_edge::Config,
}

impl Settings {
    fn load(file: Option<&std::path::Path>, flags: &Flags) -> anyhow::Result<Self> {
        let mut s: Settings = mosaic_mesh::config::load(file, flags)?;
        if let Some(http) = s.http {
            s.edge.http = http;
        }
        // Links in emails point at this process's edge unless a public URL is configured.
        if s.notification.public_url == mosaic_notification::Config::default().public_url {
            s.notification.public_url = format!("http://{}", s.edge.http);
        }
        s.common.fill_db_url(&mut s.user.db.url, mosaic_api::user::SERVICE);
        s.common.fill_db_url(&mut s.content.db.url, mosaic_api::content::SERVICE);
        s.common.fill_db_url(&mut s.interaction.db.url, mosaic_api::interaction::SERVICE);
        s.common.fill_db_url(&mut s.messaging.db.url, mosaic_api::messaging::SERVICE);
        s.common.fill_db_url(&mut s.notification.db.url, mosaic_api::notification::SERVICE);
        s.user.validate()?;
        s.content.validate()?;
        s.interaction.validate()?;
        s.feed.validate()?;
        s.messaging.validate()?;
        s.notification.validate()?;
        s.analytics.validate()?;
        s.edge.validate()?;
        Ok(s)
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("mosaic: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(flags) => up(Settings::load(cli.config.as_deref(), &flags)?).await,
        Command::Serve { component, flags } => {
            let s = Settings::load(cli.config.as_deref(), &flags)?;
            match component {
                Component::User => {
                    serve_until_signal(&s.common, "user", |mesh| async move { mosaic_user::start(&mesh, s.user).await })
                        .await
                }
                Component::Content => {
                    let storage = Storage::open(&s.common.storage())?;
                    serve_until_signal(&s.common, "content", |mesh| async move {
                        mosaic_content::start(&mesh, s.content, storage).await
                    })
                    .await
                }
                Component::Interaction => {
                    serve_until_signal(&s.common, "interaction", |mesh| async move {
                        mosaic_interaction::start(&mesh, s.interaction).await
                    })
                    .await
                }
                Component::Feed => {
                    serve_until_signal(&s.common, "feed", |mesh| async move { mosaic_feed::start(&mesh, s.feed).await })
                        .await
                }
                Component::Messaging => {
                    serve_until_signal(&s.common, "messaging", |mesh| async move {
                        mosaic_messaging::start(&mesh, s.messaging).await
                    })
                    .await
                }
                Component::Notification => {
                    serve_until_signal(&s.common, "notification", |mesh| async move {
                        mosaic_notification::start(&mesh, s.notification).await
                    })
                    .await
                }
                Component::Analytics => {
                    let storage = Storage::open(&s.common.storage())?;
                    serve_until_signal(&s.common, "analytics", |mesh| async move {
                        mosaic_analytics::start(&mesh, s.analytics, storage).await
                    })
                    .await
                }
                Component::Edge => {
                    let storage = Storage::open(&s.common.storage())?;
                    serve_until_signal(&s.common, "edge", |mesh| async move {
                        Ok(mosaic_edge::start(&mesh, s.edge, Some(storage)).await?.into())
                    })
                    .await
                }
            }
        }
        Command::Migrate(flags) => {
            let s = Settings::load(cli.config.as_deref(), &flags)?;
            mosaic_mesh::telemetry::init(s.common.log_json);
            mosaic_user::migrate(&s.user).await?;
            mosaic_content::migrate(&s.content).await?;
            mosaic_interaction::migrate(&s.interaction).await?;
            mosaic_messaging::migrate(&s.messaging).await?;
            mosaic_notification::migrate(&s.notification).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bench { which } => bench::run(which).await,
    }
}

async fn up(s: Settings) -> anyhow::Result<()> {
    mosaic_mesh::telemetry::init(s.common.log_json);
    std::fs::create_dir_all(&s.common.data_dir)
        .with_context(|| format!("creating data_dir {}", s.common.data_dir.display()))?;
    let embedded = nats::ensure(&s.common.nats_url, &s.common.data_dir, s.embedded_nats.unwrap_or(true)).await?;
    let mesh = Mesh::connect(&s.common.nats(), "mosaic").await?;

    let storage = Storage::open(&s.common.storage())?;
    let user = mosaic_user::start(&mesh, s.user).await.context("starting the user service")?;
    let content =
        mosaic_content::start(&mesh, s.content, storage.clone()).await.context("starting the content service")?;
    let interaction =
        mosaic_interaction::start(&mesh, s.interaction).await.context("starting the interaction service")?;
    let feed = mosaic_feed::start(&mesh, s.feed).await.context("starting the feed service")?;
    let messaging = mosaic_messaging::start(&mesh, s.messaging).await.context("starting the messaging service")?;
    let notification =
        mosaic_notification::start(&mesh, s.notification).await.context("starting the notification service")?;
    let edge = mosaic_edge::start(&mesh, s.edge, Some(storage)).await.context("starting the edge")?;
    let url = format!("http://{}", edge.local_addr());
    let components: Vec<ServiceHandle> = vec![edge.into(), notification, messaging, feed, interaction, content, user];

    println!("Mosaic is up at {url} (NATS {}, data in {})", s.common.nats_url, s.common.data_dir.display());
    shutdown_signal().await;
    // The edge first, so no new work arrives while services drain.
    for component in components {
        component.stop().await;
    }
    let _ = mesh.flush().await;
    if let Some(child) = embedded {
        child.stop().await;
    }
    Ok(())
}

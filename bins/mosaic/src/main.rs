//! `mosaic`: the all-in-one command.
//!
//! * `mosaic up` runs the edge and every service in one process with embedded defaults
//!   (a child `nats-server` when none answers, SurrealDB files under the data directory).
//! * `mosaic serve <service>` runs one component, as the per-service binaries do.
//! * `mosaic migrate` applies database migrations and exits.
//!
//! The benchmarks are a binary of their own, `mosaic-bench` (`bins/bench`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use figment::providers::Serialized;
use mosaic::{COMPONENTS, component, nats};
use mosaic_mesh::component::{Host, start_each};
use mosaic_mesh::runtime::{serve_until_signal, shutdown_signal};
use mosaic_mesh::{Component, Mesh};
use serde::Serialize;
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
    Up {
        #[command(flatten)]
        flags: Flags,
        /// Use a NATS server that lets anyone in without credentials. Any process that
        /// reaches it could then subscribe to every reply and frame and call any endpoint;
        /// without this flag `mosaic up` refuses such a server.
        #[arg(long)]
        insecure_nats: bool,
    },
    /// Run one component (user, content, interaction, feed, messaging, notification,
    /// analytics or edge), as its own process in a deployment.
    Serve {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(mosaic::names()))]
        component: String,
        #[command(flatten)]
        flags: Flags,
    },
    /// Apply pending database migrations of every component, then exit.
    Migrate(Flags),
    /// Grant or revoke the administrator role of an account; an audit event
    /// (`events.user.admin_granted` / `admin_revoked`) records it. Opens the user service's
    /// database: with the embedded one, stop `mosaic up` first.
    Admin {
        #[arg(value_enum)]
        action: AdminAction,
        /// The account's username.
        username: String,
        #[command(flatten)]
        flags: Flags,
    },
    /// NATS for a deployment, generated from the component declarations.
    #[command(subcommand)]
    Nats(NatsCommand),
}

#[derive(Subcommand)]
enum NatsCommand {
    /// Print a `nats-server` configuration: every component as a user of its own name with
    /// exactly the permissions its declaration needs, passwords read from
    /// `MOSAIC_NATS_<USER>_PASSWORD`, JetStream syncing every write, monitoring on
    /// loopback only.
    Config {
        /// Print only the `accounts` block (what `nats/accounts.conf` holds, for configs
        /// that include it).
        #[arg(long)]
        accounts: bool,
        /// Client listen address.
        #[arg(long, default_value = "127.0.0.1:4222")]
        listen: String,
        /// JetStream store directory.
        #[arg(long, default_value = "/var/lib/nats")]
        store_dir: PathBuf,
        /// Port of the monitoring endpoint, on loopback only.
        #[arg(long, default_value_t = 8222)]
        monitoring_port: u16,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AdminAction {
    /// Make the account an administrator (it takes effect at its next login or refresh).
    Grant,
    /// Take the role away, and void the account's live access tokens if NATS is reachable.
    Revoke,
}

/// Flags shared by the commands; each overrides the setting it names.
#[derive(clap::Args, Default, Clone)]
struct Flags {
    /// Data directory for embedded state [setting: data_dir, env MOSAIC_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address of the edge [setting: edge.http; default 127.0.0.1:8080].
    #[arg(long, env = "MOSAIC_HTTP")]
    http: Option<String>,
    /// NATS URL [setting: nats_url, env MOSAIC_NATS_URL; default nats://127.0.0.1:4222].
    #[arg(long)]
    nats_url: Option<String>,
}

/// The flags as a configuration layer: only the ones given, each at its setting's key.
#[derive(Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<EdgeOverrides>,
}

#[derive(Serialize)]
struct EdgeOverrides {
    http: String,
}

impl Flags {
    fn layers(&self, file: Option<&std::path::Path>) -> anyhow::Result<figment::Figment> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            nats_url: self.nats_url.clone(),
            edge: self.http.clone().map(|http| EdgeOverrides { http }),
        };
        mosaic_mesh::config::layers(file, &overrides)
    }
}

/// Settings only `mosaic up` reads.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct UpSettings {
    /// Spawn `nats-server` when nothing answers at `nats_url` (local URLs only).
    embedded_nats: Option<bool>,
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
    let file = cli.config.as_deref();
    match cli.command {
        Command::Up { flags, insecure_nats } => up(flags.layers(file)?, insecure_nats).await,
        Command::Serve { component: name, flags } => {
            let host = Host::new(flags.layers(file)?)?;
            let component = component(&name).with_context(|| format!("no component named {name}"))?;
            host.check(&[component])?;
            mosaic_mesh::telemetry::init(host.common().log_json);
            let login = nats::component_login(&host.common().nats(), component.name);
            serve_until_signal(&host, component, &login).await
        }
        Command::Admin { action, username, flags } => {
            let host = Host::new(flags.layers(file)?)?;
            mosaic_mesh::telemetry::init(host.common().log_json);
            admin(&host, action, &username).await
        }
        Command::Nats(NatsCommand::Config { accounts, listen, store_dir, monitoring_port }) => {
            let accounts_conf = mosaic_mesh::authz::accounts_conf(COMPONENTS);
            if accounts {
                print!("{accounts_conf}");
            } else {
                print!("{}", nats::server_conf(&listen, &store_dir, Some(monitoring_port), &accounts_conf));
            }
            Ok(())
        }
        Command::Migrate(flags) => {
            let host = Host::new(flags.layers(file)?)?;
            mosaic_mesh::telemetry::init(host.common().log_json);
            for component in COMPONENTS.iter().filter(|c| c.has_database()) {
                host.database(component).await?;
            }
            println!("migrations applied");
            Ok(())
        }
    }
}

async fn admin(host: &Host, action: AdminAction, username: &str) -> anyhow::Result<()> {
    let grant = matches!(action, AdminAction::Grant);
    let db = host
        .database(&mosaic_user::COMPONENT)
        .await
        .context("opening the user database (is `mosaic up` still running on it?)")?;
    let user = mosaic_user::admin::set_admin(&db, username, grant)
        .await?
        .with_context(|| format!("no account is named {username}"))?;
    if grant {
        println!("{username} ({user}) is an administrator from their next login or token refresh");
        return Ok(());
    }
    println!("{username} ({user}) is no longer an administrator");
    // Live access tokens carry the role until they expire: void them where NATS is up.
    let nats = operator_login(host.common())?;
    let voided = async {
        let mesh =
            tokio::time::timeout(std::time::Duration::from_secs(5), Mesh::connect(&nats, "mosaic-admin")).await??;
        mosaic_user::admin::revoke_tokens(&mesh.bucket(&mosaic_api::stream::REVOCATIONS).await?, &user).await
    };
    if let Err(e) = voided.await {
        eprintln!(
            "warning: could not void {username}'s live access tokens ({e:#}); they keep the role until they expire"
        );
    }
    Ok(())
}

async fn up(figment: figment::Figment, insecure_nats: bool) -> anyhow::Result<()> {
    let settings: UpSettings = figment.extract().context("reading embedded_nats")?;
    // `up` is where clients come in: the edge's listener is bound first, so links in emails
    // name the address it really got.
    let edge_component: &'static Component = &mosaic_edge::COMPONENT;
    let edge: mosaic_edge::Config = Host::new(figment.clone())?.section(edge_component)?;
    let listener = mosaic_edge::bind(edge.http, edge.listen_backlog)
        .with_context(|| format!("binding edge.http {} (is the port in use?)", edge.http))?;
    let url = format!("http://{}", listener.local_addr()?);
    let host = Host::new(figment.join(Serialized::default("public_url", &url)))?.with_listener(listener);
    host.check(COMPONENTS)?;
    let common = host.common();
    mosaic_mesh::telemetry::init(common.log_json);
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("creating data_dir {}", common.data_dir.display()))?;

    let base = common.nats();
    let configured_login = base.user.is_some() || base.creds_file.is_some();
    let mut embedded = None;
    // Each component logs in as itself unless NATS is open or the operator gave one login.
    let logins = match nats::probe(&base.url).await {
        nats::Found::Nothing if settings.embedded_nats.unwrap_or(true) => {
            let credentials = nats::Credentials::load_or_create(&common.data_dir)?;
            embedded = Some(nats::spawn_secured(&base.url, &common.data_dir, &credentials).await?);
            Some(credentials)
        }
        nats::Found::Nothing => {
            anyhow::bail!("no NATS server answers at {} (setting nats_url) and embedded_nats is off", base.url)
        }
        nats::Found::Closed if configured_login => None,
        nats::Found::Closed => Some(nats::Credentials::load_or_create(&common.data_dir)?),
        nats::Found::Open if insecure_nats => {
            tracing::warn!(url = %base.url, "NATS lets anyone in: every reply, frame and endpoint is open to any process that reaches it");
            eprintln!(
                "WARNING: {} lets anyone in without credentials (--insecure-nats); do not run this way where others reach it",
                base.url
            );
            None
        }
        nats::Found::Open => anyhow::bail!(
            "the NATS server at {} lets anyone in without credentials, so any process that reaches it could read every reply and call every endpoint. \
             Stop it and let `mosaic up` start its own (closed, with generated permissions), close it with `mosaic nats config`, \
             or pass --insecure-nats to use it anyway",
            base.url
        ),
    };
    let units = match &logins {
        Some(credentials) => {
            let (first, rest) = COMPONENTS.split_first().context("no components")?;
            let root = Mesh::connect(&credentials.login(&base, first.name), first.name).await?;
            let mut units = vec![(*first, root.clone())];
            for &component in rest {
                let login = credentials.login(&base, component.name);
                units.push((component, root.connect_also(&login, component.name).await?));
            }
            units
        }
        None => {
            let mesh = Mesh::connect(&base, "mosaic").await?;
            COMPONENTS.iter().map(|&c| (c, mesh.clone())).collect()
        }
    };
    let mut running = start_each(&host, units.clone()).await?;

    println!(
        "Mosaic is up at {url} (NATS {}{}, data in {}; running {})",
        base.url,
        if logins.is_some() { " with a login per component" } else { "" },
        common.data_dir.display(),
        running.names().collect::<Vec<_>>().join(", ")
    );
    shutdown_signal().await;
    running.stop().await;
    for (_, mesh) in units {
        let _ = mesh.flush().await;
    }
    if let Some(child) = embedded {
        child.stop().await;
    }
    Ok(())
}

/// How an operator's command (`mosaic admin`) logs in to NATS: the configured login if any,
/// else the operators' user of the generated configuration.
fn operator_login(common: &mosaic_mesh::runtime::Common) -> anyhow::Result<mosaic_mesh::NatsConfig> {
    let base = common.nats();
    if base.user.is_some() || base.creds_file.is_some() {
        return Ok(base);
    }
    let credentials = nats::Credentials::load_or_create(&common.data_dir)?;
    Ok(credentials.login(&base, mosaic_mesh::authz::ADMIN_USER))
}

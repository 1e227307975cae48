//! Components as data.
//!
//! Each service crate (and the edge) exports one [`Component`]: a declaration of what it
//! is — its name (also its configuration section and its NATS identity), its database
//! schema, the endpoints it serves — and a function that starts one instance. Everything
//! that runs, migrates or tests components (`mosaic up`, `mosaic serve <name>`,
//! `mosaic migrate`, the end-to-end world) iterates one ordered list of these values, so a
//! new service is one crate plus one line in that list, and no command can forget one.
//!
//! A component starts from a [`Unit`]: the process's [`Host`] (configuration, the
//! databases and object store it opens once and shares between instances), the [`Mesh`]
//! connection to serve on, and the component's own declaration. The unit opens the
//! component's database and applies its migrations, reads its configuration section, and
//! builds its service so that what it serves is checked against what it declares.

use crate::client::Mesh;
use crate::db::{self, Db, DbConfig, Migration};
use crate::runtime::Common;
use crate::service::{ServiceBuilder, ServiceHandle};
use crate::storage::Storage;
use anyhow::Context as _;
use figment::Figment;
use mosaic_api::stream::{KvSpec, StreamSpec};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future that owns what it needs.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a component is. See the module docs.
#[derive(Debug)]
pub struct Component {
    /// Its name: the configuration section (`[user]`, `MOSAIC_USER__*`), the NATS micro
    /// service name and queue group, the database name, and `mosaic serve <name>`.
    pub name: &'static str,
    /// One line for `mosaic serve --help` and the service's `$SRV.INFO` description.
    pub about: &'static str,
    /// The schema of the component's own SurrealDB database (`surreal/<name>/`), applied in
    /// order before it starts; `None` for a component without a database. Its connection
    /// settings are the section's `db` table (`[user.db]`, `MOSAIC_USER__DB__URL`).
    pub migrations: Option<&'static [Migration]>,
    /// Subjects of the endpoints it serves; starting a service that registers any other set
    /// fails (see [`Unit::service`]).
    pub serves: &'static [&'static str],
    /// Instance endpoints it serves and calls (`<subject>.<instance>`, see
    /// [`crate::instance`]).
    pub instances: &'static [&'static str],
    /// Subjects of the endpoints of other components it calls.
    pub calls: &'static [&'static str],
    /// Subjects (NATS patterns) it publishes: events and jobs (through the outbox or
    /// directly), kept frames, pushes, notices, dead letters.
    pub publishes: &'static [&'static str],
    /// Core subjects (NATS patterns) it subscribes to besides its endpoints: notices,
    /// events heard as they pass, users' pushes and frames.
    pub subscribes: &'static [&'static str],
    /// JetStream streams it creates, writes or reads.
    pub streams: &'static [&'static StreamSpec],
    /// Key-value buckets it opens.
    pub buckets: &'static [&'static KvSpec],
    /// Reads and validates its configuration section without starting anything (so
    /// `mosaic up` refuses a bad setting before any component runs): [`check::<Config>`].
    pub check: fn(&Host, &'static Component) -> anyhow::Result<()>,
    /// Starts one instance.
    pub start: fn(Unit) -> BoxFuture<anyhow::Result<ServiceHandle>>,
}

/// A component's configuration section: read from `[<name>]` and `MOSAIC_<NAME>__*` (every
/// field defaulted), then validated.
pub trait Section: DeserializeOwned {
    /// Refuses values the component cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The [`Component::check`] of a component whose section is `C`.
pub fn check<C: Section>(host: &Host, component: &'static Component) -> anyhow::Result<()> {
    host.section::<C>(component).map(drop)
}

impl Component {
    /// Starts one instance from `unit`: every stream the component declares exists first
    /// (events it stages leave through the outbox without creating their stream), then its
    /// own start runs.
    pub async fn run(&'static self, unit: Unit) -> anyhow::Result<ServiceHandle> {
        for stream in self.streams {
            unit.mesh().ensure_stream(stream).await?;
        }
        (self.start)(unit).await
    }

    /// Whether the component keeps state in a database of its own.
    pub fn has_database(&self) -> bool {
        self.migrations.is_some()
    }

    /// Whether the declaration covers `what`.
    pub fn declares(&self, what: &Use<'_>) -> bool {
        let matches =
            |patterns: &[&str], subject: &str| patterns.iter().any(|p| mosaic_api::subject::matches(p, subject));
        match what {
            Use::Call(subject) => self.calls.contains(subject) || self.serves.contains(subject),
            Use::Instance(subject) => self.instances.contains(subject),
            Use::Publish(subject) => matches(self.publishes, subject),
            Use::Subscribe(subject) => matches(self.subscribes, subject),
            Use::Stream(spec) => self.streams.iter().any(|s| s.name == spec.name),
            Use::Bucket(spec) => self.buckets.iter().any(|b| b.bucket == spec.bucket),
        }
    }
}

/// One thing a component does on NATS, as its declaration names it.
#[derive(Debug)]
pub enum Use<'a> {
    /// A call of the endpoint with this subject.
    Call(&'a str),
    /// Serving or calling this instance endpoint.
    Instance(&'a str),
    /// A publish on this subject.
    Publish(&'a str),
    /// A core subscription to this subject (or pattern).
    Subscribe(&'a str),
    /// Creating, writing or reading this stream.
    Stream(&'a StreamSpec),
    /// Opening this bucket.
    Bucket(&'a KvSpec),
}

impl std::fmt::Display for Use<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Use::Call(s) => write!(f, "calls {s}"),
            Use::Instance(s) => write!(f, "uses the instance endpoint {s}"),
            Use::Publish(s) => write!(f, "publishes {s}"),
            Use::Subscribe(s) => write!(f, "subscribes to {s}"),
            Use::Stream(spec) => write!(f, "uses stream {}", spec.name),
            Use::Bucket(spec) => write!(f, "uses bucket {}", spec.bucket),
        }
    }
}

/// Every use of NATS a component made without declaring it, in this process (checked in
/// debug builds, so the test suite holds the declarations to what the code does).
static VIOLATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The undeclared uses seen so far in this process (see [`Mesh::scoped`]).
pub fn violations() -> Vec<String> {
    VIOLATIONS.lock().expect("violations poisoned").clone()
}

pub(crate) fn record_violation(message: String) {
    let mut seen = VIOLATIONS.lock().expect("violations poisoned");
    if !seen.contains(&message) {
        seen.push(message);
    }
}

/// What a process shares between the components (and instances) it runs: the layered
/// configuration, and the databases and object store, each opened once.
///
/// Several instances of a component on one host share its database handle, as several
/// processes share a database cluster (an embedded `mem://` or `surrealkv://` store can
/// only be shared that way).
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    common: Common,
    figment: Figment,
    databases: tokio::sync::Mutex<HashMap<&'static str, Db>>,
    storage: Mutex<Option<Storage>>,
    listener: Mutex<Option<tokio::net::TcpListener>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("data_dir", &self.inner.common.data_dir).finish_non_exhaustive()
    }
}

impl Host {
    /// A host whose settings are `figment` (every layer already merged): the common keys at
    /// its root and each component's section under its name.
    pub fn new(figment: Figment) -> anyhow::Result<Self> {
        let common: Common = figment.extract().map_err(|e| crate::config::explain(e, None))?;
        Ok(Self::with_common(common, figment))
    }

    fn with_common(common: Common, figment: Figment) -> Self {
        Self {
            inner: Arc::new(HostInner {
                common,
                figment,
                databases: Default::default(),
                storage: Mutex::new(None),
                listener: Mutex::new(None),
            }),
        }
    }

    /// Hands the next component that listens for HTTP an already bound listener instead of
    /// its configured address (tests bind port 0 and need the address before anything
    /// starts).
    pub fn with_listener(self, listener: tokio::net::TcpListener) -> Self {
        *self.inner.listener.lock().expect("listener slot poisoned") = Some(listener);
        self
    }

    /// The settings every component shares.
    pub fn common(&self) -> &Common {
        &self.inner.common
    }

    /// The whole layered configuration.
    pub fn figment(&self) -> &Figment {
        &self.inner.figment
    }

    /// The unit that starts `component` on `mesh`; the component sees the mesh scoped to
    /// its declaration (see [`Mesh::scoped`]).
    pub fn unit(&self, component: &'static Component, mesh: Mesh) -> Unit {
        Unit { host: self.clone(), mesh: mesh.scoped(component), component }
    }

    /// Reads and validates `component`'s configuration section as `C`, naming the setting
    /// on error.
    pub fn section<C: Section>(&self, component: &Component) -> anyhow::Result<C> {
        let section: C = self
            .inner
            .figment
            .focus(component.name)
            .extract()
            .map_err(|e| crate::config::explain(e, Some(component.name)))?;
        section.validate()?;
        Ok(section)
    }

    /// `component`'s database with its migrations applied, opened on first use and shared
    /// afterwards.
    ///
    /// # Errors
    /// If the component declares no database, or it cannot be opened or migrated.
    pub async fn database(&self, component: &'static Component) -> anyhow::Result<Db> {
        let Some(migrations) = component.migrations else {
            anyhow::bail!("component {} declares no database", component.name);
        };
        // Held across the open, so concurrent instances of one component open it once.
        let mut open = self.inner.databases.lock().await;
        if let Some(db) = open.get(component.name) {
            return Ok(db.clone());
        }
        let config = self.db_config(component)?;
        let db = db::connect(&config, component.name).await?;
        db::migrate(&db, migrations).await.with_context(|| format!("migrating the {} database", component.name))?;
        open.insert(component.name, db.clone());
        Ok(db)
    }

    /// `component`'s database settings, its URL filled in as [`Host::database`] opens it.
    fn db_config(&self, component: &'static Component) -> anyhow::Result<DbConfig> {
        /// The `db` table of a section (the rest is the component's own business).
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Section {
            db: DbConfig,
        }
        let Section { db: mut config } = self
            .inner
            .figment
            .focus(component.name)
            .extract()
            .map_err(|e| crate::config::explain(e, Some(component.name)))?;
        self.inner.common.fill_db_url(&mut config.url, component.name);
        Ok(config)
    }

    /// Whether `component`'s database lives in this process (`mem://`, `surrealkv://`)
    /// rather than on a server others reach too.
    pub fn database_is_embedded(&self, component: &'static Component) -> anyhow::Result<bool> {
        let url = self.db_config(component)?.url;
        Ok(url.starts_with("mem://") || url.starts_with("surrealkv://"))
    }

    /// The object store (`storage.url`), opened on first use and shared afterwards.
    pub fn storage(&self) -> anyhow::Result<Storage> {
        let mut slot = self.inner.storage.lock().expect("storage slot poisoned");
        if let Some(storage) = slot.as_ref() {
            return Ok(storage.clone());
        }
        let storage = Storage::open(&self.inner.common.storage())?;
        *slot = Some(storage.clone());
        Ok(storage)
    }

    /// Takes the listener given by [`Host::with_listener`], if it is still there.
    pub fn take_listener(&self) -> Option<tokio::net::TcpListener> {
        self.inner.listener.lock().expect("listener slot poisoned").take()
    }

    /// Checks the configuration of every component of `components`.
    pub fn check(&self, components: &[&'static Component]) -> anyhow::Result<()> {
        components.iter().try_for_each(|c| (c.check)(self, c))
    }
}

/// One instance of one component about to start: its host, its mesh connection and its
/// declaration.
pub struct Unit {
    host: Host,
    mesh: Mesh,
    component: &'static Component,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit").field("component", &self.component.name).finish_non_exhaustive()
    }
}

impl Unit {
    /// The component's configuration section, validated.
    pub fn config<C: Section>(&self) -> anyhow::Result<C> {
        self.host.section(self.component)
    }

    /// The connection this instance serves on.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The process's host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The settings every component shares.
    pub fn common(&self) -> &Common {
        self.host.common()
    }

    /// The component's declaration.
    pub fn component(&self) -> &'static Component {
        self.component
    }

    /// The component's database, migrated (see [`Host::database`]).
    pub async fn database(&self) -> anyhow::Result<Db> {
        self.host.database(self.component).await
    }

    /// The object store.
    pub fn storage(&self) -> anyhow::Result<Storage> {
        self.host.storage()
    }

    /// Whether the component's database lives in this process (see
    /// [`Host::database_is_embedded`]).
    pub fn database_is_embedded(&self) -> anyhow::Result<bool> {
        self.host.database_is_embedded(self.component)
    }

    /// Starts describing the component's service, whose handlers share `state`; its
    /// endpoints must be exactly the declared ones.
    pub fn service<S: Send + Sync + 'static>(&self, state: Arc<S>) -> ServiceBuilder<S> {
        self.mesh.service(self.component.name, self.component.about, state).declared(self.component.serves)
    }
}

/// Starts `components` in order on `mesh` (their first instance each); on a failure, stops
/// what already started, in reverse, and returns the error.
pub async fn start_all(host: &Host, mesh: &Mesh, components: &[&'static Component]) -> anyhow::Result<Running> {
    start_each(host, components.iter().map(|&c| (c, mesh.clone())).collect()).await
}

/// Starts each component on its own connection (each logs in to NATS as itself), in order;
/// on a failure, stops what already started, in reverse, and returns the error.
pub async fn start_each(host: &Host, units: Vec<(&'static Component, Mesh)>) -> anyhow::Result<Running> {
    let mut running = Running::default();
    for (component, mesh) in units {
        match component.run(host.unit(component, mesh)).await {
            Ok(handle) => running.push(component, handle),
            Err(e) => {
                running.stop().await;
                return Err(e.context(format!("starting {}", component.name)));
            }
        }
    }
    Ok(running)
}

/// Running instances, in the order they started.
#[derive(Default)]
pub struct Running {
    instances: Vec<(&'static Component, ServiceHandle)>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.instances.iter().map(|(c, _)| c.name)).finish()
    }
}

impl Running {
    /// Adds a started instance.
    pub fn push(&mut self, component: &'static Component, handle: ServiceHandle) {
        self.instances.push((component, handle));
    }

    /// Takes out the newest instance of the component named `name`.
    pub fn take(&mut self, name: &str) -> Option<ServiceHandle> {
        let i = self.instances.iter().rposition(|(c, _)| c.name == name)?;
        Some(self.instances.remove(i).1)
    }

    /// How many instances of the component named `name` run.
    pub fn count(&self, name: &str) -> usize {
        self.instances.iter().filter(|(c, _)| c.name == name).count()
    }

    /// Names of the running components, in start order (one per instance).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.instances.iter().map(|(c, _)| c.name)
    }

    /// Stops every instance, the last started first: the edge (last in the list) stops
    /// taking requests before the services behind it drain.
    pub async fn stop(&mut self) {
        while let Some((_, handle)) = self.instances.pop() {
            handle.stop().await;
        }
    }
}

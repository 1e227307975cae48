//! Logging, set up once per process.

use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset: our crates at info, noisy dependencies quieter.
pub const DEFAULT_FILTER: &str =
    "info,surrealdb=warn,surrealdb_core=warn,surrealkv=warn,async_nats=warn,tower_http=warn";

/// Installs the global subscriber: human-readable lines, or JSON lines for log shippers.
/// Safe to call more than once (later calls do nothing).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

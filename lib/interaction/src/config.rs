//! Interaction-service settings (`[interaction]`, `MOSAIC_INTERACTION__*`).

use mosaic_mesh::db::DbConfig;
use serde::{Deserialize, Serialize};

/// Settings of the interaction service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the `interaction` database lives.
    pub db: DbConfig,
}

impl Config {
    /// Rejects settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

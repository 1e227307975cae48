//! Interaction-service settings (`[interaction]`, `MOSAIC_INTERACTION__*`). Its database is
//! `[interaction.db]`, read by the component host (see [`mosaic_mesh::component`]).

use serde::{Deserialize, Serialize};

/// Settings of the interaction service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Comments one user may write per hour; beyond it, 429. 0 lifts the limit.
    pub comments_per_hour: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { comments_per_hour: 200 }
    }
}

impl mosaic_mesh::component::Section for Config {}

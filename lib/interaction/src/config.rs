//! Interaction-service settings (`[interaction]`, `MOSAIC_INTERACTION__*`).
//!
//! The service has no tunables of its own yet; its database is `[interaction.db]`, read by
//! the component host (see [`mosaic_mesh::component`]).

use serde::{Deserialize, Serialize};

/// Settings of the interaction service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {}

impl mosaic_mesh::component::Section for Config {}

//! Messaging-service settings (`[messaging]`, `MOSAIC_MESSAGING__*`).

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Settings of the messaging service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Messages one user may send per minute (across conversations); more get 429.
    pub max_messages_per_minute: u32,
    /// Least time between two typing indicators of one user in one conversation that are
    /// passed on, in milliseconds.
    pub typing_interval_ms: u64,
    /// Characters of a message shown in an offline member's notification.
    pub preview_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_messages_per_minute: 120, typing_interval_ms: 2_000, preview_chars: 120 }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if self.max_messages_per_minute == 0 {
            bail!("messaging.max_messages_per_minute must be positive");
        }
        if self.preview_chars == 0 {
            bail!("messaging.preview_chars must be positive");
        }
        Ok(())
    }
}

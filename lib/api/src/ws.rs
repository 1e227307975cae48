//! WebSocket frames between the edge and clients, and the subjects that feed them.
//!
//! Services publish a serialized [`ServerFrame`] on [`push_subject`]; the edge forwards the
//! bytes unchanged to every socket of that user.

use crate::ids::UserId;
use serde::{Deserialize, Serialize};

/// Core NATS subject carrying frames for one user's sockets.
pub fn push_subject(user: &UserId) -> String {
    format!("push.user.{user}")
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientFrame {
    /// Liveness check; answered with `pong` carrying the same id.
    #[serde(rename = "ping")]
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// Answer to `ping`.
    #[serde(rename = "pong")]
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Live frames were dropped because the socket could not keep up; the client should
    /// reload what it shows (or reconnect with `?since=`).
    #[serde(rename = "resync")]
    Resync { missed: u64 },
    /// A client frame could not be handled.
    #[serde(rename = "error")]
    Error { code: crate::ErrorCode, detail: String },
}

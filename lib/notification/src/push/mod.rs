//! Mobile and browser push: a sender per platform behind one trait, chosen from
//! configuration (a real provider, or a sender that only logs when none is configured).

pub mod fcm;
pub mod guard;
pub mod webpush;

use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to show, the same on every platform.
#[derive(Debug, Clone)]
pub struct PushMessage {
    pub title: String,
    pub body: String,
    /// Key/value pairs the app reads (notification id, type, subject).
    pub data: BTreeMap<String, String>,
    /// A later push with the same tag replaces this one on the device (coalesced updates).
    pub tag: String,
    /// Time left before the push is pointless; providers drop it after.
    pub ttl: Duration,
    /// Deliver promptly even to a dozing device.
    pub urgent: bool,
}

/// Where a push goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// An FCM registration token.
    Fcm { token: String },
    /// A Web Push subscription.
    WebPush { endpoint: String, p256dh: String, auth: String },
}

/// How one send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider took it.
    Sent,
    /// The device is gone (uninstalled, unsubscribed): remove it, never retry.
    Gone(String),
    /// Worth retrying, after the provider's delay when it gave one.
    Retry { after: Option<Duration>, reason: String },
    /// Will never succeed as sent (a payload or configuration problem).
    Failed(String),
}

/// A push provider.
pub trait Sender: Send + Sync {
    /// Sends `message` to `target`.
    fn send<'a>(&'a self, target: &'a Target, message: &'a PushMessage) -> BoxFuture<'a, Outcome>;
}

/// Stands in for a provider that is not configured: logs what would have been sent, so
/// `mosaic up` works offline.
#[derive(Debug)]
pub struct LogSender {
    pub platform: &'static str,
}

impl Sender for LogSender {
    fn send<'a>(&'a self, _target: &'a Target, message: &'a PushMessage) -> BoxFuture<'a, Outcome> {
        tracing::info!(platform = self.platform, title = %message.title, body = %message.body, "push (not configured; logged)");
        Box::pin(std::future::ready(Outcome::Sent))
    }
}

/// A `Retry-After` header: delta seconds or an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

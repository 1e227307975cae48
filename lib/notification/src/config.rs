//! Notification-service settings (`[notification]`, `MOSAIC_NOTIFICATION__*`).

use anyhow::bail;
use mosaic_api::notification::NotificationType;
use mosaic_mesh::config::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the notification service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Events of the same kind on the same subject within this many seconds are one inbox
    /// entry ("A and 12 others liked your post").
    pub coalesce_window_secs: u64,
    /// Pushes per user per hour; more are dropped (the inbox keeps them).
    pub push_per_hour: u64,
    /// Emails per user per day.
    pub email_per_day: u64,
    /// A push not sent within this time is dropped.
    pub push_ttl_secs: u64,
    /// Types whose pushes quiet hours do not hold.
    pub urgent_types: Vec<NotificationType>,
    /// How often held pushes whose quiet hours ended are released as a digest.
    pub digest_interval_secs: u64,
    /// Attempts per push or email before it is dead-lettered.
    pub max_attempts: i64,
    /// Delays before retrying a failed send, in milliseconds (the last one repeats; a
    /// provider's `Retry-After` wins when longer).
    pub retry_backoff_ms: Vec<u64>,
    /// Sends in progress at once per instance.
    pub senders: usize,
    /// A send neither finished nor reported alive for this long is handed to another
    /// instance (its sender is presumed dead).
    pub send_ack_wait_secs: u64,
    /// The public base URL of the edge, for links in emails (unsubscribe). Empty: the
    /// common `public_url`, else `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Signs unsubscribe links; empty: a secret generated once and kept in the database.
    pub unsubscribe_secret: Secret,
    /// Firebase Cloud Messaging (HTTP v1); without a service account pushes are logged.
    pub fcm: FcmConfig,
    /// Web Push (RFC 8030/8291/8292).
    pub webpush: WebPushConfig,
    /// Email; without a URL emails are logged.
    pub smtp: SmtpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            coalesce_window_secs: 3600,
            push_per_hour: 30,
            email_per_day: 20,
            push_ttl_secs: 24 * 3600,
            urgent_types: vec![NotificationType::Message],
            digest_interval_secs: 30,
            max_attempts: 8,
            retry_backoff_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000],
            senders: 16,
            send_ack_wait_secs: 60,
            public_url: String::new(),
            unsubscribe_secret: Secret::default(),
            fcm: FcmConfig::default(),
            webpush: WebPushConfig::default(),
            smtp: SmtpConfig::default(),
        }
    }
}

/// Firebase Cloud Messaging HTTP v1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FcmConfig {
    /// The Firebase service-account key (JSON file from the Firebase console).
    pub service_account_file: Option<PathBuf>,
    /// The same key inline (takes precedence over the file).
    pub service_account_json: Option<Secret>,
    /// Base URL of the FCM API.
    pub endpoint: String,
    /// OAuth2 token URL; empty: the key's `token_uri`.
    pub token_url: String,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            service_account_file: None,
            service_account_json: None,
            endpoint: "https://fcm.googleapis.com".into(),
            token_url: String::new(),
        }
    }
}

/// Web Push.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebPushConfig {
    /// VAPID private key (PKCS#8 PEM, P-256); empty: one generated once and kept in the
    /// database (browsers subscribe with its public key, `GET /v1/devices/webpush/key`).
    pub vapid_private_key: Secret,
    /// Contact of the sender for push services (`mailto:` or `https:`).
    pub subject: String,
    /// Accept `http://` push endpoints (local test endpoints only).
    pub allow_http_endpoints: bool,
    /// Accept endpoints on loopback and private addresses (local test endpoints only):
    /// otherwise a subscription could make the service request anything on its network.
    pub allow_private_endpoints: bool,
    /// Push services allowed (`fcm.googleapis.com`, `*.push.services.mozilla.com`, …);
    /// empty: any host with public addresses.
    pub allowed_hosts: Vec<String>,
}

impl WebPushConfig {
    /// The endpoints these settings allow.
    pub fn policy(&self) -> crate::push::guard::EndpointPolicy {
        crate::push::guard::EndpointPolicy {
            allow_http: self.allow_http_endpoints,
            allow_private: self.allow_private_endpoints,
            allowed_hosts: self.allowed_hosts.clone(),
        }
    }
}

impl Default for WebPushConfig {
    fn default() -> Self {
        Self {
            vapid_private_key: Secret::default(),
            subject: "mailto:ops@mosaic.invalid".into(),
            allow_http_endpoints: false,
            allow_private_endpoints: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Email over SMTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpConfig {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`
    /// (implicit TLS) or `smtp://host:25` (plain, local relays only); empty: log emails.
    pub url: Secret,
    /// The `From` address.
    pub from: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self { url: Secret::default(), from: "Mosaic <no-reply@mosaic.invalid>".into() }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if self.coalesce_window_secs == 0 || self.digest_interval_secs == 0 {
            bail!("notification.coalesce_window_secs and notification.digest_interval_secs must be positive");
        }
        if self.send_ack_wait_secs < 2 {
            bail!("notification.send_ack_wait_secs must be at least 2");
        }
        if self.max_attempts < 1 || self.senders == 0 {
            bail!("notification.max_attempts and notification.senders must be positive");
        }
        if self.retry_backoff_ms.is_empty() {
            bail!("notification.retry_backoff_ms needs at least one delay");
        }
        if !(self.public_url.is_empty()
            || self.public_url.starts_with("http://")
            || self.public_url.starts_with("https://"))
        {
            bail!("notification.public_url must be an http(s) URL");
        }
        if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!("notification.smtp.from is not an email address: {:?}", self.smtp.from);
        }
        Ok(())
    }
}

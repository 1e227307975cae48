//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! A service-account key signs a JWT assertion (RS256), exchanged at the OAuth2 token URL
//! for an access token, cached until shortly before it expires; messages are POSTed to
//! `{endpoint}/v1/projects/{project}/messages:send`. (The legacy API behind the `fcm` crate
//! was shut down by Google in 2024.) Errors are read from the `FcmError` detail:
//! `UNREGISTERED` and friends remove the device, 429 and 5xx are retried honouring
//! `Retry-After`, an expired access token is refreshed once.

use super::{Outcome, PushMessage, Sender, Target, retry_after};
use crate::config::FcmConfig;
use anyhow::{Context as _, anyhow};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::{Duration, Instant};

/// Scope of the access token.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// An access token is renewed this long before it expires.
const RENEW_EARLY: Duration = Duration::from_secs(300);

/// The fields of a Google service-account key that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

/// Sends through FCM.
pub struct FcmSender {
    http: reqwest::Client,
    account: ServiceAccount,
    key: EncodingKey,
    send_url: String,
    token_url: String,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for FcmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSender").field("project", &self.account.project_id).finish_non_exhaustive()
    }
}

impl FcmSender {
    /// The sender `config` describes; `None` when no service account is configured.
    pub fn from_config(config: &FcmConfig) -> anyhow::Result<Option<Self>> {
        let json = match (&config.service_account_json, &config.service_account_file) {
            (Some(inline), _) if !inline.expose().trim().is_empty() => inline.expose().to_owned(),
            (_, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading notification.fcm.service_account_file {}", path.display()))?,
            _ => return Ok(None),
        };
        let account: ServiceAccount =
            serde_json::from_str(&json).context("notification.fcm service account key is not a Google key file")?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .context("notification.fcm service account private_key is not an RSA PEM key")?;
        let endpoint = config.endpoint.trim_end_matches('/');
        let send_url = format!("{endpoint}/v1/projects/{}/messages:send", account.project_id);
        let token_url = if config.token_url.is_empty() { account.token_uri.clone() } else { config.token_url.clone() };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the FCM HTTP client")?;
        Ok(Some(Self { http, account, key, send_url, token_url, token: tokio::sync::Mutex::new(None) }))
    }

    /// A valid access token, from the cache unless it is (nearly) expired or `renew`.
    async fn access_token(&self, renew: bool) -> anyhow::Result<String> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let claims = Assertion {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.token_url,
            iat: now,
            exp: now + 3600,
        };
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key).context("signing the FCM assertion")?;
        let reply = self
            .http
            .post(&self.token_url)
            .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())])
            .send()
            .await
            .context("requesting an FCM access token")?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            return Err(anyhow!("token endpoint answered {status}: {}", body.chars().take(300).collect::<String>()));
        }
        let token: TokenReply = reply.json().await.context("reading the FCM access token")?;
        let lifetime = Duration::from_secs(token.expires_in).saturating_sub(RENEW_EARLY).max(Duration::from_secs(30));
        *cached = Some((token.access_token.clone(), Instant::now() + lifetime));
        Ok(token.access_token)
    }

    fn body(token: &str, message: &PushMessage) -> serde_json::Value {
        let ttl = message.ttl.as_secs();
        let expires = chrono::Utc::now().timestamp() + ttl as i64;
        json!({
            "message": {
                "token": token,
                "notification": { "title": message.title, "body": message.body },
                "data": message.data,
                "android": {
                    "ttl": format!("{ttl}s"),
                    "priority": if message.urgent { "HIGH" } else { "NORMAL" },
                    "collapse_key": message.tag,
                    "notification": { "tag": message.tag },
                },
                "apns": {
                    "headers": {
                        "apns-expiration": expires.to_string(),
                        "apns-priority": if message.urgent { "10" } else { "5" },
                        "apns-collapse-id": message.tag,
                    },
                },
            }
        })
    }

    async fn send_once(&self, token: &str, message: &PushMessage, renew: bool) -> Result<Outcome, Unauthenticated> {
        let access = match self.access_token(renew).await {
            Ok(t) => t,
            Err(e) => return Ok(Outcome::Retry { after: None, reason: format!("{e:#}") }),
        };
        let reply =
            match self.http.post(&self.send_url).bearer_auth(access).json(&Self::body(token, message)).send().await {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Retry { after: None, reason: format!("FCM unreachable: {e}") }),
            };
        let status = reply.status();
        if status.is_success() {
            return Ok(Outcome::Sent);
        }
        let after = retry_after(reply.headers());
        let text = reply.text().await.unwrap_or_default();
        let parsed: Option<GoogleErrorBody> = serde_json::from_str::<GoogleError>(&text).ok().map(|e| e.error);
        let code = parsed.as_ref().and_then(|e| {
            e.details
                .iter()
                .find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError")))
                .and_then(|d| d["errorCode"].as_str().map(str::to_owned))
        });
        let message_text = parsed.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        let reason = format!(
            "FCM {status} {}: {}",
            code.as_deref().or(parsed.as_ref().map(|e| e.status.as_str())).unwrap_or("-"),
            message_text.chars().take(200).collect::<String>()
        );
        Ok(match (status.as_u16(), code.as_deref()) {
            (_, Some("UNREGISTERED")) | (_, Some("SENDER_ID_MISMATCH")) => Outcome::Gone(reason),
            (400, _) if token_invalid(parsed.as_ref()) => Outcome::Gone(reason),
            (401, None) => return Err(Unauthenticated(reason)),
            (429, _) | (500..=599, _) => Outcome::Retry { after, reason },
            _ => Outcome::Failed(reason),
        })
    }
}

/// The access token was refused: renew it and try again once.
struct Unauthenticated(String);

/// Whether a 400 is about the registration token itself (which means the device is gone).
fn token_invalid(error: Option<&GoogleErrorBody>) -> bool {
    let Some(error) = error else { return false };
    error.message.contains("registration token")
        || error.details.iter().any(|d| {
            d["fieldViolations"]
                .as_array()
                .is_some_and(|v| v.iter().any(|f| f["field"].as_str() == Some("message.token")))
        })
}

impl Sender for FcmSender {
    fn send<'a>(&'a self, target: &'a Target, message: &'a PushMessage) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Target::Fcm { token } = target else {
                return Outcome::Failed("not an FCM device".into());
            };
            match self.send_once(token, message, false).await {
                Ok(outcome) => outcome,
                Err(Unauthenticated(_)) => match self.send_once(token, message, true).await {
                    Ok(outcome) => outcome,
                    Err(Unauthenticated(reason)) => Outcome::Retry { after: None, reason },
                },
            }
        })
    }
}

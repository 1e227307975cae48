//! Web Push: RFC 8030 delivery to the browser's push service, the payload encrypted for the
//! subscription (RFC 8291, `aes128gcm`), the sender identified by VAPID (RFC 8292, an ES256
//! JWT whose key browsers were given when subscribing).

use super::guard::{self, EndpointPolicy};
use super::{Outcome, PushMessage, Sender, Target, retry_after};
use anyhow::{Context as _, anyhow};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// The sender's VAPID key pair.
#[derive(Clone)]
pub struct Vapid {
    key: EncodingKey,
    /// Uncompressed P-256 point (65 bytes).
    public: Vec<u8>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

impl Vapid {
    /// A key pair from its PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| anyhow!("not a P-256 PKCS#8 key: {e}"))?;
        Ok(Self { key: EncodingKey::from_ec_der(der), public: pair.public_key().as_ref().to_vec() })
    }

    /// A key pair from a PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let parsed = pem::parse(pem.trim()).context("not a PEM document")?;
        Self::from_pkcs8(parsed.contents())
    }

    /// A new key pair, and its PKCS#8 DER to keep.
    pub fn generate() -> anyhow::Result<(Self, Vec<u8>)> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|e| anyhow!("{e}"))?;
        let der = pair.to_pkcs8v1().map_err(|e| anyhow!("{e}"))?.as_ref().to_vec();
        Ok((Self::from_pkcs8(&der)?, der))
    }

    /// The public key browsers pass as `applicationServerKey` (base64url).
    pub fn public_key(&self) -> String {
        B64URL.encode(&self.public)
    }

    /// `Authorization: vapid t=<jwt>, k=<key>` for a push to `endpoint`.
    fn authorization(&self, endpoint: &http::Uri, subject: &str, ttl: Duration) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            aud: String,
            exp: i64,
            sub: &'a str,
        }
        let scheme = endpoint.scheme_str().unwrap_or("https");
        let host = endpoint.host().context("push endpoint has no host")?;
        let aud = match endpoint.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        // RFC 8292: at most 24 hours ahead.
        let exp = chrono::Utc::now().timestamp() + ttl.as_secs().clamp(60, 12 * 3600) as i64;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        let jwt = jsonwebtoken::encode(&header, &Claims { aud, exp, sub: subject }, &self.key)?;
        Ok(format!("vapid t={jwt}, k={}", self.public_key()))
    }
}

/// Sends Web Push messages.
#[derive(Debug)]
pub struct WebPushSender {
    http: reqwest::Client,
    vapid: Vapid,
    subject: String,
    policy: EndpointPolicy,
}

impl WebPushSender {
    /// A sender signing with `vapid` as `subject`, to the endpoints `policy` allows. It
    /// follows no redirect: a push service answers, it does not send us elsewhere.
    pub fn new(vapid: Vapid, subject: String, policy: EndpointPolicy) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(policy.resolver())
            .build()?;
        Ok(Self { http, vapid, subject, policy })
    }

    async fn send_to(&self, endpoint: &str, p256dh: &str, auth: &str, message: &PushMessage) -> Outcome {
        let uri = match self.policy.check_url(endpoint) {
            Ok(u) => u,
            Err(refused) => return Outcome::Gone(refused.into()),
        };
        let keys = (|| {
            let public = B64URL.decode(p256dh.trim_end_matches('=')).ok()?;
            let public = web_push_native::p256::PublicKey::from_sec1_bytes(&public).ok()?;
            let auth: [u8; 16] = B64URL.decode(auth.trim_end_matches('=')).ok()?.try_into().ok()?;
            Some((public, auth))
        })();
        let Some((public, auth)) = keys else { return Outcome::Gone("the subscription keys are malformed".into()) };
        let payload = json!({
            "title": message.title,
            "body": message.body,
            "tag": message.tag,
            "data": message.data,
        });
        let mut request = match web_push_native::WebPushBuilder::new(uri.clone(), public, auth.into())
            .with_valid_duration(message.ttl)
            .build(serde_json::to_vec(&payload).unwrap_or_default())
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("encrypting the push: {e}")),
        };
        let authorization = match self.vapid.authorization(&uri, &self.subject, message.ttl) {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("signing VAPID: {e:#}")),
        };
        let headers = request.headers_mut();
        if let Ok(v) = authorization.parse() {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        headers.insert("urgency", http::HeaderValue::from_static(if message.urgent { "high" } else { "normal" }));
        // A newer push with the same topic replaces a pending one at the push service.
        let topic: String =
            message.tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(32).collect();
        if let Ok(v) = http::HeaderValue::from_str(&topic) {
            headers.insert("topic", v);
        }
        let request = match reqwest::Request::try_from(request) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("building the push request: {e}")),
        };
        let reply = match self.http.execute(request).await {
            Ok(r) => r,
            // The stored reason stays generic: what failed how (refused, timed out, reset)
            // would tell a client probing addresses through its endpoint what is there.
            Err(e) if guard::refused(&e) => return Outcome::Gone(guard::REFUSED.into()),
            Err(e) => {
                tracing::debug!(error = %e, "push service unreachable");
                return Outcome::Retry { after: None, reason: "push service unreachable".into() };
            }
        };
        let status = reply.status();
        let after = retry_after(reply.headers());
        let reason = format!("push service answered {status}");
        match status.as_u16() {
            200..=299 => Outcome::Sent,
            404 | 410 => Outcome::Gone(reason),
            429 | 500..=599 => Outcome::Retry { after, reason },
            _ => Outcome::Failed(reason),
        }
    }
}

impl Sender for WebPushSender {
    fn send<'a>(&'a self, target: &'a Target, message: &'a PushMessage) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match target {
                Target::WebPush { endpoint, p256dh, auth } => self.send_to(endpoint, p256dh, auth, message).await,
                Target::Fcm { .. } => Outcome::Failed("not a Web Push subscription".into()),
            }
        })
    }
}

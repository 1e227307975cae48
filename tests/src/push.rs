//! Local stand-ins for the push providers, which cannot run here: an HTTP server that
//! answers like Google's OAuth2 token endpoint and FCM's HTTP v1 `messages:send` (checking
//! the assertion's RS256 signature, the bearer token and the message's shape), and like a
//! browser push service (checking the VAPID JWT and decrypting the RFC 8291 payload with the
//! subscription's private key). Replies can be scripted per device to exercise
//! `UNREGISTERED`, 429 with `Retry-After`, and 5xx.

use anyhow::{Context as _, anyhow};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use web_push_native::p256;

/// A scripted reply to the next push for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// FCM: 404 `UNREGISTERED`; Web Push: 410 Gone.
    Gone,
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// 503.
    Unavailable,
    /// No answer for 30 s (a provider that hangs, or a sender that dies mid-send).
    Hang,
}

/// A push the stand-in accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The FCM token or the Web Push subscription id.
    pub device: String,
    /// FCM: the `message` object; Web Push: the decrypted payload.
    pub message: Value,
    /// Web Push: the `TTL` header.
    pub ttl: Option<u64>,
}

struct Subscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

struct Inner {
    token_url: String,
    client_email: String,
    assertion_key: DecodingKey,
    issued: Mutex<HashSet<String>>,
    received: Mutex<Vec<Received>>,
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    rejected: Mutex<Vec<String>>,
    hung: Mutex<Vec<String>>,
}

/// The running stand-in.
pub struct PushStandIn {
    base: String,
    inner: Arc<Inner>,
    service_account: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PushStandIn {
    /// Starts on a free port, with a fresh RSA key for the service account it accepts.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow!("{e}"))?;
        let pkcs8 = pair.as_der().map_err(|e| anyhow!("{e}"))?;
        let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let assertion_key = DecodingKey::from_rsa_der(pair.public_key().as_ref());
        let token_url = format!("{base}/token");
        let client_email = "push@mosaic-test.iam.gserviceaccount.com".to_owned();
        let service_account = json!({
            "type": "service_account",
            "project_id": "mosaic-test",
            "private_key_id": "test-key-1",
            "private_key": private_pem,
            "client_email": client_email,
            "token_uri": token_url,
        })
        .to_string();
        let inner = Arc::new(Inner {
            token_url,
            client_email,
            assertion_key,
            issued: Mutex::default(),
            received: Mutex::default(),
            script: Mutex::default(),
            subscriptions: Mutex::default(),
            rejected: Mutex::default(),
            hung: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(fcm_send))
            .route("/push/{id}", post(web_push))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, inner, service_account, task })
    }

    /// Settings that make the notification service use this stand-in for FCM and accept
    /// its plain-HTTP Web Push endpoints.
    pub fn configure(&self, config: &mut mosaic_notification::Config) {
        config.fcm.service_account_json = Some(mosaic_mesh::config::Secret::new(self.service_account.clone()));
        config.fcm.endpoint = self.base.clone();
        config.webpush.allow_http_endpoints = true;
        config.webpush.allow_private_endpoints = true;
    }

    /// A new browser subscription served by this stand-in, as `PushSubscription.toJSON()`.
    pub fn subscription(&self) -> Value {
        let id = format!("sub{}", rand::random::<u32>());
        let secret = loop {
            if let Ok(k) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        let auth: [u8; 16] = rand::random();
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let public = secret.public_key().to_encoded_point(false);
        let sub = json!({
            "endpoint": format!("{}/push/{id}", self.base),
            "keys": { "p256dh": B64URL.encode(public.as_bytes()), "auth": B64URL.encode(auth) },
        });
        self.inner.subscriptions.lock().unwrap().insert(id, Subscription { secret, auth });
        sub
    }

    /// Scripts the next replies for a device (FCM token or subscription endpoint id).
    pub fn script(&self, device: &str, replies: &[Reply]) {
        self.inner.script.lock().unwrap().entry(device.to_owned()).or_default().extend(replies.iter().copied());
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests refused for a malformed message or a bad signature (should stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.inner.rejected.lock().unwrap().clone()
    }

    /// Devices whose push is hanging (scripted [`Reply::Hang`] and received).
    pub fn hung(&self) -> Vec<String> {
        self.inner.hung.lock().unwrap().clone()
    }

    /// Waits until `n` pushes for `device` were accepted (at most `within`).
    pub async fn wait_for(&self, device: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| r.device == device).collect();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn reject(inner: &Inner, status: StatusCode, why: String) -> Response {
    inner.rejected.lock().unwrap().push(why.clone());
    (status, why).into_response()
}

fn scripted(inner: &Inner, device: &str) -> Option<Reply> {
    inner.script.lock().unwrap().get_mut(device).and_then(VecDeque::pop_front)
}

async fn token(State(inner): State<Arc<Inner>>, body: String) -> Response {
    let form: HashMap<String, String> = url_decode(&body);
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return reject(&inner, StatusCode::BAD_REQUEST, "wrong grant_type".into());
    }
    let Some(assertion) = form.get("assertion") else {
        return reject(&inner, StatusCode::BAD_REQUEST, "no assertion".into());
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[inner.token_url.as_str()]);
    validation.set_issuer(&[inner.client_email.as_str()]);
    match jsonwebtoken::decode::<Value>(assertion, &inner.assertion_key, &validation) {
        Ok(data) if data.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging" => {}
        Ok(_) => return reject(&inner, StatusCode::BAD_REQUEST, "wrong scope".into()),
        Err(e) => return reject(&inner, StatusCode::BAD_REQUEST, format!("bad assertion: {e}")),
    }
    let access = format!("ya29.test-{}", rand::random::<u64>());
    inner.issued.lock().unwrap().insert(access.clone());
    axum::Json(json!({ "access_token": access, "expires_in": 3599, "token_type": "Bearer" })).into_response()
}

fn fcm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": status.as_u16(), "message": message, "status": code,
        "details": [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code }] } });
    (status, axum::Json(body)).into_response()
}

async fn fcm_send(
    State(inner): State<Arc<Inner>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| inner.issued.lock().unwrap().contains(t)) {
        return reject(&inner, StatusCode::UNAUTHORIZED, "unknown access token".into());
    }
    if project != "mosaic-test" {
        return reject(&inner, StatusCode::NOT_FOUND, format!("unknown project {project}"));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reject(&inner, StatusCode::BAD_REQUEST, "body is not JSON".into());
    };
    let message = &request["message"];
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    let shape_ok = !token.is_empty()
        && message["notification"]["title"].is_string()
        && message["notification"]["body"].is_string()
        && message["data"].as_object().is_some_and(|d| d.values().all(Value::is_string))
        && message["android"]["ttl"]
            .as_str()
            .is_some_and(|t| t.ends_with('s') && t[..t.len() - 1].parse::<u64>().is_ok())
        && message["apns"]["headers"]["apns-expiration"].as_str().is_some_and(|t| t.parse::<i64>().is_ok());
    if !shape_ok {
        return reject(&inner, StatusCode::BAD_REQUEST, format!("malformed message: {message}"));
    }
    match scripted(&inner, &token) {
        Some(Reply::Gone) => {
            return fcm_error(StatusCode::NOT_FOUND, "UNREGISTERED", "Requested entity was not found.");
        }
        Some(Reply::TooMany) => {
            let mut r = fcm_error(StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED", "Quota exceeded.");
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
        Some(Reply::Unavailable) => return fcm_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "Try again."),
        Some(Reply::Hang) => {
            inner.hung.lock().unwrap().push(token.clone());
            tokio::time::sleep(Duration::from_secs(30)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        None => {}
    }
    inner.received.lock().unwrap().push(Received { device: token, message: message.clone(), ttl: None });
    axum::Json(json!({ "name": format!("projects/mosaic-test/messages/{}", rand::random::<u64>()) })).into_response()
}

async fn web_push(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if header("content-encoding").as_deref() != Some("aes128gcm") {
        return reject(&inner, StatusCode::BAD_REQUEST, "not aes128gcm".into());
    }
    let Some(ttl) = header("ttl").and_then(|t| t.parse::<u64>().ok()) else {
        return reject(&inner, StatusCode::BAD_REQUEST, "no TTL".into());
    };
    if let Err(e) = check_vapid(header("authorization").as_deref(), &headers) {
        return reject(&inner, StatusCode::UNAUTHORIZED, format!("VAPID: {e:#}"));
    }
    match scripted(&inner, &id) {
        Some(Reply::Gone) => return StatusCode::GONE.into_response(),
        Some(Reply::TooMany) => return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
        Some(Reply::Unavailable) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Reply::Hang) => {
            inner.hung.lock().unwrap().push(id.clone());
            tokio::time::sleep(Duration::from_secs(30)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        None => {}
    }
    let plain = {
        let subs = inner.subscriptions.lock().unwrap();
        let Some(sub) = subs.get(&id) else { return StatusCode::GONE.into_response() };
        web_push_native::decrypt(body.to_vec(), &sub.secret, &sub.auth.into())
    };
    let Ok(plain) = plain else { return reject(&inner, StatusCode::BAD_REQUEST, "payload does not decrypt".into()) };
    let Ok(message) = serde_json::from_slice::<Value>(&plain) else {
        return reject(&inner, StatusCode::BAD_REQUEST, "payload is not JSON".into());
    };
    inner.received.lock().unwrap().push(Received { device: id, message, ttl: Some(ttl) });
    StatusCode::CREATED.into_response()
}

/// Checks `Authorization: vapid t=<jwt>, k=<key>`: an ES256 JWT by that key, for this origin.
fn check_vapid(authorization: Option<&str>, headers: &HeaderMap) -> anyhow::Result<()> {
    let value = authorization.context("no Authorization")?.strip_prefix("vapid ").context("not vapid")?;
    let mut t = None;
    let mut k = None;
    for part in value.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let key = B64URL.decode(k.context("no k")?)?;
    let host = headers.get("host").and_then(|h| h.to_str().ok()).context("no Host")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[format!("http://{host}")]);
    let claims =
        jsonwebtoken::decode::<Value>(t.context("no t")?, &DecodingKey::from_ec_der(&key), &validation)?.claims;
    anyhow::ensure!(
        claims["sub"].as_str().is_some_and(|s| s.starts_with("mailto:") || s.starts_with("https:")),
        "bad sub"
    );
    Ok(())
}

fn url_decode(body: &str) -> HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

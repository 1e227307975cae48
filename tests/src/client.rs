//! An HTTP client that behaves like a client app, with helpers for common steps.
//!
//! The end-to-end suite and the load generators (`mosaic-bench`) share it. Tests use the
//! asserting helpers (`send`, `signup`, `create_post`, …), which panic on anything unexpected;
//! the load generators use the request builders (`*_request`, `post_body`) and the
//! non-panicking readers (`try_read`, [`Reply::check_status`], [`Reply::session`]),
//! so a setup step can be retried or fail with an error instead of a panic.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// HTTP client bound to one edge.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// A signed-up account and its tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// A reply: status, headers, body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The `content-type` header.
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem+json error with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "not problem+json: {}",
            self.content_type()
        );
        assert_eq!(self.body["code"], code, "unexpected code; body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
    }

    /// Asserts the status.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// The reply if its status is `status`; otherwise an error naming `what`, the status and
    /// the start of the body (the problem+json detail). [`Reply::assert_status`] without the
    /// panic.
    pub fn check_status(&self, status: u16, what: &str) -> anyhow::Result<&Self> {
        if self.status.as_u16() == status {
            return Ok(self);
        }
        anyhow::bail!(
            "{what}: expected {status}, got {}: {}",
            self.status,
            self.text.chars().take(400).collect::<String>()
        )
    }

    /// The body as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.text)
    }

    /// The session an AuthReply (signup, login, refresh) hands out.
    pub fn session(&self) -> anyhow::Result<Session> {
        #[derive(serde::Deserialize)]
        struct Wire {
            user: WireUser,
            access_token: String,
            refresh_token: String,
            expires_in: u64,
        }
        #[derive(serde::Deserialize)]
        struct WireUser {
            id: String,
        }
        let wire: Wire = self.parse().map_err(|e| anyhow::anyhow!("not an AuthReply ({e}): {}", self.text))?;
        Ok(Session {
            user_id: wire.user.id,
            access_token: wire.access_token,
            refresh_token: wire.refresh_token,
            expires_in: wire.expires_in,
        })
    }
}

/// A session as an AuthReply describes it.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lasts from when it was issued.
    pub expires_in: u64,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique suffix for names in a test.
pub fn unique() -> String {
    format!("{}{}", std::process::id() % 1000, SEQ.fetch_add(1, Ordering::Relaxed))
}

impl Client {
    /// A client for the edge at `base`.
    pub fn new(base: String) -> Self {
        Self { http: reqwest::Client::builder().build().expect("client"), base }
    }

    /// A client for the edge at `base` over `http` (a client built with its own timeouts and
    /// connection pool, as a load generator wants).
    pub fn with_http(base: String, http: reqwest::Client) -> Self {
        Self { http, base }
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying reqwest client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with an optional bearer token, not yet sent.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.request(method, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    /// Reads a response into a [`Reply`].
    pub async fn read(res: reqwest::Response) -> Reply {
        Self::try_read(res).await.expect("body read")
    }

    /// [`Client::read`] without the panic: a body that cannot be read is an error.
    pub async fn try_read(res: reqwest::Response) -> reqwest::Result<Reply> {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, headers, body, text })
    }

    /// `POST /v1/auth/signup`, not yet sent.
    pub fn signup_request(&self, username: &str, email: &str, password: &str) -> RequestBuilder {
        self.request(Method::POST, "/v1/auth/signup", None).json(&json!({
            "username": username,
            "email": email,
            "password": password,
        }))
    }

    /// `POST /v1/auth/refresh`, not yet sent.
    pub fn refresh_request(&self, refresh_token: &str) -> RequestBuilder {
        self.request(Method::POST, "/v1/auth/refresh", None).json(&json!({ "refresh_token": refresh_token }))
    }

    /// `PUT /v1/users/{user_id}/follow`, not yet sent.
    pub fn follow_request(&self, token: &str, user_id: &str) -> RequestBuilder {
        self.request(Method::PUT, &format!("/v1/users/{user_id}/follow"), Some(token))
    }

    /// `POST /v1/media` of raw bytes as `content_type`, not yet sent.
    pub fn upload_request(&self, token: &str, content_type: &str, bytes: impl Into<reqwest::Body>) -> RequestBuilder {
        self.request(Method::POST, "/v1/media", Some(token)).header("content-type", content_type).body(bytes)
    }

    /// `GET /v1/media/{id}`, not yet sent.
    pub fn media_request(&self, token: &str, id: &str) -> RequestBuilder {
        self.request(Method::GET, &format!("/v1/media/{id}"), Some(token))
    }

    /// The body of `POST /v1/posts`.
    pub fn post_body(caption: &str, media_ids: &[impl Serialize], tags: &[&str]) -> Value {
        json!({"caption": caption, "media_ids": media_ids, "tags": tags})
    }

    /// `POST /v1/posts`, not yet sent.
    pub fn post_request(
        &self,
        token: &str,
        caption: &str,
        media_ids: &[impl Serialize],
        tags: &[&str],
    ) -> RequestBuilder {
        self.request(Method::POST, "/v1/posts", Some(token)).json(&Self::post_body(caption, media_ids, tags))
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str) -> Reply {
        self.send(Method::PUT, path, Some(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// Uploads raw bytes as `content_type`.
    pub async fn upload(&self, token: &str, content_type: &str, bytes: Vec<u8>) -> Reply {
        let res = self.upload_request(token, content_type, bytes).send().await.expect("upload sent");
        Self::read(res).await
    }

    /// Uploads and waits until processing ends; returns the media document.
    pub async fn upload_ready(&self, token: &str, content_type: &str, bytes: Vec<u8>) -> Value {
        let r = self.upload(token, content_type, bytes).await;
        r.assert_status(202);
        self.wait_media(token, r.body["id"].as_str().expect("id")).await
    }

    /// Polls `GET /v1/media/{id}` until it is no longer `processing` (at most 90 s).
    pub async fn wait_media(&self, token: &str, id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let r = self.get(&format!("/v1/media/{id}"), token).await;
            r.assert_status(200);
            if r.body["status"] != "processing" {
                return r.body;
            }
            assert!(std::time::Instant::now() < deadline, "media {id} still processing after 90 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Fetches a public URL path and returns status, headers and bytes.
    pub async fn fetch(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, bytes::Bytes) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("fetch sent");
        let status = res.status();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.expect("body"))
    }

    /// Publishes a post of one small fresh photo.
    pub async fn create_post(&self, token: &str, caption: &str, tags: &[&str]) -> Value {
        // Random pixels, so no two photos share a content hash.
        let mut img = image::RgbImage::new(24, 24);
        for p in img.pixels_mut() {
            *p = image::Rgb([rand_byte(), rand_byte(), rand_byte()]);
        }
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).expect("encode png");
        let media = self.upload_ready(token, "image/png", png.into_inner()).await;
        let reply = self.post("/v1/posts", Some(token), Self::post_body(caption, &[&media["id"]], tags)).await;
        reply.assert_status(201);
        reply.body
    }

    /// Signs up `name_<unique>` with a valid password.
    pub async fn signup(&self, name: &str) -> TestUser {
        self.signup_exact(&format!("{name}_{}", unique())).await
    }

    /// Signs up exactly `username`.
    pub async fn signup_exact(&self, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let password = format!("horse battery staple {}", unique());
        let res = self.signup_request(username, &email, &password).send().await.expect("request sent");
        let reply = Self::read(res).await;
        reply.assert_status(201);
        TestUser {
            id: reply.body["user"]["id"].as_str().expect("id").to_owned(),
            username: username.to_owned(),
            email,
            password,
            access_token: reply.body["access_token"].as_str().expect("access token").to_owned(),
            refresh_token: reply.body["refresh_token"].as_str().expect("refresh token").to_owned(),
        }
    }

    /// Logs `user` in again: a new session.
    pub async fn login(&self, user: &TestUser) -> TestUser {
        let reply = self.post("/v1/auth/login", None, json!({"login": user.username, "password": user.password})).await;
        reply.assert_status(200);
        TestUser {
            access_token: reply.body["access_token"].as_str().expect("access").to_owned(),
            refresh_token: reply.body["refresh_token"].as_str().expect("refresh").to_owned(),
            ..user.clone()
        }
    }
}

fn rand_byte() -> u8 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    // xorshift: enough to make images differ; not for anything secret.
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 32) as u8
}

//! The load generators' client of a running edge: the test kit's [`Client`] (request building
//! and reply reading, shared with the end-to-end suite) plus what a long setup against a live
//! server needs on top of it: a tuned connection pool, retries while the edge answers 429 or
//! 503, accounts whose tokens are refreshed before a phase would outlive them, and phases run
//! concurrently with progress. None of it is in a measured request's path: the timed phases
//! build their requests on [`Edge::http`] directly.

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use mosaic_tests::client::{Client, Reply, Session};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One password for every benchmark user: strong enough for the signup rules, and never
/// containing a username (they are all `b<hex>_…` or `c<hex>_…`).
const PASSWORD: &str = "Open-loop-Bench-Pa55";
/// Setup requests answered 429 or 503 are retried this many times before giving up.
const SETUP_RETRIES: u32 = 30;
/// How long an uploaded photo may stay `processing` before setup gives up on it.
const MEDIA_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A long phase prints its progress this often.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A signed-up user as the benchmark holds it.
pub(crate) struct Account {
    pub(crate) id: String,
    /// For the WebSocket query string and setup requests.
    pub(crate) access_token: String,
    /// `Bearer <access token>`, built once: every measured request of this user sends it.
    pub(crate) bearer: HeaderValue,
    refresh_token: String,
    expires_at: Instant,
}

impl Account {
    fn from_session(session: Session, requested: Instant) -> anyhow::Result<Self> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", session.access_token))
            .context("access token is not a header")?;
        bearer.set_sensitive(true);
        Ok(Self {
            id: session.user_id,
            access_token: session.access_token,
            bearer,
            refresh_token: session.refresh_token,
            // From when the request left: the server's clock started no earlier.
            expires_at: requested + Duration::from_secs(session.expires_in),
        })
    }
}

#[derive(Deserialize)]
struct MediaReply {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// The edge, as seen by the benchmark: one HTTP client (connections are pooled across
/// users, as they would be behind a load balancer).
#[derive(Clone)]
pub(crate) struct Edge {
    client: Client,
    /// Setup requests answered 429, to explain a slow setup.
    throttled: Arc<AtomicU64>,
}

impl Edge {
    /// An edge client with a request timeout and a pool of idle connections.
    pub(crate) fn with(base: &str, timeout_secs: u64, pool: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout_secs))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client: Client::with_http(base.to_owned(), http), throttled: Arc::default() })
    }

    /// The shared client, for setup requests.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The bare HTTP client, for measured requests.
    pub(crate) fn http(&self) -> &reqwest::Client {
        self.client.http()
    }

    pub(crate) fn base(&self) -> &str {
        self.client.base()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    /// Setup requests answered 429 so far.
    pub(crate) fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    pub(crate) async fn check_up(&self) -> anyhow::Result<()> {
        let url = self.url("/healthz");
        let resp = self.client.request(Method::GET, "/healthz", None).send().await.with_context(|| {
            format!(
                "no Mosaic edge answers at {url}; start one first, e.g. \
                 `MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0 target/release/mosaic up --data-dir /tmp/bench-social`"
            )
        })?;
        expect(resp, StatusCode::OK, "GET /healthz").await?;
        Ok(())
    }

    /// Sends a setup request, retrying while the edge answers 429 or 503: both mean the
    /// request was not carried out, and setup should survive a rate limit or a busy moment.
    pub(crate) async fn send(&self, what: &str, make: impl Fn() -> RequestBuilder) -> anyhow::Result<Response> {
        let mut attempt = 0;
        loop {
            let resp = make().send().await.with_context(|| what.to_owned())?;
            let status = resp.status();
            if !(status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
                || attempt >= SETUP_RETRIES
            {
                return Ok(resp);
            }
            attempt += 1;
            if status == StatusCode::TOO_MANY_REQUESTS {
                let before = self.throttled.fetch_add(1, Ordering::Relaxed);
                if before == 0 {
                    eprintln!(
                        "warning: the edge answers 429 (per-IP rate limit); setup will be slow and the timed phase \
                         meaningless: restart Mosaic with MOSAIC_EDGE__RATE_LIMIT_PER_SEC=0"
                    );
                }
            }
            let wait = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Duration::from_millis(500), Duration::from_secs);
            tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
        }
    }

    pub(crate) async fn signup(&self, username: &str) -> anyhow::Result<Account> {
        let what = format!("signing up {username}");
        let email = format!("{username}@example.com");
        let requested = Instant::now();
        let resp = self.send(&what, || self.client.signup_request(username, &email, PASSWORD)).await?;
        let session = expect(resp, StatusCode::CREATED, &what).await?.session().with_context(|| what.clone())?;
        Account::from_session(session, requested)
    }

    async fn refresh(&self, account: &mut Account) -> anyhow::Result<()> {
        let requested = Instant::now();
        let resp = self.send("refreshing a token", || self.client.refresh_request(&account.refresh_token)).await?;
        let session =
            expect(resp, StatusCode::OK, "refreshing a token").await?.session().context("refreshing a token")?;
        *account = Account::from_session(session, requested)?;
        Ok(())
    }

    pub(crate) async fn follow(&self, follower: &Account, target: &str) -> anyhow::Result<()> {
        let resp = self.send("following", || self.client.follow_request(&follower.access_token, target)).await?;
        expect(resp, StatusCode::NO_CONTENT, &format!("PUT /v1/users/{target}/follow")).await?;
        Ok(())
    }

    /// Uploads a photo as `owner` and waits until it is ready to be posted.
    pub(crate) async fn upload_ready(&self, owner: &Account, png: Vec<u8>) -> anyhow::Result<String> {
        let body = bytes::Bytes::from(png);
        let resp = self
            .send("uploading media", || self.client.upload_request(&owner.access_token, "image/png", body.clone()))
            .await?;
        let mut media: MediaReply =
            expect(resp, StatusCode::ACCEPTED, "POST /v1/media").await?.parse().context("POST /v1/media")?;
        let id = media.id.clone();
        let give_up = Instant::now() + MEDIA_READY_TIMEOUT;
        // Short first waits: a 64 px photo is processed in milliseconds once a worker
        // takes it; longer ones when the queue is deep, so polls do not add to the load.
        let mut wait = Duration::from_millis(20);
        loop {
            match media.status.as_str() {
                "ready" => return Ok(id),
                "processing" => {}
                "failed" => bail!("media {id} failed to process: {:?}", media.error),
                other => bail!("media {id} has an unknown status {other:?}"),
            }
            if Instant::now() > give_up {
                bail!("media {id} still processing after {MEDIA_READY_TIMEOUT:?}; are the content workers running?");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
            let resp = self.send("polling media", || self.client.media_request(&owner.access_token, &id)).await?;
            media =
                expect(resp, StatusCode::OK, &format!("GET /v1/media/{id}")).await?.parse().context("GET /v1/media")?;
        }
    }

    /// Posts one ready photo as `author`; the post's id.
    pub(crate) async fn create_post(&self, author: &Account, media_id: &str, caption: &str) -> anyhow::Result<String> {
        let resp = self
            .send("creating a post", || {
                self.client.post_request(&author.access_token, caption, &[media_id], &["bench"])
            })
            .await?;
        let post: Created =
            expect(resp, StatusCode::CREATED, "POST /v1/posts").await?.parse().context("POST /v1/posts")?;
        Ok(post.id)
    }

    /// Refreshes every token that would expire within `needed`, failing if the server's
    /// token lifetime is shorter than that altogether.
    pub(crate) async fn keep_fresh(
        &self,
        accounts: &mut [Account],
        needed: Duration,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let stale: Vec<&mut Account> = accounts.iter_mut().filter(|a| a.expires_at < now + needed).collect();
        if stale.is_empty() {
            return Ok(());
        }
        phase("tokens refreshed", stale, concurrency, |account| self.refresh(account)).await?;
        let shortest = accounts.iter().map(|a| a.expires_at).min().unwrap_or(now + needed);
        if shortest < Instant::now() + needed {
            bail!(
                "access tokens last less than the {} s this phase needs even when fresh; shorten the run or raise \
                 MOSAIC_USER__ACCESS_TOKEN_TTL_SECS on the server",
                needed.as_secs()
            );
        }
        Ok(())
    }
}

/// Reads a setup reply and passes it on if it has the expected status; anything else
/// becomes an error that carries the start of the body (the problem+json detail).
pub(crate) async fn expect(resp: Response, want: StatusCode, what: &str) -> anyhow::Result<Reply> {
    let reply = Client::try_read(resp).await.with_context(|| format!("{what}: reading the reply"))?;
    reply.check_status(want.as_u16(), what)?;
    Ok(reply)
}

/// Runs `f` over `inputs` with at most `concurrency` in flight, printing progress; the first
/// error ends the phase.
pub(crate) async fn phase<A, T, F, Fut>(label: &str, inputs: Vec<A>, concurrency: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(A) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let total = inputs.len();
    let started = Instant::now();
    let mut reported = started;
    let mut out = Vec::with_capacity(total);
    let mut results = futures::stream::iter(inputs).map(f).buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        out.push(result.with_context(|| format!("{label}: {} of {total} done before this failure", out.len()))?);
        if reported.elapsed() >= PROGRESS_EVERY && out.len() < total {
            reported = Instant::now();
            println!("  {label}: {}/{total} ({:.0}/s)", out.len(), out.len() as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{label}: {total} in {secs:.1} s ({:.0}/s)", total as f64 / secs.max(1e-9));
    Ok(out)
}

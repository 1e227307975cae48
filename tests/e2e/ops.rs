//! Health, readiness, metrics and the OpenAPI document.

use mosaic_tests::World;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let w = World::start().await;
    let health = w.client.send(reqwest::Method::GET, "/healthz", None, None).await;
    health.assert_status(200);
    assert_eq!(health.body["status"], "ok");
    let ready = w.client.send(reqwest::Method::GET, "/readyz", None, None).await;
    ready.assert_status(200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["services"]["user"], true);
    assert_eq!(ready.body["services"]["content"], true);
    w.client.signup("metrics").await;
    let metrics = w.client.send(reqwest::Method::GET, "/metrics", None, None).await;
    metrics.assert_status(200);
    assert!(metrics.text.contains("http_requests_total"), "{}", &metrics.text[..metrics.text.len().min(500)]);
    assert!(metrics.text.contains("route=\"/v1/auth/signup\""));
    // No answer may be sniffed as another type than the one it declares, errors included.
    let missing = w.client.send(reqwest::Method::GET, "/v1/posts/nope", None, None).await;
    for reply in [&health, &missing] {
        assert_eq!(reply.headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"));
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internals_are_for_operators_and_tls_brings_hsts() {
    // One proxy in front: the client is whoever it names, here an address on the internet.
    let options = mosaic_tests::WorldOptions::default()
        .set("edge.trusted_proxies", 1)
        .set("edge.ops_token", "an operator's long secret");
    let w = World::start_with(options).await;
    let ask = |path: &'static str, token: Option<&'static str>, proto: &'static str| {
        let req = w.client.request(reqwest::Method::GET, path, token);
        async move {
            let res = req.header("x-forwarded-for", "203.0.113.9").header("x-forwarded-proto", proto).send().await;
            mosaic_tests::Client::read(res.unwrap()).await
        }
    };
    let public = ask("/readyz", None, "http").await;
    public.assert_status(200);
    assert_eq!(public.body, serde_json::json!({"status": "ready"}), "no internals for the internet");
    ask("/metrics", None, "http").await.assert_problem(403, "forbidden");
    ask("/metrics", Some("a wrong secret of the same size"), "http").await.assert_problem(403, "forbidden");
    let operator = ask("/readyz", Some("an operator's long secret"), "http").await;
    assert_eq!(operator.body["services"]["user"], true);
    assert_eq!(operator.body["nats"], true);
    ask("/metrics", Some("an operator's long secret"), "http").await.assert_status(200);
    // HSTS only when the proxy says the client came over TLS.
    let hsts = |r: &mosaic_tests::client::Reply| {
        r.headers.get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(hsts(&public), None);
    assert_eq!(hsts(&ask("/healthz", None, "https").await).as_deref(), Some("max-age=31536000"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_nats_is_gone() {
    let mut w = World::start().await;
    w.nats.kill().await;
    let gone = mosaic_tests::eventually(std::time::Duration::from_secs(5), || async {
        w.client.send(reqwest::Method::GET, "/readyz", None, None).await.status == 503
    })
    .await;
    assert!(gone, "readyz stays 200 without NATS");
    // With NATS gone, calls fail fast and cleanly instead of hanging.
    let r = w
        .client
        .post("/v1/auth/login", None, serde_json::json!({"login": "x_y_z", "password": "whatever it is"}))
        .await;
    assert!(matches!(r.status.as_u16(), 503 | 504), "{}", r.text);
    assert!(r.content_type().starts_with("application/problem+json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let w = World::start().await;
    let doc = w.client.send(reqwest::Method::GET, "/openapi.json", None, None).await;
    doc.assert_status(200);
    let paths = doc.body["paths"].as_object().expect("paths");
    let expect = [
        ("post", "/v1/auth/signup"),
        ("post", "/v1/auth/login"),
        ("post", "/v1/auth/refresh"),
        ("post", "/v1/auth/logout"),
        ("get", "/v1/auth/jwks"),
        ("get", "/v1/users/me"),
        ("patch", "/v1/users/me"),
        ("put", "/v1/users/me/password"),
        ("get", "/v1/users/{username}"),
        ("put", "/v1/users/{id}/follow"),
        ("delete", "/v1/users/{id}/follow"),
        ("get", "/v1/users/{id}/followers"),
        ("get", "/v1/users/{id}/following"),
        ("put", "/v1/users/{id}/block"),
        ("delete", "/v1/users/{id}/block"),
        ("put", "/v1/users/{id}/mute"),
        ("delete", "/v1/users/{id}/mute"),
        ("post", "/v1/admin/users/{id}/suspend"),
        ("post", "/v1/admin/users/{id}/unsuspend"),
        ("get", "/v1/ws"),
        ("post", "/v1/media"),
        ("get", "/v1/media/{id}"),
        ("get", "/v1/media/{id}/{variant}"),
        ("get", "/v1/users/me/storage"),
        ("post", "/v1/posts"),
        ("get", "/v1/posts/{id}"),
        ("delete", "/v1/posts/{id}"),
        ("get", "/v1/users/{id}/posts"),
        ("get", "/v1/feed"),
        ("put", "/v1/posts/{id}/like"),
        ("delete", "/v1/posts/{id}/like"),
        ("get", "/v1/posts/{id}/likes"),
        ("post", "/v1/posts/{id}/comments"),
        ("get", "/v1/posts/{id}/comments"),
        ("delete", "/v1/comments/{id}"),
        ("post", "/v1/posts/{id}/views"),
        ("post", "/v1/conversations"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{id}"),
        ("get", "/v1/conversations/{id}/messages"),
        ("post", "/v1/conversations/{id}/messages"),
        ("post", "/v1/conversations/{id}/read"),
        ("post", "/v1/conversations/{id}/delivered"),
        ("post", "/v1/conversations/{id}/typing"),
        ("post", "/v1/conversations/{id}/members"),
        ("post", "/v1/conversations/{id}/leave"),
        ("get", "/v1/notifications"),
        ("get", "/v1/notifications/unread_count"),
        ("get", "/v1/notifications/{id}"),
        ("post", "/v1/notifications/read"),
        ("get", "/v1/notifications/preferences"),
        ("put", "/v1/notifications/preferences"),
        ("get", "/v1/notifications/unsubscribe"),
        ("post", "/v1/notifications/unsubscribe"),
        ("post", "/v1/devices"),
        ("get", "/v1/devices"),
        ("delete", "/v1/devices/{id}"),
        ("get", "/v1/devices/webpush/key"),
        ("get", "/v1/analytics/me/daily"),
        ("get", "/v1/admin/analytics/daily"),
        ("post", "/v1/admin/analytics/reports/run"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in expect {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from /openapi.json");
    }
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(
        documented,
        expect.len(),
        "the document lists routes that are not implemented (or tests miss some): {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let _: &Value = &doc.body["info"]["title"];
    w.stop().await;
}

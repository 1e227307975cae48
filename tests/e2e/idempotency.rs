//! `Idempotency-Key`: a retried write returns the first result.

use mosaic_tests::World;
use mosaic_tests::client::unique;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_signup_returns_the_first_reply() {
    let w = World::start().await;
    let name = format!("idem_{}", unique());
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse battery"});
    let send = |key: &'static str, body: serde_json::Value| {
        let http = w.client.http().clone();
        let url = format!("{}/v1/auth/signup", w.base());
        async move {
            mosaic_tests::Client::read(http.post(url).header("idempotency-key", key).json(&body).send().await.unwrap())
                .await
        }
    };
    let first = send("key-1", body.clone()).await;
    first.assert_status(201);
    let second = send("key-1", body.clone()).await;
    second.assert_status(201);
    assert_eq!(second.body, first.body, "the retry gets the first reply, tokens included");
    assert_eq!(second.headers["idempotent-replayed"], "true");

    let different = send(
        "key-1",
        json!({"username": "someone_else", "email": "x@example.com", "password": "correct horse battery"}),
    )
    .await;
    different.assert_problem(422, "idempotency_key_reused");
    // Without the key, the same body is a new request (and the name is now taken).
    w.client.post("/v1/auth/signup", None, body).await.assert_problem(409, "username_taken");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_run_once() {
    let w = World::start().await;
    let name = format!("idem2_{}", unique());
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse battery"});
    let calls = (0..5).map(|_| {
        let http = w.client.http().clone();
        let url = format!("{}/v1/auth/signup", w.base());
        let body = body.clone();
        async move {
            mosaic_tests::Client::read(
                http.post(url).header("idempotency-key", "same").json(&body).send().await.unwrap(),
            )
            .await
        }
    });
    let replies = futures::future::join_all(calls).await;
    for r in &replies {
        assert!(r.status == 201 || r.status == 409, "{}", r.text);
        if r.status == 409 {
            r.assert_problem(409, "idempotency_in_progress");
        }
    }
    let ids: std::collections::HashSet<_> =
        replies.iter().filter(|r| r.status == 201).map(|r| r.body["user"]["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one account, replayed");
    w.stop().await;
}

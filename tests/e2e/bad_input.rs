//! Hostile and broken requests get a clear 4xx problem+json and change nothing.

use mosaic_tests::World;
use reqwest::Method;
use serde_json::json;

async fn raw(
    w: &World,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> mosaic_tests::client::Reply {
    let mut req = w.client.http().request(method, format!("{}{path}", w.base())).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    mosaic_tests::Client::read(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_mistyped_json_is_a_4xx_problem() {
    let w = World::start().await;
    let json_ct = Some("application/json");
    raw(&w, Method::POST, "/v1/auth/signup", None, json_ct, b"{\"username\": ".to_vec())
        .await
        .assert_problem(400, "bad_request");
    raw(&w, Method::POST, "/v1/auth/signup", None, json_ct, b"not json at all".to_vec())
        .await
        .assert_problem(400, "bad_request");
    raw(
        &w,
        Method::POST,
        "/v1/auth/signup",
        None,
        json_ct,
        br#"{"username": 5, "email": "a@b.io", "password": "x"}"#.to_vec(),
    )
    .await
    .assert_problem(422, "validation_failed");
    raw(&w, Method::POST, "/v1/auth/signup", None, json_ct, br#"{"username": "abc", "email": "a@b.io"}"#.to_vec())
        .await
        .assert_problem(422, "validation_failed");
    raw(
        &w,
        Method::POST,
        "/v1/auth/signup",
        None,
        json_ct,
        br#"{"username": "abc", "email": "a@b.io", "password": "correct horse battery", "role": "admin"}"#.to_vec(),
    )
    .await
    .assert_problem(422, "validation_failed");
    raw(&w, Method::POST, "/v1/auth/signup", None, json_ct, br#"[1, 2, 3]"#.to_vec())
        .await
        .assert_problem(422, "validation_failed");
    raw(&w, Method::POST, "/v1/auth/login", None, Some("text/plain"), br#"{"login": "a", "password": "b"}"#.to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    raw(&w, Method::POST, "/v1/auth/login", None, None, br#"{"login": "a", "password": "b"}"#.to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    // Invalid UTF-8 inside a string.
    raw(&w, Method::POST, "/v1/auth/login", None, json_ct, b"{\"login\": \"\xff\xfe\", \"password\": \"b\"}".to_vec())
        .await
        .assert_status(400);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_body_is_413_and_the_server_stays_up() {
    let w = World::start().await;
    let u = w.client.signup("big").await;
    let mut body = br#"{"bio": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    body.extend(br#""}"#);
    let r = raw(&w, Method::PATCH, "/v1/users/me", Some(&u.access_token), Some("application/json"), body.clone()).await;
    r.assert_problem(413, "payload_too_large");
    let r = raw(&w, Method::POST, "/v1/auth/signup", None, Some("application/json"), body).await;
    r.assert_problem(413, "payload_too_large");
    w.client.get("/v1/users/me", &u.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_language_looking_strings_are_just_text() {
    let w = World::start().await;
    let u = w.client.signup("sql").await;
    let nasty = "'; DELETE user; SELECT * FROM user WHERE '1'='1 $uid } ; RETURN 1; --";
    let r = w
        .client
        .send(
            Method::PATCH,
            "/v1/users/me",
            Some(&u.access_token),
            Some(json!({"bio": nasty, "display_name": "$this"})),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["bio"], nasty);
    assert_eq!(r.body["display_name"], "$this");
    w.client.get("/v1/users/')%20OR%20true%20--", &u.access_token).await.assert_problem(404, "not_found");
    w.client.get("/v1/users/user:x/followers", &u.access_token).await.assert_problem(404, "not_found");
    w.client.get("/v1/users/me", &u.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems_too() {
    let w = World::start().await;
    let u = w.client.signup("route").await;
    w.client.get("/v1/nothing/here", &u.access_token).await.assert_problem(404, "not_found");
    w.client.send(Method::DELETE, "/v1/auth/signup", None, None).await.assert_problem(405, "method_not_allowed");
    w.client.send(Method::GET, "/v1/users/me", Some("Basic abc"), None).await.assert_problem(401, "unauthorized");
    let r = w
        .client
        .http()
        .get(format!("{}/v1/users/me", w.base()))
        .header("authorization", "Token abc")
        .send()
        .await
        .unwrap();
    mosaic_tests::Client::read(r).await.assert_problem(401, "unauthorized");
    w.stop().await;
}

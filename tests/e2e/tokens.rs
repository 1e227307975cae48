//! Sessions and tokens: refresh rotation and reuse, logout, password change, suspension,
//! expiry, JWKS.

use mosaic_tests::{World, WorldOptions, eventually};
use serde_json::json;
use std::time::Duration;

async fn refused(w: &World, token: &str) -> bool {
    w.client.get("/v1/users/me", token).await.status == 401
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let w = World::start().await;
    let u = w.client.signup("rot").await;
    let first = w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await;
    first.assert_status(200);
    let new_refresh = first.body["refresh_token"].as_str().unwrap().to_owned();
    let new_access = first.body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, u.refresh_token);
    w.client.get("/v1/users/me", &new_access).await.assert_status(200);

    // The spent token comes back (stolen, or a replay): the whole family ends.
    let reuse = w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await;
    reuse.assert_problem(401, "refresh_token_reused");
    let after = w.client.post("/v1/auth/refresh", None, json!({"refresh_token": new_refresh})).await;
    after.assert_status(401);
    // Access tokens of the family are refused by the edge, without waiting for expiry.
    assert!(eventually(Duration::from_secs(2), || refused(&w, &new_access)).await);
    assert!(refused(&w, &u.access_token).await);
    // Other sessions of the same user are untouched.
    let other = w.client.login(&u).await;
    w.client.get("/v1/users/me", &other.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_let_at_most_one_through() {
    let w = World::start().await;
    let u = w.client.signup("conc").await;
    let attempts = (0..6).map(|_| {
        let c = w.client.clone();
        let token = u.refresh_token.clone();
        async move { c.post("/v1/auth/refresh", None, json!({"refresh_token": token})).await }
    });
    let replies = futures::future::join_all(attempts).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert!(ok <= 1, "{ok} refreshes succeeded with one token");
    assert!(replies.iter().filter(|r| r.status != 200).all(|r| r.status == 401));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session() {
    let w = World::start().await;
    let u = w.client.signup("bye").await;
    let r = w.client.post("/v1/auth/logout", Some(&u.access_token), json!({"refresh_token": u.refresh_token})).await;
    r.assert_status(204);
    w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await.assert_status(401);
    assert!(eventually(Duration::from_secs(2), || refused(&w, &u.access_token)).await);
    // Logging out twice, or with a token that is not ours, is not an error.
    let again = w.client.login(&u).await;
    w.client
        .post("/v1/auth/logout", Some(&again.access_token), json!({"refresh_token": "nonsense"}))
        .await
        .assert_status(204);
    w.client
        .post("/v1/auth/logout", None, json!({"refresh_token": again.refresh_token}))
        .await
        .assert_problem(401, "unauthorized");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_ends_every_other_session() {
    let w = World::start().await;
    let u = w.client.signup("pwd").await;
    let other = w.client.login(&u).await;
    let wrong = w
        .client
        .send(
            reqwest::Method::PUT,
            "/v1/users/me/password",
            Some(&u.access_token),
            Some(json!({"current_password": "nope nope nope", "new_password": "brand new secret 42"})),
        )
        .await;
    wrong.assert_problem(401, "invalid_credentials");
    let weak = w
        .client
        .send(
            reqwest::Method::PUT,
            "/v1/users/me/password",
            Some(&u.access_token),
            Some(json!({"current_password": u.password, "new_password": "short"})),
        )
        .await;
    weak.assert_problem(422, "weak_password");
    let ok = w
        .client
        .send(
            reqwest::Method::PUT,
            "/v1/users/me/password",
            Some(&u.access_token),
            Some(json!({"current_password": u.password, "new_password": "brand new secret 42"})),
        )
        .await;
    ok.assert_status(204);

    assert!(
        eventually(Duration::from_secs(2), || refused(&w, &other.access_token)).await,
        "other session's access token still works"
    );
    w.client.post("/v1/auth/refresh", None, json!({"refresh_token": other.refresh_token})).await.assert_status(401);
    // This session goes on.
    w.client.get("/v1/users/me", &u.access_token).await.assert_status(200);
    w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await.assert_status(200);
    w.client
        .post("/v1/auth/login", None, json!({"login": u.username, "password": u.password}))
        .await
        .assert_problem(401, "invalid_credentials");
    w.client
        .post("/v1/auth/login", None, json!({"login": u.username, "password": "brand new secret 42"}))
        .await
        .assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_voids_live_tokens_at_once_and_only_admins_may_suspend() {
    let w = World::start().await;
    let boss = w.admin("boss").await;
    assert_eq!(w.client.get("/v1/users/me", &boss.access_token).await.body["role"], "admin");
    let target = w.client.signup("target").await;
    let mallory = w.client.signup("mallory").await;

    let path = format!("/v1/admin/users/{}/suspend", target.id);
    w.client
        .send(reqwest::Method::POST, &path, Some(&mallory.access_token), None)
        .await
        .assert_problem(403, "forbidden");
    w.client
        .post(&format!("/v1/admin/users/{}/suspend", "unknownuser1"), Some(&boss.access_token), json!({}))
        .await
        .assert_problem(404, "not_found");

    let r = w.client.post(&path, Some(&boss.access_token), json!({"reason": "spam"})).await;
    r.assert_status(204);
    // The token was valid for another 15 minutes; the edge refuses it within moments.
    assert!(eventually(Duration::from_secs(2), || refused(&w, &target.access_token)).await);
    w.client
        .post("/v1/auth/login", None, json!({"login": target.username, "password": target.password}))
        .await
        .assert_problem(403, "account_suspended");
    w.client.post("/v1/auth/refresh", None, json!({"refresh_token": target.refresh_token})).await.assert_status(401);
    w.client
        .get(&format!("/v1/users/{}", target.username), &mallory.access_token)
        .await
        .assert_problem(404, "not_found");

    w.client
        .send(
            reqwest::Method::POST,
            &format!("/v1/admin/users/{}/unsuspend", target.id),
            Some(&boss.access_token),
            None,
        )
        .await
        .assert_status(204);
    let back = w.client.login(&target).await;
    w.client.get("/v1/users/me", &back.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_forged_tokens_are_refused() {
    let options = WorldOptions::default()
        .set("user.access_token_ttl_secs", 5)
        .set("user.key_rotation_secs", 3600)
        .set("edge.clock_skew_secs", 0);
    let w = World::start_with(options).await;
    let u = w.client.signup("exp").await;
    w.client.get("/v1/users/me", &u.access_token).await.assert_status(200);

    // A token whose signature does not match.
    let mut forged = u.access_token.clone();
    forged.pop();
    forged.push(if u.access_token.ends_with('A') { 'B' } else { 'A' });
    w.client.get("/v1/users/me", &forged).await.assert_problem(401, "unauthorized");
    w.client.get("/v1/users/me", "not.a.jwt").await.assert_problem(401, "unauthorized");
    let none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
    w.client.get("/v1/users/me", none_alg).await.assert_problem(401, "unauthorized");

    tokio::time::sleep(Duration::from_secs(6)).await;
    w.client.get("/v1/users/me", &u.access_token).await.assert_problem(401, "token_expired");
    // The refresh token still works and gives a fresh access token.
    let r = w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await;
    r.assert_status(200);
    w.client.get("/v1/users/me", r.body["access_token"].as_str().unwrap()).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_the_key_that_signs_tokens() {
    let w = World::start().await;
    let u = w.client.signup("jwks").await;
    let jwks = w.client.send(reqwest::Method::GET, "/v1/auth/jwks", None, None).await;
    jwks.assert_status(200);
    let header = jsonwebtoken_header(&u.access_token);
    assert_eq!(header["alg"], "EdDSA");
    let keys = jwks.body["keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "the next key is published ahead of use");
    let key = keys.iter().find(|k| k["kid"] == header["kid"]).expect("signing key is published");
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["use"], "sig");
    w.stop().await;
}

fn jsonwebtoken_header(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

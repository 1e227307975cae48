//! Per-actor limits that keep one address or one account from flooding the others: signups
//! per client address, and posts, comments and follows per user, each shared by every
//! instance of its service.

use mosaic_tests::{World, WorldOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_posts_comments_and_follows_are_limited_per_actor() {
    let options = WorldOptions::default()
        // One proxy in front, so the test can speak from several addresses.
        .set("edge.trusted_proxies", 1)
        .set("user.signups_per_ip_per_hour", 3)
        .set("user.follows_per_hour", 2)
        .set("content.posts_per_hour", 2)
        .set("interaction.comments_per_hour", 2)
        .instances("user", 2);
    let w = World::start_with(options).await;

    // Signups: three from one address, then 429 with Retry-After, whichever instance asks;
    // an IPv6 /64 is one address, another address is not held back.
    let signup = |name: String, from: &'static str| {
        let req = w.client.signup_request(&name, &format!("{name}@example.com"), "horse battery staple 9");
        async move { mosaic_tests::Client::read(req.header("x-forwarded-for", from).send().await.unwrap()).await }
    };
    let mut users = Vec::new();
    for i in 0..3 {
        let r = signup(format!("lim_{i}_{}", mosaic_tests::client::unique()), "2001:db8:1:2::1").await;
        r.assert_status(201);
        users.push(r.body);
    }
    let over = signup(format!("lim_x_{}", mosaic_tests::client::unique()), "2001:db8:1:2::ffff").await;
    over.assert_problem(429, "rate_limited");
    assert!(over.headers.get("retry-after").is_some());
    signup(format!("lim_y_{}", mosaic_tests::client::unique()), "198.51.100.7").await.assert_status(201);

    let token = |u: &serde_json::Value| u["access_token"].as_str().unwrap().to_owned();
    let id = |u: &serde_json::Value| u["user"]["id"].as_str().unwrap().to_owned();
    let (a, b, c) = (token(&users[0]), token(&users[1]), token(&users[2]));

    // Posts: two an hour for this user; another user still posts.
    let post = w.client.create_post(&a, "one", &[]).await;
    w.client.create_post(&a, "two", &[]).await;
    let media = w.client.upload_ready(&a, "image/png", mosaic_tests::media::png_with_alpha(8, 8)).await;
    let third = w.client.post("/v1/posts", Some(&a), json!({"media_ids": [media["id"]]})).await;
    third.assert_problem(429, "rate_limited");
    w.client.create_post(&b, "b's first", &[]).await;

    // Comments: two an hour for this user.
    let comments = format!("/v1/posts/{}/comments", post["id"].as_str().unwrap());
    for text in ["first", "second"] {
        w.client.post(&comments, Some(&b), json!({"text": text})).await.assert_status(201);
    }
    w.client.post(&comments, Some(&b), json!({"text": "third"})).await.assert_problem(429, "rate_limited");
    w.client.post(&comments, Some(&c), json!({"text": "c's"})).await.assert_status(201);

    // Follows: two an hour for this user.
    w.client.put(&format!("/v1/users/{}/follow", id(&users[0])), &c).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/follow", id(&users[1])), &c).await.assert_status(204);
    let extra = w.client.signup("lim_target").await;
    w.client.put(&format!("/v1/users/{}/follow", extra.id), &c).await.assert_problem(429, "rate_limited");
    w.client.put(&format!("/v1/users/{}/follow", extra.id), &a).await.assert_status(204);
    w.stop().await;
}

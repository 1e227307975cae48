//! Follow graph, blocks and mutes.

use mosaic_tests::World;
use serde_json::Value;

async fn profile(w: &World, token: &str, username: &str) -> Value {
    let r = w.client.get(&format!("/v1/users/{username}"), token).await;
    r.assert_status(200);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_is_idempotent_and_counts_stay_exact() {
    let w = World::start().await;
    let a = w.client.signup("fa").await;
    let b = w.client.signup("fb").await;
    let path = format!("/v1/users/{}/follow", b.id);
    for _ in 0..3 {
        w.client.put(&path, &a.access_token).await.assert_status(204);
    }
    let pb = profile(&w, &a.access_token, &b.username).await;
    assert_eq!(pb["followers"], 1);
    assert_eq!(pb["viewer"]["following"], true);
    assert_eq!(profile(&w, &b.access_token, &a.username).await["viewer"]["followed_by"], true);
    assert_eq!(w.client.get("/v1/users/me", &a.access_token).await.body["following"], 1);

    for _ in 0..2 {
        w.client.delete(&path, &a.access_token).await.assert_status(204);
    }
    assert_eq!(profile(&w, &a.access_token, &b.username).await["followers"], 0);
    assert_eq!(w.client.get("/v1/users/me", &a.access_token).await.body["following"], 0);

    w.client.put(&format!("/v1/users/{}/follow", a.id), &a.access_token).await.assert_problem(422, "validation_failed");
    w.client.put("/v1/users/nosuchuser/follow", &a.access_token).await.assert_problem(404, "not_found");
    w.client.put("/v1/users/bad.id.here/follow", &a.access_token).await.assert_problem(404, "not_found");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_follows_count_exactly() {
    let w = World::start().await;
    let star = w.client.signup("star").await;
    let fans: Vec<_> = futures::future::join_all((0..15).map(|_| w.client.signup("fan"))).await;
    let path = format!("/v1/users/{}/follow", star.id);
    // Every fan follows three times at once: 45 concurrent requests, 15 follows.
    let calls = fans.iter().flat_map(|f| std::iter::repeat_n(f, 3)).map(|f| {
        let c = w.client.clone();
        let path = path.clone();
        let token = f.access_token.clone();
        async move { c.put(&path, &token).await.status }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| s.as_u16() == 204), "{statuses:?}");
    assert_eq!(w.client.get("/v1/users/me", &star.access_token).await.body["followers"], 15);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_lists_page_with_cursors_newest_first() {
    let w = World::start().await;
    let star = w.client.signup("paged").await;
    let mut fans = Vec::new();
    for _ in 0..5 {
        let f = w.client.signup("pfan").await;
        w.client.put(&format!("/v1/users/{}/follow", star.id), &f.access_token).await.assert_status(204);
        fans.push(f);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/users/{}/followers?limit=2", star.id);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = w.client.get(&path, &star.access_token).await;
        r.assert_status(200);
        pages += 1;
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = fans.iter().rev().map(|f| f.id.clone()).collect();
    assert_eq!(seen, expected, "newest first, no gaps, no repeats");

    let following = w.client.get(&format!("/v1/users/{}/following", fans[0].id), &star.access_token).await;
    assert_eq!(following.body["items"][0]["id"], star.id);
    assert_eq!(following.body["next_cursor"], Value::Null);
    w.client
        .get(&format!("/v1/users/{}/followers?cursor=garbage", star.id), &star.access_token)
        .await
        .assert_problem(422, "validation_failed");
    w.client
        .get(&format!("/v1/users/{}/followers?limit=abc", star.id), &star.access_token)
        .await
        .assert_problem(422, "validation_failed");
    let big = w.client.get(&format!("/v1/users/{}/followers?limit=100000", star.id), &star.access_token).await;
    big.assert_status(200);
    assert_eq!(big.body["items"].as_array().unwrap().len(), 5);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_removes_follows_both_ways_and_keeps_the_blocked_user_out() {
    let w = World::start().await;
    let a = w.client.signup("blocker").await;
    let b = w.client.signup("blocked").await;
    w.client.put(&format!("/v1/users/{}/follow", b.id), &a.access_token).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/follow", a.id), &b.access_token).await.assert_status(204);

    w.client.put(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    let me = w.client.get("/v1/users/me", &a.access_token).await.body;
    assert_eq!((me["followers"].as_u64(), me["following"].as_u64()), (Some(0), Some(0)));
    let them = w.client.get("/v1/users/me", &b.access_token).await.body;
    assert_eq!((them["followers"].as_u64(), them["following"].as_u64()), (Some(0), Some(0)));

    w.client.put(&format!("/v1/users/{}/follow", a.id), &b.access_token).await.assert_problem(403, "forbidden");
    w.client.put(&format!("/v1/users/{}/follow", b.id), &a.access_token).await.assert_problem(403, "forbidden");
    w.client.get(&format!("/v1/users/{}", a.username), &b.access_token).await.assert_problem(404, "not_found");
    assert_eq!(profile(&w, &a.access_token, &b.username).await["viewer"]["blocking"], true);

    w.client.delete(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/follow", a.id), &b.access_token).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/block", a.id), &a.access_token).await.assert_problem(422, "validation_failed");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_changes_nothing_but_the_mute() {
    let w = World::start().await;
    let a = w.client.signup("muter").await;
    let b = w.client.signup("muted").await;
    w.client.put(&format!("/v1/users/{}/follow", b.id), &a.access_token).await.assert_status(204);
    w.client.put(&format!("/v1/users/{}/mute", b.id), &a.access_token).await.assert_status(204);
    let p = profile(&w, &a.access_token, &b.username).await;
    assert_eq!(p["viewer"]["muting"], true);
    assert_eq!(p["viewer"]["following"], true);
    assert_eq!(p["followers"], 1);
    // The muted user sees nothing different.
    assert_eq!(profile(&w, &b.access_token, &a.username).await["viewer"]["followed_by"], true);
    w.client.delete(&format!("/v1/users/{}/mute", b.id), &a.access_token).await.assert_status(204);
    assert_eq!(profile(&w, &a.access_token, &b.username).await["viewer"]["muting"], false);
    w.stop().await;
}

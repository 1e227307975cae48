//! The read caches of the user, content and interaction services, with two instances of
//! each: whichever instance a read reaches, it reflects the write just acknowledged.

use mosaic_tests::media;
use mosaic_tests::{World, WorldOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_reads_the_write_just_made() {
    let w = World::start_with(
        WorldOptions::default().instances("user", 2).instances("content", 2).instances("interaction", 2),
    )
    .await;
    let a = w.client.signup("coh_a").await;
    let b = w.client.signup("coh_b").await;
    let timeline = format!("/v1/users/{}/posts", a.id);
    let new_post = |caption: &'static str| {
        let w = &w;
        let a = &a;
        async move {
            let m = w.client.upload_ready(&a.access_token, "image/jpeg", media::jpeg_with_exif(60, 40, 1, false)).await;
            let p = w
                .client
                .post("/v1/posts", Some(&a.access_token), json!({"caption": caption, "media_ids": [m["id"]]}))
                .await;
            p.assert_status(201);
            p.body["id"].as_str().unwrap().to_owned()
        }
    };
    let first = new_post("first").await;

    // Counts and liked_by_me, read through the post and the timeline after every change;
    // several rounds so both instances serve and cache.
    for round in 0..4 {
        for (method_like, count) in [(true, 1), (false, 0)] {
            let path = format!("/v1/posts/{first}/like");
            if method_like {
                w.client.put(&path, &b.access_token).await.assert_status(204);
            } else {
                w.client.delete(&path, &b.access_token).await.assert_status(204);
            }
            for _ in 0..3 {
                let post = w.client.get(&format!("/v1/posts/{first}"), &b.access_token).await;
                post.assert_status(200);
                assert_eq!(post.body["like_count"], count, "round {round}: post read after like={method_like}");
                assert_eq!(post.body["liked_by_me"], method_like, "round {round}");
                let page = w.client.get(&timeline, &b.access_token).await;
                page.assert_status(200);
                assert_eq!(page.body["items"][0]["like_count"], count, "round {round}: timeline read");
                assert_eq!(page.body["items"][0]["liked_by_me"], method_like, "round {round}: timeline read");
            }
        }
    }
    // An author's like of their own post, which affinity does not count, still shows.
    w.client.put(&format!("/v1/posts/{first}/like"), &a.access_token).await.assert_status(204);
    for _ in 0..3 {
        let page = w.client.get(&timeline, &a.access_token).await;
        assert_eq!(page.body["items"][0]["liked_by_me"], true, "own like on the timeline");
    }
    w.client.delete(&format!("/v1/posts/{first}/like"), &a.access_token).await.assert_status(204);

    // A new post is on the author's timeline at once; a deleted one is gone at once from the
    // timeline and by id.
    for _ in 0..3 {
        let page = w.client.get(&timeline, &b.access_token).await;
        assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    }
    let second = new_post("second").await;
    for _ in 0..4 {
        let page = w.client.get(&timeline, &b.access_token).await;
        assert_eq!(page.body["items"][0]["id"], second.as_str(), "the new post leads the timeline");
        w.client.get(&format!("/v1/posts/{second}"), &b.access_token).await.assert_status(200);
    }
    w.client.delete(&format!("/v1/posts/{second}"), &a.access_token).await.assert_status(204);
    for _ in 0..4 {
        // Both content instances had the post cached; neither serves it any more.
        w.client.get(&format!("/v1/posts/{second}"), &b.access_token).await.assert_problem(404, "not_found");
    }
    for _ in 0..4 {
        let page = w.client.get(&timeline, &b.access_token).await;
        let ids: Vec<&str> = page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![first.as_str()], "the deleted post is gone from every instance");
    }

    // Blocking hides the timeline at once, whichever user instance answers; unblocking
    // shows it again.
    w.client.put(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    for _ in 0..4 {
        w.client.get(&timeline, &b.access_token).await.assert_problem(404, "not_found");
    }
    w.client.delete(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    for _ in 0..4 {
        w.client.get(&timeline, &b.access_token).await.assert_status(200);
    }
    w.stop().await;
}

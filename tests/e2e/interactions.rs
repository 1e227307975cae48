//! Likes, comments, views and owner notifications through the edge.

use futures::SinkExt;
use mosaic_tests::socket::{connect, next_of_type};
use mosaic_tests::{TestUser, World};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn post_of(w: &World, viewer: &TestUser, post: &str) -> Value {
    let reply = w.client.get(&format!("/v1/posts/{post}"), &viewer.access_token).await;
    reply.assert_status(200);
    reply.body
}

/// `user`'s inbox through the edge, once `check` holds (at most 30 s): the notification
/// service drains the jobs the interaction service queues.
async fn inbox_when(w: &World, user: &TestUser, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = w.client.get("/v1/notifications?limit=100", &user.access_token).await;
        r.assert_status(200);
        let items = r.body["items"].as_array().unwrap().clone();
        if check(&items) || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message of a stream, in order.
async fn stream_messages(w: &World, stream: &str) -> Vec<(String, Vec<u8>)> {
    let mut s = w.mesh.jetstream().get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.payload.to_vec()));
        }
    }
    out
}

fn actors(entry: &Value) -> Vec<String> {
    entry["actors"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_users_liking_unliking_and_retrying_at_once_leave_the_exact_count() {
    let w = World::start().await;
    let owner = w.client.signup("owner").await;
    let post = w.client.create_post(&owner.access_token, "like me", &[]).await;
    let post_id = post["id"].as_str().unwrap().to_owned();
    let mut fans = Vec::new();
    for i in 0..50 {
        fans.push(w.client.signup(&format!("fan{i}")).await);
    }
    // Everyone likes twice (a retry), a third unlike and like again, and every fifth ends
    // by unliking: 40 likes must remain.
    let tasks = fans.iter().enumerate().map(|(i, fan)| {
        let client = w.client.clone();
        let path = format!("/v1/posts/{post_id}/like");
        let token = fan.access_token.clone();
        async move {
            let (a, b) = tokio::join!(client.put(&path, &token), client.put(&path, &token));
            a.assert_status(204);
            b.assert_status(204);
            if i % 3 == 0 {
                client.delete(&path, &token).await.assert_status(204);
                client.put(&path, &token).await.assert_status(204);
            }
            if i % 5 == 0 {
                let (a, b) = tokio::join!(client.delete(&path, &token), client.delete(&path, &token));
                a.assert_status(204);
                b.assert_status(204);
            }
        }
    });
    futures::future::join_all(tasks).await;

    let seen = post_of(&w, &owner, &post_id).await;
    assert_eq!(seen["like_count"], 40);
    assert_eq!(seen["liked_by_me"], false);
    assert_eq!(post_of(&w, &fans[1], &post_id).await["liked_by_me"], true);
    assert_eq!(post_of(&w, &fans[5], &post_id).await["liked_by_me"], false);
    let mut likers = 0;
    let mut path = format!("/v1/posts/{post_id}/likes?limit=100");
    loop {
        let page = w.client.get(&path, &owner.access_token).await;
        page.assert_status(200);
        likers += page.body["items"].as_array().unwrap().len();
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/posts/{post_id}/likes?limit=7&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(likers, 40, "the list agrees with the counter");

    // The owner liking their own post counts, but notifies nobody; the fifty fans are one
    // coalesced entry in the owner's inbox.
    w.client.put(&format!("/v1/posts/{post_id}/like"), &owner.access_token).await.assert_status(204);
    assert_eq!(post_of(&w, &owner, &post_id).await["like_count"], 41);
    let inbox = inbox_when(&w, &owner, |i| i.first().is_some_and(|n| n["others"] == 49)).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["type"], "like");
    assert_eq!(inbox[0]["others"], 49, "fifty distinct fans: {}", inbox[0]);
    assert!(!actors(&inbox[0]).contains(&owner.id));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_thread_one_level_deep_and_follow_the_delete_rules() {
    let w = World::start().await;
    let owner = w.client.signup("owner").await;
    let alice = w.client.signup("alice").await;
    let bob = w.client.signup("bob").await;
    let post = w.client.create_post(&owner.access_token, "discuss", &[]).await;
    let pid = post["id"].as_str().unwrap();
    let comments_path = format!("/v1/posts/{pid}/comments");

    let c1 = w.client.post(&comments_path, Some(&alice.access_token), json!({"text": "first!"})).await;
    c1.assert_status(201);
    assert_eq!(c1.body["author"]["username"], json!(alice.username));
    let c1_id = c1.body["id"].as_str().unwrap().to_owned();
    let r1 = w
        .client
        .post(
            &comments_path,
            Some(&bob.access_token),
            json!({"text": format!("@{} agreed", owner.username), "reply_to": c1_id}),
        )
        .await;
    r1.assert_status(201);
    assert_eq!(r1.body["reply_to"], json!(c1_id));
    // A reply to a reply joins the top-level thread.
    let r2 = w
        .client
        .post(&comments_path, Some(&alice.access_token), json!({"text": "thanks", "reply_to": r1.body["id"]}))
        .await;
    assert_eq!(r2.body["reply_to"], json!(c1_id));
    let c2 = w.client.post(&comments_path, Some(&owner.access_token), json!({"text": "my own"})).await;
    c2.assert_status(201);

    let listed = w.client.get(&comments_path, &bob.access_token).await;
    let texts: Vec<&str> =
        listed.body["items"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    let expected_mention = format!("@{} agreed", owner.username);
    assert_eq!(texts, vec!["first!", expected_mention.as_str(), "thanks", "my own"], "oldest first");
    assert_eq!(post_of(&w, &bob, pid).await["comment_count"], 4);

    // Bad input loses nothing.
    w.client
        .post(&comments_path, Some(&bob.access_token), json!({"text": "   "}))
        .await
        .assert_problem(422, "validation_failed");
    w.client
        .post(&comments_path, Some(&bob.access_token), json!({"text": "x".repeat(2201)}))
        .await
        .assert_problem(422, "validation_failed");
    let wrong_type = w.client.post(&comments_path, Some(&bob.access_token), json!({"text": 5})).await;
    assert!(matches!(wrong_type.status.as_u16(), 400 | 422), "{}", wrong_type.status);
    w.client
        .post(&comments_path, Some(&bob.access_token), json!({"text": "orphan", "reply_to": "nope"}))
        .await
        .assert_problem(404, "not_found");
    w.client
        .post("/v1/posts/0190aaaaaaaaaaaaaaaaaaaaaaaaaaaa/comments", Some(&bob.access_token), json!({"text": "hi"}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(post_of(&w, &bob, pid).await["comment_count"], 4);

    // Bob may not delete Alice's comment; the post's owner may, and its replies go with it.
    w.client.delete(&format!("/v1/comments/{c1_id}"), &bob.access_token).await.assert_problem(403, "forbidden");
    w.client.delete(&format!("/v1/comments/{c1_id}"), &owner.access_token).await.assert_status(204);
    w.client.delete(&format!("/v1/comments/{c1_id}"), &owner.access_token).await.assert_problem(404, "not_found");
    assert_eq!(post_of(&w, &bob, pid).await["comment_count"], 1);
    let left = w.client.get(&comments_path, &bob.access_token).await;
    assert_eq!(left.body["items"].as_array().unwrap().len(), 1);
    // Authors delete their own.
    let c2_id = c2.body["id"].as_str().unwrap();
    w.client.delete(&format!("/v1/comments/{c2_id}"), &owner.access_token).await.assert_status(204);
    assert_eq!(post_of(&w, &bob, pid).await["comment_count"], 0);

    // Notifications: the owner for each comment by others (not their own), Bob's reply to
    // Alice's comment as a reply (it also mentions the owner, who hears of it once), and
    // Alice's reply to Bob.
    let owners = inbox_when(&w, &owner, |i| i.iter().any(|n| actors(n).len() == 2)).await;
    assert_eq!(owners.len(), 1, "the owner's comments are one entry and no mention: {owners:?}");
    assert_eq!(owners[0]["type"], "comment");
    let mut commenters = actors(&owners[0]);
    commenters.sort();
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(commenters, expected);
    let alices = inbox_when(&w, &alice, |i| !i.is_empty()).await;
    assert_eq!((alices[0]["type"].clone(), actors(&alices[0])), (json!("comment"), vec![bob.id.clone()]));
    let bobs = inbox_when(&w, &bob, |i| !i.is_empty()).await;
    assert_eq!((bobs[0]["type"].clone(), actors(&bobs[0])), (json!("comment"), vec![alice.id.clone()]));
    for (user, inbox) in [(&owner, &owners), (&alice, &alices), (&bob, &bobs)] {
        assert!(inbox.iter().all(|n| !actors(n).contains(&user.id)), "never for one's own action: {inbox:?}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_sockets_get_count_changes_and_views_are_recorded() {
    let w = World::start().await;
    let owner = w.client.signup("owner").await;
    let viewer = w.client.signup("viewer").await;
    let post = w.client.create_post(&owner.access_token, "watch me", &[]).await;
    let pid = post["id"].as_str().unwrap().to_owned();

    let mut socket = connect(w.base(), &viewer.access_token).await;
    socket.send(Message::text(json!({"type": "posts.watch", "post_ids": [pid]}).to_string())).await.unwrap();
    assert_eq!(next_of_type(&mut socket, "posts.watching").await["post_ids"], json!([pid]));
    w.client.put(&format!("/v1/posts/{pid}/like"), &owner.access_token).await.assert_status(204);
    let counts = next_of_type(&mut socket, "post.counts").await;
    assert_eq!(counts, json!({"type": "post.counts", "post_id": pid, "like_count": 1, "comment_count": 0}));
    w.client
        .post(&format!("/v1/posts/{pid}/comments"), Some(&owner.access_token), json!({"text": "hi"}))
        .await
        .assert_status(201);
    assert_eq!(next_of_type(&mut socket, "post.counts").await["comment_count"], 1);
    let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    socket.send(Message::text(json!({"type": "posts.watch", "post_ids": too_many}).to_string())).await.unwrap();
    assert_eq!(next_of_type(&mut socket, "error").await["code"], "validation_failed");

    mosaic_tests::within_one_view_window(Duration::from_secs(20)).await;
    for _ in 0..3 {
        w.client
            .post(&format!("/v1/posts/{pid}/views"), Some(&viewer.access_token), json!({}))
            .await
            .assert_status(202);
    }
    w.client
        .post("/v1/posts/bad.id/views", Some(&viewer.access_token), json!({}))
        .await
        .assert_problem(404, "not_found");
    w.client.post(&format!("/v1/posts/{pid}/views"), None, json!({})).await.assert_status(401);
    // The three views of one viewer are one event; another viewer's view, recorded after
    // them, is a second, and proves the repeats were taken and dropped, not still queued.
    let other = w.client.signup("other_viewer").await;
    w.client.post(&format!("/v1/posts/{pid}/views"), Some(&other.access_token), json!({})).await.assert_status(202);
    let mut views = Vec::new();
    for _ in 0..50 {
        views = stream_messages(&w, "EVENTS_VIEW").await;
        if views.iter().any(|(_, body)| String::from_utf8_lossy(body).contains(&other.id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(views.len(), 2, "one event per viewer");
    let event: Value = serde_json::from_slice(&views[0].1).unwrap();
    assert_eq!(views[0].0, "events.view.post");
    assert_eq!(event["data"], json!({"post_id": pid, "viewer": viewer.id}));

    // Likes of unknown or malformed posts are 404, without a trace in the counts.
    w.client
        .put("/v1/posts/0190aaaaaaaaaaaaaaaaaaaaaaaaaaaa/like", &viewer.access_token)
        .await
        .assert_problem(404, "not_found");
    w.client.put("/v1/posts/x*y/like", &viewer.access_token).await.assert_problem(404, "not_found");
    assert_eq!(post_of(&w, &viewer, &pid).await["like_count"], 1);
    w.stop().await;
}

/// `user`'s newest home feed page once it holds `post` (at most 30 s).
async fn feed_with(w: &World, user: &TestUser, post: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = w.client.get("/v1/feed?order=latest", &user.access_token).await;
        r.assert_status(200);
        let items = r.body["items"].as_array().unwrap().clone();
        if items.iter().any(|p| p["id"] == post) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "{post} never reached the feed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The interaction service fills in a new post's counts and its author's like from the
/// post's notice (no database read). A like that beats that notice must still count.
#[tokio::test]
async fn a_new_posts_counts_hold_whether_a_like_comes_before_its_notice_or_after() {
    let w = World::start().await;
    let owner = w.client.signup("owner").await;
    let fan = w.client.signup("fan").await;
    // A first read loads the owner's likes, so notices of their posts fill theirs in.
    w.client.get("/v1/feed", &owner.access_token).await.assert_status(200);

    // Liked the moment it exists. The notice usually still comes first here; the unit
    // tests in the interaction service's signals.rs force the other order.
    let raced = w.client.create_post(&owner.access_token, "quick", &[]).await["id"].as_str().unwrap().to_owned();
    let like = format!("/v1/posts/{raced}/like");
    let (a, b) = tokio::join!(w.client.put(&like, &owner.access_token), w.client.put(&like, &fan.access_token));
    a.assert_status(204);
    b.assert_status(204);

    // Liked once its notice surely arrived: the fan-out that put it in the owner's feed
    // consumed the same event after it was published.
    let calm = w.client.create_post(&owner.access_token, "calm", &[]).await["id"].as_str().unwrap().to_owned();
    let feed = feed_with(&w, &owner, &calm).await;
    let fresh = feed.iter().find(|p| p["id"] == calm.as_str()).unwrap();
    assert_eq!((fresh["like_count"].clone(), fresh["liked_by_me"].clone()), (json!(0), json!(false)));
    w.client.put(&format!("/v1/posts/{calm}/like"), &owner.access_token).await.assert_status(204);

    let feed = feed_with(&w, &owner, &raced).await;
    for (post, likes) in [(&raced, 2), (&calm, 1)] {
        let in_feed = feed.iter().find(|p| p["id"] == post.as_str()).unwrap();
        assert_eq!(in_feed["like_count"], likes, "{in_feed}");
        assert_eq!(in_feed["liked_by_me"], true, "{in_feed}");
        let seen = post_of(&w, &owner, post).await;
        assert_eq!((seen["like_count"].clone(), seen["liked_by_me"].clone()), (json!(likes), json!(true)));
    }
    assert_eq!(post_of(&w, &fan, &raced).await["liked_by_me"], true);
    assert_eq!(post_of(&w, &fan, &calm).await["liked_by_me"], false);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_limited_per_user() {
    let w = World::start_with(mosaic_tests::WorldOptions::default().set("edge.views_per_user_per_min", 5)).await;
    let author = w.client.signup("seen").await;
    let viewer = w.client.signup("binge").await;
    let post = w.client.create_post(&author.access_token, "watch", &[]).await;
    let path = format!("/v1/posts/{}/views", post["id"].as_str().unwrap());
    for _ in 0..5 {
        w.client.post(&path, Some(&viewer.access_token), json!({})).await.assert_status(202);
    }
    let over = w.client.post(&path, Some(&viewer.access_token), json!({})).await;
    over.assert_problem(429, "rate_limited");
    assert!(over.headers.get("retry-after").is_some());
    // Another user is not held back by the first.
    w.client.post(&path, Some(&author.access_token), json!({})).await.assert_status(202);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_watches_only_posts_its_user_may_see() {
    let w = World::start().await;
    let blocker = w.client.signup("blocker").await;
    let open = w.client.signup("open").await;
    let watcher = w.client.signup("watcher").await;
    let id = |post: Value| post["id"].as_str().unwrap().to_owned();
    let hidden = id(w.client.create_post(&blocker.access_token, "not for the watcher", &[]).await);
    let shown = id(w.client.create_post(&open.access_token, "for anyone", &[]).await);
    w.client.put(&format!("/v1/users/{}/block", watcher.id), &blocker.access_token).await.assert_status(204);

    let mut socket = connect(w.base(), &watcher.access_token).await;
    let watch = json!({"type": "posts.watch", "post_ids": [hidden, shown, "unknownpost"]});
    socket.send(Message::text(watch.to_string())).await.unwrap();
    // The blocker's post, and a post that does not exist, are left out.
    assert_eq!(next_of_type(&mut socket, "posts.watching").await["post_ids"], json!([shown]));
    w.client.put(&format!("/v1/posts/{shown}/like"), &open.access_token).await.assert_status(204);
    assert_eq!(next_of_type(&mut socket, "post.counts").await["post_id"], shown.as_str());
    w.stop().await;
}

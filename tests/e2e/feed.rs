//! Home feeds through the edge: fan-out and pull, live frames, graph changes, rebuilds,
//! ranking and pagination.

use mosaic_api::stream::{FEED_PULL_AUTHORS, FEEDS};
use mosaic_tests::socket::{connect, next_of_type, try_next_json};
use mosaic_tests::{TestUser, World, WorldOptions};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Post ids of one feed page.
async fn feed_ids(w: &World, user: &TestUser, query: &str) -> Vec<String> {
    let page = w.client.get(&format!("/v1/feed{query}"), &user.access_token).await;
    page.assert_status(200);
    page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until the reader's latest-first feed satisfies `check` (fan-out is asynchronous).
async fn eventually(w: &World, user: &TestUser, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..100 {
        let ids = feed_ids(w, user, "?order=latest").await;
        if check(&ids) {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("feed never showed {what}: {:?}", feed_ids(w, user, "?order=latest").await);
}

async fn follow(w: &World, who: &TestUser, whom: &TestUser) {
    w.client.put(&format!("/v1/users/{}/follow", whom.id), &who.access_token).await.assert_status(204);
}

fn id(post: &Value) -> String {
    post["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_post_arrives_live_and_in_the_feed_and_leaves_with_unfollow_and_delete() {
    follow_post_unfollow(WorldOptions::default()).await;
}

/// The same story when the services call each other in process, as under `mosaic up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_story_holds_when_services_call_each_other_in_process() {
    follow_post_unfollow(WorldOptions { local_calls: true, ..Default::default() }).await;
}

async fn follow_post_unfollow(options: WorldOptions) {
    let w = World::start_with(options).await;
    let author = w.client.signup("author").await;
    let reader = w.client.signup("reader").await;
    // A first read creates the reader's cached feed, so the post is pushed into it.
    assert!(feed_ids(&w, &reader, "").await.is_empty());
    follow(&w, &reader, &author).await;
    let mut socket = connect(w.base(), &reader.access_token).await;

    let first = w.client.create_post(&author.access_token, "hello #world", &[]).await;
    let frame = next_of_type(&mut socket, "feed.post").await;
    assert_eq!(frame["post"]["id"], first["id"]);
    assert_eq!(frame["post"]["author"]["username"], json!(author.username));
    eventually(&w, &reader, "the new post", |ids| ids == [id(&first)]).await;
    let own = feed_ids(&w, &author, "").await;
    assert_eq!(own, vec![id(&first)], "authors see their own posts");

    let second = w.client.create_post(&author.access_token, "again", &[]).await;
    eventually(&w, &reader, "both posts", |ids| ids == [id(&second), id(&first)]).await;

    w.client.delete(&format!("/v1/posts/{}", id(&first)), &author.access_token).await.assert_status(204);
    eventually(&w, &reader, "the deletion", |ids| ids == [id(&second)]).await;

    w.client.delete(&format!("/v1/users/{}/follow", author.id), &reader.access_token).await.assert_status(204);
    eventually(&w, &reader, "the unfollow", |ids| ids.is_empty()).await;

    // Following again brings the author's recent posts back.
    follow(&w, &reader, &author).await;
    eventually(&w, &reader, "the backfill", |ids| ids == [id(&second)]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_over_the_threshold_are_pulled_at_read_time() {
    let options = WorldOptions::default().set("feed.fanout_threshold", 2);
    let w = World::start_with(options).await;
    let small = w.client.signup("small").await;
    let big = w.client.signup("big").await;
    let r1 = w.client.signup("r1").await;
    let r2 = w.client.signup("r2").await;
    for r in [&r1, &r2] {
        feed_ids(&w, r, "").await;
        follow(&w, r, &big).await;
    }
    follow(&w, &r1, &small).await;
    let mut socket = connect(w.base(), &r2.access_token).await;

    let pushed = w.client.create_post(&small.access_token, "from a small account", &[]).await;
    let pulled = w.client.create_post(&big.access_token, "from a big account", &[]).await;
    // Online followers get the frame in both modes.
    assert_eq!(next_of_type(&mut socket, "feed.post").await["post"]["id"], pulled["id"]);
    eventually(&w, &r1, "both posts", |ids| ids == [id(&pulled), id(&pushed)]).await;
    eventually(&w, &r2, "the pulled post", |ids| ids == [id(&pulled)]).await;

    let marks = w.mesh.bucket(&FEED_PULL_AUTHORS).await.unwrap();
    assert!(marks.get(&format!("author.{}", big.id)).await.unwrap().is_some(), "the big author is pulled");
    assert!(marks.get(&format!("author.{}", small.id)).await.unwrap().is_none(), "the small one is pushed");

    // The pulled post was never written into r2's cached feed (ids are stored as 16 bytes).
    let feeds = w.mesh.bucket(&FEEDS).await.unwrap();
    let cached = feeds.get(&format!("feed.{}", r2.id)).await.unwrap().expect("r2 has a cached feed");
    assert!(!holds(&cached.value, &pulled), "a pulled post is not pushed");

    // Deleting a pulled post hides it as soon as the short pull cache expires.
    w.client.delete(&format!("/v1/posts/{}", id(&pulled)), &big.access_token).await.assert_status(204);
    eventually(&w, &r2, "the pulled post gone", |ids| ids.is_empty()).await;
    w.stop().await;
}

/// How many requests the (one) instance of `service` has served on `endpoint` over NATS.
async fn served(nats: &async_nats::Client, service: &str, endpoint: &str) -> u64 {
    let reply = tokio::time::timeout(Duration::from_secs(5), nats.request(format!("$SRV.STATS.{service}"), "".into()))
        .await
        .expect("the service answers $SRV.STATS")
        .unwrap();
    let stats: Value = serde_json::from_slice(&reply.payload).unwrap();
    stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == endpoint)
        .and_then(|e| e["num_requests"].as_u64())
        .unwrap_or_else(|| panic!("{service} serves {endpoint}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_asks_once_for_the_recent_posts_of_all_its_pulled_authors() {
    // Every author with a follower is pulled, and no read is served from the pull cache.
    let options = WorldOptions::default().set("feed.fanout_threshold", 1).set("feed.pull_cache_ms", 0);
    let w = World::start_with(options).await;
    let reader = w.client.signup("reader").await;
    feed_ids(&w, &reader, "").await;
    for name in ["big_a", "big_b", "big_c"] {
        let author = w.client.signup(name).await;
        follow(&w, &reader, &author).await;
        w.client.create_post(&author.access_token, name, &[]).await;
    }
    eventually(&w, &reader, "the three pulled posts", |ids| ids.len() == 3).await;
    let nats = w.nats.connect().await;
    let before = served(&nats, "content", "recent_posts").await;
    assert_eq!(feed_ids(&w, &reader, "").await.len(), 3);
    let after = served(&nats, "content", "recent_posts").await;
    assert_eq!(after - before, 1, "one request for three pulled authors, not one each");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_asks_for_counts_once_and_checks_no_relations_twice() {
    // No post body is served from the feed's cache, so each read hydrates its page.
    let w = World::start_with(WorldOptions::default().set("feed.post_cache_ms", 0)).await;
    let reader = w.client.signup("reader").await;
    let author = w.client.signup("author").await;
    feed_ids(&w, &reader, "").await;
    follow(&w, &reader, &author).await;
    let post = w.client.create_post(&author.access_token, "hello", &[]).await;
    eventually(&w, &reader, "the post", |ids| ids == [id(&post)]).await;
    let nats = w.nats.connect().await;
    let (signals, relations, posts) = (
        served(&nats, "interaction", "signals").await,
        served(&nats, "user", "relations").await,
        served(&nats, "content", "posts").await,
    );
    assert_eq!(feed_ids(&w, &reader, "").await, [id(&post)]);
    assert_eq!(served(&nats, "content", "posts").await - posts, 1, "the page's bodies in one request");
    assert_eq!(served(&nats, "interaction", "signals").await - signals, 1, "counts read once, by the feed");
    assert_eq!(served(&nats, "user", "relations").await - relations, 0, "the feed applied the graph already");
    w.stop().await;
}

/// The 16-byte form a post id takes in a cached feed.
fn stored_id(post: &Value) -> Vec<u8> {
    let hex = id(post);
    (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn holds(feed: &[u8], post: &Value) -> bool {
    let needle = stored_id(post);
    feed.windows(16).any(|w| w == needle.as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_gathered_by_the_fan_out_reach_a_feed_in_one_write() {
    use futures::StreamExt as _;
    let options = WorldOptions::default().set("feed.fanout_linger_ms", 1_500);
    let w = World::start_with(options).await;
    let a = w.client.signup("a").await;
    let b = w.client.signup("b").await;
    let reader = w.client.signup("reader").await;
    feed_ids(&w, &reader, "").await;
    follow(&w, &reader, &a).await;
    follow(&w, &reader, &b).await;
    let warm = w.client.create_post(&a.access_token, "first", &[]).await;
    eventually(&w, &reader, "the first post", |ids| ids == [id(&warm)]).await;
    // The follows' own feed updates are done by now; what follows is the fan-out's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kv = w.mesh.jetstream().get_key_value(FEEDS.bucket).await.unwrap();
    let mut writes = kv.watch(format!("feed.{}", reader.id)).await.unwrap();
    let mut socket = connect(w.base(), &reader.access_token).await;

    let p1 = w.client.create_post(&a.access_token, "one", &[]).await;
    let p2 = w.client.create_post(&b.access_token, "two", &[]).await;
    let p3 = w.client.create_post(&a.access_token, "three", &[]).await;
    w.client.delete(&format!("/v1/posts/{}", id(&p3)), &a.access_token).await.assert_status(204);
    // The posts are announced live in order once gathered; the one deleted meanwhile is not.
    for post in [&p1, &p2] {
        assert_eq!(next_of_type(&mut socket, "feed.post").await["post"]["id"], post["id"]);
    }
    assert!(try_next_json(&mut socket, Duration::from_millis(300)).await.is_none());
    eventually(&w, &reader, "the gathered posts", |ids| ids == [id(&p2), id(&p1), id(&warm)]).await;

    // One write carried both posts; the one deleted before the fan-out got to it was
    // never written, so its deletion needs no write either.
    let first = tokio::time::timeout(Duration::from_secs(5), writes.next()).await.unwrap().unwrap().unwrap();
    assert!(holds(&first.value, &p1) && holds(&first.value, &p2) && !holds(&first.value, &p3));
    assert!(tokio::time::timeout(Duration::from_millis(500), writes.next()).await.is_err(), "no more writes");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_rebuilt_from_the_graph_after_the_bucket_is_purged() {
    // Every read asks the bucket: an instance serves a feed it read lately from memory, so
    // with the default it would notice the loss only after `known_fresh_ms`.
    let options = WorldOptions::default().set("feed.known_fresh_ms", 0);
    let w = World::start_with(options).await;
    let a = w.client.signup("a").await;
    let b = w.client.signup("b").await;
    let reader = w.client.signup("reader").await;
    follow(&w, &reader, &a).await;
    follow(&w, &reader, &b).await;
    let p1 = w.client.create_post(&a.access_token, "one", &[]).await;
    let p2 = w.client.create_post(&b.access_token, "two", &[]).await;
    let p3 = w.client.create_post(&reader.access_token, "mine", &[]).await;
    // No cached feed yet: the first read is a rebuild, not an empty page.
    let expected = vec![id(&p3), id(&p2), id(&p1)];
    assert_eq!(feed_ids(&w, &reader, "?order=latest").await, expected);

    let mut stream = w.mesh.jetstream().get_stream("KV_feeds").await.unwrap();
    stream.purge().await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    let started = std::time::Instant::now();
    assert_eq!(feed_ids(&w, &reader, "?order=latest").await, expected);
    assert!(started.elapsed() < Duration::from_secs(1), "rebuilt in {:?}", started.elapsed());
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "the rebuilt feed is stored");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_instances_hear_of_each_others_writes() {
    // Two instances take reads in turn, and each would serve a feed it read from memory
    // for a minute: only the notices of the other's writes keep every read current.
    let options = WorldOptions::default().instances("feed", 2).set("feed.known_fresh_ms", 60_000);
    let w = World::start_with(options).await;
    let a = w.client.signup("a").await;
    let b = w.client.signup("b").await;
    let reader = w.client.signup("reader").await;
    follow(&w, &reader, &a).await;
    follow(&w, &reader, &b).await;
    let p1 = w.client.create_post(&a.access_token, "one", &[]).await;
    eventually(&w, &reader, "the first post", |ids| ids == [id(&p1)]).await;
    let all_reads = |want: Vec<String>| {
        let (w, reader) = (&w, &reader);
        async move {
            // Notices take a moment; then every read, whichever instance serves it, agrees.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for _ in 0..12 {
                assert_eq!(feed_ids(w, reader, "?order=latest").await, want);
            }
        }
    };
    all_reads(vec![id(&p1)]).await;

    let p2 = w.client.create_post(&b.access_token, "two", &[]).await;
    eventually(&w, &reader, "the second post", |ids| ids.len() == 2).await;
    all_reads(vec![id(&p2), id(&p1)]).await;

    w.client.delete(&format!("/v1/users/{}/follow", a.id), &reader.access_token).await.assert_status(204);
    eventually(&w, &reader, "the unfollow", |ids| ids == [id(&p2)]).await;
    all_reads(vec![id(&p2)]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_and_blocked_authors_disappear_from_feeds_and_frames() {
    let w = World::start().await;
    let friend = w.client.signup("friend").await;
    let noisy = w.client.signup("noisy").await;
    let reader = w.client.signup("reader").await;
    feed_ids(&w, &reader, "").await;
    follow(&w, &reader, &friend).await;
    follow(&w, &reader, &noisy).await;
    let f = w.client.create_post(&friend.access_token, "friend", &[]).await;
    let n = w.client.create_post(&noisy.access_token, "noise", &[]).await;
    eventually(&w, &reader, "both", |ids| ids.len() == 2).await;

    w.client.put(&format!("/v1/users/{}/mute", noisy.id), &reader.access_token).await.assert_status(204);
    eventually(&w, &reader, "the mute", |ids| ids == [id(&f)]).await;
    let mut socket = connect(w.base(), &reader.access_token).await;
    w.client.create_post(&noisy.access_token, "more noise", &[]).await;
    let f2 = w.client.create_post(&friend.access_token, "friend again", &[]).await;
    // Frames arrive in publication order per subject, so the friend's frame coming first
    // (and alone) means the muted author's was never sent.
    assert_eq!(next_of_type(&mut socket, "feed.post").await["post"]["id"], f2["id"]);
    assert!(try_next_json(&mut socket, Duration::from_millis(500)).await.is_none());
    assert!(!feed_ids(&w, &reader, "").await.contains(&id(&n)));

    w.client.put(&format!("/v1/users/{}/block", reader.id), &friend.access_token).await.assert_status(204);
    eventually(&w, &reader, "the block", |ids| ids.is_empty()).await;
    // A blocked user can neither like nor comment on the blocker's posts.
    w.client.put(&format!("/v1/posts/{}/like", id(&f)), &reader.access_token).await.assert_problem(404, "not_found");
    w.client
        .post(&format!("/v1/posts/{}/comments", id(&f)), Some(&reader.access_token), json!({"text": "hi"}))
        .await
        .assert_problem(404, "not_found");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ranked_feed_follows_preferences_and_pages_stay_stable() {
    let w = World::start().await;
    let surfer = w.client.signup("surfer").await;
    let liked = w.client.signup("liked").await;
    let other = w.client.signup("other").await;
    let reader = w.client.signup("reader").await;
    w.client
        .send(
            Method::PATCH,
            "/v1/users/me",
            Some(&reader.access_token),
            Some(json!({"preferences": {"topics": ["surf"]}})),
        )
        .await
        .assert_status(200);
    for a in [&surfer, &liked, &other] {
        follow(&w, &reader, a).await;
    }
    let on_topic = w.client.create_post(&surfer.access_token, "waves", &["surf"]).await;
    let old_liked = w.client.create_post(&liked.access_token, "an older one", &[]).await;
    let from_liked = w.client.create_post(&liked.access_token, "a friend's", &[]).await;
    w.client.put(&format!("/v1/posts/{}/like", id(&old_liked)), &reader.access_token).await.assert_status(204);
    let mut plain = Vec::new();
    for i in 0..4 {
        plain.push(id(&w.client.create_post(&other.access_token, &format!("plain {i}"), &[]).await));
    }

    let latest = eventually(&w, &reader, "all seven", |ids| ids.len() == 7).await;
    assert_eq!(latest[0], plain[3], "latest is newest first");
    let ranked = feed_ids(&w, &reader, "").await;
    assert_eq!(ranked.len(), 7);
    let pos = |p: &str| ranked.iter().position(|x| x == p).unwrap();
    assert!(pos(&id(&from_liked)) < pos(&plain[3]), "affinity lifts an older post: {ranked:?}");
    assert!(pos(&id(&on_topic)) < pos(&plain[3]), "a followed topic lifts an older post: {ranked:?}");

    // Pages of 3: a post published between pages neither shifts nor repeats anything.
    let first = w.client.get("/v1/feed?limit=3", &reader.access_token).await;
    let mut paged: Vec<String> =
        first.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    w.client.create_post(&other.access_token, "published meanwhile", &[]).await;
    let mut cursor = first.body["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = w.client.get(&format!("/v1/feed?limit=3&cursor={c}"), &reader.access_token).await;
        page.assert_status(200);
        paged.extend(page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(paged, ranked, "pages concatenate to the first ranking");

    // Latest-first pages are keyset pages: same property.
    let mut latest_paged = Vec::new();
    let mut path = "/v1/feed?order=latest&limit=2".to_owned();
    let mut published = false;
    loop {
        let page = w.client.get(&path, &reader.access_token).await;
        latest_paged
            .extend(page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        if !published {
            w.client.create_post(&other.access_token, "another", &[]).await;
            published = true;
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/feed?order=latest&limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut unique = latest_paged.clone();
    unique.dedup();
    assert_eq!(unique, latest_paged, "no repeats");
    assert!(latest_paged.ends_with(&latest[1..]), "{latest_paged:?}");

    // Counts and liked_by_me come with feed items.
    let liked_item = w.client.get("/v1/feed?order=latest&limit=100", &reader.access_token).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == old_liked["id"])
        .cloned()
        .unwrap();
    assert_eq!(liked_item["like_count"], 1);
    assert_eq!(liked_item["liked_by_me"], true);

    w.client.get("/v1/feed?cursor=not-a-cursor", &reader.access_token).await.assert_problem(422, "validation_failed");
    w.client.get("/v1/feed?order=sideways", &reader.access_token).await.assert_problem(422, "validation_failed");
    w.client.get("/v1/feed?limit=ten", &reader.access_token).await.assert_problem(422, "validation_failed");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_pages_keep_their_order_whichever_instance_serves_them() {
    // The instance that ranks a first page keeps the order; later pages land on either
    // instance, and a like between pages would reorder anything ranked again.
    let w = World::start_with(WorldOptions::default().instances("feed", 2)).await;
    let author = w.client.signup("author").await;
    let reader = w.client.signup("reader").await;
    follow(&w, &reader, &author).await;
    for i in 0..6 {
        w.client.create_post(&author.access_token, &format!("post {i}"), &[]).await;
    }
    eventually(&w, &reader, "six posts", |ids| ids.len() == 6).await;
    for round in 0..3 {
        let whole = feed_ids(&w, &reader, "").await;
        let first = w.client.get("/v1/feed?limit=2", &reader.access_token).await;
        let mut paged: Vec<String> =
            first.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
        // Liking the last-ranked post lifts it; unliking drops it back.
        let method = if round % 2 == 0 { Method::PUT } else { Method::DELETE };
        let target = if round % 2 == 0 { whole.last() } else { whole.first() }.unwrap();
        w.client
            .send(method, &format!("/v1/posts/{target}/like"), Some(&reader.access_token), None)
            .await
            .assert_status(204);
        let mut cursor = first.body["next_cursor"].as_str().map(str::to_owned);
        while let Some(c) = cursor {
            let page = w.client.get(&format!("/v1/feed?limit=2&cursor={c}"), &reader.access_token).await;
            page.assert_status(200);
            paged.extend(page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
            cursor = page.body["next_cursor"].as_str().map(str::to_owned);
        }
        assert_eq!(paged, whole, "round {round}: pages concatenate to the first page's ranking");
        assert_ne!(feed_ids(&w, &reader, "").await, whole, "round {round}: the like changed the ranking");
    }
    w.stop().await;
}

/// Only the newest `ranking.window` candidates are scored; older ones follow newest first,
/// and a page of them still carries its counts and `liked_by_me`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_window_is_ranked_and_older_posts_follow_in_time_order() {
    let options = WorldOptions::default().set("feed.ranking.window", 20);
    let w = World::start_with(options).await;
    let author = w.client.signup("prolific").await;
    let reader = w.client.signup("windowed").await;
    follow(&w, &reader, &author).await;
    let mut posts = Vec::new();
    for i in 0..24 {
        posts.push(id(&w.client.create_post(&author.access_token, &format!("post {i}"), &[]).await));
    }
    // The oldest post is liked: outside the window, it is not lifted, yet shows its like.
    w.client.put(&format!("/v1/posts/{}/like", posts[0]), &reader.access_token).await.assert_status(204);
    let mut latest = Vec::new();
    for _ in 0..100 {
        latest = feed_ids(&w, &reader, "?order=latest&limit=50").await;
        if latest.len() == 24 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(latest.len(), 24, "every post reaches the feed");

    let mut ranked = Vec::new();
    let mut path = "/v1/feed?limit=10".to_owned();
    let mut oldest = None;
    loop {
        let page = w.client.get(&path, &reader.access_token).await;
        page.assert_status(200);
        for item in page.body["items"].as_array().unwrap() {
            if item["id"] == posts[0].as_str() {
                oldest = Some(item.clone());
            }
            ranked.push(id(item));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/feed?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ranked.len(), 24);
    assert_eq!(ranked[20..], latest[20..], "the four oldest come last, newest first");
    let mut window: Vec<&String> = ranked[..20].iter().collect();
    window.sort();
    let mut newest: Vec<&String> = latest[..20].iter().collect();
    newest.sort();
    assert_eq!(window, newest, "the first twenty are the newest twenty");
    let oldest = oldest.expect("the oldest post is listed");
    assert_eq!(oldest["like_count"], 1);
    assert_eq!(oldest["liked_by_me"], true);
    w.stop().await;
}

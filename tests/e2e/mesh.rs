//! The mesh seen from outside: plain NATS clients, discovery, scaling, events, consumers.

use futures::StreamExt;
use mosaic_api::content::{ByPost, GetPost};
use mosaic_api::stream::{ConsumerSpec, DEAD_LETTERS, DLQ_REASON, EVENTS_USER};
use mosaic_api::user::{Followed, SignedUp};
use mosaic_api::{Envelope, Event, Id as _};
use mosaic_api::{ErrorCode, PostId};
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::{CallError, Lifecycle, Mesh, NatsConfig};
use mosaic_tests::{World, WorldOptions, eventually};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_nats_client_can_call_the_user_service() {
    let w = World::start().await;
    // No Mosaic code on this side: a bare client, JSON in, JSON out.
    let nats = w.nats.connect().await;
    let body = json!({"username": "plain_client", "email": "plain@example.com", "password": "correct horse battery"});
    let reply = nats.request("mosaic.user.v1.signup", serde_json::to_vec(&body).unwrap().into()).await.unwrap();
    assert!(reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).is_none());
    let auth: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(auth["user"]["username"], "plain_client");
    assert!(auth["access_token"].as_str().unwrap().split('.').count() == 3);

    // Errors come back as micro error headers with the machine code alongside.
    let again = nats.request("mosaic.user.v1.signup", serde_json::to_vec(&body).unwrap().into()).await.unwrap();
    let headers = again.headers.expect("error headers");
    assert_eq!(headers.get("Nats-Service-Error-Code").unwrap().as_str(), "409");
    assert_eq!(headers.get("Mosaic-Error-Code").unwrap().as_str(), "username_taken");
    assert!(!headers.get("Nats-Service-Error").unwrap().as_str().is_empty());

    // Garbage is a 400, not a crash.
    let junk = nats.request("mosaic.user.v1.login", "{{{".into()).await.unwrap();
    assert_eq!(junk.headers.unwrap().get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_discoverable_through_srv_info_and_ping() {
    let w = World::start().await;
    let nats = w.nats.connect().await;
    let info = nats.request("$SRV.INFO.user", "".into()).await.unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["name"], "user");
    let endpoints: Vec<(String, String)> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["subject"].as_str().unwrap().to_owned()))
        .collect();
    for name in ["signup", "login", "refresh", "logout", "jwks", "me", "follow", "relations", "suspend"] {
        assert!(
            endpoints.contains(&(name.to_owned(), format!("mosaic.user.v1.{name}"))),
            "{name} missing from {endpoints:?}"
        );
    }
    assert!(info["endpoints"].as_array().unwrap().iter().all(|e| e["queue_group"] == "mosaic.user"));
    let pong = nats.request("$SRV.PING.user", "".into()).await.unwrap();
    let pong: Value = serde_json::from_slice(&pong.payload).unwrap();
    assert_eq!(pong["type"], "io.nats.micro.v1.ping_response");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_requests_and_stopping_one_fails_none() {
    let mut w = World::start_with(WorldOptions::default()).await;
    // The second instance shares the database, as two processes share a database cluster.
    w.add_instance("user").await.unwrap();
    let u = w.client.signup("shared").await;
    // Called as the edge calls: a reply accepted during the drain leaves on the stopping
    // instance's other connection, which may answer the edge (and the other callers the
    // declarations name) but nobody else.
    let nats = w.nats.connect_as("edge").await;
    let operator = w.nats.connect().await;
    let request = serde_json::to_vec(&json!({"username": u.username})).unwrap();

    let call = |nats: async_nats::Client, request: Vec<u8>| async move {
        let r = nats.request("mosaic.user.v1.profile", request.into()).await;
        let ok = matches!(&r, Ok(m) if m.headers.is_none() && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["username"].is_string()));
        if !ok {
            eprintln!("failed call: {r:?}");
        }
        ok
    };
    for _ in 0..100 {
        assert!(call(nats.clone(), request.clone()).await);
    }
    let stats = srv_stats(&operator).await;
    assert_eq!(stats.len(), 2, "both instances answer $SRV.STATS");
    for s in &stats {
        let served: u64 = s["endpoints"].as_array().unwrap().iter().map(|e| e["num_requests"].as_u64().unwrap()).sum();
        assert!(served > 0, "an instance got no requests: {s}");
    }

    // Stop one instance while callers keep requests coming back to back, so requests are
    // on their way to it at the moment it withdraws: each must still be answered, by it or by
    // the other instance, and none may wait out its timeout.
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (nats, request, failures, answered, stopped) =
                (nats.clone(), request.clone(), failures.clone(), answered.clone(), stopped.clone());
            tokio::spawn(async move {
                // Until the instance is gone and a few hundred more requests went through.
                let mut after = 0;
                while after < 50 {
                    if stopped.load(Ordering::Relaxed) {
                        after += 1;
                    }
                    if call(nats.clone(), request.clone()).await {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || async { answered.load(Ordering::Relaxed) >= 200 }).await);
    w.take_instance("user").stop().await;
    stopped.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "a request failed while an instance stopped");
    assert!(eventually(Duration::from_secs(5), || async { srv_stats(&operator).await.len() == 1 }).await);
    w.stop().await;
}

async fn srv_stats(nats: &async_nats::Client) -> Vec<Value> {
    stats_of(nats, "user").await
}

/// What every instance of `service` answers to `$SRV.STATS`.
async fn stats_of(nats: &async_nats::Client, service: &str) -> Vec<Value> {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await.unwrap();
    nats.publish_with_reply(format!("$SRV.STATS.{service}"), inbox, "".into()).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

fn requests_served(stats: &Value) -> u64 {
    stats["endpoints"].as_array().unwrap().iter().map(|e| e["num_requests"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_calls_skip_the_wire_and_keep_its_contract() {
    let mut w = World::start_with(WorldOptions { local_calls: true, ..Default::default() }).await;
    let author = w.client.signup("local_author").await;
    let post = w.client.create_post(&author.access_token, "in process", &[]).await;
    let post_id = PostId::parse(post["id"].as_str().unwrap()).unwrap();
    w.client.get(&format!("/v1/posts/{post_id}"), &author.access_token).await.assert_status(200);
    let unknown = PostId::generate();
    w.client.get(&format!("/v1/posts/{unknown}"), &author.access_token).await.assert_problem(404, "not_found");

    // The edge's calls and the services' calls to each other never reached the NATS server.
    let nats = w.nats.connect().await;
    let stats = stats_of(&nats, "content").await;
    assert_eq!(stats.len(), 1);
    assert_eq!(requests_served(&stats[0]), 0, "content served a request over the wire: {}", stats[0]);

    // The endpoints are still on the wire for other processes.
    let wire = Mesh::connect(&NatsConfig { local_calls: false, ..w.nats.config() }, "elsewhere").await.unwrap();
    let ctx = wire.as_caller(&author.access_token).await.unwrap();
    let by = |post_id: &PostId| ByPost { post_id: post_id.clone() };
    assert_eq!(wire.call::<GetPost>(&ctx, &by(&post_id)).await.unwrap().id, post_id);
    assert_eq!(requests_served(&stats_of(&nats, "content").await[0]), 1);

    // In process, the same answers as over the wire: replies, refusals with their codes, and
    // a timeout for a deadline that has already passed.
    assert_eq!(w.mesh.call::<GetPost>(&ctx, &by(&post_id)).await.unwrap().id, post_id);
    match w.mesh.call::<GetPost>(&ctx, &by(&unknown)).await {
        Err(CallError::Api(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("expected not_found, got {other:?}"),
    }
    match wire.call::<GetPost>(&ctx, &by(&unknown)).await {
        Err(CallError::Api(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("expected not_found over the wire, got {other:?}"),
    }
    let late = ctx.clone().with_timeout(Duration::ZERO);
    assert!(matches!(w.mesh.call::<GetPost>(&late, &by(&post_id)).await, Err(CallError::Timeout)));

    // A stopped instance withdraws its local endpoints: calls take the wire, where nobody
    // answers, until an instance in another process starts.
    w.take_instance("content").stop().await;
    let short = ctx.clone().with_timeout(Duration::from_millis(300));
    let gone = w.mesh.call::<GetPost>(&short, &by(&post_id)).await;
    assert!(matches!(gone, Err(CallError::NoResponders)), "{gone:?}");
    w.add_instance("content").await.unwrap();
    assert_eq!(w.mesh.call::<GetPost>(&ctx, &by(&post_id)).await.unwrap().id, post_id);
    w.client.get(&format!("/v1/posts/{post_id}"), &author.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_and_graph_changes_are_published_as_events() {
    let w = World::start().await;
    let a = w.client.signup("ev_a").await;
    let b = w.client.signup("ev_b").await;
    w.client.put(&format!("/v1/users/{}/follow", b.id), &a.access_token).await.assert_status(204);

    let js = async_nats::jetstream::new(w.nats.connect().await);
    let stream = js.get_stream(EVENTS_USER.name).await.unwrap();
    let seen = eventually(Duration::from_secs(5), || async {
        let signups = stream.get_last_raw_message_by_subject(SignedUp::SUBJECT).await;
        let follows = stream.get_last_raw_message_by_subject(Followed::SUBJECT).await;
        match (signups, follows) {
            (Ok(_), Ok(f)) => {
                let env: Envelope<Followed> = serde_json::from_slice(&f.payload).unwrap();
                env.data.follower.to_string() == a.id && env.data.followee.to_string() == b.id
            }
            _ => false,
        }
    })
    .await;
    assert!(seen, "signed_up and followed events reach the stream");
    w.stop().await;
}

const POISON: ConsumerSpec = ConsumerSpec {
    stream: &EVENTS_USER,
    durable: "test-poison",
    filter_subjects: &["events.user.signed_up"],
    max_deliver: 3,
    backoff: &[Duration::from_millis(50)],
    ack_wait: Duration::from_secs(5),
    max_ack_pending: 16,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_are_retried_then_dead_lettered() {
    let w = World::start().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let lifecycle = Lifecycle::new();
    w.mesh
        .consume::<SignedUp, _, _, _>(POISON, 4, attempts.clone(), &lifecycle, |attempts, _ctx, _env| async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(HandlerError::Transient(anyhow::anyhow!("the dependency is down")))
        })
        .await
        .unwrap();
    w.client.signup("poison").await;

    let js = async_nats::jetstream::new(w.nats.connect().await);
    let dead = eventually(Duration::from_secs(10), || async {
        match js.get_stream(DEAD_LETTERS.name).await {
            Ok(s) => s.get_last_raw_message_by_subject("dlq.EVENTS_USER.test-poison").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(dead, "the message is parked after max_deliver attempts");
    assert_eq!(attempts.load(Ordering::Relaxed), 3);
    let parked = js
        .get_stream(DEAD_LETTERS.name)
        .await
        .unwrap()
        .get_last_raw_message_by_subject("dlq.EVENTS_USER.test-poison")
        .await
        .unwrap();
    let reason = parked.headers.get(DLQ_REASON).unwrap().as_str().to_owned();
    assert!(reason.contains("dependency is down"), "{reason}");
    mosaic_mesh::ServiceHandle::new("test", None, lifecycle).stop().await;
    w.stop().await;
}

/// More events than the client's 5 000 unacknowledged-publish permits in one batch: every
/// one is stored, and the batch does not wait forever for a permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_bigger_than_the_ack_window_is_published_whole() {
    let w = World::start().await;
    w.mesh.ensure_stream(&EVENTS_USER).await.unwrap();
    let js = async_nats::jetstream::new(w.nats.connect().await);
    let mut stream = js.get_stream(EVENTS_USER.name).await.unwrap();
    let before = stream.info().await.unwrap().state.messages;
    let events: Vec<Envelope<Followed>> = (0..6_000)
        .map(|i| Envelope {
            id: mosaic_api::EventId::generate(),
            at: chrono::Utc::now(),
            data: Followed {
                follower: mosaic_api::UserId::from_trusted(format!("a{i}")),
                followee: mosaic_api::UserId::from_trusted(format!("b{i}")),
            },
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(60), w.mesh.publish_batch(&events))
        .await
        .expect("the batch finishes")
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages - before, 6_000);
    // Publishing the same envelopes again stores nothing: they carry their ids.
    w.mesh.publish_batch(&events[..100]).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages - before, 6_000);
    w.stop().await;
}

/// Rows handed to the relay by id are published once each, in order; a row the transaction
/// did not insert is skipped, and the table ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publishes_committed_rows_by_id_and_skips_the_rest() {
    use mosaic_mesh::db::{self, Checked as _, DbConfig};
    use mosaic_mesh::outbox::{Outbox, Staged};
    mosaic_tests::init_logs();
    let nats = mosaic_tests::NatsServer::start().await.unwrap();
    let mesh = mosaic_mesh::Mesh::connect(&nats.config(), "outbox-test").await.unwrap();
    mesh.ensure_stream(&EVENTS_USER).await.unwrap();
    let db = db::connect(&DbConfig { url: "mem://".into(), ..Default::default() }, "outbox").await.unwrap();
    db::migrate(&db, &[]).await.unwrap();
    let lifecycle = Lifecycle::new();
    let outbox = Outbox::spawn(db.clone(), mesh.clone(), &lifecycle);

    let signed_up = |name: &str| {
        Staged::new(SignedUp {
            user_id: mosaic_api::UserId::from_trusted(format!("u-{name}")),
            username: name.to_owned(),
        })
    };
    let rows: Vec<Staged> = ["first", "second", "third"].into_iter().map(signed_up).collect();
    let skipped = signed_up("never_inserted");
    db.query("INSERT INTO outbox $rows").bind(("rows", rows.clone())).await.unwrap().checked().unwrap();
    outbox.committed(&[rows[0].clone(), skipped.clone(), rows[1].clone(), rows[2].clone()]);

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stored = || async {
        let mut stream = js.get_stream(EVENTS_USER.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    };
    let published = eventually(Duration::from_secs(10), || async { stored().await == 3 }).await;
    assert!(published, "the three committed rows reach the stream");
    let mut ids = Vec::new();
    let stream = js.get_stream(EVENTS_USER.name).await.unwrap();
    for seq in 1..=3 {
        let msg = stream.get_raw_message(seq).await.unwrap();
        ids.push(msg.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned());
    }
    let expected: Vec<String> = rows.iter().map(|r| r.msg_id().to_owned()).collect();
    assert_eq!(ids, expected, "published in the order they were handed over");
    let emptied = eventually(Duration::from_secs(10), || async {
        let mut res = db.query("RETURN count(SELECT id FROM outbox)").await.unwrap();
        let left: Option<i64> = res.take(0).unwrap();
        left == Some(0)
    })
    .await;
    assert!(emptied, "published rows are deleted");
    // The skipped id was never inserted; a sweep publishes nothing more.
    outbox.wake();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored().await, 3);
    // A row nobody hands over (a crashed instance's) goes out with a periodic sweep, which
    // after the first starts from its mark rather than the head of the table.
    let orphan = signed_up("orphan");
    db.query("INSERT INTO outbox $rows").bind(("rows", vec![orphan])).await.unwrap().checked().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { stored().await == 4 }).await,
        "a sweep publishes the orphan"
    );
    mosaic_mesh::ServiceHandle::new("test", None, lifecycle).stop().await;
}

/// A cache bucket never refuses a write: once full it drops the entries written longest ago.
/// One found on disk (an older deployment's) is recreated in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_bucket_evicts_the_entries_written_longest_ago() {
    use async_nats::jetstream::stream::{DiscardPolicy, StorageType};
    use mosaic_api::stream::{KvSpec, KvStorage};
    const ON_DISK: KvSpec = KvSpec {
        bucket: "test_cache",
        description: "a cache under test",
        history: 1,
        max_age: Duration::ZERO,
        per_key_ttl: false,
        storage: KvStorage::File,
    };
    const CACHE: KvSpec = KvSpec { storage: KvStorage::Cache { max_bytes: 64 << 10 }, ..ON_DISK };
    mosaic_tests::init_logs();
    let nats = mosaic_tests::NatsServer::start().await.unwrap();
    let mesh = mosaic_mesh::Mesh::connect(&nats.config(), "cache-test").await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    async fn config(js: &async_nats::jetstream::Context) -> async_nats::jetstream::stream::Config {
        js.get_stream("KV_test_cache").await.unwrap().info().await.unwrap().config.clone()
    }

    mesh.bucket(&ON_DISK).await.unwrap().put("old", bytes::Bytes::from_static(b"1")).await.unwrap();
    let cache = mesh.bucket(&CACHE).await.unwrap();
    let found = config(&js).await;
    assert_eq!((found.storage, found.discard, found.max_bytes), (StorageType::Memory, DiscardPolicy::Old, 64 << 10));
    assert!(cache.get("old").await.unwrap().is_none(), "the disk bucket was replaced");

    // 400 KB into 64 KB: every write lands, the oldest make room.
    let value = bytes::Bytes::from(vec![7u8; 2048]);
    for i in 0..200 {
        cache.put(&format!("k{i}"), value.clone()).await.unwrap();
    }
    assert!(cache.get("k0").await.unwrap().is_none(), "the first written is gone");
    assert_eq!(cache.get("k199").await.unwrap().expect("the last written is kept").value, value);
    // A compare-and-set on an evicted key fails like any lost race.
    assert!(cache.update("k0", value.clone(), 1).await.unwrap().is_none());

    // Another instance opening it keeps it a cache, with its entries.
    let again = mesh.bucket(&CACHE).await.unwrap();
    assert_eq!(config(&js).await.discard, DiscardPolicy::Old);
    assert!(again.get("k199").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_and_bucket_has_a_size_limit() {
    let w = World::start().await;
    let js = async_nats::jetstream::new(w.nats.connect().await);
    let defaults = NatsConfig::default();
    let mut names = js.stream_names();
    let mut seen = 0;
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        let info = js.get_stream(&name).await.unwrap().info().await.unwrap().config.clone();
        seen += 1;
        if let Some(bucket) = name.strip_prefix("KV_") {
            assert!(info.max_bytes > 0, "bucket {bucket} has no size limit");
            if info.storage == async_nats::jetstream::stream::StorageType::File {
                assert_eq!(info.max_bytes, defaults.bucket_max_bytes, "bucket {bucket}");
            }
            continue;
        }
        assert_eq!(info.max_bytes, defaults.stream_max_bytes, "stream {name}");
        let expected = match info.retention {
            async_nats::jetstream::stream::RetentionPolicy::WorkQueue => {
                async_nats::jetstream::stream::DiscardPolicy::New
            }
            _ => async_nats::jetstream::stream::DiscardPolicy::Old,
        };
        assert_eq!(info.discard, expected, "stream {name}: a full job queue refuses, a full event stream forgets");
    }
    assert!(seen >= 10, "only {seen} streams");
    w.stop().await;
}

/// What stopping an instance relies on (`RpcServer::stop` drains its connection): a drained
/// subscription gets every message the server routed to it before the drain took effect,
/// and the rest go to the other queue member, so a busy subject loses nothing while one
/// subscriber leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_queue_subscriber_loses_no_message() {
    let nats = mosaic_tests::NatsServer::start().await.unwrap();
    let leaving = nats.connect().await;
    let staying = nats.connect().await;
    let publisher = nats.connect().await;
    let count = |client: async_nats::Client| async move {
        let mut sub = client.queue_subscribe("drain.check", "q".into()).await.unwrap();
        client.flush().await.unwrap();
        let counted = Arc::new(AtomicUsize::new(0));
        let c = counted.clone();
        let task = tokio::spawn(async move {
            while sub.next().await.is_some() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        (counted, task)
    };
    let (left, left_task) = count(leaving.clone()).await;
    let (stayed, stayed_task) = count(staying.clone()).await;
    // Paced well below what the subscribers take, so no message is dropped as a slow
    // consumer's: any loss is the drain's.
    const TOTAL: usize = 60_000;
    let sender = tokio::spawn(async move {
        for i in 0..TOTAL {
            publisher.publish("drain.check", bytes::Bytes::from_static(b"x")).await.unwrap();
            if i % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher.flush().await.unwrap();
    });
    assert!(eventually(Duration::from_secs(10), || async { left.load(Ordering::Relaxed) > 10_000 }).await);
    leaving.drain().await.unwrap();
    left_task.await.unwrap();
    sender.await.unwrap();
    let all = || left.load(Ordering::Relaxed) + stayed.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || async { all() == TOTAL }).await,
        "{} of {TOTAL} messages arrived ({} before the drain ended, {} at the other member)",
        all(),
        left.load(Ordering::Relaxed),
        stayed.load(Ordering::Relaxed)
    );
    drop(staying);
    stayed_task.abort();
}

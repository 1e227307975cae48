//! Notifications through the edge: the inbox and its coalescing, preferences, quiet hours,
//! push through the local FCM and Web Push stand-ins, email through a real SMTP server,
//! unsubscribe links, retries, dead letters, and a restart mid-send.

use mosaic_api::interaction::{NotificationKind, NotifyUser};
use mosaic_api::{Envelope, Id, PostId, UserId};
use mosaic_tests::mail::SmtpServer;
use mosaic_tests::push::{PushStandIn, Reply};
use mosaic_tests::socket::{connect, connect_since, next_of_type};
use mosaic_tests::{TestUser, World, WorldOptions, eventually, test_notification_config};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    w: World,
    push: PushStandIn,
    smtp: Option<SmtpServer>,
}

async fn world(smtp: bool, tune: impl FnOnce(&mut mosaic_notification::Config)) -> Setup {
    let push = PushStandIn::start().await.expect("push stand-in starts");
    let smtp = if smtp { Some(SmtpServer::start().await.expect("aiosmtpd starts")) } else { None };
    let mut notification = test_notification_config();
    push.configure(&mut notification);
    if let Some(s) = &smtp {
        notification.smtp.url = mosaic_mesh::config::Secret::new(s.url());
    }
    tune(&mut notification);
    let w = World::start_with(WorldOptions::default().set("notification", notification)).await;
    Setup { w, push, smtp }
}

async fn register_fcm(w: &World, user: &TestUser, token: &str) -> String {
    let r = w.client.post("/v1/devices", Some(&user.access_token), json!({"platform": "fcm", "token": token})).await;
    r.assert_status(201);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn inbox(w: &World, user: &TestUser) -> Vec<Value> {
    let r = w.client.get("/v1/notifications", &user.access_token).await;
    r.assert_status(200);
    r.body["items"].as_array().unwrap().clone()
}

async fn wait_inbox(w: &World, user: &TestUser, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let items = inbox(w, user).await;
        if check(&items) || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deliveries(w: &World, user: &TestUser, id: &str) -> Vec<Value> {
    let r = w.client.get(&format!("/v1/notifications/{id}"), &user.access_token).await;
    r.assert_status(200);
    r.body["deliveries"].as_array().unwrap().clone()
}

/// The newest delivery of `channel` once it is no longer queued (or held).
async fn settled(w: &World, user: &TestUser, id: &str, channel: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = deliveries(w, user, id).await.into_iter().find(|d| d["channel"] == channel);
        if let Some(d) = &found
            && d["status"] != "queued"
            && d["status"] != "held"
        {
            return d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{channel} delivery of {id} still pending: {found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn direct(w: &World, a: &TestUser, b: &TestUser) -> String {
    let r = w.client.post("/v1/conversations", Some(&a.access_token), json!({"member_ids": [b.id]})).await;
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_a_push_and_an_email_and_finds_the_message_on_reconnect() {
    let Setup { w, push, smtp } = world(true, |_| {}).await;
    let smtp = smtp.unwrap();
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    register_fcm(&w, &bob, "bob-phone").await;
    let sub = push.subscription();
    let endpoint_id = sub["endpoint"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    w.client
        .post("/v1/devices", Some(&bob.access_token), json!({"platform": "webpush", "subscription": sub}))
        .await
        .assert_status(201);
    let conv = direct(&w, &ada, &bob).await;

    // Bob was online, then left: his cursor is where he stopped.
    let (socket, _, ready) = connect_since(w.base(), &bob.access_token, None).await;
    let cursor = ready["cursor"].as_str().unwrap().to_owned();
    drop(socket);
    let offline = eventually(WAIT, || async {
        let m = w
            .client
            .post(&format!("/v1/conversations/{conv}/messages"), Some(&ada.access_token), json!({"text": "probe"}))
            .await;
        m.assert_status(201);
        // Messages to an online member raise no notification; wait until one does.
        tokio::time::sleep(Duration::from_millis(300)).await;
        !push.received().is_empty()
    })
    .await;
    assert!(offline, "a member without a socket is notified");
    let sent = w
        .client
        .post(&format!("/v1/conversations/{conv}/messages"), Some(&ada.access_token), json!({"text": "dinner at 8?"}))
        .await;
    sent.assert_status(201);

    // The phone (FCM HTTP v1) and the browser (Web Push, decrypted by the stand-in).
    let fcm = push.wait_for("bob-phone", 1, WAIT).await;
    let first = &fcm[0].message;
    assert!(first["notification"]["body"].as_str().unwrap().contains(&ada.username), "{first}");
    assert_eq!(first["data"]["type"], "message");
    assert!(first["android"]["ttl"].as_str().unwrap().ends_with('s'));
    let web = push.wait_for(&endpoint_id, 1, WAIT).await;
    assert!(web[0].message["body"].as_str().unwrap().contains(&ada.username));
    assert!(web[0].ttl.is_some_and(|t| t > 0));
    assert!(push.rejected().is_empty(), "the stand-in refused: {:?}", push.rejected());

    // The email (real SMTP), with a working unsubscribe header.
    let mail = smtp.wait_for(&bob.email, WAIT).await.expect("an email arrives");
    assert!(mail.header("Subject").unwrap().contains(&ada.username));
    assert_eq!(mail.header("List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    assert!(mail.unsubscribe_url().unwrap().starts_with(w.base()));
    assert!(mail.raw.contains("multipart/alternative") && mail.raw.contains("text/html"));

    // The inbox coalesces the burst of messages into one entry, with its deliveries.
    let items = wait_inbox(&w, &bob, |i| i.iter().any(|n| n["type"] == "message")).await;
    let entry = items.iter().find(|n| n["type"] == "message").unwrap();
    assert_eq!(entry["actor"]["id"], ada.id.as_str());
    assert_eq!(entry["subject_id"], conv.as_str());
    let id = entry["id"].as_str().unwrap();
    assert_eq!(settled(&w, &bob, id, "in_app").await["status"], "sent");
    assert_eq!(settled(&w, &bob, id, "push").await["status"], "sent");
    assert_eq!(settled(&w, &bob, id, "email").await["status"], "sent");

    // Back online: everything missed comes first, the message among it.
    let (_socket, replayed, _) = connect_since(w.base(), &bob.access_token, Some(&cursor)).await;
    let texts: Vec<&str> = replayed
        .iter()
        .filter(|f| f["type"] == "chat.message")
        .map(|f| f["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.last(), Some(&"dinner at 8?"), "{replayed:?}");
    assert!(replayed.iter().any(|f| f["type"] == "notification"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_turn_channels_off_and_unsubscribe_links_work_without_login() {
    let Setup { w, push, smtp } = world(true, |_| {}).await;
    let smtp = smtp.unwrap();
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    register_fcm(&w, &bob, "bob-phone").await;

    let prefs = w.client.get("/v1/notifications/preferences", &bob.access_token).await;
    prefs.assert_status(200);
    assert_eq!(prefs.body["follow"], json!({"in_app": true, "push": true, "email": false}));
    assert!(prefs.body["quiet_hours"].is_null());
    // Follows: no push, but email on.
    let mut body = prefs.body.clone();
    body["follow"] = json!({"in_app": true, "push": false, "email": true});
    let put = w
        .client
        .send(reqwest::Method::PUT, "/v1/notifications/preferences", Some(&bob.access_token), Some(body.clone()))
        .await;
    put.assert_status(200);
    for bad in [
        json!({"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Base"}}),
        json!({"quiet_hours": {"start": "9pm", "end": "07:00", "time_zone": "UTC"}}),
        json!({"like": {"in_app": "yes", "push": true, "email": false}}),
        json!({"shouting": true}),
    ] {
        w.client
            .send(reqwest::Method::PUT, "/v1/notifications/preferences", Some(&bob.access_token), Some(bad))
            .await
            .assert_problem(422, "validation_failed");
    }

    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &bob, |i| i.iter().any(|n| n["type"] == "follow")).await;
    let follow = items.iter().find(|n| n["type"] == "follow").unwrap();
    assert_eq!(follow["text"], format!("{} started following you", ada.username));
    let id = follow["id"].as_str().unwrap();
    assert_eq!(settled(&w, &bob, id, "push").await["status"], "disabled");
    assert_eq!(settled(&w, &bob, id, "email").await["status"], "sent");
    assert!(push.received().is_empty(), "push was off for follows");
    let mail = smtp.wait_for(&bob.email, WAIT).await.expect("follow email");

    // The link from the email works without a token, once per type.
    let url = mail.unsubscribe_url().unwrap();
    let path = url.strip_prefix(w.base()).unwrap();
    let (status, _, bytes) = w.client.fetch(path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap()["type"], "follow");
    let after = w.client.get("/v1/notifications/preferences", &bob.access_token).await;
    assert_eq!(after.body["follow"]["email"], false);
    assert_eq!(after.body["follow"]["in_app"], true);
    // RFC 8058 one-click POST, and forged links.
    let one_click = w.client.http().post(&url).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(one_click.status(), 200);
    let forged = path.replace("token=", "token=AAAA");
    let (status, _, _) = w.client.fetch(&forged, &[]).await;
    assert_eq!(status, 404);

    let cy = w.client.signup("cy").await;
    w.client.put(&format!("/v1/users/{}/follow", bob.id), &cy.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &bob, |i| i.iter().any(|n| n["others"] == 1)).await;
    let follow = items.iter().find(|n| n["type"] == "follow").unwrap();
    assert_eq!(follow["text"], format!("{} and 1 other started following you", cy.username));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.emails().len(), 1, "no email after unsubscribing");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_coalesce_own_actions_never_notify_and_reads_sync() {
    let Setup { w, .. } = world(false, |_| {}).await;
    let owner = w.client.signup("owner").await;
    let post = w.client.create_post(&owner.access_token, "look", &[]).await;
    let post_id = post["id"].as_str().unwrap().to_owned();
    let mut socket = connect(w.base(), &owner.access_token).await;
    let mut fans = Vec::new();
    for i in 0..3 {
        let fan = w.client.signup(&format!("fan{i}")).await;
        w.client.put(&format!("/v1/posts/{post_id}/like"), &fan.access_token).await.assert_status(204);
        fans.push(fan);
    }
    w.client.put(&format!("/v1/posts/{post_id}/like"), &owner.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &owner, |i| i.first().is_some_and(|n| n["others"] == 2)).await;
    assert_eq!(items.len(), 1, "one entry for the burst: {items:?}");
    let like = &items[0];
    assert_eq!(like["type"], "like");
    assert_eq!(like["subject_id"], post_id.as_str());
    assert_eq!(like["actors"].as_array().unwrap().len(), 3);
    assert!(like["text"].as_str().unwrap().ends_with("and 2 others liked your post"));
    assert!(like["actors"].as_array().unwrap().iter().all(|a| a["id"] != owner.id.as_str()));
    let frame = next_of_type(&mut socket, "notification").await;
    assert_eq!(frame["notification"]["type"], "like");

    let unread = w.client.get("/v1/notifications/unread_count", &owner.access_token).await;
    assert_eq!(unread.body["unread"], 1);
    let id = like["id"].as_str().unwrap();
    w.client.post("/v1/notifications/read", Some(&owner.access_token), json!({"ids": [id]})).await.assert_status(204);
    assert_eq!(next_of_type(&mut socket, "notifications.read").await["ids"][0], id);
    assert_eq!(w.client.get("/v1/notifications/unread_count", &owner.access_token).await.body["unread"], 0);
    // Someone else's entry: invisible to them.
    w.client.get(&format!("/v1/notifications/{id}"), &fans[0].access_token).await.assert_problem(404, "not_found");
    w.client
        .post("/v1/notifications/read", Some(&owner.access_token), json!({}))
        .await
        .assert_problem(422, "validation_failed");

    // A blocked fan's entries leave the inbox.
    w.client.put(&format!("/v1/users/{}/block", fans[2].id), &owner.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &owner, |i| i.first().is_some_and(|n| n["others"] == 1)).await;
    assert!(items[0]["actors"].as_array().unwrap().iter().all(|a| a["id"] != fans[2].id.as_str()));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pushes_retry_then_dead_letter_and_gone_devices_are_removed() {
    let Setup { w, push, .. } = world(false, |_| {}).await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let gone = register_fcm(&w, &bob, "tok-gone").await;
    register_fcm(&w, &bob, "tok-busy").await;
    push.script("tok-gone", &[Reply::Gone]);
    push.script("tok-busy", &[Reply::TooMany, Reply::Unavailable]);

    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    let got = push.wait_for("tok-busy", 1, WAIT).await;
    assert_eq!(got.len(), 1, "delivered after a 429 and a 503");
    let items = wait_inbox(&w, &bob, |i| !i.is_empty()).await;
    let id = items[0]["id"].as_str().unwrap();
    let delivery = settled(&w, &bob, id, "push").await;
    assert_eq!(delivery["status"], "sent");
    assert!(delivery["attempts"].as_u64().unwrap() >= 2, "{delivery}");
    let devices = w.client.get("/v1/devices", &bob.access_token).await;
    assert!(devices.body.as_array().unwrap().iter().all(|d| d["id"] != gone.as_str()), "unregistered token removed");

    // A device that never recovers: attempts run out, the job is parked with its reason.
    push.script("tok-busy", &[Reply::Unavailable; 10]);
    let cy = w.client.signup("cy").await;
    let post = w.client.create_post(&bob.access_token, "p", &[]).await;
    w.client
        .put(&format!("/v1/posts/{}/like", post["id"].as_str().unwrap()), &cy.access_token)
        .await
        .assert_status(204);
    let items = wait_inbox(&w, &bob, |i| i.iter().any(|n| n["type"] == "like")).await;
    let like = items.iter().find(|n| n["type"] == "like").unwrap()["id"].as_str().unwrap().to_owned();
    let failed = settled(&w, &bob, &like, "push").await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["detail"].as_str().unwrap().contains("503"), "{failed}");
    let parked = eventually(WAIT, || async {
        let Ok(dlq) = w.mesh.jetstream().get_stream("DEAD_LETTERS").await else { return false };
        let Ok(m) = dlq.get_last_raw_message_by_subject("dlq.DELIVERY_JOBS.notification-delivery").await else {
            return false;
        };
        m.headers.get("Mosaic-Dlq-Reason").is_some_and(|r| r.as_str().contains("503"))
    })
    .await;
    assert!(parked, "the job is in DEAD_LETTERS with its reason");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_job_is_not_sent_twice_and_a_restart_mid_send_loses_nothing() {
    let Setup { mut w, push, .. } = world(false, |_| {}).await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    register_fcm(&w, &bob, "bob-phone").await;
    let job = Envelope::new(NotifyUser {
        recipient: UserId::parse(&bob.id).unwrap(),
        kind: NotificationKind::Like,
        actor: UserId::parse(&ada.id).unwrap(),
        post_id: PostId::generate(),
        comment_id: None,
    });
    let payload = serde_json::to_vec(&job).unwrap();
    // The same job twice, past JetStream's de-duplication (as a redelivery would be).
    w.mesh.publish_with_id("jobs.notify.interaction", "copy-1", payload.clone().into()).await.unwrap();
    push.wait_for("bob-phone", 1, WAIT).await;
    w.mesh.publish_with_id("jobs.notify.interaction", "copy-2", payload.into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(push.received().len(), 1, "one push for one job");

    // The sender dies while the provider holds the request; another instance finishes it.
    push.script("bob-phone", &[Reply::Hang]);
    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    assert!(eventually(WAIT, || async { !push.hung().is_empty() }).await);
    w.take_instance("notification").abort().await;
    // The world's settings still point the new instance at the stand-in.
    w.add_instance("notification").await.unwrap();
    let got = push.wait_for("bob-phone", 2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "the follow push went out after the restart");
    assert_eq!(got[1].message["data"]["type"], "follow");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(push.received().len(), 2, "and only once");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_pushes_until_one_digest_and_stale_pushes_are_dropped() {
    let Setup { w, push, .. } = world(false, |_| {}).await;
    let bob = w.client.signup("bob").await;
    register_fcm(&w, &bob, "bob-phone").await;
    // Quiet hours around now, in a zone with daylight saving.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::America::New_York);
    let fmt = |t: chrono::DateTime<chrono_tz::Tz>| t.format("%H:%M").to_string();
    let quiet = json!({"quiet_hours": {
        "start": fmt(now - chrono::Duration::hours(1)),
        "end": fmt(now + chrono::Duration::hours(1)),
        "time_zone": "America/New_York",
    }});
    w.client
        .send(reqwest::Method::PUT, "/v1/notifications/preferences", Some(&bob.access_token), Some(quiet))
        .await
        .assert_status(200);
    let mut fans = Vec::new();
    for i in 0..3 {
        let fan = w.client.signup(&format!("night{i}")).await;
        w.client.put(&format!("/v1/users/{}/follow", bob.id), &fan.access_token).await.assert_status(204);
        fans.push(fan);
    }
    let items = wait_inbox(&w, &bob, |i| i.first().is_some_and(|n| n["others"] == 2)).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let held = deliveries(&w, &bob, &id).await;
    assert_eq!(held.iter().filter(|d| d["channel"] == "push" && d["status"] == "held").count(), 3, "{held:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(push.received().is_empty(), "nothing pushed during quiet hours");

    // The quiet hours end (moved to now rather than waiting an hour): one digest for all.
    w.db("notification")
        .await
        .query("UPDATE delivery SET hold_until = time::now() - 1s WHERE recipient = $bob AND status = 'held'")
        .bind(("bob", bob.id.clone()))
        .await
        .unwrap();
    let got = push.wait_for("bob-phone", 1, WAIT).await;
    assert_eq!(got[0].message["notification"]["body"], "You have 3 new notifications");
    assert_eq!(got[0].message["data"]["type"], "digest");
    for d in held.iter().filter(|d| d["channel"] == "push") {
        assert_eq!(d["status"], "held");
    }
    let sent = eventually(WAIT, || async {
        deliveries(&w, &bob, &id).await.iter().filter(|d| d["channel"] == "push").all(|d| d["status"] == "sent")
    })
    .await;
    assert!(sent, "held pushes count as sent in the digest");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(push.received().len(), 1, "one digest, not one per release pass");
    w.stop().await;

    // A push past its time-to-live is dropped, not sent.
    let Setup { w, push, .. } = world(false, |c| c.push_ttl_secs = 0).await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    register_fcm(&w, &bob, "bob-phone").await;
    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &bob, |i| !i.is_empty()).await;
    let delivery = settled(&w, &bob, items[0]["id"].as_str().unwrap(), "push").await;
    assert_eq!(delivery["status"], "expired");
    assert!(push.received().is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_validated_deduplicated_and_private() {
    let Setup { w, push, .. } = world(false, |c| c.push_per_hour = 1).await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let t = Some(bob.access_token.as_str());
    let first = register_fcm(&w, &bob, "same-token").await;
    assert_eq!(register_fcm(&w, &bob, "same-token").await, first, "one device per token");
    for bad in [
        json!({"platform": "fcm"}),
        json!({"platform": "fcm", "token": "has space"}),
        json!({"platform": "webpush", "subscription": {"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}}),
        json!({"platform": "webpush", "subscription": {"endpoint": "ftp://x", "keys": {"p256dh": "", "auth": ""}}}),
        json!({"platform": "carrier-pigeon", "token": "x"}),
    ] {
        w.client.post("/v1/devices", t, bad).await.assert_problem(422, "validation_failed");
    }
    w.client.delete(&format!("/v1/devices/{first}"), &ada.access_token).await.assert_problem(404, "not_found");
    let key = w.client.send(reqwest::Method::GET, "/v1/devices/webpush/key", None, None).await;
    key.assert_status(200);
    assert_eq!(base64_len(key.body["public_key"].as_str().unwrap()), 65);

    // Over the hourly limit: the inbox keeps it, the push is dropped.
    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    push.wait_for("same-token", 1, WAIT).await;
    let cy = w.client.signup("cy").await;
    let post = w.client.create_post(&bob.access_token, "p", &[]).await;
    w.client
        .put(&format!("/v1/posts/{}/like", post["id"].as_str().unwrap()), &cy.access_token)
        .await
        .assert_status(204);
    let items = wait_inbox(&w, &bob, |i| i.iter().any(|n| n["type"] == "like")).await;
    let like = items.iter().find(|n| n["type"] == "like").unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(settled(&w, &bob, &like, "push").await["status"], "rate_limited");

    w.client.delete(&format!("/v1/devices/{first}"), &bob.access_token).await.assert_status(204);
    assert!(w.client.get("/v1/devices", &bob.access_token).await.body.as_array().unwrap().is_empty());
    w.stop().await;
}

fn base64_len(s: &str) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map(|b| b.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_inside_the_network_are_refused_with_one_reason() {
    let Setup { w, push, .. } = world(false, |c| {
        c.webpush.allow_http_endpoints = false;
        c.webpush.allow_private_endpoints = false;
    })
    .await;
    let bob = w.client.signup("bob").await;
    let keys = push.subscription()["keys"].clone();
    let mut reasons = Vec::new();
    for endpoint in [
        "https://127.0.0.1/push/1",
        "https://10.0.0.1/push/1",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]:8443/push/1",
        "https://[::ffff:192.168.0.1]/push/1",
        "https://localhost/push/1",
        "http://push.example.com/push/1",
    ] {
        let body = json!({"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": keys}});
        let r = w.client.post("/v1/devices", Some(&bob.access_token), body).await;
        r.assert_problem(422, "validation_failed");
        reasons.push(r.body["detail"].as_str().unwrap_or_default().to_owned());
    }
    // One reason for all: which addresses exist behind the service is not for a client to learn.
    reasons.dedup();
    assert_eq!(reasons, ["the subscription endpoint is not an allowed push service"]);
    let devices = w.client.get("/v1/devices", &bob.access_token).await;
    assert_eq!(devices.body.as_array().map(Vec::len), Some(0), "{}", devices.body);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_that_redirects_is_not_followed() {
    let Setup { w, push, .. } = world(false, |_| {}).await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    // A "push service" that sends every push on to a real subscription's endpoint.
    let sub = push.subscription();
    let target = sub["endpoint"].as_str().unwrap().to_owned();
    let target_id = target.rsplit('/').next().unwrap().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}/push/elsewhere", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (axum::http::StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, target)]) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut redirected = sub.clone();
    redirected["endpoint"] = json!(redirector);
    w.client
        .post("/v1/devices", Some(&bob.access_token), json!({"platform": "webpush", "subscription": redirected}))
        .await
        .assert_status(201);

    w.client.put(&format!("/v1/users/{}/follow", bob.id), &ada.access_token).await.assert_status(204);
    let items = wait_inbox(&w, &bob, |i| !i.is_empty()).await;
    let delivery = settled(&w, &bob, items[0]["id"].as_str().unwrap(), "push").await;
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert!(delivery["detail"].as_str().unwrap().contains("307"), "{delivery}");
    // The delivery settled, so the send is over: nothing reached where the redirect pointed.
    assert!(push.received().iter().all(|r| r.device != target_id), "the redirect was followed");
    w.stop().await;
}

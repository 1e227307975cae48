//! The warehouse and the daily reports: events made through the real edge reach Parquet and
//! the numbers exactly (redeliveries included), reports are stored and emailed once per
//! recipient even with two instances, and reports honour email preferences.

use mosaic_analytics::warehouse::{Warehouse, int_at};
use mosaic_tests::mail::SmtpServer;
use mosaic_tests::{TestUser, World, WorldOptions, test_notification_config};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn report(w: &World, user: &TestUser, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = w.client.get("/v1/analytics/me/daily", &user.access_token).await;
        r.assert_status(200);
        if check(&r.body) || tokio::time::Instant::now() > deadline {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn view(w: &World, viewer: &TestUser, post: &str) {
    w.client.post(&format!("/v1/posts/{post}/views"), Some(&viewer.access_token), json!({})).await.assert_status(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_through_the_edge_are_counted_exactly_once() {
    let w = World::start().await;
    let creator = w.client.signup("creator").await;
    let mut fans: Vec<TestUser> = Vec::new();
    for i in 0..3 {
        fans.push(w.client.signup(&format!("fan{i}")).await);
    }
    let p1 = w.client.create_post(&creator.access_token, "one", &[]).await["id"].as_str().unwrap().to_owned();
    let p2 = w.client.create_post(&creator.access_token, "two", &[]).await["id"].as_str().unwrap().to_owned();
    // Repeated views of one post by one viewer count once (within a view window).
    mosaic_tests::within_one_view_window(Duration::from_secs(20)).await;
    for _ in 0..3 {
        view(&w, &fans[0], &p1).await;
    }
    view(&w, &fans[1], &p1).await;
    view(&w, &fans[2], &p2).await;
    view(&w, &fans[2], &p2).await;
    let like = format!("/v1/posts/{p1}/like");
    w.client.put(&like, &fans[0].access_token).await.assert_status(204);
    w.client.put(&like, &fans[1].access_token).await.assert_status(204);
    // Unlike and like again: still one liker.
    w.client.delete(&like, &fans[1].access_token).await.assert_status(204);
    w.client.put(&like, &fans[1].access_token).await.assert_status(204);
    for text in ["nice", "again"] {
        w.client
            .post(&format!("/v1/posts/{p2}/comments"), Some(&fans[2].access_token), json!({"text": text}))
            .await
            .assert_status(201);
    }
    for fan in &fans[..2] {
        w.client.put(&format!("/v1/users/{}/follow", creator.id), &fan.access_token).await.assert_status(204);
    }

    let r =
        report(&w, &creator, |r| r["views"] == 3 && r["new_followers"] == 2 && r["comments"] == 2 && r["likes"] == 2)
            .await;
    assert_eq!(
        (
            r["views"].clone(),
            r["unique_viewers"].clone(),
            r["likes"].clone(),
            r["comments"].clone(),
            r["new_followers"].clone()
        ),
        (json!(3), json!(3), json!(2), json!(2), json!(2)),
        "{r}"
    );
    assert_eq!(r["top_posts"][0]["post_id"], p1.as_str());
    assert_eq!((r["top_posts"][0]["views"].clone(), r["top_posts"][0]["likes"].clone()), (json!(2), json!(2)));
    assert_eq!(r["views_by_hour"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 3);
    assert_eq!(r["complete"], false, "today is not over");

    // A view delivered twice (as after a crash before its acknowledgement) is written twice
    // and counted once.
    let views = w.mesh.jetstream().get_stream("EVENTS_VIEW").await.unwrap();
    let first = views.get_raw_message(1).await.unwrap();
    w.mesh.publish_with_id("events.view.post", "redelivered-1", first.payload.clone()).await.unwrap();
    let warehouse = Warehouse::open(w.storage().store.clone(), "analytics").await.unwrap();
    let written = mosaic_tests::eventually(WAIT, || async {
        let b = warehouse.query("SELECT COUNT(*) FROM events WHERE kind = 'view'").await.unwrap();
        int_at(b[0].column(0).as_ref(), 0) == 4
    })
    .await;
    assert!(written, "the duplicate reached the warehouse");
    assert_eq!(report(&w, &creator, |_| true).await["views"], 3);
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let files = warehouse.files(chrono::Utc::now().date_naive()).await.unwrap();
    assert!(
        !files.is_empty() && files.iter().all(|f| f.as_ref().starts_with(&format!("analytics/events/date={day}/")))
    );

    // Someone with no activity gets zeros, not an error; dates are checked.
    let r = w.client.get("/v1/analytics/me/daily", &fans[0].access_token).await;
    assert_eq!((r.body["views"].clone(), r.body["top_posts"].clone()), (json!(0), json!([])));
    w.client
        .get("/v1/analytics/me/daily?date=2999-01-01", &creator.access_token)
        .await
        .assert_problem(422, "validation_failed");
    w.client
        .get("/v1/analytics/me/daily?date=yesterday", &creator.access_token)
        .await
        .assert_problem(422, "validation_failed");

    // The platform report is for administrators.
    w.client.get("/v1/admin/analytics/daily", &creator.access_token).await.assert_problem(403, "forbidden");
    let boss = w.admin("boss").await;
    let p = w.client.get("/v1/admin/analytics/daily", &boss.access_token).await;
    p.assert_status(200);
    assert_eq!(
        (p.body["views"].clone(), p.body["likes"].clone(), p.body["posts"].clone()),
        (json!(3), json!(2), json!(2))
    );
    assert!(p.body["new_users"].as_u64().unwrap() >= 4, "{}", p.body);
    assert_eq!(p.body["top_creators"][0]["user_id"], creator.id.as_str());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_stored_and_emailed_once_per_recipient_even_with_two_instances() {
    let smtp = SmtpServer::start().await.expect("aiosmtpd starts");
    let mut notification = test_notification_config();
    notification.smtp.url = mosaic_mesh::config::Secret::new(smtp.url());
    let w =
        World::start_with(WorldOptions::default().set("notification", notification).instances("analytics", 2)).await;
    let boss = w.admin("boss").await;
    let creator = w.client.signup("maker").await;
    let quiet = w.client.signup("quiet").await;
    let fan = w.client.signup("fan").await;
    // One creator turned report emails off.
    let mut prefs = w.client.get("/v1/notifications/preferences", &quiet.access_token).await.body;
    prefs["report"]["email"] = json!(false);
    w.client
        .send(reqwest::Method::PUT, "/v1/notifications/preferences", Some(&quiet.access_token), Some(prefs))
        .await
        .assert_status(200);
    for author in [&creator, &quiet] {
        let post = w.client.create_post(&author.access_token, "hello", &[]).await;
        view(&w, &fan, post["id"].as_str().unwrap()).await;
    }
    report(&w, &creator, |r| r["views"] == 1).await;
    report(&w, &quiet, |r| r["views"] == 1).await;

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = format!("/v1/admin/analytics/reports/run?date={today}");
    w.client.post(&path, Some(&creator.access_token), json!({})).await.assert_problem(403, "forbidden");
    // Run twice, on whichever instances answer: the same emails, once.
    for _ in 0..2 {
        let run = w.client.post(&path, Some(&boss.access_token), json!({})).await;
        run.assert_status(200);
        assert!(run.body["creators"].as_u64().unwrap() >= 2, "{}", run.body);
    }
    let mail = smtp.wait_for(&creator.email, WAIT).await.expect("the creator's report arrives");
    assert!(mail.header("Subject").unwrap().contains("Your Mosaic day"), "{:?}", mail.header("Subject"));
    assert!(mail.raw.contains("multipart/related") && mail.raw.contains("image/png"), "the chart is inline");
    assert!(mail.unsubscribe_url().is_some());
    smtp.wait_for(&boss.email, WAIT).await.expect("the platform report reaches the administrator");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = |who: &TestUser| {
        smtp.emails().iter().filter(|e| e.header("To").is_some_and(|t| t.contains(&who.email))).count()
    };
    assert_eq!(to(&creator), 1, "one report email per recipient per day");
    assert_eq!(to(&boss), 1);
    assert_eq!(to(&quiet), 0, "report emails turned off");

    // The stored report is what the endpoint serves now, and the inbox has it.
    let stored = w.client.get(&format!("/v1/analytics/me/daily?date={today}"), &creator.access_token).await;
    assert_eq!(stored.body["views"], 1);
    let inbox = w.client.get("/v1/notifications", &creator.access_token).await;
    assert!(inbox.body["items"].as_array().unwrap().iter().any(|n| n["type"] == "report"), "{}", inbox.body);
    w.stop().await;
}

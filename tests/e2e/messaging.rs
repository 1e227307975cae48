//! Conversations and chat through the edge: real-time delivery, receipts, unread counts,
//! idempotent sends, membership, blocks, replay on reconnect.

use futures::SinkExt;
use mosaic_tests::socket::{Socket, connect, connect_since, next_of_type, try_next_json};
use mosaic_tests::{TestUser, World, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn direct(w: &World, a: &TestUser, b: &TestUser) -> String {
    let r = w.client.post("/v1/conversations", Some(&a.access_token), json!({"member_ids": [b.id]})).await;
    assert!(r.status.as_u16() == 201 || r.status.as_u16() == 200, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn send(w: &World, from: &TestUser, conv: &str, text: &str) -> Value {
    let r = w
        .client
        .post(&format!("/v1/conversations/{conv}/messages"), Some(&from.access_token), json!({"text": text}))
        .await;
    r.assert_status(201);
    r.body
}

async fn ws_send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

async fn conversation_of(w: &World, user: &TestUser, conv: &str) -> Value {
    let list = w.client.get("/v1/conversations", &user.access_token).await;
    list.assert_status(200);
    list.body["items"].as_array().unwrap().iter().find(|c| c["id"] == conv).cloned().expect("listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_real_time_and_a_third_is_refused() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let eve = w.client.signup("eve").await;

    // One 1:1 conversation per pair, whoever starts it and however often.
    let r = w.client.post("/v1/conversations", Some(&ada.access_token), json!({"member_ids": [bob.id]})).await;
    r.assert_status(201);
    let conv = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["kind"], "direct");
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2);
    let again =
        w.client.post("/v1/conversations", Some(&bob.access_token), json!({"member_ids": [ada.id, bob.id]})).await;
    again.assert_status(200);
    assert_eq!(again.body["id"], conv.as_str());

    let mut ada_ws = connect(w.base(), &ada.access_token).await;
    let mut ada_phone = connect(w.base(), &ada.access_token).await;
    let mut bob_ws = connect(w.base(), &bob.access_token).await;

    // Over the socket: the sender gets `chat.sent`, everyone's devices `chat.message`.
    ws_send(&mut ada_ws, json!({"type": "chat.send", "conversation_id": conv, "text": "hi bob", "client_id": "c-1"}))
        .await;
    let sent = next_of_type(&mut ada_ws, "chat.sent").await;
    assert_eq!(sent["client_id"], "c-1");
    assert_eq!(sent["message"]["seq"], 1);
    let got = next_of_type(&mut bob_ws, "chat.message").await;
    assert_eq!(got["message"]["text"], "hi bob");
    assert_eq!(got["message"]["sender"]["username"], ada.username.as_str());
    assert!(got["cursor"].is_string(), "kept frames carry a cursor: {got}");
    assert_eq!(next_of_type(&mut ada_phone, "chat.message").await["message"]["seq"], 1);

    // Over HTTP.
    let reply = send(&w, &bob, &conv, "hi ada").await;
    assert_eq!(reply["seq"], 2);
    // Ada's own first message also reaches this socket as `chat.message`, before or after
    // its `chat.sent`; whichever came, the next new message is Bob's reply.
    let mut got = next_of_type(&mut ada_ws, "chat.message").await;
    if got["message"]["seq"] == 1 {
        got = next_of_type(&mut ada_ws, "chat.message").await;
    }
    assert_eq!(got["message"]["id"], reply["id"]);

    // Typing reaches the others, not the typist.
    ws_send(&mut bob_ws, json!({"type": "chat.typing", "conversation_id": conv})).await;
    let typing = next_of_type(&mut ada_ws, "chat.typing").await;
    assert_eq!(typing["user_id"], bob.id.as_str());

    // Unread counts are exact; reading clears them on every device of the reader and shows
    // the receipt to the others.
    assert_eq!(conversation_of(&w, &ada, &conv).await["unread_count"], 1);
    assert_eq!(conversation_of(&w, &bob, &conv).await["unread_count"], 0);
    w.client
        .post(&format!("/v1/conversations/{conv}/read"), Some(&ada.access_token), json!({"up_to": reply["id"]}))
        .await
        .assert_status(204);
    let mine = next_of_type(&mut ada_phone, "chat.read").await;
    assert_eq!((mine["unread"].clone(), mine["seq"].clone()), (json!(0), json!(2)));
    let theirs = next_of_type(&mut bob_ws, "chat.read").await;
    assert_eq!(theirs["user_id"], ada.id.as_str());
    assert!(theirs.get("unread").is_none(), "others' unread counts are private: {theirs}");
    assert_eq!(conversation_of(&w, &ada, &conv).await["unread_count"], 0);
    let ada_member = conversation_of(&w, &bob, &conv).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["id"] == ada.id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(ada_member["read_seq"], 2);

    // History, newest first, paged.
    let page = w.client.get(&format!("/v1/conversations/{conv}/messages?limit=1"), &bob.access_token).await;
    page.assert_status(200);
    assert_eq!(page.body["items"][0]["seq"], 2);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest =
        w.client.get(&format!("/v1/conversations/{conv}/messages?limit=1&cursor={cursor}"), &bob.access_token).await;
    assert_eq!(rest.body["items"][0]["seq"], 1);
    assert!(rest.body["next_cursor"].is_null());

    // Someone else can neither read nor write nor learn that it exists.
    for r in [
        w.client.get(&format!("/v1/conversations/{conv}/messages"), &eve.access_token).await,
        w.client.get(&format!("/v1/conversations/{conv}"), &eve.access_token).await,
        w.client
            .post(&format!("/v1/conversations/{conv}/messages"), Some(&eve.access_token), json!({"text": "let me in"}))
            .await,
        w.client
            .post(&format!("/v1/conversations/{conv}/read"), Some(&eve.access_token), json!({"up_to": reply["id"]}))
            .await,
    ] {
        r.assert_problem(404, "not_found");
    }
    let mut eve_ws = connect(w.base(), &eve.access_token).await;
    ws_send(&mut eve_ws, json!({"type": "chat.send", "conversation_id": conv, "text": "x", "client_id": "e1"})).await;
    let err = next_of_type(&mut eve_ws, "error").await;
    assert_eq!((err["code"].clone(), err["client_id"].clone()), (json!("not_found"), json!("e1")));
    assert!(try_next_json(&mut bob_ws, Duration::from_millis(300)).await.is_none_or(|f| f["type"] != "chat.message"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_retried_sends_get_one_gapless_order() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let conv = direct(&w, &ada, &bob).await;
    let path = format!("/v1/conversations/{conv}/messages");
    // 24 sends at once from both sides, each also retried at once with its client_id.
    let sends = (0..24).map(|i| {
        let client = w.client.clone();
        let token = if i % 2 == 0 { ada.access_token.clone() } else { bob.access_token.clone() };
        let path = path.clone();
        async move {
            let body = json!({"text": format!("m{i}"), "client_id": format!("k{i}")});
            let (a, b) =
                tokio::join!(client.post(&path, Some(&token), body.clone()), client.post(&path, Some(&token), body));
            a.assert_status(201);
            b.assert_status(201);
            assert_eq!(a.body["id"], b.body["id"], "a retry returns the first message");
            a.body["seq"].as_u64().unwrap()
        }
    });
    let mut seqs: Vec<u64> = futures::future::join_all(sends).await;
    seqs.sort();
    assert_eq!(seqs, (1..=24).collect::<Vec<_>>(), "sequence numbers are unique and gapless");
    let history = w.client.get(&format!("{path}?limit=100"), &ada.access_token).await;
    assert_eq!(history.body["items"].as_array().unwrap().len(), 24);
    // Bob sent last or not: his unread count is exactly ada's messages after his last one.
    let bob_view = conversation_of(&w, &bob, &conv).await;
    let items = history.body["items"].as_array().unwrap();
    let unread = items.iter().take_while(|m| m["sender"]["id"] != bob.id.as_str()).count();
    assert_eq!(bob_view["unread_count"], unread);
    assert_eq!(bob_view["last_seq"], 24);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let conv = direct(&w, &ada, &bob).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let t = Some(ada.access_token.as_str());
    w.client.post(&path, t, json!({"text": "   "})).await.assert_problem(422, "validation_failed");
    w.client.post(&path, t, json!({"text": "x".repeat(4001)})).await.assert_problem(422, "validation_failed");
    w.client
        .post(&path, t, json!({"text": "ok", "client_id": "has spaces"}))
        .await
        .assert_problem(422, "validation_failed");
    w.client.post(&path, t, json!({"text": 5})).await.assert_problem(422, "validation_failed");
    w.client.post(&path, t, json!({"text": "ok", "extra": true})).await.assert_problem(422, "validation_failed");
    let raw = w
        .client
        .http()
        .post(format!("{}{path}", w.base()))
        .bearer_auth(&ada.access_token)
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    mosaic_tests::client::Client::read(raw).await.assert_problem(400, "bad_request");
    w.client.post("/v1/conversations/nope/messages", t, json!({"text": "hi"})).await.assert_problem(404, "not_found");
    w.client.post("/v1/conversations", t, json!({"member_ids": []})).await.assert_problem(422, "validation_failed");
    w.client
        .post("/v1/conversations", t, json!({"member_ids": [ada.id]}))
        .await
        .assert_problem(422, "validation_failed");
    w.client.post("/v1/conversations", t, json!({"member_ids": ["ghost"]})).await.assert_problem(404, "not_found");
    let crowd: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    w.client.post("/v1/conversations", t, json!({"member_ids": crowd})).await.assert_problem(422, "validation_failed");
    w.client
        .post(&format!("/v1/conversations/{conv}/read"), t, json!({"up_to": "not-a-message"}))
        .await
        .assert_problem(404, "not_found");
    w.client
        .post(&format!("/v1/conversations/{conv}/leave"), t, json!({}))
        .await
        .assert_problem(422, "validation_failed");
    w.client.send(reqwest::Method::GET, "/v1/conversations", None, None).await.assert_problem(401, "unauthorized");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_take_members_and_let_them_leave() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let cy = w.client.signup("cy").await;
    let dee = w.client.signup("dee").await;
    let r = w
        .client
        .post("/v1/conversations", Some(&ada.access_token), json!({"member_ids": [bob.id, cy.id], "title": "  trip  "}))
        .await;
    r.assert_status(201);
    assert_eq!((r.body["kind"].clone(), r.body["title"].clone()), (json!("group"), json!("trip")));
    let group = r.body["id"].as_str().unwrap().to_owned();
    let before = send(&w, &bob, &group, "before dee").await;
    let added = w
        .client
        .post(&format!("/v1/conversations/{group}/members"), Some(&cy.access_token), json!({"member_ids": [dee.id]}))
        .await;
    added.assert_status(200);
    assert_eq!(added.body["members"].as_array().unwrap().len(), 4);
    // A newcomer has nothing unread from before they joined.
    assert_eq!(conversation_of(&w, &dee, &group).await["unread_count"], 0);
    send(&w, &ada, &group, "welcome dee").await;
    assert_eq!(conversation_of(&w, &dee, &group).await["unread_count"], 1);
    assert_eq!(conversation_of(&w, &cy, &group).await["unread_count"], 2);
    w.client
        .post(&format!("/v1/conversations/{group}/leave"), Some(&bob.access_token), json!({}))
        .await
        .assert_status(204);
    let after = w.client.get(&format!("/v1/conversations/{group}/messages"), &bob.access_token).await;
    after.assert_problem(404, "not_found");
    let view = w.client.get(&format!("/v1/conversations/{group}"), &ada.access_token).await;
    assert_eq!(view.body["members"].as_array().unwrap().len(), 3);
    assert_eq!(view.body["last_message"]["text"], "welcome dee");
    assert!(before["id"].is_string());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_stops_messages_both_ways() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let conv = direct(&w, &ada, &bob).await;
    send(&w, &bob, &conv, "hello").await;
    w.client.put(&format!("/v1/users/{}/block", bob.id), &ada.access_token).await.assert_status(204);
    let path = format!("/v1/conversations/{conv}/messages");
    // The block reaches the messaging service through an event: within moments.
    let refused = eventually(Duration::from_secs(5), || async {
        w.client.post(&path, Some(&bob.access_token), json!({"text": "are you there?"})).await.status.as_u16() == 403
    })
    .await;
    assert!(refused, "a blocked user cannot message the blocker");
    w.client.post(&path, Some(&ada.access_token), json!({"text": "bye"})).await.assert_problem(403, "forbidden");
    w.client
        .post("/v1/conversations", Some(&bob.access_token), json!({"member_ids": [ada.id], "title": "sneaky group"}))
        .await
        .assert_problem(403, "forbidden");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_socket_gets_exactly_what_it_missed_in_order() {
    let w = World::start().await;
    let ada = w.client.signup("ada").await;
    let bob = w.client.signup("bob").await;
    let conv = direct(&w, &ada, &bob).await;
    let (mut socket, _, ready) = connect_since(w.base(), &bob.access_token, None).await;
    send(&w, &ada, &conv, "seen live").await;
    let live = next_of_type(&mut socket, "chat.message").await;
    assert_eq!(live["message"]["text"], "seen live");
    assert!(ready["cursor"].is_string());
    let cursor = live["cursor"].as_str().unwrap().to_owned();
    drop(socket);

    let mut missed = Vec::new();
    for i in 1..=3 {
        missed.push(send(&w, &ada, &conv, &format!("missed {i}")).await);
    }
    // Replayed in order, each once, then `ready`; then live frames.
    let (mut socket, replayed, ready) = connect_since(w.base(), &bob.access_token, Some(&cursor)).await;
    let texts: Vec<&str> = replayed
        .iter()
        .filter(|f| f["type"] == "chat.message")
        .map(|f| f["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["missed 1", "missed 2", "missed 3"], "replay: {replayed:?}");
    assert_eq!(ready["replayed"], replayed.len());
    assert_eq!(ready["cursor"], replayed.last().unwrap()["cursor"]);
    send(&w, &ada, &conv, "live again").await;
    assert_eq!(next_of_type(&mut socket, "chat.message").await["message"]["text"], "live again");
    assert!(try_next_json(&mut socket, Duration::from_millis(300)).await.is_none_or(|f| f["type"] != "chat.message"));

    // From the second missed message on: only what came after it.
    let second =
        replayed.iter().find(|f| f["message"]["text"] == "missed 2").unwrap()["cursor"].as_str().unwrap().to_owned();
    let (_, after_second, _) = connect_since(w.base(), &bob.access_token, Some(&second)).await;
    let texts: Vec<&str> = after_second
        .iter()
        .filter(|f| f["type"] == "chat.message")
        .map(|f| f["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["missed 3", "live again"]);

    // A cursor from nowhere (or from before what is kept) is said so, not skipped silently.
    for bad in ["garbage", "0190a1b2c3d47000800000000000abcd", "s0"] {
        let (_, before, ready) = connect_since(w.base(), &bob.access_token, Some(bad)).await;
        if bad == "s0" {
            // Everything is still kept here, so from the very start is a complete replay.
            assert!(before.iter().all(|f| f["type"] != "cursor.expired"));
            continue;
        }
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["type"], "cursor.expired");
        assert!(ready["cursor"].is_string());
    }
    w.stop().await;
}

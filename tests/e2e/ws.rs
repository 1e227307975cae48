//! `GET /v1/ws`: authentication, ping, push forwarding, closing on revocation.

use futures::{SinkExt, StreamExt};
use mosaic_api::{Id, UserId};
use mosaic_tests::World;
use mosaic_tests::socket::{self, Socket, next_json};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

fn ws_url(w: &World, query: &str) -> String {
    socket::ws_url(w.base(), query)
}

async fn connect(w: &World, token: &str) -> Socket {
    socket::connect(w.base(), token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_and_pushes_are_forwarded() {
    let w = World::start().await;
    let u = w.client.signup("sock").await;
    let mut socket = connect(&w, &u.access_token).await;
    socket.send(Message::text(json!({"type": "ping", "id": "p1"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "pong", "id": "p1"}));

    // A second socket of the same user shares the subscription; both get the push.
    let mut second = connect(&w, &u.access_token).await;
    let user = UserId::parse(&u.id).unwrap();
    let frame = json!({"type": "notification", "id": "n1", "note": "hello"});
    w.mesh.push(&user, &frame).await.unwrap();
    assert_eq!(next_json(&mut socket).await, frame);
    assert_eq!(next_json(&mut second).await, frame);

    // Someone else's frames never arrive here.
    let other = w.client.signup("other").await;
    w.mesh.push(&UserId::parse(&other.id).unwrap(), &json!({"type": "notification", "id": "x"})).await.unwrap();
    socket.send(Message::text(json!({"type": "ping"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "pong"}));

    socket.send(Message::text("{not json")).await.unwrap();
    let err = next_json(&mut socket).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "bad_request");
    socket.send(Message::text(json!({"type": "chat.launch_rockets"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "error");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_may_travel_in_the_subprotocol_header() {
    let w = World::start().await;
    let u = w.client.signup("proto").await;
    let mut request = ws_url(&w, "").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("bearer, {}", u.access_token).parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("ws connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    assert_eq!(next_json(&mut socket).await["type"], "ready");
    socket.send(Message::text(json!({"type": "ping"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "pong");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let w = World::start().await;
    for query in ["", "?access_token=garbage"] {
        match tokio_tungstenite::connect_async(ws_url(&w, query)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], "unauthorized");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_users_socket_is_closed() {
    let w = World::start().await;
    let boss = w.admin("boss").await;
    let u = w.client.signup("closing").await;
    let mut socket = connect(&w, &u.access_token).await;
    w.client
        .post(&format!("/v1/admin/users/{}/suspend", u.id), Some(&boss.access_token), json!({}))
        .await
        .assert_status(204);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = socket.next().await {
            if let Ok(Message::Close(Some(frame))) = msg {
                return Some(u16::from(frame.code));
            }
        }
        None
    })
    .await
    .expect("socket closes within 5 s");
    assert_eq!(closed, Some(4003));
    w.stop().await;
}

/// The status an upgrade was refused with.
async fn refused(w: &World, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(ws_url(w, &format!("?access_token={token}"))).await {
        Err(tungstenite::Error::Http(res)) => res.status().as_u16(),
        Ok(_) => panic!("the socket opened"),
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_capped_per_user_and_per_address() {
    let options = mosaic_tests::WorldOptions::default().set("edge.ws_max_per_user", 2).set("edge.ws_max_per_ip", 3);
    let w = World::start_with(options).await;
    let ann = w.client.signup("ann").await;
    let ben = w.client.signup("ben").await;
    let first = connect(&w, &ann.access_token).await;
    let _second = connect(&w, &ann.access_token).await;
    assert_eq!(refused(&w, &ann.access_token).await, 429, "a third socket of one user");
    // Another user from the same address: one more fits, then the address is full.
    let _ben = connect(&w, &ben.access_token).await;
    assert_eq!(refused(&w, &ben.access_token).await, 429, "a fourth socket from one address");
    // Closing a socket gives its place back.
    drop(first);
    let reopened = mosaic_tests::eventually(Duration::from_secs(5), || async {
        tokio_tungstenite::connect_async(ws_url(&w, &format!("?access_token={}", ann.access_token))).await.is_ok()
    });
    assert!(reopened.await, "a closed socket's place was given back");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_slowed_down() {
    let w = World::start_with(mosaic_tests::WorldOptions::default().set("edge.ws_frames_per_sec", 5)).await;
    let u = w.client.signup("flood").await;
    let mut socket = connect(&w, &u.access_token).await;
    let started = std::time::Instant::now();
    for i in 0..60 {
        socket.send(Message::text(json!({"type": "ping", "id": format!("f{i}")}).to_string())).await.unwrap();
    }
    let sending = started.elapsed();
    // Tokens come back at five a second: a second later one more ping is taken.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    socket.send(Message::text(json!({"type": "ping", "id": "after"}).to_string())).await.unwrap();
    let (mut pongs, mut refusals) = (0, 0);
    loop {
        let frame = next_json(&mut socket).await;
        match frame["type"].as_str() {
            Some("pong") if frame["id"] == "after" => break,
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                refusals += 1;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // A burst of twice the rate, plus what the time spent sending earned, plus a second's
    // worth for the server's own pace through them.
    let earned = (sending.as_secs_f64() * 5.0).ceil() as usize + 5;
    assert!((10..=10 + earned).contains(&pongs), "{pongs} of 60 flooded pings answered (sending took {sending:?})");
    assert!(refusals >= 1, "the client was told it sends too fast");
    w.stop().await;
}

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

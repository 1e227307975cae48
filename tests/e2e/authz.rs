//! The authorization matrix: every route of the edge, asked by nobody, by another user, by
//! a suspended user and by an administrator, about resources that belong to someone else,
//! gets the status that docs/API.md documents. The routes come from `/openapi.json`, so a
//! route added without a row here fails the test.

use mosaic_tests::media::png_with_alpha;
use mosaic_tests::{TestUser, World, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// Who asks. Each row names the status for each, in this order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    /// No `Authorization` header.
    Nobody,
    /// A user with no relation to the owner of the resources.
    Other,
    /// A user suspended after their token was issued.
    Suspended,
    Admin,
}

const CALLERS: [Caller; 4] = [Caller::Nobody, Caller::Other, Caller::Suspended, Caller::Admin];

/// What the rows act on: everything belongs to `owner` (or to `target`, for the admin
/// routes), never to the caller.
struct Fixture {
    owner: TestUser,
    target: TestUser,
    media: String,
    post: String,
    /// A post the author or an admin may delete (the admin's row does).
    doomed_post: String,
    /// `friend`'s comment on the owner's post, which its author, the post's author or an
    /// admin may delete (the admin's row does).
    doomed_comment: String,
    /// The owner's conversation with `friend`.
    conversation: String,
    notification: String,
    device: String,
    /// Sessions of the owner, one per caller, for the refresh and logout rows.
    refresh: Vec<String>,
    logout: Vec<String>,
}

enum Body {
    None,
    Json(Value),
    Png,
}

struct Row {
    method: &'static str,
    /// The route as `/openapi.json` names it.
    route: &'static str,
    /// The path asked, with `{owner}`, `{owner_name}`, `{target}`, `{media}`, `{post}`,
    /// `{doomed_post}`, `{doomed_comment}`, `{conversation}`, `{notification}` and
    /// `{device}` filled in from the fixture.
    path: &'static str,
    body: fn(&Fixture, usize) -> Body,
    /// Nobody, other, suspended, admin.
    expect: [u16; 4],
}

fn none(_: &Fixture, _: usize) -> Body {
    Body::None
}

const PUBLIC: [u16; 4] = [200, 200, 200, 200];
/// Anyone signed in, for their own things (or for what every user may see).
const SIGNED_IN: [u16; 4] = [401, 200, 401, 200];
const SIGNED_IN_204: [u16; 4] = [401, 204, 401, 204];
/// The owner's private things: they do not exist for anyone else, admins included.
const PRIVATE: [u16; 4] = [401, 404, 401, 404];
const ADMIN_ONLY: [u16; 4] = [401, 403, 401, 204];

fn rows() -> Vec<Row> {
    let row = |method, route, path, body, expect| Row { method, route, path, body, expect };
    vec![
        row(
            "post",
            "/v1/auth/signup",
            "/v1/auth/signup",
            |_, _| {
                let name = format!("m_{}", mosaic_tests::client::unique());
                Body::Json(
                    json!({"username": name, "email": format!("{name}@example.com"), "password": "horse battery staple 7"}),
                )
            },
            [201, 201, 201, 201],
        ),
        row(
            "post",
            "/v1/auth/login",
            "/v1/auth/login",
            |f, _| Body::Json(json!({"login": f.owner.username, "password": f.owner.password})),
            PUBLIC,
        ),
        // The refresh token is the credential, whoever sends it.
        row(
            "post",
            "/v1/auth/refresh",
            "/v1/auth/refresh",
            |f, i| Body::Json(json!({"refresh_token": f.refresh[i]})),
            PUBLIC,
        ),
        // Someone else's session cannot be ended: it is not found among the caller's.
        row(
            "post",
            "/v1/auth/logout",
            "/v1/auth/logout",
            |f, i| Body::Json(json!({"refresh_token": f.logout[i]})),
            [401, 204, 401, 204],
        ),
        row("get", "/v1/auth/jwks", "/v1/auth/jwks", none, PUBLIC),
        row("get", "/v1/users/me", "/v1/users/me", none, SIGNED_IN),
        row("patch", "/v1/users/me", "/v1/users/me", |_, _| Body::Json(json!({"bio": "changed"})), SIGNED_IN),
        // Callers change their own password; a wrong current one is refused as such.
        row(
            "put",
            "/v1/users/me/password",
            "/v1/users/me/password",
            |_, _| {
                Body::Json(
                    json!({"current_password": "not the password at all", "new_password": "a brand new passphrase"}),
                )
            },
            [401, 401, 401, 401],
        ),
        row("get", "/v1/users/{username}", "/v1/users/{owner_name}", none, SIGNED_IN),
        row("put", "/v1/users/{id}/follow", "/v1/users/{owner}/follow", none, SIGNED_IN_204),
        row("delete", "/v1/users/{id}/follow", "/v1/users/{owner}/follow", none, SIGNED_IN_204),
        row("get", "/v1/users/{id}/followers", "/v1/users/{owner}/followers", none, SIGNED_IN),
        row("get", "/v1/users/{id}/following", "/v1/users/{owner}/following", none, SIGNED_IN),
        row("put", "/v1/users/{id}/block", "/v1/users/{owner}/block", none, SIGNED_IN_204),
        row("delete", "/v1/users/{id}/block", "/v1/users/{owner}/block", none, SIGNED_IN_204),
        row("put", "/v1/users/{id}/mute", "/v1/users/{owner}/mute", none, SIGNED_IN_204),
        row("delete", "/v1/users/{id}/mute", "/v1/users/{owner}/mute", none, SIGNED_IN_204),
        row("post", "/v1/admin/users/{id}/suspend", "/v1/admin/users/{target}/suspend", none, ADMIN_ONLY),
        row("post", "/v1/admin/users/{id}/unsuspend", "/v1/admin/users/{target}/unsuspend", none, ADMIN_ONLY),
        // Asked as an upgrade, the token in the query; 101 is the socket opening.
        row("get", "/v1/ws", "/v1/ws", none, [401, 101, 401, 101]),
        row("post", "/v1/media", "/v1/media", |_, _| Body::Png, [401, 202, 401, 202]),
        // Ready media is visible to any signed-in user.
        row("get", "/v1/media/{id}", "/v1/media/{media}", none, SIGNED_IN),
        row("get", "/v1/media/{id}/{variant}", "/v1/media/{media}/thumb", none, PUBLIC),
        row("get", "/v1/users/me/storage", "/v1/users/me/storage", none, SIGNED_IN),
        // The owner's media cannot go into anyone else's post.
        row("post", "/v1/posts", "/v1/posts", |f, _| Body::Json(json!({"media_ids": [f.media]})), [401, 403, 401, 403]),
        row("get", "/v1/posts/{id}", "/v1/posts/{post}", none, SIGNED_IN),
        row("delete", "/v1/posts/{id}", "/v1/posts/{doomed_post}", none, [401, 403, 401, 204]),
        row("get", "/v1/users/{id}/posts", "/v1/users/{owner}/posts", none, SIGNED_IN),
        row("get", "/v1/feed", "/v1/feed", none, SIGNED_IN),
        row("put", "/v1/posts/{id}/like", "/v1/posts/{post}/like", none, SIGNED_IN_204),
        row("delete", "/v1/posts/{id}/like", "/v1/posts/{post}/like", none, SIGNED_IN_204),
        row("get", "/v1/posts/{id}/likes", "/v1/posts/{post}/likes", none, SIGNED_IN),
        row(
            "post",
            "/v1/posts/{id}/comments",
            "/v1/posts/{post}/comments",
            |_, _| Body::Json(json!({"text": "hello"})),
            [401, 201, 401, 201],
        ),
        row("get", "/v1/posts/{id}/comments", "/v1/posts/{post}/comments", none, SIGNED_IN),
        row("delete", "/v1/comments/{id}", "/v1/comments/{doomed_comment}", none, [401, 403, 401, 204]),
        row("post", "/v1/posts/{id}/views", "/v1/posts/{post}/views", none, [401, 202, 401, 202]),
        // Anyone may start a conversation with the owner.
        row(
            "post",
            "/v1/conversations",
            "/v1/conversations",
            |f, _| Body::Json(json!({"member_ids": [f.owner.id]})),
            [401, 201, 401, 201],
        ),
        row("get", "/v1/conversations", "/v1/conversations", none, SIGNED_IN),
        row("get", "/v1/conversations/{id}", "/v1/conversations/{conversation}", none, PRIVATE),
        row("get", "/v1/conversations/{id}/messages", "/v1/conversations/{conversation}/messages", none, PRIVATE),
        row(
            "post",
            "/v1/conversations/{id}/messages",
            "/v1/conversations/{conversation}/messages",
            |_, _| Body::Json(json!({"text": "let me in"})),
            PRIVATE,
        ),
        row(
            "post",
            "/v1/conversations/{id}/read",
            "/v1/conversations/{conversation}/read",
            |f, _| Body::Json(json!({"up_to": f.post})),
            PRIVATE,
        ),
        row(
            "post",
            "/v1/conversations/{id}/delivered",
            "/v1/conversations/{conversation}/delivered",
            |f, _| Body::Json(json!({"up_to": f.post})),
            PRIVATE,
        ),
        row("post", "/v1/conversations/{id}/typing", "/v1/conversations/{conversation}/typing", none, PRIVATE),
        row(
            "post",
            "/v1/conversations/{id}/members",
            "/v1/conversations/{conversation}/members",
            |f, _| Body::Json(json!({"member_ids": [f.target.id]})),
            PRIVATE,
        ),
        row("post", "/v1/conversations/{id}/leave", "/v1/conversations/{conversation}/leave", none, PRIVATE),
        row("get", "/v1/notifications", "/v1/notifications", none, SIGNED_IN),
        row("get", "/v1/notifications/unread_count", "/v1/notifications/unread_count", none, SIGNED_IN),
        row("get", "/v1/notifications/{id}", "/v1/notifications/{notification}", none, PRIVATE),
        // Marking reads only the caller's own: someone else's id changes nothing.
        row(
            "post",
            "/v1/notifications/read",
            "/v1/notifications/read",
            |f, _| Body::Json(json!({"ids": [f.notification]})),
            SIGNED_IN_204,
        ),
        row("get", "/v1/notifications/preferences", "/v1/notifications/preferences", none, SIGNED_IN),
        row(
            "put",
            "/v1/notifications/preferences",
            "/v1/notifications/preferences",
            |_, _| Body::Json(json!({"like": {"in_app": true, "push": false, "email": false}})),
            SIGNED_IN,
        ),
        // The signed token in the link is the credential: a forged one fails for everyone.
        row(
            "get",
            "/v1/notifications/unsubscribe",
            "/v1/notifications/unsubscribe?token=forged",
            none,
            [404, 404, 404, 404],
        ),
        row(
            "post",
            "/v1/notifications/unsubscribe",
            "/v1/notifications/unsubscribe?token=forged",
            none,
            [404, 404, 404, 404],
        ),
        row(
            "post",
            "/v1/devices",
            "/v1/devices",
            |_, i| {
                Body::Json(
                    json!({"platform": "fcm", "token": format!("device-token-of-caller-{i}-{}", mosaic_tests::client::unique())}),
                )
            },
            [401, 201, 401, 201],
        ),
        row("get", "/v1/devices", "/v1/devices", none, SIGNED_IN),
        row("delete", "/v1/devices/{id}", "/v1/devices/{device}", none, PRIVATE),
        row("get", "/v1/devices/webpush/key", "/v1/devices/webpush/key", none, PUBLIC),
        row("get", "/v1/analytics/me/daily", "/v1/analytics/me/daily", none, SIGNED_IN),
        row("get", "/v1/admin/analytics/daily", "/v1/admin/analytics/daily", none, [401, 403, 401, 200]),
        row("post", "/v1/admin/analytics/reports/run", "/v1/admin/analytics/reports/run", none, [401, 403, 401, 200]),
        row("get", "/healthz", "/healthz", none, PUBLIC),
        row("get", "/readyz", "/readyz", none, PUBLIC),
        row("get", "/metrics", "/metrics", none, PUBLIC),
    ]
}

async fn fixture(w: &World) -> Fixture {
    let c = &w.client;
    let owner = c.signup("owner").await;
    let friend = c.signup("friend").await;
    let target = c.signup("target").await;
    let media = c.upload_ready(&owner.access_token, "image/png", png_with_alpha(32, 32)).await;
    let post = c.create_post(&owner.access_token, "the owner's", &[]).await;
    let doomed_post = c.create_post(&owner.access_token, "to be deleted", &[]).await;
    let comment = c
        .post(
            &format!("/v1/posts/{}/comments", post["id"].as_str().unwrap()),
            Some(&friend.access_token),
            json!({"text": "nice"}),
        )
        .await;
    comment.assert_status(201);
    let conversation = c.post("/v1/conversations", Some(&owner.access_token), json!({"member_ids": [friend.id]})).await;
    conversation.assert_status(201);
    let device = c
        .post(
            "/v1/devices",
            Some(&owner.access_token),
            json!({"platform": "fcm", "token": format!("owner-device-{}", mosaic_tests::client::unique())}),
        )
        .await;
    device.assert_status(201);
    // The friend's comment notifies the owner.
    let notified = || async {
        let page = c.get("/v1/notifications", &owner.access_token).await;
        page.body["items"][0]["id"].as_str().is_some()
    };
    assert!(eventually(Duration::from_secs(10), notified).await, "the owner was notified of the comment");
    let page = c.get("/v1/notifications", &owner.access_token).await;
    let notification = page.body["items"][0]["id"].as_str().map(str::to_owned);
    let mut refresh = Vec::new();
    let mut logout = Vec::new();
    for _ in CALLERS {
        refresh.push(c.login(&owner).await.refresh_token);
        logout.push(c.login(&owner).await.refresh_token);
    }
    Fixture {
        media: media["id"].as_str().unwrap().to_owned(),
        post: post["id"].as_str().unwrap().to_owned(),
        doomed_post: doomed_post["id"].as_str().unwrap().to_owned(),
        doomed_comment: comment.body["id"].as_str().unwrap().to_owned(),
        conversation: conversation.body["id"].as_str().unwrap().to_owned(),
        device: device.body["id"].as_str().unwrap().to_owned(),
        notification: notification.unwrap(),
        refresh,
        logout,
        owner,
        target,
    }
}

fn fill(path: &str, f: &Fixture) -> String {
    path.replace("{owner}", &f.owner.id)
        .replace("{owner_name}", &f.owner.username)
        .replace("{target}", &f.target.id)
        .replace("{media}", &f.media)
        .replace("{post}", &f.post)
        .replace("{doomed_post}", &f.doomed_post)
        .replace("{doomed_comment}", &f.doomed_comment)
        .replace("{conversation}", &f.conversation)
        .replace("{notification}", &f.notification)
        .replace("{device}", &f.device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_documented() {
    let w = World::start().await;
    let admin = w.admin("matrix_admin").await;
    let other = w.client.signup("other").await;
    let suspended = w.client.signup("suspended").await;
    w.client
        .post(&format!("/v1/admin/users/{}/suspend", suspended.id), Some(&admin.access_token), json!({}))
        .await
        .assert_status(204);
    let f = fixture(&w).await;

    // Every route of the document has a row, and every row a route.
    let doc = w.client.send(Method::GET, "/openapi.json", None, None).await;
    let documented: BTreeSet<(String, String)> = doc.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| methods.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let rows = rows();
    let covered: BTreeSet<(String, String)> = rows.iter().map(|r| (r.method.to_owned(), r.route.to_owned())).collect();
    assert_eq!(documented, covered, "routes without a row, or rows without a route");

    let tokens = [
        None,
        Some(other.access_token.as_str()),
        Some(suspended.access_token.as_str()),
        Some(admin.access_token.as_str()),
    ];
    let mut wrong = Vec::new();
    for r in &rows {
        let path = fill(r.path, &f);
        for (i, caller) in CALLERS.iter().enumerate() {
            let method = Method::from_bytes(r.method.to_uppercase().as_bytes()).unwrap();
            let mut req = w.client.request(method, &path, tokens[i]);
            if r.route == "/v1/ws" {
                // A socket takes its token in the query (or a subprotocol), not the header.
                let query: Vec<(&str, &str)> = tokens[i].map(|t| ("access_token", t)).into_iter().collect();
                req = w
                    .client
                    .request(Method::GET, &path, None)
                    .query(&query)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            }
            req = match (r.body)(&f, i) {
                Body::None => req,
                Body::Json(v) => req.json(&v),
                Body::Png => req.header("content-type", "image/png").body(png_with_alpha(16, 16)),
            };
            let res = req.send().await.expect("request sent");
            let status = res.status().as_u16();
            if status != r.expect[i] {
                let body = res.text().await.unwrap_or_default();
                wrong.push(format!(
                    "{} {} as {caller:?}: {status}, documented {} ({body})",
                    r.method, r.route, r.expect[i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers differ from the documented ones:\n{}", wrong.len(), wrong.join("\n"));

    // What the others did to the owner's things changed nothing of theirs.
    let owner = &f.owner;
    let still = w.client.get(&format!("/v1/conversations/{}", f.conversation), &owner.access_token).await;
    still.assert_status(200);
    assert_eq!(still.body["members"].as_array().unwrap().len(), 2, "nobody joined or left the owner's conversation");
    let n = w.client.get(&format!("/v1/notifications/{}", f.notification), &owner.access_token).await;
    n.assert_status(200);
    assert_eq!(n.body["read"], false, "nobody else marked the owner's notification read: {}", n.body);
    let devices = w.client.get("/v1/devices", &owner.access_token).await;
    assert!(
        devices.body.as_array().unwrap().iter().any(|d| d["id"] == f.device.as_str()),
        "the owner's device is still there"
    );
    // Others' logouts did not end the owner's sessions; the admin's and the other user's
    // logout rows named the owner's refresh tokens.
    for (i, token) in f.logout.iter().enumerate() {
        let r = w.client.refresh_request(token).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "the owner's session {i} survived someone else's logout");
    }
    w.stop().await;
}

//! Identity on the wire: a NATS client that writes who it is in headers is nobody. Every
//! service verifies the caller's access token itself; these tests speak raw NATS to the
//! services, as a hostile process on the network would.

use async_nats::{Client, HeaderMap};
use mosaic_api::analytics::{CreatorDaily, DailyQuery};
use mosaic_api::content::GetStorage;
use mosaic_api::endpoint::Empty;
use mosaic_api::feed::{FeedQuery, GetFeed};
use mosaic_api::headers as h;
use mosaic_api::interaction::{Like, OnPost};
use mosaic_api::messaging::{Conversations, ListConversations};
use mosaic_api::notification::GetUnreadCount;
use mosaic_api::user::{GetMe, Suspend, SuspendRequest};
use mosaic_api::{Endpoint, ErrorCode, Id as _, PostId, UserId};
use mosaic_tests::{World, eventually};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// The error code of a reply, or `None` for a success.
async fn ask<E: Endpoint>(nats: &Client, headers: HeaderMap, req: &E::Request) -> Option<String>
where
    E::Request: Serialize,
{
    let payload = serde_json::to_vec(req).unwrap();
    let reply = nats.request_with_headers(E::SUBJECT, headers, payload.into()).await.unwrap();
    reply.headers.as_ref().and_then(|h| h.get(h::ERROR_CODE)).map(|v| v.as_str().to_owned())
}

fn forged(user: &str, role: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Mosaic-User", user);
    headers.insert("Mosaic-Role", role);
    headers
}

fn bearing(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(h::TOKEN, token);
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_a_forged_identity_and_takes_a_verified_one() {
    let w = World::start().await;
    let alice = w.client.signup("zt_alice").await;
    let post = w.client.create_post(&alice.access_token, "mine", &[]).await;
    let post_id = PostId::parse(post["id"].as_str().unwrap()).unwrap();
    let nats = w.nats.connect().await;
    let unauthorized = Some(ErrorCode::Unauthorized.as_str().to_owned());

    // One endpoint per service that acts for its caller. Each is asked three times: with
    // the identity headers a forger would write, with a token nobody signed, and with
    // alice's real token.
    macro_rules! check {
        ($endpoint:ty, $req:expr) => {{
            let name = <$endpoint as Endpoint>::SUBJECT;
            let req = $req;
            assert_eq!(
                ask::<$endpoint>(&nats, forged(&alice.id, "admin"), &req).await,
                unauthorized,
                "{name} believed the Mosaic-User header"
            );
            let fake = "eyJhbGciOiJFZERTQSIsImtpZCI6Im5vbmUifQ.eyJzdWIiOiJ4In0.c2ln";
            assert_eq!(ask::<$endpoint>(&nats, bearing(fake), &req).await, unauthorized, "{name} took a forged token");
            assert_eq!(
                ask::<$endpoint>(&nats, bearing(&alice.access_token), &req).await,
                None,
                "{name} refused alice's own token"
            );
        }};
    }
    check!(GetMe, Empty {});
    check!(GetStorage, Empty {});
    check!(GetFeed, FeedQuery::default());
    check!(Like, OnPost { post_id: post_id.clone() });
    check!(Conversations, ListConversations::default());
    check!(GetUnreadCount, Empty {});
    check!(CreatorDaily, DailyQuery::default());

    // Roles come from the token's claims: a user who claims to be an admin in a header is
    // anonymous, and with their own token is a user.
    let victim = w.client.signup("zt_victim").await;
    let suspend = SuspendRequest { user_id: UserId::parse(&victim.id).unwrap(), reason: None };
    assert_eq!(ask::<Suspend>(&nats, forged(&alice.id, "admin"), &suspend).await, unauthorized);
    assert_eq!(
        ask::<Suspend>(&nats, bearing(&alice.access_token), &suspend).await,
        Some(ErrorCode::Forbidden.as_str().to_owned())
    );
    w.client.get("/v1/users/me", &victim.access_token).await.assert_status(200);

    // A token revoked by logout stops working at the services too, not only at the edge.
    w.client
        .post("/v1/auth/logout", Some(&alice.access_token), json!({"refresh_token": alice.refresh_token}))
        .await
        .assert_status(204);
    let revoked = || async { ask::<GetMe>(&nats, bearing(&alice.access_token), &Empty {}).await == unauthorized };
    assert!(eventually(Duration::from_secs(5), revoked).await, "the user service still takes a revoked token");
    w.stop().await;
}

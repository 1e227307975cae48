//! Profile counters fed by other services' events: `posts` from `events.post.*`.
//!
//! Delivery is at least once, so each post is recorded by id: a created event counts a post
//! that is not recorded yet, a deleted event uncounts one that is.

use crate::UserService;
use crate::store::user_rid;
use mosaic_api::content::{PostCreated, PostDeleted};
use mosaic_api::stream::{ConsumerSpec, EVENTS_POST};
use mosaic_api::{Envelope, Event, Id, PostId, UserId};
use mosaic_mesh::db::{Checked as _, retry_conflicts};
use mosaic_mesh::jetstream::{Delivery, HandlerError};
use mosaic_mesh::{Lifecycle, Mesh};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::RecordId;

const POST_COUNTS: ConsumerSpec = ConsumerSpec {
    stream: &EVENTS_POST,
    durable: "user-post-counts",
    filter_subjects: &[PostCreated::SUBJECT, PostDeleted::SUBJECT],
    max_deliver: 10,
    backoff: &[Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)],
    ack_wait: Duration::from_secs(30),
    max_ack_pending: 512,
};

pub(crate) async fn spawn(state: Arc<UserService>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    mesh.consume_raw(POST_COUNTS, 4, lifecycle, move |delivery: Delivery| {
        let state = state.clone();
        async move { state.count_post(delivery).await }
    })
    .await
}

impl UserService {
    async fn count_post(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let bad = |e: serde_json::Error| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
        let (post, author, created): (PostId, UserId, bool) = match delivery.subject.as_str() {
            PostCreated::SUBJECT => {
                let e: Envelope<PostCreated> = serde_json::from_slice(&delivery.payload).map_err(bad)?;
                (e.data.post_id, e.data.author, true)
            }
            PostDeleted::SUBJECT => {
                let e: Envelope<PostDeleted> = serde_json::from_slice(&delivery.payload).map_err(bad)?;
                (e.data.post_id, e.data.author, false)
            }
            _ => return Ok(()),
        };
        let sql = if created {
            "BEGIN TRANSACTION;
             IF !record::exists($post) AND record::exists($user) {
                CREATE $post SET author = $user;
                UPDATE $user SET posts += 1;
             };
             COMMIT TRANSACTION;"
        } else {
            "BEGIN TRANSACTION;
             IF record::exists($post) {
                DELETE $post;
                UPDATE $user SET posts -= 1;
             };
             COMMIT TRANSACTION;"
        };
        retry_conflicts(|| async {
            self.db
                .query(sql)
                .bind(("post", RecordId::new("counted_post", post.as_str())))
                .bind(("user", user_rid(&author)))
                .await?
                .checked()
        })
        .await
        .map_err(|e| HandlerError::Transient(anyhow::Error::new(e).context("counting post")))?;
        Ok(())
    }
}

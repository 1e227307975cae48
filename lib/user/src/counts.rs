//! Profile counters fed by other services' events: `posts` from `events.post.*`.
//!
//! Delivery is at least once, so each post is recorded by id: a created event counts a post
//! that is not recorded yet, a deleted event uncounts one that is. Events are counted in
//! batches, one transaction each.

use crate::UserService;
use crate::store::accounts::{COUNT_POSTS, Counted};
use mosaic_api::content::{PostCreated, PostDeleted};
use mosaic_api::stream::{ConsumerSpec, EVENTS_POST};
use mosaic_api::{Envelope, EventSet as _};
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::write::{NoRefusal, Write};
use mosaic_mesh::{Lifecycle, Mesh};
use std::sync::Arc;
use std::time::Duration;

mosaic_api::event_set! {
    /// The events that move a profile's post count.
    enum PostEvent { Created(PostCreated), Deleted(PostDeleted) }
}

const POST_COUNTS: ConsumerSpec =
    ConsumerSpec::new(&EVENTS_POST, "user-post-counts", PostEvent::SUBJECTS).in_flight(512);

/// Events counted in one transaction at most, and how long a batch waits to fill: a
/// transaction per post was one more commit (and WAL sync) on every post's path, and a
/// profile's count may trail its posts by this long.
const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(50);

pub(crate) async fn spawn(state: Arc<UserService>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    // One batch at a time: batches never race each other for the same profile rows.
    mesh.consume_event_batches(POST_COUNTS, BATCH, LINGER, 1, lifecycle, move |batch| {
        let state = state.clone();
        async move { state.count_posts(batch).await }
    })
    .await
}

impl UserService {
    /// Counts a batch in one transaction, in delivery order.
    async fn count_posts(
        &self,
        batch: Vec<(usize, Envelope<PostEvent>)>,
    ) -> Result<Vec<(usize, String)>, HandlerError> {
        let events: Vec<Counted> = batch
            .into_iter()
            .map(|(_, e)| {
                let (post, author, created) = match e.data {
                    PostEvent::Created(e) => (e.post_id, e.author, true),
                    PostEvent::Deleted(e) => (e.post_id, e.author, false),
                };
                Counted::new(&post, &author, created)
            })
            .collect();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // No outbox: `$events` here are the counted posts, bound like any other value.
        Write::new(&self.db, COUNT_POSTS)
            .bind("events", events)
            .run::<NoRefusal>()
            .await
            .map_err(|e| HandlerError::Transient(anyhow::Error::new(e).context("counting posts")))?;
        Ok(Vec::new())
    }
}

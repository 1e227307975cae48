//! Post views: recorded without making the client wait. A handler hands the view to a
//! bounded queue and answers 202; a background task publishes queued views to JetStream in
//! batches. When the queue is full (JetStream down or far behind) views are dropped and
//! counted, which is the right trade for analytics data on a request path.

use mosaic_api::interaction::PostViewed;
use mosaic_api::stream::EVENTS_VIEW;
use mosaic_api::{Envelope, PostId, UserId};
use mosaic_mesh::{Lifecycle, Mesh};
use std::time::Duration;
use tokio::sync::mpsc;

/// Views waiting to be published, at most.
const QUEUE: usize = 65_536;
/// Views per JetStream batch, at most.
const BATCH: usize = 512;

/// Accepts views from handlers.
#[derive(Clone)]
pub struct Views {
    tx: mpsc::Sender<Envelope<PostViewed>>,
}

impl Views {
    /// Declares the views stream and starts the publisher, which drains what is queued when
    /// the edge shuts down.
    pub async fn spawn(mesh: Mesh, lifecycle: &Lifecycle) -> anyhow::Result<Self> {
        mesh.ensure_stream(&EVENTS_VIEW).await?;
        let (tx, mut rx) = mpsc::channel::<Envelope<PostViewed>>(QUEUE);
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let received = tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => n,
                    // Stop taking views, publish what is queued, then end.
                    _ = shutdown.cancelled(), if !rx.is_closed() => {
                        rx.close();
                        continue;
                    }
                };
                if received == 0 {
                    break;
                }
                let mut delay = Duration::from_millis(100);
                for attempt in 1..=5 {
                    match mesh.publish_batch(&batch).await {
                        Ok(()) => break,
                        Err(e) if attempt == 5 => {
                            tracing::warn!(views = batch.len(), error = %e, "dropping views JetStream did not take");
                            metrics::counter!("views_dropped_total").increment(batch.len() as u64);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, attempt, "publishing views failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                    }
                }
                metrics::counter!("views_published_total").increment(batch.len() as u64);
                batch.clear();
            }
        });
        Ok(Self { tx })
    }

    /// Queues a view; never waits.
    pub fn record(&self, post_id: PostId, viewer: UserId) {
        if self.tx.try_send(Envelope::new(PostViewed { post_id, viewer })).is_err() {
            metrics::counter!("views_dropped_total").increment(1);
        }
    }
}

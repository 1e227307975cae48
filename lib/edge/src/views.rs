//! Post views: recorded without making the client wait. A handler hands the view to a
//! bounded queue and answers 202; a background task publishes queued views to JetStream in
//! batches. When the queue is full (JetStream down or far behind) views are dropped and
//! counted, which is the right trade for analytics data on a request path.
//!
//! A viewer's views of one post count once per window ([`VIEW_WINDOW`]): a view's event id
//! is derived from the viewer, the post and the window, and JetStream keeps one message per
//! id within the stream's duplicate window, which the windows fit in. Every edge derives the
//! same id, so a repeat through another edge is dropped too, without a lookup here.

use mosaic_api::interaction::PostViewed;
use mosaic_api::stream::EVENTS_VIEW;
use mosaic_api::{Envelope, EventId, Id as _, PostId, UserId};
use mosaic_mesh::{FirstRun, Lifecycle, Mesh};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Views waiting to be published, at most.
const QUEUE: usize = 65_536;
/// Views per JetStream batch, at most.
const BATCH: usize = 512;
/// The window within which a viewer's views of a post count once: the views stream's
/// duplicate window, so JetStream still remembers a window's first view at its end.
pub const VIEW_WINDOW: Duration = EVENTS_VIEW.duplicate_window;

/// Accepts views from handlers.
#[derive(Clone)]
pub struct Views {
    tx: mpsc::Sender<Envelope<PostViewed>>,
    /// Views per user per minute, on this edge.
    per_user: Option<Arc<governor::DefaultKeyedRateLimiter<UserId>>>,
}

impl Views {
    /// Declares the views stream and starts the publisher, which drains what is queued when
    /// the edge shuts down.
    pub async fn spawn(mesh: Mesh, lifecycle: &Lifecycle, per_user_per_min: u32) -> anyhow::Result<Self> {
        mesh.ensure_stream(&EVENTS_VIEW).await?;
        let per_user = NonZeroU32::new(per_user_per_min).map(|n| {
            let limiter = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(n)));
            let sweeper = limiter.clone();
            lifecycle.every(Duration::from_secs(60), FirstRun::AfterPeriod, move || {
                sweeper.retain_recent();
                sweeper.shrink_to_fit();
                std::future::ready(())
            });
            limiter
        });
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
        Ok(Self { tx, per_user })
    }

    /// Queues a view; never waits. Refuses one over the viewer's rate, naming the seconds
    /// until the next is taken.
    pub fn record(&self, post_id: PostId, viewer: UserId) -> Result<(), u64> {
        if let Some(limiter) = &self.per_user
            && let Err(not_until) = limiter.check_key(&viewer)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(wait.as_secs() + 1);
        }
        let at = chrono::Utc::now();
        let window = at.timestamp().max(0) as u64 / VIEW_WINDOW.as_secs();
        let id = view_id(&viewer, &post_id, window);
        let envelope = Envelope { id, at, data: PostViewed { post_id, viewer } };
        if self.tx.try_send(envelope).is_err() {
            metrics::counter!("views_dropped_total").increment(1);
        }
        Ok(())
    }
}

/// The event id of `viewer`'s views of `post` in `window`.
fn view_id(viewer: &UserId, post: &PostId, window: u64) -> EventId {
    let digest = Sha256::digest(format!("{viewer}/{post}/{window}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    EventId::parse(&format!("view-{hex}")).expect("hex is an id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_id_names_the_viewer_the_post_and_the_window() {
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        let (p, q) = (PostId::parse("p1").unwrap(), PostId::parse("p2").unwrap());
        assert_eq!(view_id(&ann, &p, 7), view_id(&ann, &p, 7));
        let others = [view_id(&bob, &p, 7), view_id(&ann, &q, 7), view_id(&ann, &p, 8)];
        assert!(others.iter().all(|id| *id != view_id(&ann, &p, 7)));
    }
}

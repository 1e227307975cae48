//! Ranked orders kept for the pages after the first.
//!
//! A ranked first page fixes the order of the whole listing, and the pages after it are cut
//! from that order, so posts arriving or gaining likes meanwhile neither shift nor repeat
//! anything. The instance that ranked a listing keeps its order in memory (a reference per
//! post) and names itself in the cursor. A later page served by another instance asks that
//! one for the order, over core NATS; when it cannot (restarted, or the order was evicted),
//! the page is ranked again with the first page's clock, so posts newer than the first page
//! still stay out. Storing every order in a bucket instead cost a JetStream write on every
//! first page, which most listings never need.

use crate::read::Order;
use futures::StreamExt as _;
use mosaic_api::feed::{RankedOrder, RankedOrderQuery, ranked_order_subject};
use mosaic_api::{PostId, UserId};
use mosaic_mesh::{Lifecycle, Mesh};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an order is kept after its first page.
pub(crate) const KEEP: Duration = Duration::from_secs(30 * 60);
/// How long a page waits for the instance that ranked its listing before ranking again.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// Memory the kept orders may take (8 bytes per post plus the record): ~16 000 listings of
/// 500 posts, the oldest dropped first.
const BYTES: u64 = 64 << 20;

/// One kept order.
pub(crate) struct Listing {
    viewer: UserId,
    made: Instant,
    order: Order,
}

#[derive(Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<String, Arc<Listing>> for Weight {
    fn weight(&self, _: &String, listing: &Arc<Listing>) -> u64 {
        128 + 8 * listing.order.len_bound() as u64
    }
}

/// The orders one instance ranked.
pub(crate) struct Listings {
    /// This instance, as cursors name it.
    pub(crate) instance: String,
    kept: quick_cache::sync::Cache<String, Arc<Listing>, Weight>,
}

impl Listings {
    pub(crate) fn new(instance: String) -> Self {
        Self { instance, kept: quick_cache::sync::Cache::with_weighter(16_384, BYTES, Weight) }
    }

    pub(crate) fn keep(&self, id: String, viewer: &UserId, order: Order) {
        self.kept.insert(id, Arc::new(Listing { viewer: viewer.clone(), made: Instant::now(), order }));
    }

    /// `viewer`'s listing `id` if this instance keeps it; nobody else's.
    fn get(&self, viewer: &UserId, id: &str) -> Option<Arc<Listing>> {
        self.kept.get(id).filter(|l| l.viewer == *viewer && l.made.elapsed() < KEEP)
    }

    /// The order of `viewer`'s listing `id`, from here or from `maker`; `None` when neither
    /// has it.
    pub(crate) async fn order(&self, mesh: &Mesh, viewer: &UserId, id: &str, maker: &str) -> Option<Vec<PostId>> {
        if let Some(listing) = self.get(viewer, id) {
            return Some(listing.order.entries().map(|e| e.post.clone()).collect());
        }
        if maker == self.instance {
            return None;
        }
        let query = RankedOrderQuery { viewer: viewer.clone(), listing: id.to_owned() };
        let payload = serde_json::to_vec(&query).ok()?;
        let asked = mesh.client().request(ranked_order_subject(maker), payload.into());
        match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Ok(Ok(reply)) => match serde_json::from_slice::<RankedOrder>(&reply.payload) {
                Ok(order) if !order.posts.is_empty() => Some(order.posts),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(maker, error = %e, "undecodable ranked order; ranking again");
                    None
                }
            },
            // No responders (the maker is gone) or slow: ranking again is the fallback.
            Ok(Err(e)) => {
                tracing::debug!(maker, error = %e, "ranked order not available; ranking again");
                None
            }
            Err(_) => {
                tracing::debug!(maker, "ranked order request timed out; ranking again");
                None
            }
        }
    }

    /// Answers other instances asking for orders kept here, until shutdown.
    pub(crate) async fn serve(self: &Arc<Self>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
        let subject = ranked_order_subject(&self.instance);
        let mut asks = mesh.client().subscribe(subject.clone()).await?;
        mesh.client().flush().await?;
        let this = self.clone();
        let client = mesh.client().clone();
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            loop {
                let ask = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = asks.next() => a,
                };
                let Some(ask) = ask else { return };
                let Some(reply_to) = ask.reply else { continue };
                let posts = match serde_json::from_slice::<RankedOrderQuery>(&ask.payload) {
                    Ok(q) => this
                        .get(&q.viewer, &q.listing)
                        .map(|l| l.order.entries().map(|e| e.post.clone()).collect())
                        .unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(subject, error = %e, "undecodable ranked-order request ignored");
                        continue;
                    }
                };
                let body = serde_json::to_vec(&RankedOrder { posts }).expect("serializes");
                if let Err(e) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(subject, error = %e, "could not answer a ranked-order request");
                }
            }
        });
        Ok(())
    }
}

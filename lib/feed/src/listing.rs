//! Ranked orders kept for the pages after the first.
//!
//! A ranked first page fixes the order of the whole listing, and the pages after it are cut
//! from that order, so posts arriving or gaining likes meanwhile neither shift nor repeat
//! anything. The instance that ranked a listing keeps its order in memory (a reference per
//! post) and names itself in the cursor. A later page served by another instance asks that
//! one for the order, through an instance endpoint (`mosaic_mesh::instance`); when it cannot (restarted, or the order was evicted),
//! the page is ranked again with the first page's clock, so posts newer than the first page
//! still stay out. Storing every order in a bucket instead cost a JetStream write on every
//! first page, which most listings never need.

use crate::read::Order;
use mosaic_api::feed::{GetRankedOrder, RankedOrder, RankedOrderQuery};
use mosaic_api::{PostId, UserId};
use mosaic_mesh::{Ctx, Lifecycle, Mesh};
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
    pub(crate) async fn order(
        &self,
        mesh: &Mesh,
        ctx: &Ctx,
        viewer: &UserId,
        id: &str,
        maker: &str,
    ) -> Option<Vec<PostId>> {
        if let Some(listing) = self.get(viewer, id) {
            return Some(listing.order.entries().map(|e| e.post.clone()).collect());
        }
        if maker == self.instance {
            return None;
        }
        let query = RankedOrderQuery { viewer: viewer.clone(), listing: id.to_owned() };
        let ctx = ctx.clone().with_timeout(ASK_TIMEOUT);
        match mesh.call_instance::<GetRankedOrder>(&ctx, maker, &query).await {
            Ok(order) if !order.posts.is_empty() => Some(order.posts),
            Ok(_) => None,
            // Gone (restarted, scaled down) or slow: ranking again is the fallback.
            Err(e) => {
                tracing::debug!(maker, error = %e, "ranked order not available; ranking again");
                None
            }
        }
    }

    /// Answers other instances asking for orders kept here, until shutdown.
    pub(crate) async fn serve(self: &Arc<Self>, mesh: &Mesh, lifecycle: &Lifecycle) -> anyhow::Result<()> {
        let this = self.clone();
        mesh.serve_instance::<GetRankedOrder, _, _>(&self.instance, lifecycle, move |_, q: RankedOrderQuery| {
            let posts = this
                .get(&q.viewer, &q.listing)
                .map(|l| l.order.entries().map(|e| e.post.clone()).collect())
                .unwrap_or_default();
            std::future::ready(Ok(RankedOrder { posts }))
        })
        .await
    }
}

//! Graph reads for the feed service: who sees an author's posts, and what a reader's feed is
//! built from. Ids only, in pages of up to `MAX_GRAPH_IDS`, so a fan-out to ten thousand
//! followers is one request, not a hundred pages of profiles.

use crate::UserService;
use crate::store;
use mosaic_api::ApiError;
use mosaic_api::user::{AudiencePage, AudienceQuery, ByUser, FeedSeed, MAX_GRAPH_IDS};
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;

impl UserService {
    pub(crate) async fn audience(self: Arc<Self>, _ctx: Ctx, req: AudienceQuery) -> ServiceResult<AudiencePage> {
        if req.limit == 0 || req.limit > MAX_GRAPH_IDS {
            return Err(ApiError::validation(format!("limit must be 1 to {MAX_GRAPH_IDS}")).into());
        }
        // Every new post asks for its author's first page; follows and mutes touching the
        // author drop it (see `graph_changed`).
        if req.after.is_none() && req.limit == MAX_GRAPH_IDS {
            let slot = self.audiences.slot(&req.author);
            if let Some(page) = slot.read(Clone::clone) {
                return Ok(page);
            }
            let page = self.audience_page(&req).await?;
            slot.write(|v| *v = Some(page.clone()));
            return Ok(page);
        }
        Ok(self.audience_page(&req).await?)
    }

    async fn audience_page(&self, req: &AudienceQuery) -> anyhow::Result<AudiencePage> {
        let (ids, followers) = store::graph::audience(&self.db, &req.author, req.after.as_ref(), req.limit).await?;
        let next = (ids.len() == req.limit as usize).then(|| ids.last().cloned()).flatten();
        Ok(AudiencePage { ids, next, followers: followers.max(0) as u64 })
    }

    pub(crate) async fn feed_seed(self: Arc<Self>, _ctx: Ctx, req: ByUser) -> ServiceResult<FeedSeed> {
        Ok(store::graph::feed_seed(&self.db, &req.user_id, MAX_GRAPH_IDS).await?)
    }
}

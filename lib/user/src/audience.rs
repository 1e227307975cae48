//! Graph reads for the feed service: who sees an author's posts, and what a reader's feed is
//! built from. Ids only, in pages of up to `MAX_GRAPH_IDS`, so a fan-out to ten thousand
//! followers is one request, not a hundred pages of profiles.

use crate::UserService;
use crate::store::user_rid;
use anyhow::Context as _;
use mosaic_api::user::{AudiencePage, AudienceQuery, ByUser, FeedSeed, MAX_GRAPH_IDS};
use mosaic_api::{ApiError, Id, UserId};
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;
use surrealdb::types::SurrealValue;

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct IdRow {
    f: String,
}

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
        let mut res = self
            .db
            .query(
                "LET $muters = (SELECT VALUE muter FROM mutes WHERE muted = $uid);
                 SELECT record::id(follower) AS f FROM follows
                    WHERE followee = $uid AND record::id(follower) > $after AND follower NOT IN $muters
                    ORDER BY f ASC LIMIT $limit;
                 SELECT VALUE followers FROM $uid;",
            )
            .bind(("uid", user_rid(&req.author)))
            .bind(("after", req.after.as_ref().map(|a| a.to_string()).unwrap_or_default()))
            .bind(("limit", i64::from(req.limit)))
            .await
            .context("reading audience")?;
        let rows: Vec<IdRow> = res.take(1).context("reading audience")?;
        let followers: Vec<i64> = res.take(2).context("reading follower count")?;
        let ids: Vec<UserId> = rows.into_iter().map(|r| UserId::from_trusted(r.f)).collect();
        let next = (ids.len() == req.limit as usize).then(|| ids.last().cloned()).flatten();
        Ok(AudiencePage { ids, next, followers: followers.first().copied().unwrap_or(0).max(0) as u64 })
    }

    pub(crate) async fn feed_seed(self: Arc<Self>, _ctx: Ctx, req: ByUser) -> ServiceResult<FeedSeed> {
        let mut res = self
            .db
            .query(
                "SELECT record::id(followee) AS f, created_at FROM follows WHERE follower = $uid
                    ORDER BY created_at DESC LIMIT $limit;
                 SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid;
                 SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid;
                 SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid;
                 SELECT VALUE topics FROM $uid;",
            )
            .bind(("uid", user_rid(&req.user_id)))
            .bind(("limit", i64::from(MAX_GRAPH_IDS)))
            .await
            .context("reading feed seed")?;
        let following: Vec<IdRow> = res.take(0).context("reading follows")?;
        let mut hidden: Vec<String> = Vec::new();
        for i in 1..=3 {
            let ids: Vec<String> = res.take(i).context("reading blocks and mutes")?;
            hidden.extend(ids);
        }
        hidden.sort();
        hidden.dedup();
        let topics: Vec<Vec<String>> = res.take(4).context("reading topics")?;
        Ok(FeedSeed {
            following: following.into_iter().map(|r| UserId::from_trusted(r.f)).collect(),
            hidden: hidden.into_iter().map(UserId::from_trusted).collect(),
            topics: topics.into_iter().next().unwrap_or_default(),
        })
    }
}

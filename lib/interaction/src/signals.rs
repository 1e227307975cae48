//! Counts and affinity for a viewer, in one round trip to the database however many posts
//! and authors are asked about (hydration and ranking call this once per page).

use crate::InteractionService;
use crate::engage::{affinity_rid, like_rid, stats_rid};
use anyhow::Context as _;
use mosaic_api::interaction::{Affinity, MAX_SIGNAL_ITEMS, PostCounts, Signals, SignalsQuery};
use mosaic_api::{ApiError, Id, PostId, UserId};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::HashSet;
use std::sync::Arc;
use surrealdb::types::{RecordId, SurrealValue};

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct StatsRow {
    key: String,
    likes: i64,
    comments: i64,
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct AffinityRow {
    author: String,
    likes: i64,
    comments: i64,
}

impl InteractionService {
    pub(crate) async fn signals(self: Arc<Self>, ctx: Ctx, req: SignalsQuery) -> ServiceResult<Signals> {
        let viewer = ctx.require_user()?.clone();
        if req.post_ids.len() > MAX_SIGNAL_ITEMS || req.authors.len() > MAX_SIGNAL_ITEMS {
            return Err(ApiError::validation(format!("at most {MAX_SIGNAL_ITEMS} posts and authors")).into());
        }
        if req.post_ids.is_empty() && req.authors.is_empty() {
            return Ok(Signals::default());
        }
        let stats: Vec<RecordId> = req.post_ids.iter().map(stats_rid).collect();
        let likes: Vec<RecordId> = req.post_ids.iter().map(|p| like_rid(p, &viewer)).collect();
        let affinity: Vec<RecordId> = req.authors.iter().map(|a| affinity_rid(&viewer, a)).collect();
        let mut res = self
            .db
            .query(
                "SELECT record::id(id) AS key, likes, comments FROM $stats;
                 SELECT VALUE post FROM $likes;
                 SELECT record::id(id)[1] AS author, likes, comments FROM $affinity;",
            )
            .bind(("stats", stats))
            .bind(("likes", likes))
            .bind(("affinity", affinity))
            .await
            .context("reading signals")?;
        let stats: Vec<StatsRow> = res.take(0).context("reading counts")?;
        let liked: HashSet<String> = res.take::<Vec<String>>(1).context("reading likes")?.into_iter().collect();
        let affinity: Vec<AffinityRow> = res.take(2).context("reading affinity")?;
        let counts: Vec<PostCounts> = stats
            .into_iter()
            .map(|s| PostCounts {
                liked_by_me: liked.contains(&s.key),
                post_id: PostId::from_trusted(s.key),
                like_count: s.likes.max(0) as u64,
                comment_count: s.comments.max(0) as u64,
            })
            .collect();
        Ok(Signals {
            counts,
            affinity: affinity
                .into_iter()
                .map(|a| Affinity {
                    author: UserId::from_trusted(a.author),
                    likes: a.likes.max(0) as u64,
                    comments: a.comments.max(0) as u64,
                })
                .collect(),
        })
    }
}

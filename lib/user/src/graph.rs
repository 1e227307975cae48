//! The follow graph, blocks and mutes.

use crate::UserService;
use crate::store::graph::Direction;
use crate::store::{self, pair_rid, user_rid};
use anyhow::Context as _;
use mosaic_api::endpoint::Empty;
use mosaic_api::user::{
    Blocked, ByUser, Followed, GraphChanged, ListGraph, Muted, Profile, Relation, RelationEntry, RelationsQuery,
    SocialFilters, Unblocked, Unfollowed, Unmuted,
};
use mosaic_api::{ApiError, Id as _, Page, UserId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::NoRefusal;
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::HashMap;
use std::sync::Arc;

/// Viewers whose relations are cached per instance.
pub(crate) const CACHED_VIEWERS: usize = 20_000;
/// Relations remembered per viewer before their entry starts over.
const PER_VIEWER: usize = 2_048;
/// Follows (either way), blocks and mutes up to which a viewer is cached whole: their first
/// read loads them all, and later reads about anyone need no lookup. Timelines are read
/// about users the reader has no relation with, which a per-pair cache always misses.
const WHOLE_VIEWER: usize = 2_000;

/// What one instance knows of a viewer's relations.
#[derive(Debug, Default)]
pub(crate) struct ViewerRelations {
    /// Everything was loaded (`Some(true)`), or only what was asked for: the viewer has
    /// too many relations to hold whole. `None`: nothing loaded yet.
    whole: Option<bool>,
    /// When whole: the users with any relation. Otherwise: every user looked up.
    known: HashMap<UserId, Relation>,
}

impl ViewerRelations {
    fn get(&self, other: &UserId) -> Option<Relation> {
        match (self.known.get(other), self.whole) {
            (Some(r), _) => Some(*r),
            (None, Some(true)) => Some(Relation::default()),
            (None, _) => None,
        }
    }
}

/// Longest a cached relation lives if the notice that should have dropped it was lost.
pub(crate) const RELATIONS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Most users a relations query may ask about.
const MAX_RELATIONS: usize = 500;

impl UserService {
    pub(crate) async fn follow(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot follow yourself").into());
        }
        self.follows.take(me.as_str()).await?;
        store::active_user(&self.db, &them).await?;
        let relation = self.relation(&me, &them).await?;
        if relation.blocking || relation.blocked_by {
            return Err(ApiError::forbidden("you cannot follow this user").into());
        }
        let events = vec![Staged::new(Followed { follower: me.clone(), followee: them.clone() })];
        self.pair_write(store::graph::FOLLOW, "follows", &me, &them, events, "following").await
    }

    pub(crate) async fn unfollow(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot unfollow yourself").into());
        }
        let events = vec![Staged::new(Unfollowed { follower: me.clone(), followee: them.clone() })];
        self.pair_write(store::graph::UNFOLLOW, "follows", &me, &them, events, "unfollowing").await
    }

    pub(crate) async fn followers(self: Arc<Self>, _ctx: Ctx, req: ListGraph) -> ServiceResult<Page<Profile>> {
        self.graph_page(req, Direction::Followers).await
    }

    pub(crate) async fn following(self: Arc<Self>, _ctx: Ctx, req: ListGraph) -> ServiceResult<Page<Profile>> {
        self.graph_page(req, Direction::Following).await
    }

    async fn graph_page(&self, req: ListGraph, direction: Direction) -> ServiceResult<Page<Profile>> {
        store::active_user(&self.db, &req.user_id).await?;
        let (ids, next_cursor) = store::graph::follows_page(&self.db, &req.user_id, direction, &req.page).await?;
        let profiles = store::users_by_ids(&self.db, &ids).await?;
        Ok(Page { items: profiles.iter().filter(|u| !u.suspended).map(|u| u.profile()).collect(), next_cursor })
    }

    pub(crate) async fn block(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot block yourself").into());
        }
        if store::user_by_id(&self.db, &them).await?.is_none() {
            return Err(ApiError::not_found("no such user").into());
        }
        let blocked = vec![Staged::new(Blocked { blocker: me.clone(), blocked: them.clone() })];
        let unfollow_out = vec![Staged::new(Unfollowed { follower: me.clone(), followee: them.clone() })];
        let unfollow_in = vec![Staged::new(Unfollowed { follower: them.clone(), followee: me.clone() })];
        self.outbox
            .write(store::graph::BLOCK)
            .bind("block", pair_rid("blocks", &me, &them))
            .bind("follow_out", pair_rid("follows", &me, &them))
            .bind("follow_in", pair_rid("follows", &them, &me))
            .bind("me", user_rid(&me))
            .bind("them", user_rid(&them))
            .bind("blocked", blocked.clone())
            .bind("unfollow_out", unfollow_out.clone())
            .bind("unfollow_in", unfollow_in.clone())
            .stage([unfollow_out, unfollow_in, blocked].concat())
            .run::<NoRefusal>()
            .await
            .context("blocking")?;
        self.graph_changed(&me, &them).await;
        Ok(Empty {})
    }

    pub(crate) async fn unblock(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let event = Staged::new(Unblocked { blocker: me.clone(), blocked: req.user_id.clone() });
        self.remove_pair("blocks", &me, &req.user_id, event).await
    }

    pub(crate) async fn mute(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot mute yourself").into());
        }
        if store::user_by_id(&self.db, &them).await?.is_none() {
            return Err(ApiError::not_found("no such user").into());
        }
        let events = vec![Staged::new(Muted { muter: me.clone(), muted: them.clone() })];
        self.pair_write(store::graph::MUTE, "mutes", &me, &them, events, "muting").await
    }

    pub(crate) async fn unmute(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let event = Staged::new(Unmuted { muter: me.clone(), muted: req.user_id.clone() });
        self.remove_pair("mutes", &me, &req.user_id, event).await
    }

    async fn remove_pair(&self, table: &str, me: &UserId, them: &UserId, event: Staged) -> ServiceResult<Empty> {
        self.pair_write(store::graph::REMOVE, table, me, them, vec![event], "removing an edge").await
    }

    /// Runs a write of the `table` edge from `me` to `them` (bound as `$edge`, `$me` and
    /// `$them`) that stages `events`, then tells every instance the pair's relations changed.
    async fn pair_write(
        &self,
        sql: &'static str,
        table: &str,
        me: &UserId,
        them: &UserId,
        events: Vec<Staged>,
        what: &'static str,
    ) -> ServiceResult<Empty> {
        self.outbox
            .write(sql)
            .bind("edge", pair_rid(table, me, them))
            .bind("me", user_rid(me))
            .bind("them", user_rid(them))
            .stage(events)
            .run::<NoRefusal>()
            .await
            .context(what)?;
        self.graph_changed(me, them).await;
        Ok(Empty {})
    }

    pub(crate) async fn relations(
        self: Arc<Self>,
        _ctx: Ctx,
        req: RelationsQuery,
    ) -> ServiceResult<Vec<RelationEntry>> {
        if req.others.len() > MAX_RELATIONS {
            return Err(ApiError::validation(format!("at most {MAX_RELATIONS} users per query")).into());
        }
        let relations = self.cached_relations(&req.viewer, &req.others).await?;
        Ok(req
            .others
            .into_iter()
            .zip(relations)
            .map(|(user_id, relation)| RelationEntry { user_id, relation })
            .collect())
    }

    /// [`store::graph::relations`] through the per-viewer cache. Only for reads: decisions
    /// that write (may this user follow that one?) read the database.
    async fn cached_relations(&self, viewer: &UserId, others: &[UserId]) -> anyhow::Result<Vec<Relation>> {
        // Taken before the database is read: see mosaic_mesh::cache.
        let slot = self.relations.slot(viewer);
        if slot.read(|v| v.whole.is_none()) {
            let loaded = self.whole_relations(viewer).await?;
            slot.write(|v| *v = loaded);
        }
        let known: Vec<Option<Relation>> = slot.read(|v| others.iter().map(|o| v.get(o)).collect());
        let misses: Vec<UserId> =
            others.iter().zip(&known).filter(|(_, k)| k.is_none()).map(|(o, _)| o.clone()).collect();
        if misses.is_empty() {
            return Ok(known.into_iter().map(Option::unwrap_or_default).collect());
        }
        let loaded = store::graph::relations(&self.db, viewer, &misses).await?;
        let loaded: HashMap<UserId, Relation> = misses.into_iter().zip(loaded).collect();
        slot.write(|v| {
            if v.whole == Some(true) {
                return;
            }
            if v.known.len() + loaded.len() > PER_VIEWER {
                v.known.clear();
            }
            v.known.extend(loaded.iter().map(|(k, r)| (k.clone(), *r)));
        });
        Ok(others.iter().zip(known).map(|(o, k)| k.or_else(|| loaded.get(o).copied()).unwrap_or_default()).collect())
    }

    /// After a committed change between `a` and `b`: drops their cached relations here
    /// and on every other instance.
    async fn graph_changed(&self, a: &UserId, b: &UserId) {
        let notice = GraphChanged { users: vec![a.clone(), b.clone()] };
        self.forget_relations(&notice);
        if let Err(e) = self.mesh.broadcast(&notice).await {
            tracing::warn!(error = %e, "could not tell other instances of a graph change");
        }
    }

    pub(crate) fn forget_relations(&self, notice: &GraphChanged) {
        for user in &notice.users {
            self.relations.invalidate(user);
            self.audiences.invalidate(user);
        }
    }

    pub(crate) async fn relation(&self, viewer: &UserId, other: &UserId) -> anyhow::Result<Relation> {
        Ok(store::graph::relations(&self.db, viewer, std::slice::from_ref(other)).await?.pop().unwrap_or_default())
    }

    /// All of `viewer`'s relations, or, when there are too many to hold, an empty record
    /// that says so.
    async fn whole_relations(&self, viewer: &UserId) -> anyhow::Result<ViewerRelations> {
        Ok(match store::graph::all_relations(&self.db, viewer, WHOLE_VIEWER).await? {
            Some(known) => ViewerRelations { whole: Some(true), known },
            None => ViewerRelations { whole: Some(false), known: HashMap::new() },
        })
    }

    pub(crate) async fn filters(self: Arc<Self>, _ctx: Ctx, req: ByUser) -> ServiceResult<SocialFilters> {
        Ok(store::graph::filters(&self.db, &req.user_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_viewer_answers_for_anyone_a_partial_one_only_for_those_looked_up() {
        let (blocked, stranger) = (UserId::generate(), UserId::generate());
        let known: HashMap<UserId, Relation> =
            [(blocked.clone(), Relation { blocking: true, ..Relation::default() })].into();
        let whole = ViewerRelations { whole: Some(true), known: known.clone() };
        assert!(whole.get(&blocked).is_some_and(|r| r.blocking));
        assert_eq!(whole.get(&stranger), Some(Relation::default()));
        let partial = ViewerRelations { whole: Some(false), known };
        assert!(partial.get(&blocked).is_some_and(|r| r.blocking));
        assert_eq!(partial.get(&stranger), None, "not looked up: unknown, not 'no relation'");
        assert_eq!(ViewerRelations::default().get(&blocked), None, "nothing loaded yet");
    }
}

//! The follow graph, blocks and mutes.

use crate::UserService;
use crate::store::{self, pair_rid, user_rid};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::endpoint::Empty;
use mosaic_api::page::TimeCursor;
use mosaic_api::user::{
    Blocked, ByUser, Followed, GraphChanged, ListGraph, Muted, Profile, Relation, RelationEntry, RelationsQuery,
    SocialFilters, Unblocked, Unfollowed, Unmuted,
};
use mosaic_api::{ApiError, Id, Page, UserId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::NoRefusal;
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use surrealdb::types::{RecordId, SurrealValue};

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

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Edge {
    other: String,
    created_at: DateTime<Utc>,
}

#[derive(Clone, Copy)]
enum Direction {
    Followers,
    Following,
}

impl UserService {
    pub(crate) async fn follow(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot follow yourself").into());
        }
        store::active_user(&self.db, &them).await?;
        let relation = self.relation(&me, &them).await?;
        if relation.blocking || relation.blocked_by {
            return Err(ApiError::forbidden("you cannot follow this user").into());
        }
        let events = vec![Staged::new(Followed { follower: me.clone(), followee: them.clone() })];
        self.pair_write(
            "BEGIN TRANSACTION;
             IF !record::exists($edge) {
                CREATE $edge SET follower = $me, followee = $them, created_at = time::now();
                UPDATE $me SET following += 1;
                UPDATE $them SET followers += 1;
                INSERT INTO outbox $events;
             };
             COMMIT TRANSACTION;",
            "follows",
            &me,
            &them,
            events,
            "following",
        )
        .await
    }

    pub(crate) async fn unfollow(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let them = req.user_id;
        if me == them {
            return Err(ApiError::validation("you cannot unfollow yourself").into());
        }
        let events = vec![Staged::new(Unfollowed { follower: me.clone(), followee: them.clone() })];
        self.pair_write(
            "BEGIN TRANSACTION;
             LET $gone = (DELETE $edge RETURN BEFORE);
             IF array::len($gone) > 0 {
                UPDATE $me SET following -= 1;
                UPDATE $them SET followers -= 1;
                INSERT INTO outbox $events;
             };
             COMMIT TRANSACTION;",
            "follows",
            &me,
            &them,
            events,
            "unfollowing",
        )
        .await
    }

    pub(crate) async fn followers(self: Arc<Self>, _ctx: Ctx, req: ListGraph) -> ServiceResult<Page<Profile>> {
        self.graph_page(req, Direction::Followers).await
    }

    pub(crate) async fn following(self: Arc<Self>, _ctx: Ctx, req: ListGraph) -> ServiceResult<Page<Profile>> {
        self.graph_page(req, Direction::Following).await
    }

    async fn graph_page(&self, req: ListGraph, direction: Direction) -> ServiceResult<Page<Profile>> {
        store::active_user(&self.db, &req.user_id).await?;
        let limit = req.page.limit() as usize;
        let cursor = req.page.cursor.as_deref().map(TimeCursor::decode).transpose()?.map(|c| (c.at, c.key));
        let (anchor, other) = match direction {
            Direction::Followers => ("followee", "follower"),
            Direction::Following => ("follower", "followee"),
        };
        // Newest first; ties on the timestamp are broken by the other user's id so the order
        // is total and a cursor never skips or repeats an edge.
        let after = if cursor.is_some() {
            "AND (created_at < $at OR (created_at = $at AND record::id(OTHER) < $other_id))"
        } else {
            ""
        };
        let sql = format!(
            "SELECT record::id({other}) AS other, created_at FROM follows WHERE {anchor} = $uid {} \
             ORDER BY created_at DESC, other DESC LIMIT $limit",
            after.replace("OTHER", other)
        );
        let (at, other_id) = cursor.unwrap_or((Utc::now(), String::new()));
        let mut res = self
            .db
            .query(sql)
            .bind(("uid", user_rid(&req.user_id)))
            .bind(("at", at))
            .bind(("other_id", other_id))
            .bind(("limit", mosaic_api::page::fetch_limit(limit)))
            .await
            .context("listing graph")?;
        let edges: Vec<Edge> = res.take(0).context("listing graph")?;
        let (edges, next_cursor) =
            mosaic_api::page::cut(edges, limit, |e| TimeCursor::new(e.created_at, e.other.as_str()).encode());
        let ids: Vec<UserId> = edges.iter().map(|e| UserId::from_trusted(e.other.clone())).collect();
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
        // Three groups of events, each inserted on its own condition; all three are staged
        // (and bound as `$events`, unused), for the relay to publish those that were inserted.
        self.outbox
            .write(
                "BEGIN TRANSACTION;
                 IF !record::exists($block) {
                    CREATE $block SET blocker = $me, blocked = $them, created_at = time::now();
                    LET $out = (DELETE $follow_out RETURN BEFORE);
                    IF array::len($out) > 0 {
                        UPDATE $me SET following -= 1;
                        UPDATE $them SET followers -= 1;
                        INSERT INTO outbox $unfollow_out;
                    };
                    LET $in = (DELETE $follow_in RETURN BEFORE);
                    IF array::len($in) > 0 {
                        UPDATE $them SET following -= 1;
                        UPDATE $me SET followers -= 1;
                        INSERT INTO outbox $unfollow_in;
                    };
                    INSERT INTO outbox $blocked;
                 };
                 COMMIT TRANSACTION;",
            )
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
        self.pair_write(
            "BEGIN TRANSACTION;
             IF !record::exists($edge) {
                CREATE $edge SET muter = $me, muted = $them, created_at = time::now();
                INSERT INTO outbox $events;
             };
             COMMIT TRANSACTION;",
            "mutes",
            &me,
            &them,
            events,
            "muting",
        )
        .await
    }

    pub(crate) async fn unmute(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let event = Staged::new(Unmuted { muter: me.clone(), muted: req.user_id.clone() });
        self.remove_pair("mutes", &me, &req.user_id, event).await
    }

    async fn remove_pair(&self, table: &str, me: &UserId, them: &UserId, event: Staged) -> ServiceResult<Empty> {
        let sql = "BEGIN TRANSACTION;
             LET $gone = (DELETE $edge RETURN BEFORE);
             IF array::len($gone) > 0 { INSERT INTO outbox $events; };
             COMMIT TRANSACTION;";
        self.pair_write(sql, table, me, them, vec![event], "removing an edge").await
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

    /// `relations_of` through the per-viewer cache. Only for reads: decisions that write
    /// (may this user follow that one?) read the database.
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
        let loaded = self.relations_of(viewer, &misses).await?;
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
        Ok(self.relations_of(viewer, std::slice::from_ref(other)).await?.pop().unwrap_or_default())
    }

    /// All of `viewer`'s relations, or, when there are too many to hold, an empty record
    /// that says so.
    async fn whole_relations(&self, viewer: &UserId) -> anyhow::Result<ViewerRelations> {
        let mut res = self
            .db
            .query(
                "SELECT VALUE record::id(followee) FROM follows WHERE follower = $uid LIMIT $limit;
                 SELECT VALUE record::id(follower) FROM follows WHERE followee = $uid LIMIT $limit;
                 SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid LIMIT $limit;
                 SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid LIMIT $limit;
                 SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid LIMIT $limit;",
            )
            .bind(("uid", user_rid(viewer)))
            .bind(("limit", (WHOLE_VIEWER + 1) as i64))
            .await
            .context("reading relations")?;
        let mut known: HashMap<UserId, Relation> = HashMap::new();
        let marks: [fn(&mut Relation); 5] = [
            |r| r.following = true,
            |r| r.followed_by = true,
            |r| r.blocking = true,
            |r| r.blocked_by = true,
            |r| r.muting = true,
        ];
        for (i, mark) in marks.iter().enumerate() {
            let ids: Vec<String> = res.take(i).context("reading relations")?;
            if ids.len() > WHOLE_VIEWER {
                return Ok(ViewerRelations { whole: Some(false), known: HashMap::new() });
            }
            for id in ids {
                mark(known.entry(UserId::from_trusted(id)).or_default());
            }
        }
        Ok(ViewerRelations { whole: Some(true), known })
    }

    /// The viewer's relation to each of `others`, in order, in one round trip.
    async fn relations_of(&self, viewer: &UserId, others: &[UserId]) -> anyhow::Result<Vec<Relation>> {
        let ids = |table: &str, outgoing: bool| -> Vec<RecordId> {
            others
                .iter()
                .map(|o| if outgoing { pair_rid(table, viewer, o) } else { pair_rid(table, o, viewer) })
                .collect()
        };
        let mut res = self
            .db
            .query(
                "SELECT VALUE record::id(id) FROM $following;
                 SELECT VALUE record::id(id) FROM $followed_by;
                 SELECT VALUE record::id(id) FROM $blocking;
                 SELECT VALUE record::id(id) FROM $blocked_by;
                 SELECT VALUE record::id(id) FROM $muting;",
            )
            .bind(("following", ids("follows", true)))
            .bind(("followed_by", ids("follows", false)))
            .bind(("blocking", ids("blocks", true)))
            .bind(("blocked_by", ids("blocks", false)))
            .bind(("muting", ids("mutes", true)))
            .await
            .context("reading relations")?;
        let mut sets: Vec<HashSet<(String, String)>> = Vec::with_capacity(5);
        for i in 0..5 {
            let pairs: Vec<Vec<String>> = res.take(i).context("reading relations")?;
            sets.push(pairs.into_iter().filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone()))).collect());
        }
        let v = viewer.to_string();
        Ok(others
            .iter()
            .map(|o| {
                let out = (v.clone(), o.to_string());
                let inc = (o.to_string(), v.clone());
                Relation {
                    following: sets[0].contains(&out),
                    followed_by: sets[1].contains(&inc),
                    blocking: sets[2].contains(&out),
                    blocked_by: sets[3].contains(&inc),
                    muting: sets[4].contains(&out),
                }
            })
            .collect())
    }

    pub(crate) async fn filters(self: Arc<Self>, _ctx: Ctx, req: ByUser) -> ServiceResult<SocialFilters> {
        let mut res = self
            .db
            .query(
                "SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid;
                 SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid;
                 SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid;",
            )
            .bind(("uid", user_rid(&req.user_id)))
            .await
            .context("reading filters")?;
        let mut take = |i: usize| -> anyhow::Result<Vec<UserId>> {
            let ids: Vec<String> = res.take(i).context("reading filters")?;
            Ok(ids.into_iter().map(UserId::from_trusted).collect())
        };
        Ok(SocialFilters { blocking: take(0)?, blocked_by: take(1)?, muting: take(2)? })
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

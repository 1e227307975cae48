//! The follow graph, blocks and mutes: `follows`, `blocks` and `mutes` records, each keyed
//! by its ordered pair of users (see [`super::pair_rid`]).

use super::{Db, pair_rid, user_rid};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::page::{PageRequest, TimeCursor};
use mosaic_api::user::{FeedSeed, Relation, SocialFilters};
use mosaic_api::{Id, UserId};
use mosaic_mesh::ServiceResult;
use mosaic_mesh::db::Keyset;
use std::collections::{HashMap, HashSet};
use surrealdb::types::{RecordId, SurrealValue};

/// Makes `$me` follow `$them` (the edge `$edge`), counts it on both and inserts `$events`,
/// unless the edge exists. Throws nothing.
pub(crate) const FOLLOW: &str = "BEGIN TRANSACTION;
     IF !record::exists($edge) {
        CREATE $edge SET follower = $me, followee = $them, created_at = time::now();
        UPDATE $me SET following += 1;
        UPDATE $them SET followers += 1;
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// Removes the follow `$edge` of `$me` to `$them`, uncounts it on both and inserts
/// `$events`, if the edge exists. Throws nothing.
pub(crate) const UNFOLLOW: &str = "BEGIN TRANSACTION;
     LET $gone = (DELETE $edge RETURN BEFORE);
     IF array::len($gone) > 0 {
        UPDATE $me SET following -= 1;
        UPDATE $them SET followers -= 1;
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// Makes `$me` mute `$them` (the edge `$edge`) and inserts `$events`, unless the edge
/// exists. Throws nothing.
pub(crate) const MUTE: &str = "BEGIN TRANSACTION;
     IF !record::exists($edge) {
        CREATE $edge SET muter = $me, muted = $them, created_at = time::now();
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// Removes `$edge` (a block or a mute) and inserts `$events`, if the edge exists. Binds
/// `$me` and `$them` like the other pair writes, unused. Throws nothing.
pub(crate) const REMOVE: &str = "BEGIN TRANSACTION;
     LET $gone = (DELETE $edge RETURN BEFORE);
     IF array::len($gone) > 0 { INSERT INTO outbox $events; };
     COMMIT TRANSACTION;";

/// Makes `$me` block `$them` (the edge `$block`), unless the edge exists: ends the follows
/// `$follow_out` (`$me` to `$them`) and `$follow_in` (back) where they exist, uncounting each
/// and inserting `$unfollow_out` or `$unfollow_in`, then inserts `$blocked`. Three groups of
/// events, each inserted on its own condition: all three are staged (and bound as `$events`,
/// unused), for the relay to publish those that were inserted. Throws nothing.
pub(crate) const BLOCK: &str = "BEGIN TRANSACTION;
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
     COMMIT TRANSACTION;";

/// Which side of a user's follows a list shows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Who follows them.
    Followers,
    /// Whom they follow.
    Following,
}

/// A follow as a list shows it: the user on the other end, and since when.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Edge {
    other: String,
    created_at: DateTime<Utc>,
}

/// One page of `user`'s followers or followees, newest follow first, and the next page's
/// cursor.
pub(crate) async fn follows_page(
    db: &Db,
    user: &UserId,
    direction: Direction,
    page: &PageRequest,
) -> ServiceResult<(Vec<UserId>, Option<String>)> {
    // The condition names the other user's column, the order its alias.
    let (select, other) = match direction {
        Direction::Followers => (
            "SELECT record::id(follower) AS other, created_at FROM follows WHERE followee = $uid",
            "record::id(follower)",
        ),
        Direction::Following => (
            "SELECT record::id(followee) AS other, created_at FROM follows WHERE follower = $uid",
            "record::id(followee)",
        ),
    };
    // Newest first; ties on the timestamp are broken by the other user's id so the order
    // is total and a cursor never skips or repeats an edge.
    let (edges, next_cursor) = Keyset::newest_first("created_at", other, "other")
        .page::<Edge>(
            db,
            select,
            page,
            |q| q.bind(("uid", user_rid(user))),
            |e| TimeCursor::new(e.created_at, e.other.as_str()),
        )
        .await?;
    Ok((edges.into_iter().map(|e| UserId::from_trusted(e.other)).collect(), next_cursor))
}

/// All of `viewer`'s relations, by the other user; `None` when any kind of them (follows
/// either way, blocks either way, mutes) numbers more than `max`.
pub(crate) async fn all_relations(
    db: &Db,
    viewer: &UserId,
    max: usize,
) -> anyhow::Result<Option<HashMap<UserId, Relation>>> {
    let mut res = db
        .query(
            "SELECT VALUE record::id(followee) FROM follows WHERE follower = $uid LIMIT $limit;
             SELECT VALUE record::id(follower) FROM follows WHERE followee = $uid LIMIT $limit;
             SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid LIMIT $limit;
             SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid LIMIT $limit;
             SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid LIMIT $limit;",
        )
        .bind(("uid", user_rid(viewer)))
        .bind(("limit", (max + 1) as i64))
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
        if ids.len() > max {
            return Ok(None);
        }
        for id in ids {
            mark(known.entry(UserId::from_trusted(id)).or_default());
        }
    }
    Ok(Some(known))
}

/// The viewer's relation to each of `others`, in order, in one round trip.
pub(crate) async fn relations(db: &Db, viewer: &UserId, others: &[UserId]) -> anyhow::Result<Vec<Relation>> {
    let ids = |table: &str, outgoing: bool| -> Vec<RecordId> {
        others.iter().map(|o| if outgoing { pair_rid(table, viewer, o) } else { pair_rid(table, o, viewer) }).collect()
    };
    let mut res = db
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

/// Whom `user` blocks, who blocks them and whom they mute.
pub(crate) async fn filters(db: &Db, user: &UserId) -> anyhow::Result<SocialFilters> {
    let mut res = db
        .query(
            "SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid;
             SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid;
             SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid;",
        )
        .bind(("uid", user_rid(user)))
        .await
        .context("reading filters")?;
    let mut take = |i: usize| -> anyhow::Result<Vec<UserId>> {
        let ids: Vec<String> = res.take(i).context("reading filters")?;
        Ok(ids.into_iter().map(UserId::from_trusted).collect())
    };
    Ok(SocialFilters { blocking: take(0)?, blocked_by: take(1)?, muting: take(2)? })
}

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct IdRow {
    f: String,
}

/// Up to `limit` followers of `author` who don't mute them, in id order, starting after
/// `after`, and the author's follower count.
pub(crate) async fn audience(
    db: &Db,
    author: &UserId,
    after: Option<&UserId>,
    limit: u32,
) -> anyhow::Result<(Vec<UserId>, i64)> {
    let mut res = db
        .query(
            "LET $muters = (SELECT VALUE muter FROM mutes WHERE muted = $uid);
             SELECT record::id(follower) AS f FROM follows
                WHERE followee = $uid AND record::id(follower) > $after AND follower NOT IN $muters
                ORDER BY f ASC LIMIT $limit;
             SELECT VALUE followers FROM $uid;",
        )
        .bind(("uid", user_rid(author)))
        .bind(("after", after.map(|a| a.to_string()).unwrap_or_default()))
        .bind(("limit", i64::from(limit)))
        .await
        .context("reading audience")?;
    let rows: Vec<IdRow> = res.take(1).context("reading audience")?;
    let followers: Vec<i64> = res.take(2).context("reading follower count")?;
    Ok((rows.into_iter().map(|r| UserId::from_trusted(r.f)).collect(), followers.first().copied().unwrap_or(0)))
}

/// What `user`'s feed is built from: up to `limit` of whom they follow (newest follow
/// first), everyone hidden from them either way, and their topics.
pub(crate) async fn feed_seed(db: &Db, user: &UserId, limit: u32) -> anyhow::Result<FeedSeed> {
    let mut res = db
        .query(
            "SELECT record::id(followee) AS f, created_at FROM follows WHERE follower = $uid
                ORDER BY created_at DESC LIMIT $limit;
             SELECT VALUE record::id(blocked) FROM blocks WHERE blocker = $uid;
             SELECT VALUE record::id(blocker) FROM blocks WHERE blocked = $uid;
             SELECT VALUE record::id(muted) FROM mutes WHERE muter = $uid;
             SELECT VALUE topics FROM $uid;",
        )
        .bind(("uid", user_rid(user)))
        .bind(("limit", i64::from(limit)))
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

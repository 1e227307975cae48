//! The ranked order of a home feed.
//!
//! Each candidate post gets
//!
//! ```text
//! score = w_recency    · 0.5^(age_hours / half_life_hours)           in (0, 1]
//!       + w_affinity   · (1 − 1 / (1 + likes + 2·comments))          reader → author, in [0, 1)
//!       + w_topics     · min(1, matching tags / 2)                   post tags ∩ reader topics
//!       + w_engagement · min(1, ln(1 + likes + 2·comments) / ln 1001) on the post
//! ```
//!
//! Comments count double because they cost the reader more than a like. Age is measured
//! from the moment the first page was ranked, so every page of one listing uses the same
//! clock. Ties go to the newer post, then to the larger id, so the order is total.

use crate::codec::Entry;
use crate::config::Ranking;
use std::collections::{HashMap, HashSet};

/// What the reader's engagement says about one author or post: likes and comments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engagement {
    pub likes: u64,
    pub comments: u64,
}

impl Engagement {
    fn weight(self) -> f64 {
        self.likes as f64 + 2.0 * self.comments as f64
    }
}

/// Inputs of one ranking.
pub struct Signals<'a> {
    pub now_ms: i64,
    pub topics: &'a HashSet<&'a str>,
    /// The reader's engagement with each author.
    pub affinity: &'a HashMap<&'a str, Engagement>,
    /// Everyone's engagement with each post.
    pub engagement: &'a HashMap<&'a str, Engagement>,
}

/// The score of one post for the reader.
pub fn score(w: &Ranking, e: &Entry, s: &Signals<'_>) -> f64 {
    let age_hours = ((s.now_ms - e.created_ms).max(0) as f64) / 3_600_000.0;
    let recency = 0.5f64.powf(age_hours / w.half_life_hours);
    let affinity = s.affinity.get(e.author.as_ref()).map_or(0.0, |a| 1.0 - 1.0 / (1.0 + a.weight()));
    let matching = e.tags.iter().filter(|t| s.topics.contains(t.as_str())).count();
    let topics = (matching as f64 / 2.0).min(1.0);
    let engagement =
        s.engagement.get(e.post.as_ref()).map_or(0.0, |g| ((1.0 + g.weight()).ln() / 1001f64.ln()).min(1.0));
    w.recency * recency + w.affinity * affinity + w.topics * topics + w.engagement * engagement
}

/// Sorts `entries` best first.
pub fn rank(w: &Ranking, entries: &mut [Entry], s: &Signals<'_>) {
    let mut scored: Vec<(f64, Entry)> = entries.iter().map(|e| (score(w, e, s), e.clone())).collect();
    scored.sort_by(|(sa, a), (sb, b)| {
        sb.total_cmp(sa).then_with(|| b.created_ms.cmp(&a.created_ms)).then_with(|| b.post.cmp(&a.post))
    });
    for (slot, (_, e)) in entries.iter_mut().zip(scored) {
        *slot = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_api::{Id, PostId, UserId};

    fn post(author: &str, hours_ago: i64, tags: &[&str]) -> Entry {
        Entry::new(
            PostId::generate(),
            UserId::parse(author).unwrap(),
            100 * 3_600_000 - hours_ago * 3_600_000,
            tags.iter().map(|t| t.to_string()).collect(),
        )
    }

    #[test]
    fn preferences_lift_older_posts_above_newer_ones() {
        let w = Ranking::default();
        let topics: HashSet<&str> = ["surf"].into();
        let affinity: HashMap<&str, Engagement> = [("friend", Engagement { likes: 5, comments: 2 })].into();
        let engagement = HashMap::new();
        let s = Signals { now_ms: 100 * 3_600_000, topics: &topics, affinity: &affinity, engagement: &engagement };
        let fresh_stranger = post("stranger", 0, &[]);
        let friend = post("friend", 6, &[]);
        let on_topic = post("other", 6, &["surf", "sea"]);
        let old = post("stranger", 72, &[]);
        let mut entries = vec![old.clone(), fresh_stranger.clone(), friend.clone(), on_topic.clone()];
        rank(&w, &mut entries, &s);
        assert_eq!(entries[0].post, friend.post, "affinity outweighs six hours");
        assert_eq!(entries[3].post, old.post, "three days old comes last");
        assert!(score(&w, &on_topic, &s) > score(&w, &post("other", 6, &["sea"]), &s));
    }

    #[test]
    fn with_only_recency_the_order_is_reverse_chronological() {
        let w = Ranking { affinity: 0.0, topics: 0.0, engagement: 0.0, ..Ranking::default() };
        let (t, a, g) = (HashSet::new(), HashMap::new(), HashMap::new());
        let s = Signals { now_ms: 100 * 3_600_000, topics: &t, affinity: &a, engagement: &g };
        let mut entries: Vec<Entry> = (0..10).map(|h| post("x1", h * 3, &[])).rev().collect();
        rank(&w, &mut entries, &s);
        assert!(entries.windows(2).all(|p| p[0].created_ms >= p[1].created_ms));
    }
}

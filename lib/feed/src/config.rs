//! Feed-service settings (`[feed]`, `MOSAIC_FEED__*`).

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Settings of the feed service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Posts kept per cached feed.
    pub cap: usize,
    /// Authors with at least this many followers are not fanned out to: their posts are
    /// merged into feeds when read.
    pub fanout_threshold: u64,
    /// Readers who have not opened their feed for this long get no pushes; their feed is
    /// rebuilt when they return. (The `feeds` bucket forgets entries after 14 days anyway.)
    pub active_window_secs: u64,
    /// Feed writes in flight during one fan-out.
    pub fanout_concurrency: usize,
    /// How long the fan-out waits after a new post for more before announcing them and
    /// writing feeds: the posts of one wait reach each follower's feed in a single write,
    /// where each post was one write per follower.
    pub fanout_linger_ms: u64,
    /// How long a feed this instance read or wrote is served again without reading the
    /// bucket. Other instances' writes reach it sooner (they say which feeds they wrote);
    /// this bounds how far behind it can be when such a notice is lost. 0: always read.
    pub known_fresh_ms: u64,
    /// Recent posts taken from each pulled (high-follower) author at read time.
    pub pull_posts_per_author: u32,
    /// How long a pulled author's recent posts are reused before asking again.
    pub pull_cache_ms: u64,
    /// How long a hydrated post is reused (counts are always fresh).
    pub post_cache_ms: u64,
    /// Posts of a newly followed account added to the follower's feed.
    pub follow_backfill: u32,
    /// Memory the NATS server gives the `feeds` bucket; when it is full, the feeds written
    /// longest ago are dropped (and rebuilt when their readers return). A full feed at the
    /// default cap takes ~30 KB.
    pub cache_max_bytes: u64,
    /// Ranking weights and recency half-life; see the README's "Feed ranking".
    pub ranking: Ranking,
}

/// Weights of the ranked order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Ranking {
    pub recency: f64,
    pub affinity: f64,
    pub topics: f64,
    pub engagement: f64,
    /// A post's recency score halves every this many hours.
    pub half_life_hours: f64,
    /// Only the newest this many candidates are scored; older ones follow them newest first.
    /// Scoring needs every candidate's counts, so this bounds the work of a read.
    pub window: usize,
}

impl Default for Ranking {
    fn default() -> Self {
        Self { recency: 1.0, affinity: 0.6, topics: 0.5, engagement: 0.3, half_life_hours: 24.0, window: 100 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cap: 500,
            fanout_threshold: 5_000,
            active_window_secs: 7 * 24 * 3600,
            fanout_concurrency: 64,
            fanout_linger_ms: 100,
            known_fresh_ms: 2_000,
            pull_posts_per_author: 50,
            pull_cache_ms: 2_000,
            post_cache_ms: 10_000,
            follow_backfill: 20,
            cache_max_bytes: 1 << 30,
            ranking: Ranking::default(),
        }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if !(20..=1_000).contains(&self.cap) {
            bail!("feed.cap must be between 20 and 1000");
        }
        if self.fanout_threshold == 0 {
            bail!("feed.fanout_threshold must be positive");
        }
        if self.cache_max_bytes < 1 << 20 || self.cache_max_bytes > i64::MAX as u64 {
            bail!("feed.cache_max_bytes must be at least 1 MiB");
        }
        if self.fanout_concurrency == 0 {
            bail!("feed.fanout_concurrency must be positive");
        }
        if self.fanout_linger_ms > 5_000 {
            bail!("feed.fanout_linger_ms must be at most 5000");
        }
        if self.known_fresh_ms > 60_000 {
            bail!("feed.known_fresh_ms must be at most 60000");
        }
        if !(1..=1000).contains(&self.pull_posts_per_author) || self.follow_backfill > 1000 {
            bail!("feed.pull_posts_per_author must be 1 to 1000 and feed.follow_backfill at most 1000");
        }
        let r = &self.ranking;
        if [r.recency, r.affinity, r.topics, r.engagement].iter().any(|w| !w.is_finite() || *w < 0.0) {
            bail!("feed.ranking weights must be finite and not negative");
        }
        if !(r.half_life_hours.is_finite() && r.half_life_hours > 0.0) {
            bail!("feed.ranking.half_life_hours must be positive");
        }
        if !(20..=1_000).contains(&r.window) {
            bail!("feed.ranking.window must be between 20 and 1000");
        }
        Ok(())
    }
}

//! The feed service: ranked home feeds.

use crate::content::Post;
use crate::page::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "feed";

/// How a home feed is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedOrder {
    /// By the reader's preferences: recency, affinity with the author, topics, engagement.
    #[default]
    Ranked,
    /// Newest first.
    Latest,
}

/// A page of the caller's home feed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeedQuery {
    #[serde(default)]
    pub order: FeedOrder,
    #[serde(default)]
    pub page: PageRequest,
}

crate::endpoint! {
    /// The caller's home feed.
    pub GetFeed => "feed" . "home" : FeedQuery => Page<Post>;
}

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
    /// The order of a ranked listing, from the feed instance that ranked it: an instance
    /// endpoint (`mosaic.feed.v1.ranked_order.<instance>`, see `mosaic_mesh::instance`),
    /// as only that instance keeps its listings.
    pub GetRankedOrder => "feed" . "ranked_order" : RankedOrderQuery => RankedOrder;
}

/// Told to every feed instance after one wrote cached feeds, so the others stop serving
/// their remembered copies of those feeds without reading the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedsWritten {
    /// The instance that wrote (it ignores its own notices).
    pub writer: String,
    pub users: Vec<crate::UserId>,
}

impl crate::event::Broadcast for FeedsWritten {
    const SUBJECT: &'static str = "mosaic.feed.v1.feeds_written";
}

/// Asks the feed instance that ranked a listing for its order (see [`GetRankedOrder`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedOrderQuery {
    /// Only the viewer's own listings are answered.
    pub viewer: crate::UserId,
    pub listing: String,
}

/// The whole order of a ranked listing; empty when the instance no longer keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedOrder {
    pub posts: Vec<crate::PostId>,
}

//! Cursor pagination, the same for every list.

use serde::{Deserialize, Serialize};

/// Default page size when the client gives none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// Which page to fetch. The cursor is opaque to clients; only the service that issued it
/// reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Page size; clamped to `1..=MAX_LIMIT`, `DEFAULT_LIMIT` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Where the previous page ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The page size to use.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// One page of a list: `{ "items": [...], "next_cursor": "..." | null }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page with no items and no successor.
    pub fn empty() -> Self {
        Self { items: Vec::new(), next_cursor: None }
    }
}

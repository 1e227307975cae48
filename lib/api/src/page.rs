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

/// The usual cursor of a list ordered by time then id: both of the last item seen, encoded
/// so clients treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeCursor {
    pub at: chrono::DateTime<chrono::Utc>,
    pub key: String,
}

impl TimeCursor {
    /// The cursor after an item with this time and id.
    pub fn new(at: chrono::DateTime<chrono::Utc>, key: impl Into<String>) -> Self {
        Self { at, key: key.into() }
    }

    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}|{}", self.at.timestamp_nanos_opt().unwrap_or_default(), self.key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a cursor a client sent back; a validation error when it is not one of ours.
    pub fn decode(cursor: &str) -> Result<Self, crate::ApiError> {
        use base64::Engine as _;
        let bad = || crate::ApiError::validation("cursor is not valid");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (nanos, key) = raw.split_once('|').ok_or_else(bad)?;
        let nanos: i64 = nanos.parse().map_err(|_| bad())?;
        if !crate::ids::is_valid_id(key) {
            return Err(bad());
        }
        Ok(Self { at: chrono::DateTime::from_timestamp_nanos(nanos), key: key.to_owned() })
    }
}

/// How many rows a page of `limit` fetches: one more, so [`cut`] can tell whether another
/// page follows without a count.
pub fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

/// Cuts rows fetched with [`fetch_limit`] to one page: when there was a row past the page,
/// the next cursor is `cursor` of the page's last row.
pub fn cut<T>(mut rows: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> String) -> (Vec<T>, Option<String>) {
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_at_its_limit_and_points_past_its_last_row() {
        assert_eq!(fetch_limit(20), 21);
        assert_eq!(cut(vec![1, 2, 3], 2, |r| r.to_string()), (vec![1, 2], Some("2".to_owned())));
        assert_eq!(cut(vec![1, 2], 2, |r| r.to_string()), (vec![1, 2], None));
        assert_eq!(cut(Vec::<u8>::new(), 0, |r| r.to_string()), (vec![], None));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = TimeCursor::new(chrono::Utc::now(), "abc_123");
        assert_eq!(TimeCursor::decode(&c.encode()).unwrap(), c);
        assert!(TimeCursor::decode("!!").is_err());
        assert!(TimeCursor::decode("bm9waXBl").is_err());
    }
}

//! The cached feed of one reader, and its compact binary form in the `feeds` bucket.
//!
//! Ids are UUIDv7 hex in practice, stored as 16 bytes (any other id shape is stored as its
//! text), so a full feed of 500 posts with a few tags each is about 30 KB instead of the
//! ~120 KB the same data takes as JSON. A value that does not decode is treated as missing
//! and rebuilt, never as an error for the reader.
//!
//! Every fan-out write copies a follower's document, changes it and encodes it again, so
//! entries and the graph are shared (`Arc`) and carry their own encoding: copying a full
//! feed is 500 reference counts and encoding it is 501 slice copies, instead of ~1 500
//! allocations and 1 000 hex conversions each time.

use bytes::{Buf, BufMut, BytesMut};
use mosaic_api::{Id, PostId, UserId};
use std::sync::Arc;

const VERSION: u8 = 1;

/// A post reference in a feed; cheap to clone, never changed once made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry(Arc<EntryData>);

/// What an [`Entry`] holds.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryData {
    pub post: PostId,
    pub author: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub tags: Vec<String>,
    /// The entry as [`FeedDoc::encode`] writes it.
    wire: Box<[u8]>,
}

impl Entry {
    pub fn new(post: PostId, author: UserId, created_ms: i64, tags: Vec<String>) -> Self {
        let mut b = BytesMut::with_capacity(48);
        b.put_i64(created_ms);
        put_id(&mut b, post.as_str());
        put_id(&mut b, author.as_str());
        put_strings(&mut b, &tags);
        Self(Arc::new(EntryData { post, author, created_ms, tags, wire: b.to_vec().into_boxed_slice() }))
    }
}

impl std::ops::Deref for Entry {
    type Target = EntryData;

    fn deref(&self) -> &EntryData {
        &self.0
    }
}

/// A reader's cached feed: what it is built from, and the newest posts, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedDoc {
    /// When the reader last read it or it was rebuilt (ms since the epoch): a feed not
    /// touched within the activity window is stale, skipped by fan-out and rebuilt on read.
    pub touched_ms: i64,
    /// Shared like the entries: a fan-out write copies the document but not its graph.
    pub graph: Arc<Graph>,
    pub entries: Vec<Entry>,
}

/// What a feed is built from, never changed once made (a graph change makes a new one),
/// and encoded once: a fan-out write copies its encoding rather than converting every
/// followed id to bytes again (that was two thirds of encoding a feed).
#[derive(Debug, PartialEq, Eq)]
pub struct Graph {
    pub topics: Vec<String>,
    pub following: Vec<UserId>,
    /// Authors the reader must not see (blocked either way, muted).
    pub hidden: Vec<UserId>,
    /// Followed and not hidden: what every read filters 500 entries by, so it is built
    /// once per graph rather than per read (that was 5 % of the service's CPU).
    shown: foldhash::HashSet<UserId>,
    wire: Box<[u8]>,
}

impl Graph {
    pub fn new(topics: Vec<String>, following: Vec<UserId>, hidden: Vec<UserId>) -> Self {
        let mut b = BytesMut::with_capacity(16 + (following.len() + hidden.len()) * 17);
        put_strings(&mut b, &topics);
        put_ids(&mut b, &following);
        put_ids(&mut b, &hidden);
        let wire = b.to_vec().into_boxed_slice();
        Self { shown: shown(&following, &hidden), topics, following, hidden, wire }
    }

    /// Whether the reader follows `author` and does not hide them.
    pub fn shows(&self, author: &UserId) -> bool {
        self.shown.contains(author)
    }
}

fn shown(following: &[UserId], hidden: &[UserId]) -> foldhash::HashSet<UserId> {
    let mut set: foldhash::HashSet<UserId> = following.iter().cloned().collect();
    for h in hidden {
        set.remove(h);
    }
    set
}

impl Default for Graph {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new(), Vec::new())
    }
}

impl FeedDoc {
    /// Adds entries not present yet, keeping newest first and at most `cap`.
    /// Returns whether anything changed.
    pub fn merge(&mut self, new: impl IntoIterator<Item = Entry>, cap: usize) -> bool {
        // A post's entry never changes, so comparing times first spares nearly every id
        // comparison (they were a tenth of a fan-out write).
        let same = |a: &Entry, b: &Entry| a.created_ms == b.created_ms && a.post == b.post;
        let mut added: Vec<Entry> = Vec::new();
        for e in new {
            if !self.entries.iter().any(|x| same(x, &e)) {
                added.push(e.clone());
                self.entries.push(e);
            }
        }
        if added.is_empty() {
            return false;
        }
        self.entries.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| b.post.cmp(&a.post)));
        self.entries.truncate(cap);
        // Entries older than a full feed's oldest fall off at once: no change.
        self.entries.iter().any(|e| added.iter().any(|a| same(a, e)))
    }

    /// Removes entries matching `drop`; returns whether anything changed.
    pub fn remove(&mut self, drop: impl Fn(&Entry) -> bool) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| !drop(e));
        self.entries.len() != before
    }

    pub fn encode(&self) -> bytes::Bytes {
        let mut b = BytesMut::with_capacity(16 + self.graph.wire.len() + self.entries.len() * 56);
        b.put_u8(VERSION);
        b.put_i64(self.touched_ms);
        b.put_slice(&self.graph.wire);
        b.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            b.put_slice(&e.wire);
        }
        b.freeze()
    }

    /// The document, or `None` when the bytes are not one this version wrote.
    pub fn decode(mut b: &[u8]) -> Option<Self> {
        if b.try_get_u8().ok()? != VERSION {
            return None;
        }
        let touched_ms = b.try_get_i64().ok()?;
        let graph_start = b;
        let topics = get_strings(&mut b)?;
        let following = get_ids(&mut b)?;
        let hidden = get_ids(&mut b)?;
        let wire = graph_start[..graph_start.len() - b.len()].into();
        let graph = Arc::new(Graph { shown: shown(&following, &hidden), topics, following, hidden, wire });
        let n = b.try_get_u32().ok()? as usize;
        let mut entries = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let start = b;
            let created_ms = b.try_get_i64().ok()?;
            let post = PostId::parse(&get_id(&mut b)?)?;
            let author = UserId::parse(&get_id(&mut b)?)?;
            let tags = get_strings(&mut b)?;
            let wire = start[..start.len() - b.len()].into();
            entries.push(Entry(Arc::new(EntryData { post, author, created_ms, tags, wire })));
        }
        b.is_empty().then_some(Self { touched_ms, graph, entries })
    }
}

fn put_id(b: &mut BytesMut, id: &str) {
    let hex = id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if hex {
        b.put_u8(0);
        for pair in id.as_bytes().chunks(2) {
            b.put_u8((nibble(pair[0]) << 4) | nibble(pair[1]));
        }
    } else {
        // Ids are at most 64 bytes (checked at parse time).
        b.put_u8(1);
        b.put_u8(id.len() as u8);
        b.put_slice(id.as_bytes());
    }
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

fn get_id(b: &mut &[u8]) -> Option<String> {
    match b.try_get_u8().ok()? {
        0 => {
            if b.remaining() < 16 {
                return None;
            }
            let mut s = String::with_capacity(32);
            for byte in &b[..16] {
                s.push(char::from_digit(u32::from(byte >> 4), 16)?);
                s.push(char::from_digit(u32::from(byte & 0xf), 16)?);
            }
            b.advance(16);
            Some(s)
        }
        1 => {
            let len = b.try_get_u8().ok()? as usize;
            if b.remaining() < len {
                return None;
            }
            let s = std::str::from_utf8(&b[..len]).ok()?.to_owned();
            b.advance(len);
            Some(s)
        }
        _ => None,
    }
}

fn put_ids(b: &mut BytesMut, ids: &[UserId]) {
    b.put_u32(ids.len() as u32);
    for id in ids {
        put_id(b, id.as_str());
    }
}

fn get_ids(b: &mut &[u8]) -> Option<Vec<UserId>> {
    let n = b.try_get_u32().ok()? as usize;
    let mut out = Vec::with_capacity(n.min(16_384));
    for _ in 0..n {
        out.push(UserId::parse(&get_id(b)?)?);
    }
    Some(out)
}

fn put_strings(b: &mut BytesMut, items: &[String]) {
    // Tags and topics are short (32 characters); longer ones are cut rather than refused.
    let n = items.len().min(255);
    b.put_u8(n as u8);
    for s in &items[..n] {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        b.put_u8(end as u8);
        b.put_slice(&s.as_bytes()[..end]);
    }
}

fn get_strings(b: &mut &[u8]) -> Option<Vec<String>> {
    let n = b.try_get_u8().ok()? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = b.try_get_u8().ok()? as usize;
        if b.remaining() < len {
            return None;
        }
        out.push(std::str::from_utf8(&b[..len]).ok()?.to_owned());
        b.advance(len);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64, author: &str) -> Entry {
        Entry::new(PostId::generate(), UserId::parse(author).unwrap(), n, vec!["beach".into(), "été".into()])
    }

    #[test]
    fn documents_round_trip_compactly() {
        let author = UserId::generate();
        let doc = FeedDoc {
            touched_ms: 1_700_000_000_000,
            graph: Arc::new(Graph::new(
                vec!["travel".to_owned()],
                vec![author.clone(), UserId::parse("not-hex_id").unwrap()],
                vec![UserId::generate()],
            )),
            entries: (0..500).map(|n| entry(n, author.as_str())).collect(),
        };
        let bytes = doc.encode();
        assert_eq!(FeedDoc::decode(&bytes), Some(doc));
        // About 55 bytes per entry with two tags; the same feed as JSON is over 200.
        assert!(bytes.len() < 500 * 60, "{} bytes", bytes.len());
    }

    #[test]
    fn damaged_bytes_decode_to_nothing() {
        let doc = FeedDoc { entries: vec![entry(1, "someone")], ..Default::default() };
        let bytes = doc.encode();
        assert!(FeedDoc::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(FeedDoc::decode(&[9, 9, 9]).is_none());
        assert!(FeedDoc::decode(&[]).is_none());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(FeedDoc::decode(&longer).is_none());
    }

    #[test]
    fn merge_keeps_newest_first_without_repeats_within_the_cap() {
        let mut doc = FeedDoc::default();
        let a = entry(10, "a1b");
        let b = entry(20, "a1b");
        assert!(doc.merge([a.clone(), b.clone()], 3));
        assert!(!doc.merge([a.clone()], 3));
        assert!(doc.merge([entry(5, "a1b"), entry(30, "a1b")], 3));
        let times: Vec<i64> = doc.entries.iter().map(|e| e.created_ms).collect();
        assert_eq!(times, vec![30, 20, 10]);
        assert!(doc.remove(|e| e.post == b.post));
        assert_eq!(doc.entries.len(), 2);
    }
}

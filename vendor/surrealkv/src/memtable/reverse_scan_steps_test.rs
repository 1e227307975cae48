//! Mosaic patch (see vendor/README.md): what a bounded reverse scan of the memtable costs, in
//! links between skiplist nodes followed (`skiplist::steps`), not in time.
//!
//! The scan is the one the LSM runs on the memtable for a newest-first range read: `range`,
//! `seek_last`, then `prev` until the iterator leaves the range. Its cost must grow with the
//! range and the height of the skiplist, not with the keys above the range: upstream's
//! `SkiplistIterator::last` walked back from the tail past every one of them.

use super::skiplist::steps;
use super::MemTable;
use crate::{InternalKeyKind, LSMIterator};

/// Keys below the range.
const BELOW: u32 = 1_000;
/// Keys in the range.
const RANGE: u32 = 10;
/// Keys above the range: the ones the unpatched `last` stepped over, one link each.
const ABOVE: u32 = 100_000;

fn key(i: u32) -> [u8; 4] {
	i.to_be_bytes()
}

#[test]
fn bounded_reverse_scan_steps_grow_with_the_range_not_the_table() {
	let total = BELOW + RANGE + ABOVE;
	let memtable = MemTable::new(32 << 20);
	for i in 0..total {
		let trailer = (u64::from(i + 1) << 8) | InternalKeyKind::Set as u64;
		memtable.skiplist.add(&key(i), trailer, 0, b"v").unwrap();
	}

	let (lower, upper) = (key(BELOW), key(BELOW + RANGE));
	let (seen, steps) = steps::count(|| {
		let mut iter = memtable.range(Some(&lower), Some(&upper));
		let mut seen = Vec::new();
		let mut valid = iter.seek_last().unwrap();
		while valid {
			seen.push(iter.key().user_key().to_vec());
			valid = iter.prev().unwrap();
		}
		seen
	});

	let expected: Vec<Vec<u8>> = (BELOW..BELOW + RANGE).rev().map(|i| key(i).to_vec()).collect();
	assert_eq!(seen, expected, "the scan returns exactly its range, newest first");

	// The scan is two skiplist searches (`range` positions the iterator at the lower bound,
	// `seek_last` finds the last key under the upper bound), then one link per key of the range
	// and one more to leave it. A search follows O(log n) links: over 200 runs of this scan the
	// whole of it took 43 to 97 links (median 57). The bound allows each search 8 links per bit
	// of n (17 bits here) and each key of the range 2, 292 in all, where the walk from the tail
	// took over 100 000.
	let log2_n = u64::from(u32::BITS - total.leading_zeros());
	let bound = 2 * 8 * log2_n + 2 * u64::from(RANGE);
	assert!(
		steps <= bound,
		"a reverse scan of {RANGE} keys with {ABOVE} keys above them followed {steps} skiplist \
		 links (bound {bound}): its cost grows with the table, not the range"
	);
}

//! Forward sweeps over sorted ranges: the range checks validation makes of every block, in
//! address order, at O(1) amortised per block instead of a scan or a search per block.
//!
//! Owns only its copy of the ranges and a cursor. A sweep answers "certainly fine" or "not
//! sure": on "not sure" the caller runs its exact check, which decides and names what failed,
//! so a sweep can neither let a bad block through nor change which error is reported.

use alloc::vec::Vec;
use mm::PhysRange;

/// Ranges sorted by start, queried with ranges whose starts never decrease.
pub(crate) struct Sweep {
    ranges: Vec<PhysRange>,
    /// Every range before it ends at or below the last query's start: no later query (which
    /// starts no lower) can meet it.
    cur: usize,
}

impl Sweep {
    /// A sweep over every range of `lists` (any order, overlaps allowed).
    pub(crate) fn new(lists: &[&[PhysRange]]) -> Self {
        let mut ranges: Vec<PhysRange> = lists.iter().flat_map(|l| l.iter().copied()).collect();
        ranges.sort_unstable_by_key(|r| r.start);
        Sweep { ranges, cur: 0 }
    }

    fn advance(&mut self, r: &PhysRange) {
        while self.ranges.get(self.cur).is_some_and(|x| x.end <= r.start) {
            self.cur += 1;
        }
    }

    /// True if no range overlaps `r`. `r.start` must be at least the last query's.
    pub(crate) fn clear_of(&mut self, r: &PhysRange) -> bool {
        self.advance(r);
        self.ranges[self.cur..]
            .iter()
            .take_while(|x| x.start < r.end)
            .all(|x| !x.overlaps(r))
    }

    /// True if one range contains all of `r` (non-empty). `r.start` must be at least the
    /// last query's.
    pub(crate) fn within(&mut self, r: &PhysRange) -> bool {
        self.advance(r);
        !r.is_empty()
            && self.ranges[self.cur..]
                .iter()
                .take_while(|x| x.start <= r.start)
                .any(|x| x.contains_range(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> PhysRange {
        PhysRange::from_bounds(s, e)
    }

    /// The exact answers a sweep must agree with whenever it says "fine".
    fn exact_clear(list: &[PhysRange], q: &PhysRange) -> bool {
        list.iter().all(|x| !x.overlaps(q))
    }
    fn exact_within(list: &[PhysRange], q: &PhysRange) -> bool {
        !q.is_empty() && list.iter().any(|x| x.contains_range(q))
    }

    #[test]
    fn sweep_answers_equal_the_exact_checks_on_sorted_queries() {
        // Overlapping, nested, empty and unsorted ranges; every query start in order.
        let list = [
            r(100, 200),
            r(0, 50),
            r(40, 60),
            r(150, 160),
            r(300, 300),
            r(10, 1000),
        ];
        let mut queries = Vec::new();
        for s in (0..1100).step_by(7) {
            for len in [1, 5, 40, 200] {
                queries.push(r(s, s + len));
            }
        }
        let (mut a, mut b) = (Sweep::new(&[&list[..3], &list[3..]]), Sweep::new(&[&list]));
        for q in &queries {
            assert_eq!(a.clear_of(q), exact_clear(&list, q), "{q:?}");
            assert_eq!(b.within(q), exact_within(&list, q), "{q:?}");
        }
    }
}

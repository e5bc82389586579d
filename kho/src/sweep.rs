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

    /// If no range overlaps `r`: a bound `hi` such that no range overlaps any later query
    /// that starts at or after `r.end` and ends by `hi` (the lowest start of a range at or
    /// after `r.end`; `u64::MAX` if none). `None` if a range may overlap `r`. `r.start` must
    /// be at least the last query's.
    pub(crate) fn clear_until(&mut self, r: &PhysRange) -> Option<u64> {
        self.advance(r);
        let rest = &self.ranges[self.cur..];
        // Sorted by start: the ranges starting before `r.end` come first. Each must miss
        // `r`, so it ends by `r.start` and misses every later query too.
        let before = rest.partition_point(|x| x.start < r.end);
        if rest[..before].iter().any(|x| x.overlaps(r)) {
            return None;
        }
        Some(rest.get(before).map_or(u64::MAX, |x| x.start.0))
    }

    /// If one range contains all of `r` (non-empty): its end, so that every later query
    /// starting at or after `r.start` and ending by it is contained too. `None` if no range
    /// may contain `r`. `r.start` must be at least the last query's.
    pub(crate) fn within_until(&mut self, r: &PhysRange) -> Option<u64> {
        self.advance(r);
        if r.is_empty() {
            return None;
        }
        self.ranges[self.cur..]
            .iter()
            .take_while(|x| x.start <= r.start)
            .find(|x| x.contains_range(r))
            .map(|x| x.end.0)
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
            r(1200, 1300),
        ];
        let mut queries = Vec::new();
        for s in (0..1400).step_by(7) {
            for len in [1, 5, 40, 200] {
                queries.push(r(s, s + len));
            }
        }
        for lists in [[&list[..3], &list[3..]], [&list[..], &[]]] {
            let (mut a, mut b) = (Sweep::new(&lists), Sweep::new(&lists));
            for (i, q) in queries.iter().enumerate() {
                let clear = a.clear_until(q);
                assert_eq!(clear.is_some(), exact_clear(&list, q), "{q:?}");
                let within = b.within_until(q);
                assert_eq!(within.is_some(), exact_within(&list, q), "{q:?}");
                // Every later query inside a bound gets the same answer from the exact check.
                for later in &queries[i..] {
                    let after = later.start >= q.end;
                    if clear.is_some_and(|hi| after && later.end.0 <= hi) {
                        assert!(exact_clear(&list, later), "{q:?} then {later:?}");
                    }
                    if within.is_some_and(|hi| later.start >= q.start && later.end.0 <= hi) {
                        assert!(exact_within(&list, later), "{q:?} then {later:?}");
                    }
                }
            }
        }
    }
}

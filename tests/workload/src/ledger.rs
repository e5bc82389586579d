//! The page ledger: what one generation moved between mm's states, balanced against `Stats`.
//!
//! Owns the accounting identity of a generation. With `s0` the stats at entry, `tree` the
//! growth of kho's tree pages and the four moves below, the end stats must be
//! `allocated = s0.allocated + claimed + allocated + tree - freed`,
//! `reserved = s0.reserved - claimed - released`,
//! `free = s0.free + freed + released - allocated - tree`, `bad = s0.bad`, and mm's free
//! lists must hold exactly `free` pages, where "free" counts mm's deferred frames too (free
//! RAM whose descriptors are not initialised yet; they move to the lists on demand). Pure
//! arithmetic; no page is touched.

use super::alloc::format;
use super::alloc::string::String;

use mm::Stats;

use super::report::Check;

/// Pages a generation moved between mm's states.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Reserved → allocated: preserved blocks restored (the record's pages included).
    pub claimed: u64,
    /// Reserved → free: handover metadata and unclaimed blocks given back.
    pub released: u64,
    /// Allocated → free: blocks (and surplus pages) this generation freed.
    pub freed: u64,
    /// Free → allocated: blocks this generation allocated (the record's pages included).
    pub allocated: u64,
}

/// An unbalanced ledger: the check, one line on what differs, and the pages missing from
/// the free lists (the leak the `GEN` line reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// `BadPage` if pages went bad, else `Accounting`.
    pub check: Check,
    /// Expected and found figures.
    pub detail: String,
    /// Pages the free count is off by.
    pub leaked: u64,
}

impl Ledger {
    /// Checks `s1` (now) against `s0` (entry) moved by this ledger and `tree` new tree pages.
    pub fn balance(&self, s0: &Stats, s1: &Stats, tree: u64) -> Result<(), Drift> {
        if s1.bad != s0.bad {
            return Err(Drift {
                check: Check::BadPage,
                detail: format!(
                    "{} pages went bad this generation",
                    s1.bad.wrapping_sub(s0.bad)
                ),
                leaked: 0,
            });
        }
        // Wrapping: a drift that would go negative must show up as a mismatch, not a panic.
        let alloc = (s0.allocated + self.claimed + self.allocated + tree).wrapping_sub(self.freed);
        let reserved = s0.reserved.wrapping_sub(self.claimed + self.released);
        let free = (s0.free + s0.deferred + self.freed + self.released)
            .wrapping_sub(self.allocated + tree);
        let found = s1.free + s1.deferred;
        let lists: u64 = s1
            .free_per_order
            .iter()
            .enumerate()
            .map(|(o, n)| n << o)
            .sum();
        if (s1.allocated, s1.reserved, found, lists) == (alloc, reserved, free, s1.free) {
            return Ok(());
        }
        Err(Drift {
            check: Check::Accounting,
            detail: format!(
                "allocated {} reserved {} free {found} (lists {lists}, deferred {}), expected {alloc} {reserved} {free} \
                 (claimed {} released {} freed {} allocated {} tree {tree})",
                s1.allocated, s1.reserved, s1.deferred, self.claimed, self.released, self.freed, self.allocated
            ),
            leaked: free.abs_diff(found),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(free: u64, reserved: u64, allocated: u64, bad: u64) -> Stats {
        let mut per_order = [0; mm::NR_ORDERS];
        per_order[0] = free;
        Stats {
            total: free + reserved + allocated + bad,
            free,
            deferred: 0,
            reserved,
            allocated,
            bad,
            bad_events: 0,
            max_order: 10,
            free_per_order: per_order,
        }
    }

    const MOVES: Ledger = Ledger {
        claimed: 40,
        released: 8,
        freed: 30,
        allocated: 50,
    };

    #[test]
    fn a_balanced_generation_passes() {
        let s0 = stats(1000, 100, 200, 0);
        // tree grew by 2: allocated 200+40+50+2-30, reserved 100-48, free 1000+38-52.
        assert_eq!(MOVES.balance(&s0, &stats(986, 52, 262, 0), 2), Ok(()));
    }

    #[test]
    fn deferred_frames_reaching_the_lists_still_balance() {
        let mut s0 = stats(1000, 100, 200, 0);
        s0.deferred = 4096;
        s0.total += 4096;
        // 1024 deferred frames were initialised on demand during the generation.
        let mut s1 = stats(986 + 1024, 52, 262, 0);
        s1.deferred = 3072;
        s1.total += 3072;
        assert_eq!(MOVES.balance(&s0, &s1, 2), Ok(()));
        // Frames that left "deferred" without reaching the lists are a leak.
        s1.deferred = 3071;
        assert_eq!(MOVES.balance(&s0, &s1, 2).unwrap_err().leaked, 1);
    }

    #[test]
    fn one_page_off_is_a_leak_of_one_page() {
        let s0 = stats(1000, 100, 200, 0);
        let d = MOVES.balance(&s0, &stats(985, 52, 263, 0), 2).unwrap_err();
        assert_eq!((d.check, d.leaked), (Check::Accounting, 1));
        assert!(
            d.detail.starts_with(
                "allocated 263 reserved 52 free 985 (lists 985, deferred 0), expected 262 52 986"
            ),
            "{}",
            d.detail
        );
    }

    #[test]
    fn free_lists_disagreeing_with_the_free_count_is_drift() {
        let s0 = stats(1000, 100, 200, 0);
        let mut s1 = stats(986, 52, 262, 0);
        s1.free_per_order[0] -= 2;
        s1.free_per_order[1] += 1;
        assert_eq!(MOVES.balance(&s0, &s1, 2), Ok(()));
        s1.free_per_order[0] -= 1;
        assert_eq!(
            MOVES.balance(&s0, &s1, 2).unwrap_err().check,
            Check::Accounting
        );
    }

    #[test]
    fn a_bad_page_is_named_before_the_figures() {
        let s0 = stats(1000, 100, 200, 0);
        let d = MOVES.balance(&s0, &stats(970, 52, 262, 16), 2).unwrap_err();
        assert_eq!(
            (d.check, d.detail.as_str()),
            (Check::BadPage, "16 pages went bad this generation")
        );
    }
}

//! Sorting validation's blocks from the ascending runs the tree walk yields.
//!
//! Owns `merge_runs`: one run is already sorted; one long run and a few short ones (the
//! usual handover) become one copy of the long run with the short ones inserted; anything
//! else goes to the stable sort. Pure: no memory access beyond the vectors it is handed.

use alloc::vec::Vec;

use crate::validate::Block;

/// Share of all blocks up to which the runs other than the longest are merged into it one
/// by one (each found by binary search, the longest copied once in slices); above it, the
/// stable sort merges every run.
const SMALL_RUNS_SHARE: usize = 16;

/// `blocks`, made of the ascending runs starting at `runs`, sorted. The usual handover has
/// one run (every block of one type and order) or one long run and a few short ones (a
/// scaled set and the workload's own blocks): the short runs are sorted among themselves
/// and inserted into the long one, one copy of it in all. Otherwise a stable sort
/// (driftsort) finds the runs and merges them: O(n log runs).
pub(crate) fn merge_runs(mut blocks: Vec<Block>, runs: &[usize]) -> Vec<Block> {
    if runs.len() <= 1 {
        return blocks;
    }
    let n = blocks.len();
    let bounds = |i: usize| runs[i]..runs.get(i + 1).copied().unwrap_or(n);
    let longest = (0..runs.len())
        .max_by_key(|&i| bounds(i).len())
        .unwrap_or(0);
    let long = bounds(longest);
    if (n - long.len()) * SMALL_RUNS_SHARE > n {
        blocks.sort();
        return blocks;
    }
    let mut rest: Vec<Block> = blocks[..long.start]
        .iter()
        .chain(&blocks[long.end..])
        .copied()
        .collect();
    rest.sort();
    let long = &blocks[long];
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for b in rest {
        let upto = at + long[at..].partition_point(|x| *x < b);
        out.extend_from_slice(&long[at..upto]);
        out.push(b);
        at = upto;
    }
    out.extend_from_slice(&long[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::BlockType;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merging_runs_sorts_like_a_sort(
            long in proptest::collection::vec((0u64..1 << 20, 0u32..3), 0..400),
            short in proptest::collection::vec(
                proptest::collection::vec((0u64..1 << 20, 0u32..3), 1..8), 0..6),
        ) {
            // Runs as the walk makes them: each ascending, in any order; one long run or
            // runs of similar lengths (both merge paths).
            let mut blocks = Vec::new();
            let mut runs = Vec::new();
            for run in core::iter::once(&long).chain(&short) {
                let mut run: Vec<Block> = run
                    .iter()
                    .map(|&(p, o)| Block { phys: p << 12, order: o, kind: BlockType::Contig })
                    .collect();
                run.sort();
                if !run.is_empty() {
                    runs.push(blocks.len());
                    blocks.extend(run);
                }
            }
            let mut want = blocks.clone();
            want.sort();
            prop_assert_eq!(merge_runs(blocks, &runs), want);
        }
    }
}

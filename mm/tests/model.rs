//! Property test: random alloc/alloc_folio/split/get/put/free sequences against a plain
//! model of what each live block should look like.
//!
//! After every step: no frame is in two places (live block, free list, reservation), every
//! refcount and compound marker is what the model says, and the statistics add up. After
//! freeing everything, the free lists are exactly the initial set of blocks.

use std::mem::MaybeUninit;

use mm::{
    BlockKind, FrameAllocator, Memblock, MmError, Page, PageFlags, Pfn, PhysRange, PAGE_SHIFT,
};
use proptest::prelude::*;

/// A RAM layout in frame numbers, with the instance's max order.
struct Layout {
    ram: &'static [(u64, u64)],
    reserved: &'static [(u64, u64)],
    max_order: u32,
}

const LAYOUTS: [Layout; 3] = [
    // Two ranges with a hole, an unaligned start, a reservation inside.
    Layout {
        ram: &[(0x10003, 0x10100), (0x20000, 0x20400)],
        reserved: &[(0x20100, 0x20102)],
        max_order: 10,
    },
    // One order-10 range given to an instance with max_order 3.
    Layout {
        ram: &[(0x40000, 0x40400)],
        reserved: &[],
        max_order: 3,
    },
    // Three small ranges, odd sizes, max_order 8 (the cross-version image).
    Layout {
        ram: &[(0x100, 0x180), (0x205, 0x300), (0x1000, 0x1200)],
        reserved: &[(0x1010, 0x1011)],
        max_order: 8,
    },
];

#[derive(Clone, Debug)]
enum Op {
    Alloc(u32),
    AllocFolio(u32),
    Split(usize),
    Get(usize, u64),
    Put(usize, u64),
    Free(usize),
    FolioPut(usize),
    DoubleFree(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..12).prop_map(Op::Alloc),
        2 => (0u32..12).prop_map(Op::AllocFolio),
        1 => any::<usize>().prop_map(Op::Split),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(i, o)| Op::Get(i, o)),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, o)| Op::Put(i, o)),
        2 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FolioPut),
        1 => any::<usize>().prop_map(Op::DoubleFree),
    ]
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Kind {
    /// From alloc_pages (or what is left of one after free_pages with extra refs).
    Contig,
    Folio,
    /// One order-0 page out of split_page.
    Split,
}

#[derive(Clone, Debug)]
struct Item {
    pfn: u64,
    order: u32,
    kind: Kind,
    refs: u32,
}

struct World<'a> {
    fa: FrameAllocator<'a>,
    layout: &'static Layout,
    items: Vec<Item>,
    /// Frame -> owner mark, for the overlap check (indexed by position in RAM).
    marks: Vec<u8>,
}

fn memblock(l: &Layout) -> Memblock {
    let mut mb = Memblock::new();
    for &(s, e) in l.ram {
        mb.add_memory(PhysRange::from_bounds(s << PAGE_SHIFT, e << PAGE_SHIFT))
            .unwrap();
    }
    for &(s, e) in l.reserved {
        mb.reserve(PhysRange::from_bounds(s << PAGE_SHIFT, e << PAGE_SHIFT))
            .unwrap();
    }
    mb
}

fn free_set(fa: &FrameAllocator) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = fa.free_blocks().map(|(p, o)| (p.0, o)).collect();
    v.sort_unstable();
    v
}

impl World<'_> {
    fn pos(&self, pfn: u64) -> usize {
        let mut base = 0;
        for &(s, e) in self.layout.ram {
            if (s..e).contains(&pfn) {
                return base + (pfn - s) as usize;
            }
            base += (e - s) as usize;
        }
        panic!("pfn {pfn:#x} outside RAM");
    }

    fn mark(&mut self, pfn: u64, n: u64, what: &str) {
        for f in pfn..pfn + n {
            let i = self.pos(f);
            assert_eq!(
                self.marks[i], 0,
                "frame {f:#x} is in two places (second: {what})"
            );
            self.marks[i] = 1;
        }
    }

    fn check(&mut self) {
        self.marks.iter_mut().for_each(|m| *m = 0);
        let mut live = 0u64;
        let items = self.items.clone();
        for it in &items {
            let fa = &self.fa;
            let n = 1u64 << it.order;
            live += n;
            let p = Pfn(it.pfn);
            assert_eq!(fa.page_ref_count(p), Ok(it.refs), "{it:?}");
            match it.kind {
                Kind::Folio if it.order > 0 => {
                    assert_eq!(fa.page_flags(p), Ok(PageFlags::HEAD), "{it:?}");
                    assert_eq!(fa.folio_order(p), Ok(it.order));
                    assert_eq!(fa.block_kind(p, it.order), Ok(BlockKind::Folio));
                    for t in 1..n {
                        assert_eq!(fa.page_flags(p.add(t)), Ok(PageFlags::TAIL));
                        assert_eq!(fa.page_folio(p.add(t)), Ok(p));
                        assert_eq!(fa.page_ref_count(p.add(t)), Ok(0));
                        assert_eq!(fa.page_count(p.add(t)), Ok(it.refs));
                    }
                }
                Kind::Folio | Kind::Contig => {
                    assert_eq!(fa.page_flags(p), Ok(PageFlags::empty()), "{it:?}");
                    assert_eq!(fa.page_order(p), Ok(it.order));
                    assert_eq!(fa.block_kind(p, it.order), Ok(BlockKind::Contig));
                    for t in 1..n {
                        assert_eq!(fa.page_flags(p.add(t)), Ok(PageFlags::empty()));
                        assert_eq!(fa.page_ref_count(p.add(t)), Ok(0));
                        assert_eq!(fa.page_folio(p.add(t)), Ok(p.add(t)));
                    }
                }
                Kind::Split => {
                    assert_eq!(fa.page_flags(p), Ok(PageFlags::SPLIT), "{it:?}");
                    assert_eq!(fa.block_kind(p, 0), Ok(BlockKind::Split));
                }
            }
            self.mark(it.pfn, n, "live block");
        }
        let mut free = 0u64;
        let mut per_order = [0u64; mm::NR_ORDERS];
        for (p, o) in free_set(&self.fa) {
            assert!(o <= self.layout.max_order, "free block order {o} above max");
            assert!(
                Pfn(p).is_aligned(o),
                "free block {p:#x} not aligned to order {o}"
            );
            assert_eq!(self.fa.page_flags(Pfn(p)), Ok(PageFlags::FREE));
            assert!(
                self.layout
                    .ram
                    .iter()
                    .any(|&(s, e)| s <= p && p + (1 << o) <= e),
                "free block {p:#x}/{o} crosses a RAM boundary"
            );
            free += 1 << o;
            per_order[o as usize] += 1;
            self.mark(p, 1 << o, "free list");
        }
        let mut reserved = 0;
        for &(s, e) in self.layout.reserved {
            reserved += e - s;
            self.mark(s, e - s, "reservation");
        }
        assert!(self.marks.iter().all(|&m| m == 1), "a frame is nowhere");
        let st = self.fa.stats();
        assert_eq!(st.allocated, live);
        assert_eq!(st.free, free);
        assert_eq!(st.reserved, reserved);
        assert_eq!(st.bad, 0);
        assert_eq!(st.free_per_order, per_order);
        assert_eq!(st.free + st.reserved + st.allocated + st.bad, st.total);
    }

    fn apply(&mut self, op: &Op) {
        let max = self.layout.max_order;
        let pick = |items: &Vec<Item>, i: usize| (!items.is_empty()).then(|| i % items.len());
        match *op {
            Op::Alloc(o) | Op::AllocFolio(o) => {
                let folio = matches!(op, Op::AllocFolio(_));
                let r = if folio {
                    self.fa.alloc_folio(o)
                } else {
                    self.fa.alloc_pages(o)
                };
                if o > max {
                    assert_eq!(r, Err(MmError::OrderTooLarge { order: o, max }));
                    return;
                }
                match r {
                    Ok(p) => {
                        let kind = if folio { Kind::Folio } else { Kind::Contig };
                        self.items.push(Item {
                            pfn: p.0,
                            order: o,
                            kind,
                            refs: 1,
                        });
                    }
                    Err(e) => {
                        assert_eq!(e, MmError::OutOfMemory { order: o });
                        let s = self.fa.stats();
                        assert!(
                            s.free_per_order[o as usize..].iter().all(|&n| n == 0),
                            "OOM with blocks left"
                        );
                    }
                }
            }
            Op::Split(i) => {
                let Some(i) = pick(&self.items, i) else {
                    return;
                };
                let it = self.items[i].clone();
                let r = self.fa.split_page(Pfn(it.pfn), it.order);
                if it.kind == Kind::Folio && it.order > 0 {
                    assert_eq!(r, Err(MmError::Compound { pfn: Pfn(it.pfn) }));
                    return;
                }
                assert_eq!(r, Ok(()));
                self.items.swap_remove(i);
                for t in 0..1u64 << it.order {
                    let refs = if t == 0 { it.refs } else { 1 };
                    self.items.push(Item {
                        pfn: it.pfn + t,
                        order: 0,
                        kind: Kind::Split,
                        refs,
                    });
                }
            }
            Op::Get(i, off) | Op::Put(i, off) => {
                let Some(i) = pick(&self.items, i) else {
                    return;
                };
                let it = self.items[i].clone();
                let page = Pfn(it.pfn + off % (1 << it.order));
                let get = matches!(op, Op::Get(..));
                let r = if get {
                    self.fa.get_page(page)
                } else {
                    self.fa.put_page(page)
                };
                if it.kind == Kind::Contig && page.0 != it.pfn {
                    assert_eq!(r, Err(MmError::NotAllocated { pfn: page }));
                    return;
                }
                assert_eq!(r, Ok(()));
                if get {
                    self.items[i].refs += 1;
                } else {
                    self.drop_ref(i);
                }
            }
            Op::Free(i) => {
                let Some(i) = pick(&self.items, i) else {
                    return;
                };
                let it = self.items[i].clone();
                assert_eq!(self.fa.free_pages(Pfn(it.pfn), it.order), Ok(()));
                if it.kind == Kind::Contig && it.refs > 1 {
                    // Linux: the tails go now, the first frame stays as an order-0 page.
                    self.items[i].refs -= 1;
                    self.items[i].order = 0;
                } else {
                    self.drop_ref(i);
                }
            }
            Op::FolioPut(i) => {
                let Some(i) = pick(&self.items, i) else {
                    return;
                };
                let it = self.items[i].clone();
                let r = self.fa.folio_put(Pfn(it.pfn));
                if it.kind == Kind::Contig && it.order > 0 {
                    assert_eq!(r, Err(MmError::NotFolio { pfn: Pfn(it.pfn) }));
                    return;
                }
                assert_eq!(r, Ok(()));
                self.drop_ref(i);
            }
            Op::DoubleFree(k) => {
                let blocks = free_set(&self.fa);
                if blocks.is_empty() {
                    return;
                }
                let (p, o) = blocks[k % blocks.len()];
                assert_eq!(
                    self.fa.free_pages(Pfn(p), o),
                    Err(MmError::AlreadyFree { pfn: Pfn(p) })
                );
                assert_eq!(
                    self.fa.put_page(Pfn(p)),
                    Err(MmError::AlreadyFree { pfn: Pfn(p) })
                );
            }
        }
    }

    fn drop_ref(&mut self, i: usize) {
        self.items[i].refs -= 1;
        if self.items[i].refs == 0 {
            self.items.swap_remove(i);
        }
    }

    fn free_everything(&mut self) {
        while let Some(it) = self.items.pop() {
            for _ in 0..it.refs {
                assert_eq!(self.fa.put_page(Pfn(it.pfn)), Ok(()), "{it:?}");
            }
        }
    }
}

fn run(layout_idx: usize, ops: &[Op]) {
    let layout = &LAYOUTS[layout_idx];
    let mb = memblock(layout);
    let n = FrameAllocator::descriptors_needed(&mb);
    let mut storage: Vec<MaybeUninit<Page>> = (0..n).map(|_| MaybeUninit::uninit()).collect();
    let fa = FrameAllocator::new(&mb, &mut storage, layout.max_order).unwrap();
    let initial = free_set(&fa);
    let mut w = World {
        fa,
        layout,
        items: Vec::new(),
        marks: vec![0; n],
    };
    w.check();
    for op in ops {
        w.apply(op);
        w.check();
    }
    w.free_everything();
    w.check();
    assert_eq!(free_set(&w.fa), initial, "free lists did not coalesce back");
}

fn cases() -> u32 {
    if cfg!(miri) {
        return 3;
    }
    std::env::var("MM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_match_the_model(
        layout in 0usize..LAYOUTS.len(),
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 48 }),
    ) {
        run(layout, &ops);
    }
}

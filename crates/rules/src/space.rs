//! Packet spaces: finite unions of boxes (hyper-rectangles) over the packet
//! dimensions, with exact intersection and subtraction.
//!
//! Hand-written because the algebra is small and the analysis depends on its exact
//! behaviour (and speed): every dimension is an inclusive `u128` interval, so a box
//! is eight intervals and subtracting one box from another yields at most sixteen
//! disjoint boxes. No approximation happens here; approximations (unknown matches)
//! are decided by the caller, which knows whether a space is exact.

/// The dimensions of a packet, in box order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Source address (IPv4 mapped into `::ffff:0:0/96`).
    Src = 0,
    /// Destination address.
    Dst = 1,
    /// IP protocol number.
    Proto = 2,
    /// Source port.
    Sport = 3,
    /// Destination port.
    Dport = 4,
    /// Input interface (an index into the ruleset's interface names), or for NSGs
    /// the source service-tag membership bits.
    Iif = 5,
    /// Output interface, or for NSGs the destination service-tag membership bits.
    Oif = 6,
    /// Connection-tracking state (see [`crate::model::CtState`]).
    State = 7,
}

/// Number of dimensions.
pub const DIMS: usize = 8;

/// An inclusive interval `lo..=hi`; never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Iv {
    /// Lowest value.
    pub lo: u128,
    /// Highest value.
    pub hi: u128,
}

impl Iv {
    /// The interval `lo..=hi`; `None` when `lo > hi`.
    pub fn new(lo: u128, hi: u128) -> Option<Iv> {
        (lo <= hi).then_some(Iv { lo, hi })
    }

    /// A single value.
    pub fn point(v: u128) -> Iv {
        Iv { lo: v, hi: v }
    }

    fn intersect(self, o: Iv) -> Option<Iv> {
        Iv::new(self.lo.max(o.lo), self.hi.min(o.hi))
    }

    /// Whether `v` lies inside.
    pub fn contains(self, v: u128) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// One box: a product of intervals, one per dimension.
pub type Cube = [Iv; DIMS];

/// The intersection of two boxes.
pub fn cube_intersect(a: &Cube, b: &Cube) -> Option<Cube> {
    let mut out = *a;
    for d in 0..DIMS {
        out[d] = a[d].intersect(b[d])?;
    }
    Some(out)
}

fn cubes_overlap(a: &Cube, b: &Cube) -> bool {
    (0..DIMS).all(|d| a[d].lo <= b[d].hi && b[d].lo <= a[d].hi)
}

/// `a - b` as disjoint boxes, pushed onto `out`.
fn cube_subtract_into(a: &Cube, b: &Cube, out: &mut Vec<Cube>) {
    if !cubes_overlap(a, b) {
        out.push(*a);
        return;
    }
    // Peel off, dimension by dimension, the parts of `a` below and above `b`; what
    // remains after the last dimension lies inside `b` and is dropped.
    let mut rest = *a;
    for d in 0..DIMS {
        if rest[d].lo < b[d].lo {
            let mut piece = rest;
            piece[d] = Iv {
                lo: rest[d].lo,
                hi: b[d].lo - 1,
            };
            out.push(piece);
            rest[d].lo = b[d].lo;
        }
        if rest[d].hi > b[d].hi {
            let mut piece = rest;
            piece[d] = Iv {
                lo: b[d].hi + 1,
                hi: rest[d].hi,
            };
            out.push(piece);
            rest[d].hi = b[d].hi;
        }
    }
}

/// A union of boxes (not necessarily disjoint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    cubes: Vec<Cube>,
}

impl Space {
    /// The empty space.
    pub fn empty() -> Space {
        Space { cubes: Vec::new() }
    }

    /// A space of one box.
    pub fn from_cube(c: Cube) -> Space {
        Space { cubes: vec![c] }
    }

    /// A space from boxes.
    pub fn from_cubes(cubes: Vec<Cube>) -> Space {
        Space { cubes }
    }

    /// The boxes.
    pub fn cubes(&self) -> &[Cube] {
        &self.cubes
    }

    /// Whether no packet is in the space.
    pub fn is_empty(&self) -> bool {
        self.cubes.is_empty()
    }

    /// Whether the point (one value per dimension) is inside.
    pub fn contains(&self, p: &[u128; DIMS]) -> bool {
        self.cubes
            .iter()
            .any(|c| (0..DIMS).all(|d| c[d].contains(p[d])))
    }

    /// Whether the two spaces share a packet.
    pub fn overlaps(&self, o: &Space) -> bool {
        self.cubes
            .iter()
            .any(|a| o.cubes.iter().any(|b| cubes_overlap(a, b)))
    }

    /// The intersection.
    pub fn intersect(&self, o: &Space) -> Space {
        let mut cubes = Vec::new();
        for a in &self.cubes {
            for b in &o.cubes {
                if let Some(c) = cube_intersect(a, b) {
                    cubes.push(c);
                }
            }
        }
        Space { cubes }
    }

    /// Add the packets of `o`.
    pub fn union_with(&mut self, o: &Space) {
        self.cubes.extend_from_slice(&o.cubes);
    }

    /// Remove the packets of `o`.
    pub fn subtract(&mut self, o: &Space) {
        for b in &o.cubes {
            if self.cubes.is_empty() {
                return;
            }
            if !self.cubes.iter().any(|a| cubes_overlap(a, b)) {
                continue;
            }
            let mut next = Vec::with_capacity(self.cubes.len() + 4);
            for a in &self.cubes {
                cube_subtract_into(a, b, &mut next);
            }
            self.cubes = next;
        }
    }

    /// `self - o` as a new space.
    pub fn minus(&self, o: &Space) -> Space {
        let mut s = self.clone();
        s.subtract(o);
        s
    }

    /// Whether every packet of `self` is in `o`.
    pub fn is_subset_of(&self, o: &Space) -> bool {
        self.minus(o).is_empty()
    }

    /// One packet of the space: the lowest corner of its first box, except that an
    /// address range wider than two values yields its second address, so examples
    /// avoid network addresses (`10.1.0.1` rather than `10.1.0.0`).
    pub fn sample(&self) -> Option<[u128; DIMS]> {
        self.cubes.first().map(|c| {
            let mut p = c.map(|iv| iv.lo);
            for d in [Dim::Src as usize, Dim::Dst as usize] {
                if c[d].hi - c[d].lo >= 2 {
                    p[d] = c[d].lo + 1;
                }
            }
            p
        })
    }

    /// Replace dimension `d` of every box by `iv` (the image of a NAT rewrite).
    pub fn with_dim(&self, d: Dim, iv: Iv) -> Space {
        let cubes = self
            .cubes
            .iter()
            .map(|c| {
                let mut c = *c;
                c[d as usize] = iv;
                c
            })
            .collect();
        Space { cubes }
    }
}

/// What a bounded search for packets found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Packets of the space searched (all of them when the space is held as boxes,
    /// otherwise one box of them).
    Some(Space),
    /// Proved: the space searched is empty.
    None,
    /// The search reached its bound before deciding.
    GaveUp,
}

fn cube_contains(outer: &Cube, inner: &Cube) -> bool {
    (0..DIMS).all(|d| outer[d].lo <= inner[d].lo && inner[d].hi <= outer[d].hi)
}

/// A search that reached its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaveUp;

/// `b` cut along one face of `c`, which overlaps it: the part outside `c` and the
/// rest; `None` when `c` holds `b` whole.
fn split(b: &Cube, c: &Cube) -> Option<(Cube, Cube)> {
    (0..DIMS).find_map(|d| {
        let (mut out, mut ins) = (*b, *b);
        if b[d].lo < c[d].lo {
            out[d].hi = c[d].lo - 1;
            ins[d].lo = c[d].lo;
        } else if b[d].hi > c[d].hi {
            out[d].lo = c[d].hi + 1;
            ins[d].hi = c[d].hi;
        } else {
            return None;
        }
        Some((out, ins))
    })
}

/// A box of `target` outside every box of `cover`, or a proof that there is none.
/// Depth first: a box no covering box overlaps is the answer, a box inside one
/// covering box is dropped, any other is cut in two along a face of the first
/// covering box it overlaps, the part outside that box searched first. Unlike
/// subtracting the covering boxes one after another, which splits the whole
/// space on every face of every box, this cuts only where a box still overlaps,
/// and stops at the first box found. `budget` counts box comparisons; when it
/// runs out the answer is [`Found::GaveUp`].
pub fn uncovered(target: &[Cube], cover: &[Cube], budget: &mut u64) -> Found {
    let overlapping = |b: &Cube, among: &mut dyn Iterator<Item = u32>| -> Vec<u32> {
        among
            .filter(|&k| cover.get(k as usize).is_some_and(|c| cubes_overlap(b, c)))
            .collect()
    };
    for t in target {
        let Some(left) = budget.checked_sub(cover.len() as u64) else {
            return Found::GaveUp;
        };
        *budget = left;
        let all = overlapping(t, &mut (0..cover.len() as u32));
        let mut stack = vec![(*t, all)];
        while let Some((b, over)) = stack.pop() {
            let Some(&first) = over.first() else {
                return Found::Some(Space::from_cube(b));
            };
            if over
                .iter()
                .any(|&k| cover.get(k as usize).is_some_and(|c| cube_contains(c, &b)))
            {
                continue;
            }
            let Some(left) = budget.checked_sub(2 * over.len() as u64) else {
                return Found::GaveUp;
            };
            *budget = left;
            let Some(c) = cover.get(first as usize) else {
                continue;
            };
            let Some((outside, inside)) = split(&b, c) else {
                continue;
            };
            let ins = overlapping(&inside, &mut over.iter().copied());
            let out = overlapping(&outside, &mut over.iter().copied());
            stack.push((inside, ins));
            stack.push((outside, out));
        }
    }
    Found::None
}

/// A space less other spaces, kept exact: as boxes while they number at most
/// `cap`, and once a subtraction would make more, as the boxes so far and the
/// boxes still to subtract, which [`uncovered`] searches when asked. Subtracting
/// one box from a union of boxes can split every one of them, so a wide rule late
/// in a long chain (a chain's catch-all DROP after thousands of narrow rules)
/// would otherwise be held as a number of boxes that grows with the product of
/// the rules before it.
#[derive(Clone, Debug)]
pub struct Residue {
    base: Space,
    pending: Vec<Cube>,
    /// The tag given with each pending box's subtraction.
    owners: Vec<usize>,
    cap: usize,
}

impl Residue {
    /// The space `s`, nothing subtracted yet.
    pub fn new(s: Space, cap: usize) -> Residue {
        Residue {
            base: s,
            pending: Vec::new(),
            owners: Vec::new(),
            cap,
        }
    }

    /// The space as boxes, while it is held so.
    pub fn exact(&self) -> Option<&Space> {
        self.pending.is_empty().then_some(&self.base)
    }

    /// Whether it is known to be empty without a search.
    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    /// Remove the packets of `o`.
    pub fn subtract(&mut self, o: &Space) {
        self.subtract_as(o, usize::MAX);
    }

    /// Remove the packets of `o`, tagged `tag` for [`Residue::first_owners`].
    pub fn subtract_as(&mut self, o: &Space, tag: usize) {
        if self.pending.is_empty() {
            if !self.base.overlaps(o) {
                return;
            }
            let next = self.base.minus(o);
            if next.cubes.len() <= self.cap {
                self.base = next;
                return;
            }
        }
        for c in &o.cubes {
            if self.base.cubes.iter().any(|b| cubes_overlap(b, c)) {
                self.pending.push(*c);
                self.owners.push(tag);
            }
        }
    }

    /// When every packet of the space as held is in the boxes still to subtract:
    /// the tags of the subtractions that hold the first box of some packet, in
    /// the order given (`Ok(None)`: some packet is in none of them). Depth first
    /// as [`uncovered`], but a box is dropped only when the first pending box
    /// that overlaps it holds it whole, so that each part is credited to the
    /// first subtraction that takes it.
    pub fn first_owners(&self, budget: &mut u64) -> Result<Option<Vec<usize>>, GaveUp> {
        let cover = &self.pending;
        let mut owners = Vec::new();
        for t in &self.base.cubes {
            let all: Vec<u32> = (0..cover.len() as u32)
                .filter(|&k| cover.get(k as usize).is_some_and(|c| cubes_overlap(t, c)))
                .collect();
            *budget = budget.checked_sub(cover.len() as u64).ok_or(GaveUp)?;
            let mut stack = vec![(*t, all)];
            while let Some((b, over)) = stack.pop() {
                let Some(c) = over.first().and_then(|&k| cover.get(k as usize)) else {
                    return Ok(None);
                };
                let Some((outside, inside)) = split(&b, c) else {
                    owners.extend(over.first().and_then(|&k| self.owners.get(k as usize)));
                    continue;
                };
                *budget = budget.checked_sub(2 * over.len() as u64).ok_or(GaveUp)?;
                let keep = |piece: &Cube| -> Vec<u32> {
                    over.iter()
                        .copied()
                        .filter(|&k| {
                            cover
                                .get(k as usize)
                                .is_some_and(|c| cubes_overlap(piece, c))
                        })
                        .collect()
                };
                let (ins, out) = (keep(&inside), keep(&outside));
                stack.push((inside, ins));
                stack.push((outside, out));
            }
        }
        owners.sort_unstable();
        owners.dedup();
        Ok(Some(owners))
    }

    /// Its packets within `within` (all of them when `None`).
    pub fn find(&self, within: Option<&Space>, budget: &mut u64) -> Found {
        let target = match within {
            Some(w) => self.base.intersect(w),
            None => self.base.clone(),
        };
        if target.is_empty() {
            Found::None
        } else if self.pending.is_empty() {
            Found::Some(target)
        } else {
            uncovered(&target.cubes, &self.pending, budget)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cube(ranges: [(u128, u128); DIMS]) -> Cube {
        ranges.map(|(lo, hi)| Iv::new(lo, hi).unwrap())
    }

    fn all(n: u128) -> [(u128, u128); DIMS] {
        [(0, n); DIMS]
    }

    fn count(s: &Space, n: u128) -> usize {
        // Brute force over a tiny universe: how many points are inside.
        let mut k = 0;
        let mut p = [0u128; DIMS];
        let total = (n + 1).pow(DIMS as u32);
        for mut i in 0..total {
            for v in p.iter_mut() {
                *v = i % (n + 1);
                i /= n + 1;
            }
            if s.contains(&p) {
                k += 1;
            }
        }
        k
    }

    #[test]
    fn subtract_is_exact_on_a_small_universe() {
        let a = Space::from_cube(cube(all(2)));
        let mut r = all(2);
        r[0] = (1, 1);
        r[4] = (0, 1);
        let b = Space::from_cube(cube(r));
        let d = a.minus(&b);
        assert_eq!(count(&d, 2), 3usize.pow(8) - 2 * 3usize.pow(6));
        assert!(!d.overlaps(&b));
        assert!(b.is_subset_of(&a));
        assert!(!a.is_subset_of(&b));
        let again = d.minus(&a);
        assert!(again.is_empty());
    }

    #[test]
    fn disjoint_subtraction_leaves_space_alone() {
        let mut r = all(5);
        r[2] = (0, 1);
        let a = Space::from_cube(cube(r));
        r[2] = (2, 3);
        let b = Space::from_cube(cube(r));
        assert_eq!(a.minus(&b), a);
        assert!(a.intersect(&b).is_empty());
    }
}

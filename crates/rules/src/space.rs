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

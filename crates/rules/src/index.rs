//! A bucket index over one dimension of the flattened rules' bounding boxes, so
//! that finding the earlier (or later) rules that can overlap a rule does not scan
//! the whole chain. Large rulesets are mostly narrow rules (one host, one port);
//! only rules overlapping in the indexed dimension are candidates, in order.

use std::collections::HashMap;
use std::ops::Range;

use crate::analysis::FlatRule;
use crate::space::{Cube, DIMS, Dim};

/// Candidate lookup for one flattened chain.
pub struct Index {
    dim: usize,
    shift: u32,
    /// Rules too wide for a bucket (always candidates), ascending.
    wide: Vec<usize>,
    /// Narrow rules by `lo >> shift` (and `hi >> shift`), ascending.
    buckets: HashMap<u128, Vec<usize>>,
    /// Bounding box per rule (`None` for an empty space).
    hulls: Vec<Option<Cube>>,
}

fn hull(r: &FlatRule) -> Option<Cube> {
    let mut cubes = r.space.cubes().iter();
    let mut h = *cubes.next()?;
    for c in cubes {
        for d in 0..DIMS {
            h[d].lo = h[d].lo.min(c[d].lo);
            h[d].hi = h[d].hi.max(c[d].hi);
        }
    }
    Some(h)
}

fn sub_range<'a>(list: &'a [usize], r: &Range<usize>) -> &'a [usize] {
    let a = list.partition_point(|&x| x < r.start);
    let b = list.partition_point(|&x| x < r.end);
    list.get(a..b).unwrap_or_default()
}

impl Index {
    /// Index `rules` on the dimension and bucket width (source or destination
    /// address, destination port) that make the candidate lists shortest.
    pub fn new(rules: &[FlatRule]) -> Index {
        let hulls: Vec<Option<Cube>> = rules.iter().map(hull).collect();
        let options = [
            (Dim::Src as usize, 0),
            (Dim::Src as usize, 8),
            (Dim::Src as usize, 16),
            (Dim::Dst as usize, 0),
            (Dim::Dst as usize, 8),
            (Dim::Dst as usize, 16),
            (Dim::Dport as usize, 0),
            (Dim::Dport as usize, 6),
        ];
        let build = |dim: usize, shift: u32| {
            let mut wide = Vec::new();
            let mut buckets: HashMap<u128, Vec<usize>> = HashMap::new();
            for (i, h) in hulls.iter().enumerate() {
                let Some(h) = h else { continue };
                if (h[dim].hi - h[dim].lo) >> shift == 0 {
                    let (a, b) = (h[dim].lo >> shift, h[dim].hi >> shift);
                    buckets.entry(a).or_default().push(i);
                    if b != a {
                        buckets.entry(b).or_default().push(i);
                    }
                } else {
                    wide.push(i);
                }
            }
            // Pairs compared: every rule against the wide ones, plus within buckets.
            let cost = wide.len() * hulls.len()
                + buckets.values().map(|v| v.len() * v.len()).sum::<usize>();
            (cost, wide, buckets)
        };
        // (cost, dimension, shift, wide rules, buckets) of the cheapest layout.
        type Layout = (usize, usize, u32, Vec<usize>, HashMap<u128, Vec<usize>>);
        let mut best: Option<Layout> = None;
        for (dim, shift) in options {
            let (cost, wide, buckets) = build(dim, shift);
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, dim, shift, wide, buckets));
            }
        }
        let (_, dim, shift, wide, buckets) =
            best.unwrap_or((0, Dim::Dst as usize, 8, Vec::new(), HashMap::new()));
        Index {
            dim,
            shift,
            wide,
            buckets,
            hulls,
        }
    }

    /// Rules in `range` that may overlap rule `i`, ascending.
    pub fn candidates(&self, i: usize, range: Range<usize>) -> Vec<usize> {
        let Some(Some(h)) = self.hulls.get(i) else {
            return Vec::new();
        };
        let (d, s) = (self.dim, self.shift);
        let overlaps = |j: &usize| {
            self.hulls
                .get(*j)
                .copied()
                .flatten()
                .is_some_and(|o| (0..DIMS).all(|k| o[k].lo <= h[k].hi && h[k].lo <= o[k].hi))
        };
        let mut out: Vec<usize> = if (h[d].hi - h[d].lo) >> s == 0 {
            let (a, b) = (h[d].lo >> s, h[d].hi >> s);
            let mut v: Vec<usize> = sub_range(&self.wide, &range).to_vec();
            let keys: &[u128] = if a == b { &[a] } else { &[a, b] };
            for key in keys {
                if let Some(list) = self.buckets.get(key) {
                    v.extend_from_slice(sub_range(list, &range));
                }
            }
            // Each list is ascending; merging only needs a sort when there are two.
            if keys.len() > 1 || !self.wide.is_empty() {
                v.sort_unstable();
                v.dedup();
            }
            v
        } else {
            range.collect()
        };
        out.retain(overlaps);
        out
    }
}

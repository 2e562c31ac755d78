//! Compiling symbolic rule conditions into packet spaces, and mapping between
//! concrete packets and points of the space.
//!
//! Interfaces are numbered: every literal name in the ruleset, one representative
//! per wildcard prefix ("some other name starting with `eth`") and one for "any
//! other name". Two real interfaces with the same representative are matched by
//! exactly the same rules, so the numbering is exact. NSG service tags use the
//! interface dimensions instead (NSGs have no interfaces): bit `k` of the value says
//! whether the address belongs to tag `k`, and every combination is considered
//! possible, so conclusions hold whatever the tags really contain.

use std::collections::BTreeSet;

use crate::addrtype::Host;
use crate::model::{
    CtState, Family, Field, Packet, Ruleset, V4_BASE, Values, addr_to_u128, u128_to_addr,
};
use crate::space::{Cube, DIMS, Dim, Iv, Space};

/// Most tags one ruleset may use: tag membership is a bit vector in a `u128`.
const MAX_TAGS: usize = 100;

/// The numbering of interfaces (or tags) of one ruleset.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// Interface representatives, sorted; an interface id is an index.
    ifaces: Vec<String>,
    /// Wildcard prefixes, for mapping a real name to its representative.
    wildcards: Vec<String>,
    /// No rule tests an interface: examples then carry none.
    no_ifaces: bool,
    /// Tag names; a tag id is a bit index.
    tags: Vec<String>,
    /// What is known of the host, for address types.
    host: Host,
}

/// Representative of "some other name" for a wildcard prefix. `*` cannot appear in
/// a Linux interface name written in a rule, so it never collides with a literal.
fn rep(prefix: &str) -> String {
    format!("{prefix}*")
}

fn normalise(mut v: Vec<Iv>) -> Vec<Iv> {
    v.sort_by_key(|iv| iv.lo);
    let mut out: Vec<Iv> = Vec::with_capacity(v.len());
    for iv in v {
        match out.last_mut() {
            Some(last) if iv.lo <= last.hi.saturating_add(1) => last.hi = last.hi.max(iv.hi),
            _ => out.push(iv),
        }
    }
    out
}

fn intersect_lists(a: &[Iv], b: &[Iv]) -> Vec<Iv> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if let Some(iv) = Iv::new(x.lo.max(y.lo), x.hi.min(y.hi)) {
                out.push(iv);
            }
        }
    }
    normalise(out)
}

fn complement(list: &[Iv], universe: Iv) -> Vec<Iv> {
    let mut out = Vec::new();
    let mut next = universe.lo;
    let mut done = false;
    for iv in normalise(list.to_vec()) {
        if iv.hi < universe.lo || iv.lo > universe.hi {
            continue;
        }
        if iv.lo > next {
            out.extend(Iv::new(next, iv.lo - 1));
        }
        if iv.hi >= universe.hi {
            done = true;
            break;
        }
        next = next.max(iv.hi + 1);
    }
    if !done {
        out.extend(Iv::new(next, universe.hi));
    }
    out
}

impl Compiler {
    /// Number the interfaces and tags used anywhere in `rs`.
    pub fn new(rs: &Ruleset) -> Compiler {
        Compiler::with_host(rs, Host::default())
    }

    /// As [`Compiler::new`], knowing the host's addresses (for address types).
    pub fn with_host(rs: &Ruleset, host: Host) -> Compiler {
        let mut names = BTreeSet::new();
        let mut wildcards = BTreeSet::new();
        let mut tags = BTreeSet::new();
        let mut any_iface = false;
        for t in &rs.tables {
            for c in &t.chains {
                for r in &c.rules {
                    for cond in &r.conds {
                        match &cond.values {
                            Values::Ifaces(pats) => {
                                any_iface = true;
                                for p in pats {
                                    if p.wildcard {
                                        wildcards.insert(p.name.clone());
                                        names.insert(rep(&p.name));
                                    } else {
                                        names.insert(p.name.clone());
                                    }
                                }
                            }
                            Values::Tags(ts) => tags.extend(ts.iter().cloned()),
                            Values::Ranges(_) | Values::AddrTypes(_) => {}
                        }
                    }
                }
            }
        }
        names.insert(rep(""));
        let mut wildcards: Vec<String> = wildcards.into_iter().collect();
        // Longest prefix first, so a real name maps to its most specific class.
        wildcards.sort_by_key(|w| std::cmp::Reverse(w.len()));
        Compiler {
            ifaces: names.into_iter().collect(),
            wildcards,
            no_ifaces: !any_iface,
            tags: tags.into_iter().take(MAX_TAGS).collect(),
            host,
        }
    }

    fn tag_mode(&self) -> bool {
        !self.tags.is_empty()
    }

    fn iface_universe(&self) -> Iv {
        if self.tag_mode() {
            Iv {
                lo: 0,
                hi: (1u128 << self.tags.len()) - 1,
            }
        } else {
            Iv {
                lo: 0,
                hi: self.ifaces.len().saturating_sub(1) as u128,
            }
        }
    }

    /// The universe box of a table of the given family.
    pub fn universe(&self, family: Family) -> Cube {
        let addr = match family {
            Family::V4 => Iv {
                lo: V4_BASE,
                hi: V4_BASE | 0xffff_ffff,
            },
            Family::V6 | Family::Inet => Iv {
                lo: 0,
                hi: u128::MAX,
            },
        };
        let port = Iv { lo: 0, hi: 65535 };
        [
            addr,
            addr,
            Iv { lo: 0, hi: 255 },
            port,
            port,
            self.iface_universe(),
            self.iface_universe(),
            Iv {
                lo: 0,
                hi: CtState::ALL.len() as u128 - 1,
            },
        ]
    }

    fn tag_bits(&self, tags: &[String], universe: Iv) -> Vec<Iv> {
        let mut out = Vec::new();
        for t in tags {
            let Some(b) = self.tags.iter().position(|x| x == t) else {
                continue;
            };
            // Values with bit `b` set: runs of 2^b, every 2^(b+1).
            let run = 1u128 << b;
            let mut base = run;
            while base <= universe.hi {
                out.extend(Iv::new(base, base + run - 1));
                base += run << 1;
            }
        }
        normalise(out)
    }

    fn values(&self, values: &Values, field: Field, universe: Iv, hook: &str) -> Option<Vec<Iv>> {
        Some(match values {
            Values::AddrTypes(types) => {
                let rs = self.host.ranges(types, field, hook)?;
                normalise(rs.iter().filter_map(|&(lo, hi)| Iv::new(lo, hi)).collect())
            }
            Values::Ranges(rs) => {
                normalise(rs.iter().filter_map(|&(lo, hi)| Iv::new(lo, hi)).collect())
            }
            Values::Ifaces(pats) => {
                let ids = self
                    .ifaces
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| pats.iter().any(|p| p.matches(n)))
                    .map(|(i, _)| Iv::point(i as u128))
                    .collect();
                normalise(ids)
            }
            Values::Tags(tags) => {
                if !matches!(field, Field::Src | Field::Dst) {
                    return None;
                }
                // `*`/`Any` is every address: handled by the parser; other tags are bits.
                self.tag_bits(tags, universe)
            }
        })
    }

    /// The space of packets satisfying all `conds` within `universe`.
    pub fn compile(&self, conds: &[crate::model::Cond], universe: &Cube) -> Space {
        self.compile_at(conds, universe, "").0
    }

    /// The space of packets satisfying all `conds` within `universe`, in a base
    /// chain on `hook`, and whether it is exact: a condition whose values are not
    /// known there (an address type the hook does not settle) is left out, so the
    /// space over-approximates.
    pub fn compile_at(
        &self,
        conds: &[crate::model::Cond],
        universe: &Cube,
        hook: &str,
    ) -> (Space, bool) {
        let mut exact = true;
        let mut dims: [Vec<Iv>; DIMS] = universe.map(|iv| vec![iv]);
        for c in conds {
            let d = match (&c.values, c.field) {
                (Values::Tags(_), Field::Src) => Dim::Iif,
                (Values::Tags(_), Field::Dst) => Dim::Oif,
                (_, Field::Src) => Dim::Src,
                (_, Field::Dst) => Dim::Dst,
                (_, Field::Proto) => Dim::Proto,
                (_, Field::Sport) => Dim::Sport,
                (_, Field::Dport) => Dim::Dport,
                (_, Field::Iif) => Dim::Iif,
                (_, Field::Oif) => Dim::Oif,
                (_, Field::State) => Dim::State,
            } as usize;
            let Some(mut list) = self.values(&c.values, c.field, universe[d], hook) else {
                exact &= !matches!(c.values, Values::AddrTypes(_));
                continue;
            };
            if c.negated {
                list = complement(&list, universe[d]);
            }
            dims[d] = intersect_lists(&dims[d], &list);
            if dims[d].is_empty() {
                return (Space::empty(), exact);
            }
        }
        // The product of the per-dimension interval lists.
        let mut cubes: Vec<Cube> = vec![*universe];
        for (d, list) in dims.iter().enumerate() {
            if list.len() == 1 {
                for c in &mut cubes {
                    c[d] = list[0];
                }
                continue;
            }
            let mut next = Vec::with_capacity(cubes.len() * list.len());
            for c in &cubes {
                for iv in list {
                    let mut c = *c;
                    c[d] = *iv;
                    next.push(c);
                }
            }
            cubes = next;
        }
        (Space::from_cubes(cubes), exact)
    }

    fn iface_id(&self, name: &str) -> u128 {
        let id = |n: &str| self.ifaces.iter().position(|x| x == n);
        let found = id(name)
            .or_else(|| {
                self.wildcards
                    .iter()
                    .find(|w| name.starts_with(w.as_str()))
                    .and_then(|w| id(&rep(w)))
            })
            .or_else(|| id(&rep("")));
        found.unwrap_or(0) as u128
    }

    fn tags_value(&self, tags: &BTreeSet<String>) -> u128 {
        self.tags
            .iter()
            .enumerate()
            .filter(|(_, t)| tags.contains(*t))
            .fold(0, |acc, (i, _)| acc | (1 << i))
    }

    fn value_tags(&self, v: u128) -> BTreeSet<String> {
        self.tags
            .iter()
            .enumerate()
            .filter(|(i, _)| v & (1 << i) != 0)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The point of a concrete packet.
    pub fn point(&self, p: &Packet) -> [u128; DIMS] {
        let (iif, oif) = if self.tag_mode() {
            (self.tags_value(&p.src_tags), self.tags_value(&p.dst_tags))
        } else {
            (
                p.iif.as_deref().map_or(0, |n| self.iface_id(n)),
                p.oif.as_deref().map_or(0, |n| self.iface_id(n)),
            )
        };
        [
            addr_to_u128(p.src),
            addr_to_u128(p.dst),
            u128::from(p.proto),
            u128::from(p.sport),
            u128::from(p.dport),
            iif,
            oif,
            p.state as u128,
        ]
    }

    /// The concrete packet of a point.
    pub fn packet(&self, v: &[u128; DIMS]) -> Packet {
        let name = |i: u128| {
            if self.tag_mode() || self.no_ifaces {
                None
            } else {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.ifaces.get(i))
                    .cloned()
            }
        };
        let small = |x: u128, max: u128| u16::try_from(x.min(max)).unwrap_or(u16::MAX);
        Packet {
            src: u128_to_addr(v[0]),
            dst: u128_to_addr(v[1]),
            proto: u8::try_from(v[2].min(255)).unwrap_or(u8::MAX),
            sport: small(v[3], 65535),
            dport: small(v[4], 65535),
            iif: name(v[5]),
            oif: name(v[6]),
            state: CtState::from_index(v[7]),
            src_tags: if self.tag_mode() {
                self.value_tags(v[5])
            } else {
                BTreeSet::new()
            },
            dst_tags: if self.tag_mode() {
                self.value_tags(v[6])
            } else {
                BTreeSet::new()
            },
        }
    }

    /// Interface names known to the numbering (for tests that generate packets).
    pub fn iface_names(&self) -> &[String] {
        &self.ifaces
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn complement_covers_the_gaps() {
        let u = Iv { lo: 0, hi: 10 };
        let c = complement(&[Iv { lo: 2, hi: 3 }, Iv { lo: 5, hi: 10 }], u);
        assert_eq!(c, vec![Iv { lo: 0, hi: 1 }, Iv { lo: 4, hi: 4 }]);
        assert_eq!(complement(&[], u), vec![u]);
        assert!(complement(&[u], u).is_empty());
    }
}

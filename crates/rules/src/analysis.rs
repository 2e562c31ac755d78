//! The analysis: every base chain is flattened (user chains inlined along jumps,
//! RETURN folded into the guards of later rules), then each rule's reaching set is
//! computed exactly by subtracting the spaces of earlier deciding rules.
//!
//! Two approximations keep conclusions sound when a rule has matches the analysis
//! does not model: its space is an over-approximation, so it is never subtracted
//! when proving that a later rule is covered (upper bound of what reaches), but it
//! is subtracted when choosing example packets (lower bound: packets that certainly
//! reach a rule).

use crate::addrtype::Host;
use crate::compile::Compiler;
use crate::model::{
    CtState, Family, Field, Packet, RuleId, Ruleset, TableKind, Target, V4_BASE, Values, Verdict,
};
use crate::space::{Cube, Dim, Iv, Space};

/// What a flattened rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ends evaluation with a verdict.
    Decide(Verdict),
    /// Evaluation continues (LOG, jumps, RETURN markers, counters).
    Continue,
}

/// One rule occurrence in a flattened base chain.
#[derive(Clone, Debug)]
pub struct FlatRule {
    /// The rule.
    pub id: RuleId,
    /// The jump rules through which evaluation reaches it (outermost first).
    pub path: Vec<RuleId>,
    /// Packets that arrive at this occurrence and match it, ignoring earlier
    /// decisions (exact when `exact`, otherwise an over-approximation).
    pub space: Space,
    /// Whether `space` and the action are known exactly.
    pub exact: bool,
    /// What it does.
    pub action: Action,
}

/// A base chain, flattened.
#[derive(Clone, Debug)]
pub struct FlatChain {
    /// Table index.
    pub table: usize,
    /// Chain index.
    pub chain: usize,
    /// The hook (`INPUT`, `PREROUTING`, `Inbound`, ...).
    pub hook: String,
    /// Table role.
    pub kind: TableKind,
    /// Rules in evaluation order.
    pub rules: Vec<FlatRule>,
    /// Decision for packets no rule decides.
    pub policy: Verdict,
    /// All packets of the table's family.
    pub universe: Cube,
}

/// How a decision for a packet or a set of packets was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The deciding rule, or `None` for the chain policy.
    pub by: Option<RuleId>,
    /// False when a rule with unknown matches might have decided instead.
    pub certain: bool,
}

/// A part of a packet set and how it is decided.
#[derive(Clone, Debug)]
pub struct Part {
    /// The verdict (meaningless when `!certain`).
    pub verdict: Verdict,
    /// Deciding rule, `None` for the policy.
    pub by: Option<RuleId>,
    /// False: a rule with unknown matches may take these packets.
    pub certain: bool,
    /// The packets.
    pub space: Space,
}

/// A problem found while flattening.
#[derive(Clone, Debug)]
pub struct FlattenIssue {
    /// The jump that loops.
    pub rule: RuleId,
    /// The chain jumped to.
    pub target: String,
}

/// A ruleset compiled for analysis.
#[derive(Debug)]
pub struct Analysis<'a> {
    /// The ruleset.
    pub ruleset: &'a Ruleset,
    /// Interface/tag numbering.
    pub compiler: Compiler,
    /// Flattened base chains of the filter and nat tables.
    pub chains: Vec<FlatChain>,
    /// Jump loops (evaluation would not end; the kernel refuses such rulesets).
    pub loops: Vec<FlattenIssue>,
}

struct Walk<'r> {
    rs: &'r Ruleset,
    compiler: &'r Compiler,
    hook: &'r str,
    table: usize,
    universe: Cube,
    policy: Verdict,
    out: Vec<FlatRule>,
    path: Vec<RuleId>,
    stack: Vec<usize>,
    loops: Vec<FlattenIssue>,
}

impl Walk<'_> {
    /// Walk chain `c` for the packets in `guard` (an over-approximation unless
    /// `exact`), appending its rules to `out`.
    fn chain(&mut self, c: usize, mut guard: Space, mut exact: bool, base: bool) {
        let Some(chain) = self.rs.tables.get(self.table).and_then(|t| t.chains.get(c)) else {
            return;
        };
        self.stack.push(c);
        for (ri, rule) in chain.rules.iter().enumerate() {
            let id = RuleId {
                table: self.table,
                chain: c,
                rule: ri,
            };
            let (m, known) = self
                .compiler
                .compile_at(&rule.conds, &self.universe, self.hook);
            let space = guard.intersect(&m);
            let e = exact && rule.unknown.is_empty() && known;
            let push = |out: &mut Vec<FlatRule>, action, ex| {
                out.push(FlatRule {
                    id,
                    path: self.path.clone(),
                    space: space.clone(),
                    exact: ex,
                    action,
                })
            };
            match &rule.target {
                Target::Verdict { verdict, .. } => {
                    let ex = e && !matches!(verdict, Verdict::Unknown(_));
                    push(&mut self.out, Action::Decide(verdict.clone()), ex);
                }
                Target::Continue(_) | Target::None => push(&mut self.out, Action::Continue, e),
                Target::Return => {
                    if base {
                        push(&mut self.out, Action::Decide(self.policy.clone()), e);
                    } else {
                        push(&mut self.out, Action::Continue, e);
                    }
                    if e {
                        guard.subtract(&space);
                    } else {
                        exact = false;
                    }
                }
                Target::Jump(name) | Target::Goto(name) => {
                    push(&mut self.out, Action::Continue, e);
                    let target = self
                        .rs
                        .tables
                        .get(self.table)
                        .and_then(|t| t.chains.iter().position(|ch| &ch.name == name));
                    match target {
                        Some(u) if !self.stack.contains(&u) => {
                            self.path.push(id);
                            self.chain(u, space.clone(), e, false);
                            self.path.pop();
                        }
                        _ => {
                            self.loops.push(FlattenIssue {
                                rule: id,
                                target: name.clone(),
                            });
                            // Treat as an unknown decision: nothing is proved by it.
                            if let Some(last) = self.out.last_mut() {
                                last.action =
                                    Action::Decide(Verdict::Unknown(format!("loop into {name}")));
                                last.exact = false;
                            }
                        }
                    }
                    if matches!(rule.target, Target::Goto(_)) {
                        if e {
                            guard.subtract(&space);
                        } else {
                            exact = false;
                        }
                    }
                }
            }
        }
        self.stack.pop();
    }
}

impl<'a> Analysis<'a> {
    /// Compile and flatten every base chain of the filter and nat tables.
    pub fn new(ruleset: &'a Ruleset) -> Analysis<'a> {
        Analysis::with_host(ruleset, Host::default())
    }

    /// As [`Analysis::new`], knowing the host's addresses (for address types).
    pub fn with_host(ruleset: &'a Ruleset, host: Host) -> Analysis<'a> {
        let compiler = Compiler::with_host(ruleset, host);
        let mut chains = Vec::new();
        let mut loops = Vec::new();
        for (ti, t) in ruleset.tables.iter().enumerate() {
            for (ci, c) in t.chains.iter().enumerate() {
                let (Some(hook), Some(policy)) = (&c.hook, &c.policy) else {
                    continue;
                };
                let kind = c.kind.unwrap_or(t.kind);
                if kind == TableKind::Other {
                    continue;
                }
                let mut universe = compiler.universe(t.family);
                if kind == TableKind::Nat {
                    // Conntrack shows the nat table only the first packet of a
                    // connection; later ones get the same translation.
                    universe[Dim::State as usize] = Iv::point(CtState::New as u128);
                }
                let mut w = Walk {
                    rs: ruleset,
                    compiler: &compiler,
                    hook,
                    table: ti,
                    universe,
                    policy: policy.clone(),
                    out: Vec::new(),
                    path: Vec::new(),
                    stack: Vec::new(),
                    loops: Vec::new(),
                };
                w.chain(ci, family_space(t.family, universe), true, true);
                loops.append(&mut w.loops);
                chains.push(FlatChain {
                    table: ti,
                    chain: ci,
                    hook: hook.clone(),
                    kind,
                    rules: w.out,
                    policy: policy.clone(),
                    universe,
                });
            }
        }
        Analysis {
            ruleset,
            compiler,
            chains,
            loops,
        }
    }

    /// The decision of a flattened chain for one packet.
    pub fn decide(&self, chain: &FlatChain, p: &Packet) -> Decision {
        let pt = self.compiler.point(p);
        for r in &chain.rules {
            let Action::Decide(v) = &r.action else {
                continue;
            };
            if r.space.contains(&pt) {
                return Decision {
                    verdict: v.clone(),
                    by: Some(r.id),
                    // An inexact rule's space over-approximates: the packet may
                    // not match it after all.
                    certain: r.exact,
                };
            }
        }
        Decision {
            verdict: chain.policy.clone(),
            by: None,
            certain: true,
        }
    }

    /// How the packets of `q` are decided by `chain`: certain parts by rule or
    /// policy, and uncertain parts where a rule with unknown matches may decide.
    pub fn decide_space(&self, chain: &FlatChain, q: &Space) -> Vec<Part> {
        let mut rest = q.clone();
        let mut parts = Vec::new();
        for r in &chain.rules {
            if rest.is_empty() {
                break;
            }
            let Action::Decide(v) = &r.action else {
                continue;
            };
            if !rest.overlaps(&r.space) {
                continue;
            }
            let part = rest.intersect(&r.space);
            parts.push(Part {
                verdict: v.clone(),
                by: Some(r.id),
                certain: r.exact,
                space: part,
            });
            rest.subtract(&r.space);
        }
        if !rest.is_empty() {
            parts.push(Part {
                verdict: chain.policy.clone(),
                by: None,
                certain: true,
                space: rest,
            });
        }
        parts
    }

    /// An example packet of a space: the lowest corner of its part with ordinary
    /// unicast addresses at both ends (IPv4 1.0.0.0 to 223.255.255.255 less
    /// loopback, IPv6 2000::/3), which a kernel will route, or of the whole space
    /// when it has none.
    pub fn example(&self, s: &Space) -> Option<Packet> {
        let ordinary = [
            (V4_BASE | 0x0100_0000, V4_BASE | 0x7eff_ffff),
            (V4_BASE | 0x8000_0000, V4_BASE | 0xdfff_ffff),
            (0x2000 << 112, (0x4000 << 112) - 1),
        ];
        let mut cubes = Vec::new();
        for &(slo, shi) in &ordinary {
            for &(dlo, dhi) in &ordinary {
                let mut c = [Iv {
                    lo: 0,
                    hi: u128::MAX,
                }; crate::space::DIMS];
                c[Dim::Src as usize] = Iv { lo: slo, hi: shi };
                c[Dim::Dst as usize] = Iv { lo: dlo, hi: dhi };
                cubes.push(c);
            }
        }
        let ordinary = s.intersect(&Space::from_cubes(cubes));
        let Some(p) = ordinary.sample() else {
            return s.sample().map(|p| self.compiler.packet(&p));
        };
        // Different addresses at the two ends where the space allows it.
        let mut same = [Iv {
            lo: 0,
            hi: u128::MAX,
        }; crate::space::DIMS];
        same[Dim::Dst as usize] = Iv::point(p[Dim::Src as usize]);
        let p = ordinary
            .minus(&Space::from_cube(same))
            .sample()
            .unwrap_or(p);
        Some(self.compiler.packet(&p))
    }

    /// The space of all packets matching given flow coordinates in `chain`'s family.
    pub fn flow_space(
        &self,
        chain: &FlatChain,
        src: &[(u128, u128)],
        dst: &[(u128, u128)],
        proto: u8,
        dports: &[(u128, u128)],
    ) -> Space {
        let conds = [
            cond(Field::Src, src),
            cond(Field::Dst, dst),
            cond(Field::Proto, &[(u128::from(proto), u128::from(proto))]),
            cond(Field::Dport, dports),
            cond(
                Field::State,
                &[(CtState::New as u128, CtState::New as u128)],
            ),
        ];
        self.compiler.compile(&conds, &chain.universe)
    }

    /// The image of `s` under a destination rewrite.
    pub fn rewrite_dst(s: &Space, addrs: Option<(u128, u128)>, ports: Option<(u16, u16)>) -> Space {
        let mut out = s.clone();
        if let Some((lo, hi)) = addrs {
            out = out.with_dim(Dim::Dst, Iv { lo, hi });
        }
        if let Some((lo, hi)) = ports {
            out = out.with_dim(
                Dim::Dport,
                Iv {
                    lo: lo.into(),
                    hi: hi.into(),
                },
            );
        }
        out
    }
}

/// The packets of a family: for IPv6 tables the universe box less IPv4-mapped
/// addresses, so that example packets of an `ip6` table (or ip6tables-save dump)
/// are IPv6 whatever its rules say.
fn family_space(family: Family, universe: Cube) -> Space {
    let mut s = Space::from_cube(universe);
    if family == Family::V6 {
        for d in [Dim::Src, Dim::Dst] {
            let mut mapped = universe;
            mapped[d as usize] = Iv {
                lo: V4_BASE,
                hi: V4_BASE | 0xffff_ffff,
            };
            s.subtract(&Space::from_cube(mapped));
        }
    }
    s
}

fn cond(field: Field, ranges: &[(u128, u128)]) -> crate::model::Cond {
    crate::model::Cond {
        field,
        negated: false,
        values: Values::Ranges(ranges.to_vec()),
    }
}

//! A brute-force first-match evaluator over the parsed model: the reference the
//! analysis is checked against. It follows jumps, gotos and RETURN packet by packet
//! and shares no code with the box algebra.
#![allow(dead_code)]

pub mod lab;

use intraport_rules::model::{Packet, RuleId, Ruleset, Target, Verdict};

/// The verdict for `p` entering base chain `chain` of table `table`, and the
/// deciding rule (`None` for the policy).
pub fn first_match(
    rs: &Ruleset,
    table: usize,
    chain: usize,
    p: &Packet,
) -> (Verdict, Option<RuleId>) {
    let policy = rs.tables[table].chains[chain]
        .policy
        .clone()
        .expect("a base chain");
    match eval(rs, table, chain, p, 0) {
        Some((Some(v), id)) => (v, Some(id)),
        // RETURN in a base chain: the policy decides, because of that rule.
        Some((None, id)) => (policy, Some(id)),
        None => (policy, None),
    }
}

/// `Some` when a rule decides (a verdict, or `None` for a RETURN out of the base
/// chain), `None` when the packet falls off the chain or RETURNs to its caller.
fn eval(
    rs: &Ruleset,
    t: usize,
    c: usize,
    p: &Packet,
    depth: usize,
) -> Option<(Option<Verdict>, RuleId)> {
    assert!(depth < 64, "jump loop");
    let chain = &rs.tables[t].chains[c];
    for (ri, rule) in chain.rules.iter().enumerate() {
        assert!(
            rule.unknown.is_empty(),
            "the reference only knows modelled matches"
        );
        if !rule.conds.iter().all(|cond| cond.matches(p)) {
            continue;
        }
        let id = RuleId {
            table: t,
            chain: c,
            rule: ri,
        };
        let sub = |name: &str| {
            rs.tables[t]
                .chains
                .iter()
                .position(|ch| ch.name == name)
                .expect("declared chain")
        };
        match &rule.target {
            Target::Verdict { verdict, .. } => return Some((Some(verdict.clone()), id)),
            Target::Continue(_) | Target::None => {}
            Target::Return if depth == 0 => return Some((None, id)),
            Target::Return => return None,
            Target::Jump(name) => {
                if let Some(d) = eval(rs, t, sub(name), p, depth + 1) {
                    return Some(d);
                }
            }
            Target::Goto(name) => return eval(rs, t, sub(name), p, depth + 1),
        }
    }
    None
}

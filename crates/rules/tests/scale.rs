//! The audit at scale is still exact: on a generated ruleset of a few thousand rules
//! (the benchmark's generator, `benches/generate/mod.rs`, filter and nat tables),
//! every filter decision for thousands of packets equals brute-force first-match
//! evaluation, every shadowed rule's example packet is decided by one of the rules
//! named as covering it, and a rule called shadowed never decides a packet. Timing
//! lives in the criterion benchmark (`cargo bench -p intraport-rules --bench audit`),
//! never in a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../benches/generate/mod.rs"]
mod generate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use intraport_rules::analysis::Analysis;
use intraport_rules::model::{CtState, Packet, TableKind};
use intraport_rules::{AuditOptions, InputFormat, Kind, audit, parse};

/// Deterministic packets that hit the generated ruleset's address plan.
fn packets(count: usize) -> Vec<Packet> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let ports = [22u16, 53, 80, 389, 443, 636, 3389, 8443, 1500, 40000];
    (0..count)
        .map(|_| {
            let src: IpAddr = match next(4) {
                0 => [192, 0, 2, next(256) as u8].into(),
                _ => [10, next(8) as u8, next(256) as u8, next(256) as u8].into(),
            };
            let dst: IpAddr = [172, 16, next(64) as u8, next(256) as u8].into();
            Packet {
                src,
                dst,
                proto: if next(4) == 0 { 17 } else { 6 },
                sport: 40000,
                dport: ports[next(ports.len() as u64) as usize],
                iif: Some(["eth0", "eth1", "lo"][next(3) as usize].to_string()),
                oif: None,
                state: CtState::ALL[next(CtState::ALL.len() as u64) as usize],
                src_tags: BTreeSet::new(),
                dst_tags: BTreeSet::new(),
            }
        })
        .collect()
}

#[test]
fn generated_ruleset_is_audited_exactly() {
    let text = generate::iptables(3_000);
    let rs = parse(InputFormat::Iptables, "gen.rules", &text).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    assert!(report.stats.rules >= 3_000, "{:?}", report.stats);
    // Everything the generator writes is modelled.
    assert!(
        !report.findings.iter().any(|f| f.kind == Kind::UnknownMatch),
        "{:#?}",
        report
            .findings
            .iter()
            .filter(|f| f.kind == Kind::UnknownMatch)
            .collect::<Vec<_>>()
    );
    let by_kind: BTreeMap<String, usize> =
        report.findings.iter().fold(BTreeMap::new(), |mut m, f| {
            *m.entry(f.kind.to_string()).or_default() += 1;
            m
        });
    // A ruleset this size, written by hand over years, has all of these.
    for k in [
        "shadowed",
        "redundant",
        "correlated",
        "nat-overlap",
        "permissive",
    ] {
        assert!(
            by_kind.get(k).is_some_and(|n| *n > 0),
            "no {k}: {by_kind:?}"
        );
    }

    let a = Analysis::new(&rs);
    let filter: Vec<_> = a
        .chains
        .iter()
        .filter(|c| c.kind == TableKind::Filter)
        .collect();
    assert_eq!(filter.len(), 3);
    let shadowed: BTreeSet<(String, usize)> = report
        .findings
        .iter()
        .filter(|f| f.kind == Kind::Shadowed)
        .filter_map(|f| {
            let r = f.rule.as_ref()?;
            Some((f.hook.clone()?, r.loc.line?))
        })
        .collect();
    assert!(!shadowed.is_empty());

    // The analysis decides like first-match evaluation, and dead rules never decide.
    let mut decided_by_rule = 0;
    for chain in &filter {
        for p in packets(3_000) {
            let (want, by) = common::first_match(&rs, chain.table, chain.chain, &p);
            let got = a.decide(chain, &p);
            assert_eq!(got.verdict, want, "{} {p}", chain.hook);
            assert_eq!(got.by, by, "{} {p}", chain.hook);
            assert!(got.certain);
            if let Some(id) = by {
                decided_by_rule += 1;
                let line = rs.rule(id).unwrap().loc.line.unwrap();
                assert!(
                    !shadowed.contains(&(chain.hook.clone(), line)),
                    "shadowed rule at line {line} decided {p} in {}",
                    chain.hook
                );
            }
        }
    }
    assert!(decided_by_rule > 1_000, "the packets exercise the rules");

    // Each shadowed finding's example is decided by one of the rules it names as
    // covering it.
    for f in report.findings.iter().filter(|f| f.kind == Kind::Shadowed) {
        let hook = f.hook.as_deref().unwrap();
        let chain = filter.iter().find(|c| c.hook == hook).unwrap();
        let Some(ex) = &f.example else {
            // A rule nothing can reach here (e.g. a zone chain's rule for another
            // zone's sources): no packet to show; the loop above proves it dead.
            assert!(
                f.related.is_empty() && f.message.starts_with("no packet"),
                "{f:#?}"
            );
            continue;
        };
        let (_, by) = common::first_match(&rs, chain.table, chain.chain, ex);
        let by_line = by.map(|id| rs.rule(id).unwrap().loc.line.unwrap());
        assert!(
            f.related.iter().any(|r| r.loc.line == by_line),
            "{}: example {ex} decided by line {by_line:?}, not by {:?}",
            f.message,
            f.related
        );
    }
}

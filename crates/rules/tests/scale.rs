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

fn findings_key(
    rs: &intraport_rules::Ruleset,
    o: &AuditOptions,
) -> Vec<(Kind, Option<usize>, Vec<Option<usize>>)> {
    let mut v: Vec<_> = audit(rs, o)
        .findings
        .iter()
        .map(|f| {
            (
                f.kind,
                f.rule.as_ref().and_then(|r| r.loc.line),
                f.related.iter().map(|r| r.loc.line).collect(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The real-shaped ruleset (ufw, Docker, kube-proxy, fail2ban chains): searched past
/// a bound of one box, every rule's findings are those of the default bound, so the
/// search decides as the boxes do on chains jumped to from many places, RETURNs,
/// negations and NAT; and with no search budget at all the questions it would
/// need are reported not decided, while nothing is claimed that the full audit
/// does not claim.
#[test]
fn real_shaped_ruleset_is_decided_alike_by_boxes_and_search() {
    let text = generate::host::host(1_200, 3);
    let rs = parse(InputFormat::Iptables, "host.rules", &text).unwrap();
    let full = findings_key(&rs, &AuditOptions::default());
    assert!(!full.iter().any(|f| f.0 == Kind::NotDecided), "{full:?}");
    for k in [Kind::Shadowed, Kind::Redundant, Kind::Correlated] {
        assert!(full.iter().any(|f| f.0 == k), "no {k}");
    }
    let searched = findings_key(
        &rs,
        &AuditOptions {
            max_boxes: 1,
            ..AuditOptions::default()
        },
    );
    assert_eq!(full, searched);
    let starved = findings_key(
        &rs,
        &AuditOptions {
            max_boxes: 1,
            search_budget: 0,
            ..AuditOptions::default()
        },
    );
    assert!(starved.iter().any(|f| f.0 == Kind::NotDecided));
    // A correlation search that gave up lets a later one into the rule's three,
    // so compare with every correlation of the full audit.
    let every = findings_key(
        &rs,
        &AuditOptions {
            max_correlated_per_rule: usize::MAX,
            ..AuditOptions::default()
        },
    );
    // A rule whose shadowing was left open is treated as reached, so its overlaps
    // with earlier rules (true, and proved by boxes) are reported as correlations
    // where the full audit reports it shadowed.
    for f in starved.iter().filter(|f| f.0 != Kind::NotDecided) {
        let shadowed_instead = f.0 == Kind::Correlated
            && every
                .iter()
                .any(|g| g.1 == f.1 && matches!(g.0, Kind::Shadowed | Kind::Redundant));
        assert!(
            every.contains(f) || shadowed_instead,
            "claimed without a proof: {f:?}"
        );
    }
}

/// A chain's catch-all after thousands of narrow rules (the shape that took the
/// audit minutes: its reaching set held as tens of thousands of boxes) is decided:
/// reached, removable because the policy repeats it, and no question left open.
#[test]
fn a_catch_all_after_thousands_of_rules_is_decided() {
    let mut text =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    text +=
        "-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    for k in 0..3_000u32 {
        text += &format!(
            "-A INPUT -s 10.{}.{}.{}/32 -p tcp -m tcp --dport {} -j ACCEPT\n",
            k % 7,
            (k / 7) % 256,
            k % 251,
            [22, 80, 443, 8080][(k % 4) as usize]
        );
    }
    text += "-A INPUT -j DROP\nCOMMIT\n";
    let rs = parse(InputFormat::Iptables, "catch-all.rules", &text).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    assert!(!report.findings.iter().any(|f| f.kind == Kind::NotDecided));
    let last = 3_000 + 7;
    assert!(
        report.findings.iter().any(|f| f.kind == Kind::Redundant
            && f.rule.as_ref().and_then(|r| r.loc.line) == Some(last)
            && f.message.starts_with("removable")),
        "{:#?}",
        report
            .findings
            .iter()
            .filter(|f| f.rule.as_ref().and_then(|r| r.loc.line) == Some(last))
            .collect::<Vec<_>>()
    );
}

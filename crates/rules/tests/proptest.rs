//! Property tests: for random small rulesets, the analysis decides random packets
//! exactly as a brute-force first-match evaluation does, and what it calls
//! shadowed or redundant-by-cover never decides a packet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use intraport_rules::analysis::Analysis;
use intraport_rules::model::{CtState, Packet};
use intraport_rules::{AuditOptions, InputFormat, Kind, audit, parse};
use proptest::prelude::*;

const NETS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "192.168.0.0/24",
    "10.1.2.0/31",
];
const ADDRS: &[&str] = &[
    "10.0.0.0",
    "10.1.2.3",
    "10.1.2.2",
    "10.1.2.4",
    "10.255.255.255",
    "11.0.0.0",
    "192.168.0.5",
    "192.168.1.0",
    "1.2.3.4",
];
const PORTS: &[&str] = &["22", "80:90", "1:1024", "443"];
const DPORTS: &[u16] = &[22, 79, 80, 85, 90, 91, 443, 1024, 1025];
const IFACES: &[&str] = &["eth0", "eth+", "lo", "wg0"];
const IF_NAMES: &[&str] = &["eth0", "eth1", "lo", "wg0", "ppp0"];
const STATES: &[&str] = &["NEW", "ESTABLISHED,RELATED", "INVALID", "NEW,ESTABLISHED"];

fn neg() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(""), 1 => Just("! ")]
}

fn pick(xs: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(xs)
}

/// One rule's match and target, as iptables-save would print it.
fn rule(in_sub: bool) -> impl Strategy<Value = String> {
    let src = prop::option::of((neg(), pick(NETS)))
        .prop_map(|o| o.map(|(n, x)| format!("{n}-s {x} ")).unwrap_or_default());
    let dst = prop::option::of((neg(), pick(NETS)))
        .prop_map(|o| o.map(|(n, x)| format!("{n}-d {x} ")).unwrap_or_default());
    let iif = prop::option::of((neg(), pick(IFACES)))
        .prop_map(|o| o.map(|(n, x)| format!("{n}-i {x} ")).unwrap_or_default());
    let proto = prop_oneof![
        Just(String::new()),
        (
            pick(&["tcp", "udp"]),
            prop::option::of((neg(), pick(PORTS)))
        )
            .prop_map(|(p, d)| match d {
                Some((n, port)) => format!("-p {p} -m {p} {n}--dport {port} "),
                None => format!("-p {p} "),
            }),
        pick(&["tcp", "udp"]).prop_map(|p| format!("-p {p} -m multiport --dports 22,80:85,443 ")),
    ];
    let state = prop::option::of((neg(), pick(STATES))).prop_map(|o| {
        o.map(|(n, x)| format!("-m conntrack {n}--ctstate {x} "))
            .unwrap_or_default()
    });
    let target = if in_sub {
        prop_oneof![
            Just("ACCEPT"),
            Just("DROP"),
            Just("REJECT"),
            Just("RETURN"),
            Just("LOG")
        ]
        .boxed()
    } else {
        prop_oneof![
            Just("ACCEPT"),
            Just("DROP"),
            Just("REJECT"),
            Just("RETURN"),
            Just("LOG"),
            Just("sub"),
            Just("GOTO")
        ]
        .boxed()
    };
    (src, dst, iif, proto, state, target).prop_map(|(s, d, i, p, st, t)| {
        let tgt = match t {
            "GOTO" => "-g sub".to_string(),
            t => format!("-j {t}"),
        };
        format!("{s}{d}{i}{p}{st}{tgt}")
    })
}

fn ruleset() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(rule(false), 0..10),
        prop::collection::vec(rule(true), 0..5),
        pick(&["ACCEPT", "DROP"]),
    )
        .prop_map(|(main, sub, policy)| {
            let mut s = format!("*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:sub - [0:0]\n");
            for r in main {
                s += &format!("-A INPUT {r}\n");
            }
            for r in sub {
                s += &format!("-A sub {r}\n");
            }
            s + "COMMIT\n"
        })
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        pick(ADDRS),
        pick(ADDRS),
        pick(&["6", "17", "1"]),
        prop::sample::select(DPORTS),
        pick(IF_NAMES),
        prop::sample::select(CtState::ALL.to_vec()),
    )
        .prop_map(|(s, d, p, dport, i, st)| Packet {
            src: s.parse::<IpAddr>().unwrap(),
            dst: d.parse::<IpAddr>().unwrap(),
            proto: p.parse().unwrap(),
            sport: 40000,
            dport,
            iif: Some(i.to_string()),
            oif: None,
            state: st,
            src_tags: BTreeSet::new(),
            dst_tags: BTreeSet::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn analysis_decides_like_first_match(text in ruleset(), packets in prop::collection::vec(packet(), 40)) {
        let rs = parse(InputFormat::Iptables, "p.rules", &text).unwrap();
        let a = Analysis::new(&rs);
        let input = a.chains.iter().find(|c| c.hook == "INPUT").unwrap();
        let report = audit(&rs, &AuditOptions::default());
        let dead: BTreeSet<usize> = report
            .findings
            .iter()
            .filter(|f| f.kind == Kind::Shadowed || (f.kind == Kind::Redundant && !f.related.iter().any(|r| r.loc.line.is_none()) && f.message.starts_with("every packet")))
            .map(|f| f.rule.as_ref().unwrap().loc.line.unwrap())
            .collect();
        for p in &packets {
            let (want, by) = common::first_match(&rs, input.table, input.chain, p);
            let got = a.decide(input, p);
            prop_assert_eq!(&got.verdict, &want, "packet {} in\n{}", p, text);
            prop_assert_eq!(got.by, by, "packet {} in\n{}", p, text);
            prop_assert!(got.certain);
            if let Some(id) = by {
                let line = rs.rule(id).unwrap().loc.line.unwrap();
                prop_assert!(!dead.contains(&line), "dead rule {} decided {} in\n{}", line, p, text);
            }
        }
        // Every example packet demonstrates its finding under the reference.
        for f in &report.findings {
            let Some(ex) = &f.example else { continue };
            let (_, by) = common::first_match(&rs, input.table, input.chain, ex);
            let by_line = by.map(|id| rs.rule(id).unwrap().loc.line.unwrap());
            let rule_line = f.rule.as_ref().unwrap().loc.line;
            match f.kind {
                Kind::Shadowed | Kind::Correlated if !f.related.is_empty() => {
                    prop_assert!(f.related.iter().any(|r| r.loc.line == by_line), "{:?} example {} decided by {:?} in\n{}", f.kind, ex, by_line, text);
                }
                Kind::Permissive => prop_assert_eq!(by_line, rule_line),
                _ => {}
            }
        }
    }

    /// Past the box bound the audit decides by search: with a bound of one box
    /// (every rule searched) it finds the same findings, naming the same rules, as
    /// with no bound (every rule held as boxes), and never a question left open.
    #[test]
    fn search_past_the_box_bound_finds_what_boxes_find(text in ruleset()) {
        let rs = parse(InputFormat::Iptables, "p.rules", &text).unwrap();
        let key = |o: AuditOptions| -> Vec<(Kind, Option<usize>, Vec<Option<usize>>)> {
            let mut v: Vec<_> = audit(&rs, &o)
                .findings
                .iter()
                .map(|f| (f.kind, f.rule.as_ref().and_then(|r| r.loc.line), f.related.iter().map(|r| r.loc.line).collect()))
                .collect();
            v.sort();
            v
        };
        let boxes = key(AuditOptions { max_boxes: usize::MAX, ..AuditOptions::default() });
        let searched = key(AuditOptions { max_boxes: 1, ..AuditOptions::default() });
        prop_assert!(!searched.iter().any(|f| f.0 == Kind::NotDecided), "{:?}", searched);
        prop_assert_eq!(boxes, searched, "in\n{}", text);
    }
}

//! Real firewalls: rulesets are loaded into the kernel inside network namespaces
//! this test creates, dumped back by the real tools, audited, and every finding's
//! example packet is sent through a veth pair while the rule counters are read, so
//! a shadowed rule's counter is seen to stay at zero while its cover's rises.
//!
//! Needs root, `ip`, `iptables-restore`/`iptables-save` and python3 (to send the
//! packet from the peer namespace). Skips with a notice only when `ip netns add` is
//! not permitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::lab::{Lab, id_of, replay};
use intraport_rules::{AuditOptions, Finding, InputFormat, Kind, Report, audit, parse};

const RULES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.99.0.1/32 -i vfw -p tcp --dport 8080 -j DNAT --to-destination 10.99.3.5:80
-A PREROUTING -s 10.99.4.0/24 -d 10.99.0.1/32 -i vfw -p tcp --dport 8080 -j DNAT --to-destination 10.99.3.6:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:guard - [0:0]
-A INPUT -d 10.99.0.1/32 -s 10.99.1.0/24 -p tcp -j DROP
-A INPUT -d 10.99.0.1/32 -s 10.99.1.0/24 -p tcp -m tcp --dport 22 -m comment --comment \"admin ssh\" -j ACCEPT
-A INPUT -d 10.99.0.1/32 -p udp -j guard
-A INPUT -d 10.99.0.1/32 -s 10.99.2.0/24 -p udp -m multiport --dports 5000:5010 -j DROP
-A guard -i vfw -p udp --dport 5005 -j ACCEPT
-A FORWARD -d 10.99.3.0/24 -p tcp -j DROP
COMMIT
";

#[test]
fn iptables_findings_hold_in_the_kernel() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["iptables-restore"], RULES);
    let saved = lab.fw.run(&["iptables-save"]);
    let rs = parse(InputFormat::Iptables, "saved.v4", &saved).unwrap();
    let report: Report = audit(&rs, &AuditOptions::default());
    let find = |k: Kind, needle: &str| -> Finding {
        report
            .findings
            .iter()
            .find(|f| f.kind == k && f.rule.as_ref().unwrap().text.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no {k} finding on `{needle}` in {:#?}\n{saved}",
                    report.findings
                )
            })
            .clone()
    };
    let shadowed = find(Kind::Shadowed, "admin ssh");
    let correlated = find(Kind::Correlated, "5000:5010");
    let dead_nat = find(Kind::NatOverlap, "10.99.3.6");
    let dnat_drop = find(Kind::DnatDropped, "10.99.3.5");

    // The audit reads the real tool's output: the comment came back quoted, the
    // implicit `-m tcp` was added, and the findings name its lines.
    assert!(saved.contains("-m comment --comment \"admin ssh\""));

    let (own, rel) = replay(&lab, &rs, &shadowed);
    assert_eq!(own, 0, "shadowed rule counted the example packet");
    assert!(rel[0] > 0, "covering rule did not count the example packet");

    let (own, rel) = replay(&lab, &rs, &correlated);
    assert_eq!(own, 0);
    assert!(
        rel[0] > 0,
        "the earlier rule did not decide the overlap packet"
    );

    let (own, rel) = replay(&lab, &rs, &dead_nat);
    assert_eq!(own, 0);
    assert!(rel[0] > 0);

    // DNAT into a drop: the example is translated by the DNAT rule, then dropped
    // by the FORWARD rule the finding names.
    let (own, rel) = replay(&lab, &rs, &dnat_drop);
    assert!(own > 0, "DNAT rule did not see the example");
    assert!(rel[0] > 0, "FORWARD drop did not see the translated packet");
}

const NFT_RULES: &str = "
table inet fw {
    chain input {
        type filter hook input priority 0; policy accept;
        ip daddr 10.99.0.1 ip saddr 10.99.1.0/24 meta l4proto tcp counter drop
        ip daddr 10.99.0.1 ip saddr 10.99.1.7 tcp dport 22 counter accept
        ip daddr 10.99.0.1 meta l4proto udp counter jump guard
        ip daddr 10.99.0.1 ip saddr 10.99.2.0/24 udp dport 5000-5010 counter drop
        ct state established,related counter accept
    }
    chain guard {
        iifname \"vfw\" udp dport { 5005, 6000 } counter accept
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip daddr 10.99.3.0/24 meta l4proto tcp counter drop
    }
}
table ip nat {
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        ip daddr 10.99.0.1 iifname \"vfw\" tcp dport 8080 counter dnat to 10.99.3.5:80
        ip saddr 10.99.4.0/24 ip daddr 10.99.0.1 iifname \"vfw\" tcp dport 8080 counter dnat to 10.99.3.6:80
    }
}
";

#[test]
fn nftables_findings_hold_in_the_kernel() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["nft", "-f", "-"], NFT_RULES);
    let saved = lab.fw.run(&["nft", "-j", "list", "ruleset"]);
    let rs = parse(InputFormat::Nftables, "saved.json", &saved).unwrap();
    let report: Report = audit(&rs, &AuditOptions::default());
    let find = |k: Kind, chain: &str, n: usize| -> Finding {
        report
            .findings
            .iter()
            .find(|f| {
                let r = f.rule.as_ref().unwrap();
                let id = id_of(&rs, &r.loc);
                f.kind == k && r.chain == chain && id.rule == n
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {k} finding on {chain} rule {n} in {:#?}",
                    report.findings
                )
            })
            .clone()
    };
    let shadowed = find(Kind::Shadowed, "input", 1);
    let correlated = find(Kind::Correlated, "input", 3);
    let dead_nat = find(Kind::NatOverlap, "prerouting", 1);
    let dnat_drop = find(Kind::DnatDropped, "prerouting", 0);
    assert!(
        shadowed
            .rule
            .as_ref()
            .unwrap()
            .loc
            .name
            .as_ref()
            .unwrap()
            .starts_with("inet fw input handle")
    );

    let (own, rel) = replay(&lab, &rs, &shadowed);
    assert_eq!(own, 0, "shadowed rule counted the example packet");
    assert!(rel[0] > 0, "covering rule did not count the example packet");
    let (own, rel) = replay(&lab, &rs, &correlated);
    assert_eq!(own, 0);
    assert!(rel[0] > 0);
    let (own, rel) = replay(&lab, &rs, &dead_nat);
    assert_eq!(own, 0);
    assert!(rel[0] > 0);
    let (own, rel) = replay(&lab, &rs, &dnat_drop);
    assert!(own > 0, "DNAT rule did not see the example");
    assert!(rel[0] > 0, "forward drop did not see the translated packet");
}

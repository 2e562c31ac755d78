//! One test per finding kind and per parse error, on iptables-save text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use intraport_rules::{AuditOptions, Error, InputFormat, Kind, Report, Severity, audit, parse};

fn run(text: &str) -> Report {
    let rs = parse(InputFormat::Iptables, "rules.v4", text).unwrap();
    audit(&rs, &AuditOptions::default())
}

fn of_kind(r: &Report, k: Kind) -> Vec<&intraport_rules::Finding> {
    r.findings.iter().filter(|f| f.kind == k).collect()
}

fn filter(rules: &str, policy: &str) -> String {
    format!(
        "*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n"
    )
}

#[test]
fn shadowed_rule_names_its_cover_and_an_example() {
    let r = run(&filter(
        "-A INPUT -s 10.0.0.0/8 -p tcp -j DROP\n-A INPUT -s 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT\n",
        "ACCEPT",
    ));
    let s = of_kind(&r, Kind::Shadowed);
    assert_eq!(s.len(), 1, "{:#?}", r.findings);
    let f = s[0];
    assert_eq!(f.rule.as_ref().unwrap().loc.line, Some(6));
    assert_eq!(f.related[0].loc.line, Some(5));
    let ex = f.example.as_ref().unwrap();
    assert_eq!(ex.dport, 22);
    assert_eq!(ex.proto, 6);
    assert!(ex.src.to_string().starts_with("10.1."));
    assert_eq!(f.severity, Severity::Medium);
}

#[test]
fn shadowing_needs_the_whole_rule_covered() {
    let r = run(&filter(
        "-A INPUT -s 10.0.0.0/9 -p tcp -j DROP\n-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT\n",
        "ACCEPT",
    ));
    assert!(of_kind(&r, Kind::Shadowed).is_empty());
    // Partial overlap with a different action is a correlation, though: no, the
    // earlier rule is not a subset of the later one here (all ports vs 22).
    let c = of_kind(&r, Kind::Correlated);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].example
            .as_ref()
            .unwrap()
            .src
            .to_string()
            .starts_with("10.0.")
    );
}

#[test]
fn covered_by_same_action_is_redundant() {
    let r = run(&filter(
        "-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n",
        "DROP",
    ));
    let red = of_kind(&r, Kind::Redundant);
    assert_eq!(red.len(), 1, "{:#?}", r.findings);
    assert_eq!(red[0].rule.as_ref().unwrap().loc.line, Some(6));
    assert!(of_kind(&r, Kind::Shadowed).is_empty());
}

#[test]
fn a_rule_the_policy_repeats_is_removable() {
    let r = run(&filter("-A INPUT -s 192.0.2.0/24 -j DROP\n", "DROP"));
    let red = of_kind(&r, Kind::Redundant);
    assert_eq!(red.len(), 1);
    assert!(red[0].related[0].text.contains("policy DROP"));
    // With an ACCEPT policy the same rule matters.
    let r = run(&filter("-A INPUT -s 192.0.2.0/24 -j DROP\n", "ACCEPT"));
    assert!(of_kind(&r, Kind::Redundant).is_empty());
}

#[test]
fn user_chains_and_return_are_followed() {
    // web RETURNs 1.2.3.4, so its ACCEPT does not cover 1.2.3.4 and the later DROP
    // of 1.2.3.4 port 80 is reached; the DROP of 5.6.7.8 port 80 is shadowed.
    let text = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:web - [0:0]\n\
-A INPUT -p tcp -m tcp --dport 80 -j web\n\
-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 80 -j REJECT\n\
-A INPUT -s 5.6.7.8/32 -p tcp -m tcp --dport 80 -j REJECT\n\
-A web -s 1.2.3.4/32 -j RETURN\n\
-A web -j ACCEPT\n\
COMMIT\n";
    let r = run(text);
    let s = of_kind(&r, Kind::Shadowed);
    assert_eq!(s.len(), 1, "{:#?}", r.findings);
    assert_eq!(s[0].rule.as_ref().unwrap().loc.line, Some(8));
    assert_eq!(s[0].related[0].loc.line, Some(10));
}

#[test]
fn unknown_matches_never_prove_shadowing() {
    let r = run(&filter(
        "-A INPUT -p tcp -m recent --rcheck --seconds 60 --name ssh -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n",
        "DROP",
    ));
    assert!(of_kind(&r, Kind::Shadowed).is_empty(), "{:#?}", r.findings);
    let u = of_kind(&r, Kind::UnknownMatch);
    assert_eq!(u.len(), 1);
    assert!(u[0].message.contains("-m recent"));
    // But a rule with unknown matches can itself be shown shadowed.
    let r = run(&filter(
        "-A INPUT -p tcp -j DROP\n-A INPUT -p tcp -m limit --limit 5/min -m tcp --dport 22 -j ACCEPT\n",
        "DROP",
    ));
    assert_eq!(of_kind(&r, Kind::Shadowed).len(), 1);
}

#[test]
fn negation_and_state_are_exact() {
    let r = run(&filter(
        "-A INPUT ! -s 10.0.0.0/8 -j DROP\n-A INPUT -s 192.168.1.1/32 -j ACCEPT\n-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n-A INPUT -m state --state ESTABLISHED -j DROP\n",
        "ACCEPT",
    ));
    let lines: Vec<_> = of_kind(&r, Kind::Shadowed)
        .iter()
        .map(|f| f.rule.as_ref().unwrap().loc.line.unwrap())
        .collect();
    assert_eq!(lines, vec![6, 8], "{:#?}", r.findings);
}

#[test]
fn accept_from_anywhere_to_ssh_is_permissive() {
    let r = run(&filter(
        "-A INPUT -i eth0 -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 3389 -j ACCEPT\n",
        "DROP",
    ));
    let p = of_kind(&r, Kind::Permissive);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].rule.as_ref().unwrap().loc.line, Some(5));
    assert_eq!(p[0].example.as_ref().unwrap().dport, 22);
    assert_eq!(p[0].example.as_ref().unwrap().iif.as_deref(), Some("eth0"));
    assert!(r.fails(Severity::High));
}

#[test]
fn established_only_accept_is_not_permissive() {
    let r = run(&filter(
        "-A INPUT -p tcp -m conntrack --ctstate ESTABLISHED -j ACCEPT\n",
        "DROP",
    ));
    assert!(of_kind(&r, Kind::Permissive).is_empty());
}

#[test]
fn overlapping_dnat_rules_are_reported() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -p tcp -m tcp --dport 8000:8100 -j DNAT --to-destination 10.0.0.5:80\n\
-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.6:80\n\
-A PREROUTING -s 10.9.0.0/16 -p tcp -m tcp --dport 8050:8200 -j DNAT --to-destination 10.0.0.7:80\n\
COMMIT\n";
    let r = run(text);
    let n = of_kind(&r, Kind::NatOverlap);
    let lines: Vec<_> = n
        .iter()
        .map(|f| f.rule.as_ref().unwrap().loc.line.unwrap())
        .collect();
    assert!(lines.contains(&7), "dead DNAT: {:#?}", r.findings);
    assert!(lines.contains(&8), "partial overlap: {:#?}", r.findings);
    let partial = n
        .iter()
        .find(|f| f.rule.as_ref().unwrap().loc.line == Some(8))
        .unwrap();
    let ex = partial.example.as_ref().unwrap();
    assert!((8050..=8100).contains(&ex.dport));
}

#[test]
fn dnat_into_a_forward_drop_is_reported() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -i eth0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.5:443\n\
COMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A FORWARD -d 10.0.0.5/32 -p tcp -m tcp --dport 80 -j ACCEPT\n\
COMMIT\n";
    let r = run(text);
    let d = of_kind(&r, Kind::DnatDropped);
    assert_eq!(d.len(), 1, "{:#?}", r.findings);
    assert_eq!(d[0].example.as_ref().unwrap().dport, 8443);
    let t = d[0].translated.as_ref().unwrap();
    assert_eq!(t.dst.to_string(), "10.0.0.5");
    assert_eq!(t.dport, 443);
    assert!(d[0].related[0].text.contains("policy DROP"));
    // Allowing the translated traffic makes the finding go away.
    let fixed = text.replace("--dport 80 -j ACCEPT", "--dport 443 -j ACCEPT");
    assert!(of_kind(&run(&fixed), Kind::DnatDropped).is_empty());
}

#[test]
fn other_tables_are_parsed_and_reported_not_analysed() {
    let r = run(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n",
    );
    let n = of_kind(&r, Kind::NotAnalysed);
    assert_eq!(n.len(), 1);
    assert!(n[0].message.contains("mangle"));
    assert!(!r.fails(Severity::Low));
}

fn parse_err(text: &str) -> (usize, String, String) {
    match parse(InputFormat::Iptables, "bad.rules", text) {
        Err(Error::Parse {
            file,
            line,
            token,
            message,
        }) => {
            assert_eq!(file, "bad.rules");
            (line, token, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn parse_errors_name_line_and_token() {
    let (l, t, _) = parse_err(&filter("-A INPUT -s 10.0.0.300 -j ACCEPT\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "10.0.0.300"));
    let (l, t, _) = parse_err(&filter("-A INPUT -p tcp --dport 70000 -j ACCEPT\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "70000"));
    let (l, t, _) = parse_err(&filter("-A NOPE -j ACCEPT\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "NOPE"));
    let (l, t, _) = parse_err(&filter("-A INPUT -p bogus -j ACCEPT\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "bogus"));
    let (l, t, _) = parse_err(&filter("-A INPUT -s\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "-s"));
    let (l, t, _) = parse_err(&filter("-A INPUT -s 10.0.0.1 bogus -j ACCEPT\n", "DROP"));
    assert_eq!((l, t.as_str()), (5, "bogus"));
    let (l, t, _) = parse_err("*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n");
    assert_eq!((l, t.as_str()), (2, "MAYBE"));
    let (l, _, m) = parse_err("*filter\n:INPUT ACCEPT [0:0]\n");
    assert_eq!(l, 2);
    assert!(m.contains("COMMIT"));
    let (l, t, _) = parse_err(&filter(
        "-A INPUT -s 10.0.0.1 -j ACCEPT\n-A INPUT -s 2001:db8::1 -j ACCEPT\n",
        "DROP",
    ));
    assert_eq!((l, t.as_str()), (6, "2001:db8::1"));
    let (l, _, m) = parse_err(&filter(
        "-A INPUT -m comment --comment \"open -j ACCEPT\n",
        "DROP",
    ));
    assert_eq!(l, 5);
    assert!(m.contains("quote"));
}

#[test]
fn ipv6_rulesets_are_analysed() {
    let r = run(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 2001:db8::/32 -p ipv6-icmp -j ACCEPT\n-A INPUT -s 2001:db8:1::/48 -p ipv6-icmp -j DROP\nCOMMIT\n",
    );
    let s = of_kind(&r, Kind::Shadowed);
    assert_eq!(s.len(), 1);
    assert!(s[0].example.as_ref().unwrap().src.is_ipv6());
}

#[test]
fn nft_errors_name_the_place() {
    match parse(
        InputFormat::Nftables,
        "fw.json",
        "{\"nftables\": [\n{\"table\": ",
    ) {
        Err(Error::Parse { file, line, .. }) => assert_eq!((file.as_str(), line), ("fw.json", 2)),
        other => panic!("{other:?}"),
    }
    let jump = r#"{"nftables":[{"table":{"family":"inet","name":"f"}},{"chain":{"family":"inet","table":"f","name":"in","hook":"input","type":"filter","policy":"drop"}},{"rule":{"family":"inet","table":"f","chain":"in","handle":4,"expr":[{"jump":{"target":"nope"}}]}}]}"#;
    match parse(InputFormat::Nftables, "fw.json", jump) {
        Err(Error::Parse { token, message, .. }) => {
            assert_eq!(token, "inet f in handle 4");
            assert!(message.contains("nope"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nft_sets_ranges_and_unknown_expressions() {
    let text = r#"{"nftables":[{"table":{"family":"inet","name":"f"}},{"chain":{"family":"inet","table":"f","name":"in","hook":"input","type":"filter","policy":"drop"}},
{"rule":{"family":"inet","table":"f","chain":"in","handle":4,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[22,{"range":[80,90]}]}}},{"accept":null}]}},
{"rule":{"family":"inet","table":"f","chain":"in","handle":5,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":85}},{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.0.0.0","len":8}}}},{"drop":null}]}},
{"rule":{"family":"inet","table":"f","chain":"in","handle":6,"expr":[{"limit":{"rate":5,"per":"minute"}},{"drop":null}]}},
{"rule":{"family":"inet","table":"f","chain":"in","handle":7,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":53}},{"accept":null}]}}]}"#;
    let rs = parse(InputFormat::Nftables, "fw.json", text).unwrap();
    let r = audit(&rs, &AuditOptions::default());
    let s = of_kind(&r, Kind::Shadowed);
    assert_eq!(s.len(), 1, "{:#?}", r.findings);
    assert_eq!(
        s[0].rule.as_ref().unwrap().loc.name.as_deref(),
        Some("inet f in handle 5")
    );
    assert_eq!(s[0].example.as_ref().unwrap().dport, 85);
    // The rate-limited drop proves nothing: the DNS accept after it is not shadowed.
    assert_eq!(of_kind(&r, Kind::UnknownMatch).len(), 1);
    assert!(
        r.findings
            .iter()
            .all(|f| f.rule.as_ref().and_then(|x| x.loc.name.as_deref())
                != Some("inet f in handle 7")
                || f.kind == Kind::Permissive)
    );
}

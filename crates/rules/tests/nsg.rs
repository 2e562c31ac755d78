//! NSG exports: priorities, default rules, plural prefixes, service tags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use intraport_rules::analysis::Analysis;
use intraport_rules::{
    AuditOptions, Error, FlowStatus, InputFormat, Kind, audit, coverage, parse, parse_flows,
};

const SAMPLE: &str = include_str!("data/nsg-identity.json");

fn names(r: &intraport_rules::Report, k: Kind) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.kind == k)
        .map(|f| f.rule.as_ref().unwrap().loc.name.clone().unwrap())
        .collect()
}

#[test]
fn nsg_sample_findings() {
    let rs = parse(InputFormat::Nsg, "nsg-identity.json", SAMPLE).unwrap();
    let r = audit(&rs, &AuditOptions::default());
    assert_eq!(names(&r, Kind::Permissive), vec!["AllowSshAnywhere"]);
    let mut shadowed = names(&r, Kind::Shadowed);
    shadowed.sort();
    assert_eq!(shadowed, vec!["AllowInternetOutBound", "DenySshFromOnPrem"]);
    let red = names(&r, Kind::Redundant);
    assert!(red.contains(&"AllowHttpsAgain".to_string()), "{red:?}");
    // Findings point at the rule's line in the export.
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::Permissive)
        .unwrap();
    let line = f.rule.as_ref().unwrap().loc.line.unwrap();
    assert!(
        SAMPLE
            .lines()
            .nth(line - 1)
            .unwrap()
            .contains("AllowSshAnywhere")
    );
    // The shadowed deny's example comes from its own prefixes, decided by priority 100.
    let s = r
        .findings
        .iter()
        .find(|f| {
            f.kind == Kind::Shadowed
                && f.rule.as_ref().unwrap().loc.name.as_deref() == Some("DenySshFromOnPrem")
        })
        .unwrap();
    assert!(
        s.example
            .as_ref()
            .unwrap()
            .src
            .to_string()
            .starts_with("10.")
    );
    assert_eq!(s.related[0].loc.name.as_deref(), Some("AllowSshAnywhere"));
    // Tags are opaque: the VirtualNetwork default rule is not called covered by
    // anything, and the tag-based HTTPS allow is not called permissive.
    assert!(!names(&r, Kind::Shadowed).contains(&"AllowVnetInBound".to_string()));
}

#[test]
fn nsg_coverage_of_required_flows() {
    let rs = parse(InputFormat::Nsg, "nsg-identity.json", SAMPLE).unwrap();
    let a = Analysis::new(&rs);
    let flows = parse_flows(
        "flows.toml",
        r#"
[[flow]]
name = "ldap from on-prem"
proto = "tcp"
src = ["192.168.10.0/24"]
dst = ["10.1.0.4/32"]
dports = [389, "3268-3269"]
chain = "Inbound"

[[flow]]
name = "kerberos from on-prem"
proto = "udp"
src = ["192.168.10.0/24"]
dst = ["10.1.0.4/32"]
dports = [88]
chain = "Inbound"

[[flow]]
name = "ldap and kerberos tcp"
proto = "tcp"
src = ["192.168.10.0/24"]
dst = ["10.1.0.4/32"]
dports = [88, 389]
chain = "Inbound"
"#,
    )
    .unwrap();
    let c = coverage(&a, &flows);
    assert_eq!(c[0].status, FlowStatus::Allowed);
    // VirtualNetwork is by default the RFC 1918 space: on-premises to the VNet is
    // allowed by AllowVnetInBound.
    assert_eq!(c[1].status, FlowStatus::Allowed, "{:#?}", c[1]);
    assert_eq!(c[2].status, FlowStatus::Allowed, "{:#?}", c[2]);
    // With the VNet's own space given, on-premises is Internet to the NSG:
    // Kerberos hits DenyAllInBound, with an example from the flow's source.
    let vnet = ["10.1.0.0/16".parse().unwrap()];
    let rs = intraport_rules::nsg::parse_with("nsg-identity.json", SAMPLE, &vnet).unwrap();
    let a = Analysis::new(&rs);
    let c = coverage(&a, &flows);
    assert_eq!(c[0].status, FlowStatus::Allowed);
    assert_eq!(c[1].status, FlowStatus::Blocked, "{:#?}", c[1]);
    assert!(
        c[1].example
            .as_ref()
            .unwrap()
            .src
            .to_string()
            .starts_with("192.168.10.")
    );
    assert_eq!(c[1].by[0].loc.name.as_deref(), Some("DenyAllInBound"));
    assert_eq!(c[2].status, FlowStatus::Partial);
    assert_eq!(c[2].example.as_ref().unwrap().dport, 88);
}

#[test]
fn nsg_errors_name_the_rule_line() {
    let bad = SAMPLE.replacen("\"priority\": 120", "\"priority\": 110", 1);
    match parse(InputFormat::Nsg, "nsg.json", &bad) {
        Err(Error::Parse { line, message, .. }) => {
            assert!(bad.lines().nth(line - 1).unwrap().contains("AllowHttpsWeb"));
            assert!(message.contains("priority 110 used twice"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad = SAMPLE.replacen(
        "\"destinationPortRange\": \"22\"",
        "\"destinationPortRange\": \"22-x\"",
        1,
    );
    match parse(InputFormat::Nsg, "nsg.json", &bad) {
        Err(Error::Parse { token, .. }) => assert_eq!(token, "22-x"),
        other => panic!("{other:?}"),
    }
}

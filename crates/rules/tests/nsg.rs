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

/// The REST form (`GET .../networkSecurityGroups/NAME`): every rule's fields under
/// its own `properties`, the lists under the NSG's `properties`.
fn rest_nsg(with_defaults: bool) -> String {
    let rule = |name: &str, prio: u32, dir: &str, access: &str, dst: &str, port: &str| {
        format!(
            r#"{{"name": "{name}", "id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg-app/securityRules/{name}", "type": "Microsoft.Network/networkSecurityGroups/securityRules", "properties": {{"provisioningState": "Succeeded", "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "{port}", "sourceAddressPrefix": "*", "destinationAddressPrefix": "{dst}", "access": "{access}", "priority": {prio}, "direction": "{dir}", "sourcePortRanges": [], "destinationPortRanges": [], "sourceAddressPrefixes": [], "destinationAddressPrefixes": []}}}}"#
        )
    };
    let custom = [
        rule("AllowHttpsIn", 100, "Inbound", "Allow", "10.1.0.4", "443"),
        rule("DenySmbOut", 100, "Outbound", "Deny", "*", "445"),
    ]
    .join(",\n");
    let defaults = if with_defaults {
        let d = [
            rule(
                "AllowVnetInBound",
                65000,
                "Inbound",
                "Allow",
                "VirtualNetwork",
                "*",
            ),
            rule(
                "AllowAzureLoadBalancerInBound",
                65001,
                "Inbound",
                "Allow",
                "*",
                "*",
            ),
            rule("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
            rule(
                "AllowVnetOutBound",
                65000,
                "Outbound",
                "Allow",
                "VirtualNetwork",
                "*",
            ),
            // An export whose default was read: outbound HTTPS denied here.
            rule(
                "AllowInternetOutBound",
                65001,
                "Outbound",
                "Deny",
                "Internet",
                "*",
            ),
            rule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
        ]
        .join(",\n");
        format!(",\n\"defaultSecurityRules\": [\n{d}\n]")
    } else {
        String::new()
    };
    format!(
        "{{\"name\": \"nsg-app\", \"location\": \"westeurope\", \"type\": \"Microsoft.Network/networkSecurityGroups\",\n\"properties\": {{\n\"securityRules\": [\n{custom}\n]{defaults}\n}}\n}}\n"
    )
}

const ENTRA_OUT: &str = r#"
[[flow]]
name = "Entra ID sign-in"
proto = "tcp"
src = ["10.1.0.4/32"]
dst = ["20.190.128.0/18", "40.126.0.0/18"]
dports = [443]
chain = "Outbound"

[[flow]]
name = "to the VNet"
proto = "tcp"
src = ["10.1.0.4/32"]
dst = ["10.1.2.0/24"]
dports = [445]
chain = "Outbound"
"#;

/// Azure applies its default rules whether or not an export lists them: outbound
/// HTTPS to Entra's public ranges is allowed by AllowInternetOutBound (it was
/// reported blocked by DenyAllOutBound).
#[test]
fn nsg_default_rules_apply_when_the_export_leaves_them_out() {
    let text = rest_nsg(false);
    let rs = parse(InputFormat::Nsg, "nsg-app.json", &text).unwrap();
    let a = Analysis::new(&rs);
    let flows = parse_flows("flows.toml", ENTRA_OUT).unwrap();
    let c = coverage(&a, &flows);
    assert_eq!(c[0].status, FlowStatus::Allowed, "{:#?}", c[0]);
    // SMB inside the VNet: the custom deny decides, not AllowVnetOutBound.
    assert_eq!(c[1].status, FlowStatus::Blocked, "{:#?}", c[1]);
    assert_eq!(c[1].by[0].loc.name.as_deref(), Some("DenySmbOut"));
    // The implied defaults are named as such and have no line in the file.
    let r = audit(&rs, &AuditOptions::default());
    let implied: Vec<_> = r
        .findings
        .iter()
        .flat_map(|f| f.rule.iter().chain(f.related.iter()))
        .filter(|x| {
            x.loc
                .name
                .as_deref()
                .unwrap_or("")
                .contains("Azure default")
        })
        .collect();
    assert!(implied.iter().all(|x| x.loc.line.is_none()));
    // Inbound from the internet to 10.1.0.4:443 is allowed; to :22, the implied
    // DenyAllInBound blocks it.
    let flows = parse_flows(
        "in.toml",
        r#"
[[flow]]
name = "https in"
proto = "tcp"
src = ["198.51.100.0/24"]
dst = ["10.1.0.4/32"]
dports = [443]
chain = "Inbound"

[[flow]]
name = "ssh in"
proto = "tcp"
src = ["198.51.100.0/24"]
dst = ["10.1.0.4/32"]
dports = [22]
chain = "Inbound"
"#,
    )
    .unwrap();
    let c = coverage(&a, &flows);
    assert_eq!(c[0].status, FlowStatus::Allowed);
    assert_eq!(c[1].status, FlowStatus::Blocked);
    assert!(
        c[1].by[0]
            .loc
            .name
            .as_deref()
            .unwrap()
            .starts_with("DenyAllInBound")
    );
}

/// An export's own `properties.defaultSecurityRules` are read (here one that
/// differs from Azure's, so the test can tell), with their lines.
#[test]
fn nsg_exported_default_rules_are_read() {
    let text = rest_nsg(true);
    let rs = parse(InputFormat::Nsg, "nsg-app.json", &text).unwrap();
    let c = coverage(
        &Analysis::new(&rs),
        &parse_flows("flows.toml", ENTRA_OUT).unwrap(),
    );
    assert_eq!(c[0].status, FlowStatus::Blocked, "{:#?}", c[0]);
    let by = &c[0].by[0];
    assert_eq!(by.loc.name.as_deref(), Some("AllowInternetOutBound"));
    let line = by.loc.line.unwrap();
    assert!(
        text.lines()
            .nth(line - 1)
            .unwrap()
            .contains("AllowInternetOutBound")
    );
}

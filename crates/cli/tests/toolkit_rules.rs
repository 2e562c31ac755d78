//! `intraport rules audit` end to end: findings as JSON and a table, `--fail-on` and
//! exit codes, input errors naming file and line, and the coverage of the Entra port
//! map for a component and role, using the very rules `intraport ports --as-rules`
//! prints for them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod toolkit_support;

use serde_json::Value;
use toolkit_support::*;

fn filter(rules: &str) -> String {
    format!(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n"
    )
}

fn kinds(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn findings_as_json_and_table_with_fail_on_levels() {
    let dir = Scratch::new("rules");
    // Line 5 covers line 6 with the opposite action: shadowed (medium).
    let shadow = dir.file(
        "shadow.rules",
        filter(
            "-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j DROP\n\
             -A INPUT -s 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT\n",
        ),
    );
    let out = intraport(&["rules", "audit", &shadow, "--format", "json"]);
    assert_exit(&out, 1);
    let v = json(&out);
    assert_eq!(kinds(&v), ["shadowed"]);
    let f = &v["findings"][0];
    assert_eq!(f["severity"], "medium");
    assert_eq!(f["rule"]["loc"]["line"], 6);
    assert_eq!(f["rule"]["loc"]["file"], shadow.as_str());
    assert_eq!(f["related"][0]["loc"]["line"], 5);
    assert_eq!(f["example"]["dport"], 22);
    assert!(f["example"]["src"].as_str().unwrap().starts_with("10.1."));
    assert_eq!(v["stats"]["rules"], 2);

    assert_exit(
        &intraport(&["rules", "audit", &shadow, "--fail-on", "medium"]),
        1,
    );
    let out = intraport(&[
        "rules",
        "audit",
        &shadow,
        "--fail-on",
        "high",
        "--format",
        "json",
    ]);
    assert_exit(&out, 0);
    assert_eq!(kinds(&json(&out)), ["shadowed"], "still reported");

    let out = intraport(&["rules", "audit", &shadow, "--format", "table"]);
    assert_exit(&out, 1);
    let t = stdout(&out);
    assert!(t.contains("1 findings"), "{t}");
    assert!(
        t.contains("shadowed") && t.contains(&format!("{shadow}:6")),
        "{t}"
    );
    assert!(t.contains("related:") && t.contains("example:"), "{t}");

    // Remote desktop from anywhere: permissive (high), fails even --fail-on high.
    let open = dir.file(
        "open.rules",
        filter("-A INPUT -p tcp -m tcp --dport 3389 -j ACCEPT\n"),
    );
    let out = intraport(&[
        "rules",
        "audit",
        &open,
        "--fail-on",
        "high",
        "--format",
        "json",
    ]);
    assert_exit(&out, 1);
    let v = json(&out);
    assert!(kinds(&v).contains(&"permissive".to_string()), "{v}");

    // Nothing to say: exit 0, empty findings.
    let clean = dir.file(
        "clean.rules",
        filter("-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT\n"),
    );
    let out = intraport(&["rules", "audit", &clean, "--format", "json"]);
    assert_exit(&out, 0);
    assert!(kinds(&json(&out)).is_empty());
}

#[test]
fn input_errors_exit_2_naming_file_and_line() {
    let dir = Scratch::new("rules-err");
    let bad = dir.file(
        "bad.rules",
        filter("-A INPUT -p tcp -j ACCEPT\n-A INPUT -s 10.0.0.300 -j ACCEPT\n"),
    );
    let out = intraport(&["rules", "audit", &bad]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&format!("{bad}:6:")), "{err}");
    assert!(err.contains("10.0.0.300"), "{err}");
    assert!(stdout(&out).is_empty());

    let nft = dir.file("fw.json", "{\"nftables\": [\n{\"table\": ");
    let out = intraport(&["rules", "audit", &nft]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(&format!("{nft}:2")),
        "{}",
        stderr(&out)
    );

    let missing = dir.path().join("nope.rules").display().to_string();
    let out = intraport(&["rules", "audit", &missing]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("nope.rules"), "{}", stderr(&out));

    // Coverage options need a component.
    let ok = dir.file("ok.rules", filter(""));
    assert_exit(
        &intraport(&["rules", "audit", &ok, "--role", "connect-server"]),
        2,
    );
    // A component without addresses, an unknown role: named.
    let out = intraport(&["rules", "audit", &ok, "--component", "pta"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--host"), "{}", stderr(&out));
    let out = intraport(&[
        "rules",
        "audit",
        &ok,
        "--component",
        "pta",
        "--host",
        "toaster=10.0.0.1",
    ]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("toaster"), "{}", stderr(&out));
}

const HOSTS: &[&str] = &[
    "--host",
    "connect-server=10.0.0.5",
    "--host",
    "domain-controller=10.0.1.0/24",
    "--host",
    "entra-id=0.0.0.0/0",
    "--host",
    "crl-ocsp=0.0.0.0/0",
];

/// The `-A` lines `intraport ports --as-rules iptables` prints for the Connect
/// server's own firewall.
fn connect_server_rules() -> Vec<String> {
    let mut args = vec![
        "ports",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--as-rules",
        "iptables",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 0);
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

fn host_firewall(rules: &[String]) -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n");
    for r in rules {
        s.push_str(r);
        s.push('\n');
    }
    s + "COMMIT\n"
}

fn coverage(file: &str) -> (i32, Vec<Value>) {
    let mut args = vec![
        "rules",
        "audit",
        file,
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--fail-on",
        "high",
        "--format",
        "json",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "{}", stderr(&out));
    (code, json(&out)["coverage"].as_array().unwrap().clone())
}

fn status_of<'a>(cov: &'a [Value], flow: &str) -> &'a Value {
    cov.iter()
        .find(|c| c["flow"] == flow)
        .unwrap_or_else(|| panic!("no flow {flow} in {cov:#?}"))
}

#[test]
fn port_map_coverage_allowed_blocked_and_partial() {
    let dir = Scratch::new("coverage");
    let rules = connect_server_rules();
    let ldap = rules
        .iter()
        .position(|r| r.contains("-p tcp -m tcp --dport 389 "))
        .unwrap();

    // Exactly what `ports --as-rules` prints: every required flow gets through.
    let full = dir.file("full.rules", host_firewall(&rules));
    let (code, cov) = coverage(&full);
    assert_eq!(code, 0, "{cov:#?}");
    assert!(cov.len() >= 10, "{cov:#?}");
    for c in &cov {
        assert_eq!(c["status"], "allowed", "{c}");
        assert_eq!(c["chain"], "OUTPUT", "{c}");
    }
    let ldap_flow = "connect-ad-ldap tcp/389";
    assert!(cov.iter().any(|c| c["flow"] == ldap_flow));
    assert!(
        cov.iter()
            .any(|c| c["flow"] == "connect-cloud-https tcp/443")
    );

    // Without the LDAP rule: blocked, by the OUTPUT policy.
    let mut missing = rules.clone();
    missing.remove(ldap);
    let (code, cov) = coverage(&dir.file("missing.rules", host_firewall(&missing)));
    assert_eq!(code, 1);
    let c = status_of(&cov, ldap_flow);
    assert_eq!(c["status"], "blocked", "{c}");
    assert_eq!(c["by"][0]["text"], "policy DROP", "{c}");
    assert_eq!(c["example"]["dport"], 389);
    assert_eq!(c["example"]["src"], "10.0.0.5");
    assert_eq!(
        status_of(&cov, "connect-cloud-https tcp/443")["status"],
        "allowed"
    );

    // A DROP written before it: blocked by that rule, named by file and line.
    let mut dropped = rules.clone();
    dropped.insert(
        0,
        "-A OUTPUT -d 10.0.1.0/24 -p tcp -m tcp --dport 389 -j DROP".to_string(),
    );
    let file = dir.file("dropped.rules", host_firewall(&dropped));
    let (code, cov) = coverage(&file);
    assert_eq!(code, 1);
    let c = status_of(&cov, ldap_flow);
    assert_eq!(c["status"], "blocked", "{c}");
    assert_eq!(c["by"][0]["loc"]["file"], file.as_str());
    assert_eq!(c["by"][0]["loc"]["line"], 5, "the first rule of the file");

    // Only half of the domain controllers' subnet allowed: partial, with an example
    // in the other half.
    let mut half = rules.clone();
    half[ldap] = half[ldap].replace("-d 10.0.1.0/24", "-d 10.0.1.0/25");
    let (code, cov) = coverage(&dir.file("half.rules", host_firewall(&half)));
    assert_eq!(code, 1);
    let c = status_of(&cov, ldap_flow);
    assert_eq!(c["status"], "partial", "{c}");
    let ex = c["example"]["dst"].as_str().unwrap();
    let last: u8 = ex.rsplit('.').next().unwrap().parse().unwrap();
    assert!(ex.starts_with("10.0.1.") && last >= 128, "{ex}");

    // The table names the flows and their status.
    let mut args = vec![
        "rules",
        "audit",
        &file,
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--format",
        "table",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 1);
    let t = stdout(&out);
    let line = t.lines().find(|l| l.starts_with(ldap_flow)).unwrap();
    assert!(
        line.contains("blocked") && line.contains(&format!("{file}:5")),
        "{t}"
    );
}

#[test]
fn port_map_coverage_on_an_nsg_needs_the_protected_role() {
    let dir = Scratch::new("coverage-nsg");
    let mut args = vec![
        "ports",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--as-rules",
        "nsg",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 0);
    let nsg = dir.file("nsg.json", stdout(&out));

    let mut args = vec![
        "rules",
        "audit",
        &nsg,
        "--input",
        "nsg",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--fail-on",
        "high",
        "--format",
        "json",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 0);
    let cov = json(&out)["coverage"].as_array().unwrap().clone();
    assert!(!cov.is_empty());
    for c in &cov {
        assert_eq!(c["chain"], "Outbound", "{c}");
        assert_eq!(c["status"], "allowed", "{c}");
    }

    // Without --role, which side the NSG protects is unknown: a usage error.
    let mut args = vec![
        "rules",
        "audit",
        &nsg,
        "--input",
        "nsg",
        "--component",
        "connect-sync",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--role"), "{}", stderr(&out));
}

/// `--host-address` gives address types the host's addresses, `--external-interface`
/// limits which input interfaces count for "permissive", and `--vnet-address-space`
/// says what VirtualNetwork is in an NSG.
#[test]
fn host_addresses_external_interfaces_and_vnet_space() {
    let dir = Scratch::new("rules-context");
    // ufw's shape: non-local destinations are dropped before the user's rules.
    let rules = dir.file(
        "ufw.rules",
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:not-local - [0:0]\n\
         -A INPUT -j not-local\n\
         -A INPUT -i eth1 -p tcp -m tcp --dport 22 -j ACCEPT\n\
         -A not-local -m addrtype --dst-type LOCAL -j RETURN\n\
         -A not-local -j DROP\nCOMMIT\n",
    );
    let permissive = |extra: &[&str]| {
        let mut args = vec!["rules", "audit", rules.as_str(), "--format", "json"];
        args.extend_from_slice(extra);
        let v = json(&intraport(&args));
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "permissive")
            .cloned()
            .collect::<Vec<_>>()
    };
    let p = permissive(&["--host-address", "192.0.2.10/24"]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["example"]["dst"], "192.0.2.10");
    // eth1 is not among the declared external interfaces: not permissive.
    assert!(permissive(&["--external-interface", "eth0"]).is_empty());
    assert_eq!(permissive(&["--external-interface", "eth1"]).len(), 1);
    let out = intraport(&["rules", "audit", &rules, "--host-address", "not-an-address"]);
    assert_exit(&out, 2);

    let nsg = dir.file(
        "nsg.json",
        r#"{"name": "nsg", "securityRules": [
  {"name": "DenyRdp", "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
   "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "3389"}
]}"#,
    );
    let flows = dir.file(
        "flows.toml",
        "[[flow]]\nname = \"ldap from on-prem\"\nproto = \"tcp\"\nsrc = [\"192.168.10.0/24\"]\ndst = [\"10.1.0.4/32\"]\ndports = [389]\nchain = \"Inbound\"\n",
    );
    let status = |extra: &[&str]| {
        let mut args = vec!["rules", "audit", nsg.as_str(), "--flows", flows.as_str()];
        args.extend_from_slice(&["--format", "json"]);
        args.extend_from_slice(extra);
        json(&intraport(&args))["coverage"][0]["status"].clone()
    };
    // By default 192.168.0.0/16 is VirtualNetwork: AllowVnetInBound lets it in.
    assert_eq!(status(&[]), "allowed");
    assert_eq!(status(&["--vnet-address-space", "10.1.0.0/16"]), "blocked");
}

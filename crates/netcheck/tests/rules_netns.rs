//! The generated firewall rules load into the real iptables and nftables, in a network
//! namespace the test creates (`unshare --net`), so the host's firewall is never touched.
//! `iptables-restore --test` and `nft -c` parse and validate without committing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use intraport_netcheck::hosts::Hosts;
use intraport_netcheck::portmap::{PortMap, Selection};
use intraport_netcheck::rules::{RuleFormat, render_rules, required_flows};

const HOSTS: &str = r#"
connect-server = ["10.0.0.5", "2001:db8:1::5"]
domain-controller = ["10.0.1.0/24", "10.0.2.10", "2001:db8::10"]
entra-id = ["0.0.0.0/0", "::/0"]
crl-ocsp = ["0.0.0.0/0"]
adfs-server = ["10.0.3.0/28"]
wap-server = ["192.0.2.10"]
user-device = ["10.10.0.0/16"]
pta-agent = ["10.0.0.6"]
health-agent = ["10.0.0.5", "10.0.3.1"]
connector = ["10.0.4.2"]
provisioning-agent = ["10.0.4.3"]
"#;

/// Run `args` inside a fresh network namespace with `input` on stdin.
/// Returns None (and says why) when namespaces or the tool are unavailable here.
fn in_netns(args: &[&str], input: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare").args(["--net", "true"]).status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot create a network namespace (needs root and unshare)");
        return None;
    }
    let mut child = match Command::new("unshare")
        .arg("--net")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: {args:?}: {e}");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

fn tool_present(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("SKIPPED: {name} is not installed (Debian package iptables / nftables)");
    }
    found
}

fn selections() -> Vec<Selection> {
    let map = PortMap::builtin().unwrap();
    let mut sels = vec![Selection {
        include_optional: true,
        ..Selection::default()
    }];
    for role in map.roles.keys() {
        sels.push(Selection {
            role: Some(role.clone()),
            include_optional: true,
            ..Selection::default()
        });
    }
    sels
}

#[test]
fn iptables_rules_are_accepted_by_iptables_restore() {
    if !tool_present("iptables-restore") {
        return;
    }
    let map = PortMap::builtin().unwrap();
    let hosts = Hosts::parse(HOSTS, "hosts.toml", &map).unwrap();
    for sel in selections() {
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        let rules = render_rules(&flows, RuleFormat::Iptables).unwrap();
        let Some(out) = in_netns(&["iptables-restore", "--test", "--noflush"], &rules.text) else {
            return;
        };
        assert!(
            out.status.success(),
            "{sel:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rules.text
        );
    }
    // The check can fail: a broken rule is refused.
    let Some(out) = in_netns(
        &["iptables-restore", "--test", "--noflush"],
        "*filter\n-A FORWARD -p tcp -m tcp --dport 70000 -j ACCEPT\nCOMMIT\n",
    ) else {
        return;
    };
    assert!(!out.status.success());
}

#[test]
fn iptables_rules_load_and_list_in_a_namespace() {
    if !tool_present("iptables-restore") {
        return;
    }
    let map = PortMap::builtin().unwrap();
    let hosts = Hosts::parse(HOSTS, "hosts.toml", &map).unwrap();
    let sel = Selection {
        components: vec!["connect-sync".into()],
        role: Some("domain-controller".into()),
        include_optional: false,
    };
    let flows = required_flows(&map, &hosts, &sel).unwrap();
    let rules = render_rules(&flows, RuleFormat::Iptables).unwrap();
    // Load for real, then read back what the kernel holds.
    let script = "iptables-restore --noflush && iptables-save -t filter";
    let Some(out) = in_netns(&["sh", "-c", script], &rules.text) else {
        return;
    };
    let saved = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        saved.contains("-A INPUT -s 10.0.0.5/32 -d 10.0.1.0/24 -p tcp -m tcp --dport 49152:65535"),
        "{saved}"
    );
    let accepts = saved
        .lines()
        .filter(|l| l.contains("intraport connect-"))
        .count();
    let expected: usize = flows
        .iter()
        .map(|f| {
            f.src
                .iter()
                .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
                .count()
                * f.dst
                    .iter()
                    .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
                    .count()
        })
        .sum();
    assert_eq!(accepts, expected, "{saved}");
}

#[test]
fn nftables_rules_are_accepted_by_nft_check() {
    if !tool_present("nft") {
        return;
    }
    let map = PortMap::builtin().unwrap();
    let hosts = Hosts::parse(HOSTS, "hosts.toml", &map).unwrap();
    for sel in selections() {
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        let rules = render_rules(&flows, RuleFormat::Nftables).unwrap();
        let Some(out) = in_netns(&["nft", "-c", "-f", "-"], &rules.text) else {
            return;
        };
        assert!(
            out.status.success(),
            "{sel:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rules.text
        );
    }
    let Some(out) = in_netns(
        &["nft", "-c", "-f", "-"],
        "table inet t { chain c { tcp dport 70000 accept } }\n",
    ) else {
        return;
    };
    assert!(!out.status.success());
}

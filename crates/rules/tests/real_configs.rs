//! Rulesets as real tools write them (ufw's own init script, Docker's and
//! kube-proxy's chain layouts, OpenWrt fw4's verdict maps, ip6tables), loaded into
//! the kernel in network namespaces, dumped back by the real tools and audited;
//! each verdict the audit states is checked by sending packets through the kernel.
//!
//! Needs root, `ip`, iptables, nftables, python3 and ufw (scripts/test.sh installs
//! them). Skips with a notice only when `ip netns add` is not permitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::{Lab, dump, dump_like, id_of, packets, replay};
use intraport_rules::addrtype::Host;
use intraport_rules::analysis::Analysis;
use intraport_rules::audit::audit_analysis;
use intraport_rules::model::{CtState, Location, Ruleset};
use intraport_rules::{
    AuditOptions, Finding, FlowStatus, InputFormat, Kind, Packet, Report, audit, coverage, parse,
    parse_flows,
};

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: 6,
        sport: 40000,
        dport,
        iif: None,
        oif: None,
        state: CtState::New,
        src_tags: Default::default(),
        dst_tags: Default::default(),
    }
}

fn findings<'r>(r: &'r Report, k: Kind, needle: &str) -> Vec<&'r Finding> {
    r.findings
        .iter()
        .filter(|f| {
            f.kind == k
                && f.rule.as_ref().is_some_and(|x| {
                    x.text.contains(needle) || x.loc.name.as_deref().unwrap_or("").contains(needle)
                })
        })
        .collect()
}

/// Send `p` (addressed to the firewall, or with `forwarded` through it) until the
/// counter of the rule at `loc` moves (or 10 s), and return how much it moved.
fn own_counter(lab: &Lab, audited: &Ruleset, loc: &Location, p: &Packet, forwarded: bool) -> u64 {
    let id = id_of(audited, loc);
    let before = packets(&dump_like(&lab.fw, audited), id);
    let mut child = if forwarded {
        lab.send_forwarded(p)
    } else {
        lab.send(p)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after;
    loop {
        after = packets(&dump_like(&lab.fw, audited), id);
        if after > before || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    after - before
}

/// ufw as its own init script sets it up (`/lib/ufw/ufw-init start`, the package's
/// before/after/user rules with `ufw allow 22/tcp` in user.rules), inside the
/// firewall namespace: the layout of a real ufw host, `ufw-not-local` included.
fn start_ufw(lab: &Lab) -> String {
    let init = std::path::Path::new("/lib/ufw/ufw-init");
    assert!(
        init.exists(),
        "ufw is not installed (scripts/test.sh installs it)"
    );
    let dir = std::env::temp_dir().join(format!("intraport-ufw-{}", lab.fw.0));
    let etc = dir.join("etc/ufw");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(dir.join("etc/default")).unwrap();
    std::fs::create_dir_all(dir.join("lib/ufw")).unwrap();
    for f in ["before.rules", "after.rules", "user.rules"] {
        std::fs::copy(format!("/usr/share/ufw/iptables/{f}"), etc.join(f)).unwrap();
    }
    for f in ["ufw-init", "ufw-init-functions"] {
        std::fs::copy(format!("/lib/ufw/{f}"), dir.join("lib/ufw").join(f)).unwrap();
    }
    let conf = std::fs::read_to_string("/usr/share/ufw/ufw.conf").unwrap();
    std::fs::write(
        etc.join("ufw.conf"),
        conf.replace("ENABLED=no", "ENABLED=yes"),
    )
    .unwrap();
    // The package's defaults (input DROP, output ACCEPT), IPv4 only, and no
    // sysctl changes.
    let defaults = std::fs::read_to_string("/etc/default/ufw").unwrap();
    let defaults: String = defaults
        .lines()
        .map(|l| {
            if l.starts_with("IPV6=") {
                "IPV6=no".to_string()
            } else if l.starts_with("IPT_SYSCTL=") {
                format!("IPT_SYSCTL={}", etc.join("sysctl.conf").display())
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(dir.join("etc/default/ufw"), defaults).unwrap();
    std::fs::write(etc.join("sysctl.conf"), "").unwrap();
    let user = std::fs::read_to_string(etc.join("user.rules")).unwrap();
    std::fs::write(
        etc.join("user.rules"),
        user.replace(
            "### RULES ###\n",
            "### RULES ###\n\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n",
        ),
    )
    .unwrap();
    let d = dir.display().to_string();
    lab.fw.run(&[
        "sh",
        &format!("{d}/lib/ufw/ufw-init"),
        "--rootdir",
        &d,
        "--datadir",
        &d,
        "start",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    lab.fw.run(&["iptables-save", "-c"])
}

const UFW_FLOWS: &str = r#"
[[flow]]
name = "ssh to the host"
proto = "tcp"
src = ["203.0.113.0/24"]
dst = ["10.99.0.1/32"]
dports = [22]
chain = "INPUT"

[[flow]]
name = "rdp to the host"
proto = "tcp"
src = ["203.0.113.0/24"]
dst = ["10.99.0.1/32"]
dports = [3389]
chain = "INPUT"

[[flow]]
name = "Entra ID over HTTPS"
proto = "tcp"
src = ["10.99.0.1/32"]
dst = ["20.190.128.0/18"]
dports = [443]
chain = "OUTPUT"
"#;

/// ufw's `ufw-not-local` RETURNs LOCAL, MULTICAST and BROADCAST destinations and
/// drops the rest: with address types modelled, its ssh-from-anywhere is found,
/// and required flows get exact answers (they were all `unknown`), with the
/// host's addresses given and without them.
#[test]
fn ufw_host_ssh_from_anywhere_and_flows_are_exact() {
    let Some(lab) = Lab::new() else { return };
    let saved = start_ufw(&lab);
    assert!(saved.contains("-A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN"));
    let rs = parse(InputFormat::Iptables, "ufw.v4", &saved).unwrap();
    let flows = parse_flows("flows.toml", UFW_FLOWS).unwrap();
    for host in [
        Host::default(),
        Host {
            addresses: vec!["10.99.0.1/24".parse().unwrap()],
        },
    ] {
        let given = !host.addresses.is_empty();
        let a = Analysis::with_host(&rs, host);
        let report = audit_analysis(&a, &AuditOptions::default());
        let ssh = findings(
            &report,
            Kind::Permissive,
            "ufw-user-input -p tcp -m tcp --dport 22",
        );
        assert_eq!(ssh.len(), 1, "{:#?}", report.findings);
        // Loopback's accept is not "from any source".
        assert!(findings(&report, Kind::Permissive, "-i lo").is_empty());
        let c = coverage(&a, &flows);
        assert_eq!(c[0].status, FlowStatus::Allowed, "{:#?}", c[0]);
        assert_eq!(c[1].status, FlowStatus::Blocked, "{:#?}", c[1]);
        assert_eq!(c[2].status, FlowStatus::Allowed, "{:#?}", c[2]);
        if !given {
            continue;
        }
        // With the host's address the example is addressed to it; the kernel
        // counts it on ufw's user rule and answers it.
        let ex = ssh[0].example.clone().unwrap();
        assert_eq!(ex.dst, "10.99.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ex.dport, 22);
        let n = own_counter(&lab, &rs, &ssh[0].rule.as_ref().unwrap().loc, &ex, false);
        assert!(n > 0, "ufw's ssh rule did not count the example");
        assert!(lab.reaches(&tcp("203.0.113.7", "10.99.0.1", 22)));
        assert!(!lab.reaches(&tcp("203.0.113.7", "10.99.0.1", 3389)));
    }
}

const FW4: &str = r#"
table inet fw4 {
    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept comment "!fw4: Accept traffic from loopback"
        ct state vmap { established : accept, related : accept, invalid : drop } comment "!fw4: Handle inbound flows"
        meta protocol vmap { ip : jump input_ipv4, ip6 : jump input_ipv6 }
        iifname "vfw" jump input_wan comment "!fw4: Handle wan IPv4/IPv6 input traffic"
    }
    chain input_ipv4 {
        tcp dport vmap { 22 : jump accept_ssh }
    }
    chain input_ipv6 {
    }
    chain accept_ssh {
        counter accept comment "!fw4: Allow-SSH"
    }
    chain input_wan {
        tcp dport vmap { 443 : accept, 3389 : drop }
        jump reject_from_wan
    }
    chain reject_from_wan {
        iifname "vfw" counter drop comment "!fw4: reject wan IPv4/IPv6 traffic"
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state vmap { established : accept, related : accept } comment "!fw4: Handle forwarded flows"
        iifname "br-lan" jump forward_lan comment "!fw4: Handle lan IPv4/IPv6 forward traffic"
    }
    chain forward_lan {
        jump accept_to_wan comment "!fw4: Accept lan to wan forwarding"
    }
    chain accept_to_wan {
        meta nfproto ipv4 oifname "vfw" ct state invalid counter drop comment "!fw4: Prevent NAT leakage"
        oifname "vfw" counter accept comment "!fw4: accept wan IPv4/IPv6 traffic"
    }
}
"#;

const FW4_FLOWS: &str = r#"
[[flow]]
name = "ssh"
proto = "tcp"
src = ["10.99.1.0/24"]
dst = ["10.99.0.1/32"]
dports = [22]
chain = "input"

[[flow]]
name = "https"
proto = "tcp"
src = ["10.99.1.0/24"]
dst = ["10.99.0.1/32"]
dports = [443]
chain = "input"

[[flow]]
name = "rdp"
proto = "tcp"
src = ["10.99.1.0/24"]
dst = ["10.99.0.1/32"]
dports = [3389]
chain = "input"
"#;

/// Verdict maps are followed (`ct state vmap`, `meta protocol vmap` into jumps,
/// `tcp dport vmap`): coverage says what the kernel does; LAN-to-WAN egress and
/// loopback are not called permissive.
#[test]
fn fw4_verdict_maps_are_followed() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["nft", "-f", "-"], FW4);
    let saved = lab.fw.run(&["nft", "-j", "list", "ruleset"]);
    assert!(saved.contains("\"vmap\""));
    let rs = parse(InputFormat::Nftables, "fw4.json", &saved).unwrap();
    let a = Analysis::new(&rs);
    let c = coverage(&a, &parse_flows("flows.toml", FW4_FLOWS).unwrap());
    assert_eq!(c[0].status, FlowStatus::Allowed, "{:#?}", c[0]);
    // HTTPS is accepted on the WAN interface only: elsewhere the policy drops it.
    assert_eq!(c[1].status, FlowStatus::Partial, "{:#?}", c[1]);
    assert_ne!(c[1].example.as_ref().unwrap().iif.as_deref(), Some("vfw"));
    assert_eq!(c[2].status, FlowStatus::Blocked, "{:#?}", c[2]);
    let names: Vec<_> = c[2].by.iter().filter_map(|b| b.loc.name.clone()).collect();
    assert!(names.iter().any(|n| n.contains("vmap 3389")), "{names:?}");
    // The kernel agrees, flow by flow.
    assert!(lab.reaches(&tcp("10.99.1.5", "10.99.0.1", 22)));
    assert!(lab.reaches(&tcp("10.99.1.5", "10.99.0.1", 443)));
    assert!(!lab.reaches(&tcp("10.99.1.5", "10.99.0.1", 3389)));

    let report = audit_analysis(&a, &AuditOptions::default());
    let permissive: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == Kind::Permissive)
        .collect();
    // Only the SSH accept reached through the maps from any source.
    assert_eq!(permissive.len(), 1, "{permissive:#?}");
    assert_eq!(permissive[0].rule.as_ref().unwrap().chain, "accept_ssh");
    assert_eq!(permissive[0].example.as_ref().unwrap().dport, 22);
}

const DOCKER: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 22 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 172.17.0.2:22
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -s 10.99.1.0/24 -j ACCEPT
-A INPUT -j DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 22 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
";

/// Docker's layout: loopback's accept and the containers' egress (`-i docker0 !
/// -o docker0`) are not permissive; a port published from a container to any
/// source is, and the kernel forwards its example into the container.
#[test]
fn docker_egress_and_loopback_are_not_permissive() {
    let Some(lab) = Lab::new() else { return };
    // The containers' bridge: a veth pair (both ends up, so it has a carrier).
    lab.fw.run(&[
        "ip", "link", "add", "docker0", "type", "veth", "peer", "name", "ctr0",
    ]);
    lab.fw
        .run(&["ip", "addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    lab.fw.run(&["ip", "link", "set", "docker0", "up"]);
    lab.fw.run(&["ip", "link", "set", "ctr0", "up"]);
    lab.fw.run_stdin(&["iptables-restore"], DOCKER);
    let saved = lab.fw.run(&["iptables-save", "-c"]);
    let rs = parse(InputFormat::Iptables, "docker.v4", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    assert!(findings(&report, Kind::Permissive, "-i lo -j ACCEPT").is_empty());
    assert!(findings(&report, Kind::Permissive, "-i docker0 ! -o docker0").is_empty());
    assert!(
        findings(
            &report,
            Kind::Permissive,
            "-A FORWARD -i docker0 -o docker0"
        )
        .is_empty()
    );
    let published = findings(&report, Kind::Permissive, "-d 172.17.0.2/32 ! -i docker0");
    assert_eq!(published.len(), 1, "{:#?}", report.findings);
    let ex = published[0].example.clone().unwrap();
    eprintln!("published-port example: {ex}");
    assert_eq!(ex.dst, "172.17.0.2".parse::<IpAddr>().unwrap());
    let n = own_counter(
        &lab,
        &rs,
        &published[0].rule.as_ref().unwrap().loc,
        &ex,
        true,
    );
    assert!(n > 0, "the published port's accept did not see the example");
    // Declared external interfaces: the same accept is judged for `vfw` only.
    let opts = AuditOptions {
        external_interfaces: vec!["vfw".into()],
        ..AuditOptions::default()
    };
    let report = audit(&rs, &opts);
    assert_eq!(
        findings(&report, Kind::Permissive, "-d 172.17.0.2/32 ! -i docker0").len(),
        1
    );
}

const KUBE_PROXY: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-IT2ZTR26TO4XFPTO - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ERIFXISQEP7F7OF4 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-IT2ZTR26TO4XFPTO -s 10.99.3.5/32 -m comment --comment "kube-system/kube-dns:dns-tcp" -j KUBE-MARK-MASQ
-A KUBE-SEP-IT2ZTR26TO4XFPTO -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp" -m tcp -j DNAT --to-destination 10.99.3.5:53
-A KUBE-SERVICES -d 10.99.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-ERIFXISQEP7F7OF4 ! -s 10.244.0.0/16 -d 10.99.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SVC-ERIFXISQEP7F7OF4 -m comment --comment "kube-system/kube-dns:dns-tcp -> 10.99.3.5:53" -j KUBE-SEP-IT2ZTR26TO4XFPTO
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"#;

/// kube-proxy: KUBE-FORWARD drops ctstate INVALID, which the nat table never
/// sees (conntrack shows it only a connection's first packet, NEW): no "DNAT then
/// dropped". The kernel translates a new connection and forwards it untouched by
/// the INVALID drop.
#[test]
fn kube_proxy_dnat_is_judged_for_new_connections_only() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["iptables-restore"], KUBE_PROXY);
    let saved = lab.fw.run(&["iptables-save", "-c"]);
    let rs = parse(InputFormat::Iptables, "kube.v4", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    let dropped: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == Kind::DnatDropped)
        .collect();
    assert!(dropped.is_empty(), "{dropped:#?}");
    // Every nat finding's example is a new connection.
    for f in &report.findings {
        if f.hook.as_deref().is_some_and(|h| h.ends_with("ROUTING")) {
            if let Some(ex) = &f.example {
                assert_eq!(ex.state, CtState::New, "{f:#?}");
            }
        }
    }
    let loc = |needle: &str| {
        rs.tables
            .iter()
            .flat_map(|t| t.chains.iter().flat_map(|c| c.rules.iter()))
            .find(|r| r.text.contains(needle))
            .unwrap()
            .loc
            .clone()
    };
    let dnat = id_of(&rs, &loc("-j DNAT --to-destination 10.99.3.5:53"));
    let invalid = id_of(&rs, &loc("--ctstate INVALID -j DROP"));
    let fwd = id_of(&rs, &loc("-A FORWARD"));
    let before = dump(&lab.fw, InputFormat::Iptables);
    let p = tcp("10.99.1.5", "10.99.0.10", 53);
    let mut child = lab.send(&p);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after;
    loop {
        after = dump(&lab.fw, InputFormat::Iptables);
        if packets(&after, fwd) > packets(&before, fwd) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let delta = |id| packets(&after, id) - packets(&before, id);
    assert!(
        delta(dnat) > 0,
        "the DNAT rule did not translate the connection"
    );
    assert!(delta(fwd) > 0, "the translated packet was not forwarded");
    assert_eq!(delta(invalid), 0, "the INVALID drop saw a new connection");
}

const REJECTS: &str = "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:svc - [0:0]
:alt - [0:0]
-A INPUT -d 10.99.0.1/32 -p tcp -m tcp --dport 23 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -d 10.99.0.1/32 -p tcp -m tcp --dport 23 -m comment --comment \"telnet reset\" -j REJECT --reject-with tcp-reset
-A INPUT -j svc
-A INPUT -j svc
-A INPUT -i vfw -j alt
-A INPUT -i vfw -d 10.99.0.1/32 -p tcp -m tcp --dport 8080 -j ACCEPT
-A INPUT -j alt
-A svc -d 10.99.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment \"web\" -j ACCEPT
-A alt -d 10.99.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment \"alt web\" -j ACCEPT
COMMIT
";

/// A REJECT with tcp-reset after one with an ICMP error on the same packets never
/// applies: shadowed, not redundant. A rule of a chain jumped to twice is one
/// rule: its second copy covering the first does not make it removable (and
/// removing it in the kernel does change the verdict), nor does a later rule
/// covering one of its places when its other place still decides (`alt web`:
/// from `vfw` port 8080 is accepted again by the next rule, from elsewhere only
/// by it).
#[test]
fn reject_replies_differ_and_a_chain_jumped_twice_is_one_rule() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["iptables-restore"], REJECTS);
    let saved = lab.fw.run(&["iptables-save", "-c"]);
    let rs = parse(InputFormat::Iptables, "rejects.v4", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    assert!(findings(&report, Kind::Redundant, "telnet reset").is_empty());
    let shadowed = findings(&report, Kind::Shadowed, "telnet reset");
    assert_eq!(shadowed.len(), 1, "{:#?}", report.findings);
    assert!(shadowed[0].message.contains("REJECT with tcp-reset"));
    let (own, rel) = replay(&lab, &rs, shadowed[0]);
    assert_eq!(own, 0, "the tcp-reset REJECT counted the example");
    assert!(rel[0] > 0, "the ICMP REJECT did not count the example");

    assert!(
        findings(&report, Kind::Redundant, "--dport 80 -m comment").is_empty(),
        "{:#?}",
        report.findings
    );
    assert!(
        findings(&report, Kind::Redundant, "--dport 8080 -m comment").is_empty(),
        "{:#?}",
        report.findings
    );
    let web = tcp("10.99.1.5", "10.99.0.1", 80);
    assert!(lab.reaches(&web));
    lab.fw.run(&["iptables", "-D", "svc", "1"]);
    assert!(!lab.reaches(&web), "without the rule the policy drops it");
}

const PROTOS: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p vrrp -j DROP
-A INPUT -s 10.99.1.0/24 -p vrrp -j ACCEPT
-A INPUT -p ospf -j ACCEPT
-A INPUT -p pim -j ACCEPT
-A INPUT -p dccp -j ACCEPT
-A INPUT -p 253 -j ACCEPT
COMMIT
";

/// iptables-save names protocols as /etc/protocols does (`vrrp`, `ospf`, `pim`,
/// `dccp`); the audit reads every name of the registry, and a VRRP finding's
/// example is sent as VRRP.
#[test]
fn protocol_names_from_iptables_save_parse() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["iptables-restore"], PROTOS);
    let saved = lab.fw.run(&["iptables-save", "-c"]);
    for name in ["-p vrrp", "-p ospf", "-p pim", "-p dccp"] {
        assert!(saved.contains(name), "{saved}");
    }
    let rs = parse(InputFormat::Iptables, "protos.v4", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    let shadowed = findings(&report, Kind::Shadowed, "-s 10.99.1.0/24 -p vrrp");
    assert_eq!(shadowed.len(), 1, "{:#?}", report.findings);
    assert_eq!(shadowed[0].example.as_ref().unwrap().proto, 112);
    let (own, rel) = replay(&lab, &rs, shadowed[0]);
    assert_eq!(own, 0);
    assert!(rel[0] > 0, "the VRRP drop did not count the example");
}

const V6: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j DROP
-A INPUT -p tcp -m tcp --dport 22 -m comment --comment \"ssh v6\" -j ACCEPT
COMMIT
";

/// An ip6tables-save dump with no address in it is IPv6: examples and flows are
/// IPv6 (they were IPv4, and IPv6 flows "not filtered").
#[test]
fn ip6tables_dump_without_addresses_is_ipv6() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(&["ip6tables-restore"], V6);
    let saved = lab.fw.run(&["ip6tables-save", "-c"]);
    assert!(!saved.contains("-s ") && !saved.contains("-d "));
    let rs = parse(InputFormat::Iptables, "dump.v6", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    let shadowed = findings(&report, Kind::Shadowed, "ssh v6");
    assert_eq!(shadowed.len(), 1, "{:#?}", report.findings);
    let ex = shadowed[0].example.as_ref().unwrap();
    assert!(ex.src.is_ipv6() && ex.dst.is_ipv6(), "{ex}");
    let (own, rel) = replay(&lab, &rs, shadowed[0]);
    assert_eq!(own, 0);
    assert!(rel[0] > 0, "the IPv6 drop did not count the example");
    let flows = parse_flows(
        "flows.toml",
        r#"
[[flow]]
name = "ssh over IPv6"
proto = "tcp"
src = ["2001:db8:1::/64"]
dst = ["2001:db8::1/128"]
dports = [22]
chain = "INPUT"
"#,
    )
    .unwrap();
    let c = coverage(&Analysis::new(&rs), &flows);
    assert_eq!(c[0].status, FlowStatus::Blocked, "{:#?}", c[0]);
    assert!(!lab.reaches(&tcp("2001:db8:1::5", "2001:db8::1", 22)));
}

/// nft's address types (`fib daddr type`), as firewalld writes them: on INPUT a
/// unicast destination is local, so the drop of non-local destinations leaves a
/// flow to the host exactly allowed (it was `unknown`), as the kernel does.
#[test]
fn nft_fib_address_types_are_modelled() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(
        &["nft", "-f", "-"],
        "table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        fib daddr type { broadcast, multicast } counter accept
        fib daddr type != local counter drop
        tcp dport 22 counter accept
    }
}
",
    );
    let saved = lab.fw.run(&["nft", "-j", "list", "ruleset"]);
    assert!(saved.contains("\"fib\""));
    let rs = parse(InputFormat::Nftables, "fib.json", &saved).unwrap();
    let flows = parse_flows(
        "flows.toml",
        r#"
[[flow]]
name = "ssh"
proto = "tcp"
src = ["10.99.1.0/24"]
dst = ["10.99.0.1/32"]
dports = [22]
chain = "input"
"#,
    )
    .unwrap();
    let c = coverage(&Analysis::new(&rs), &flows);
    assert_eq!(c[0].status, FlowStatus::Allowed, "{:#?}", c[0]);
    assert!(lab.reaches(&tcp("10.99.1.5", "10.99.0.1", 22)));
}

/// An nft `table ip6` without addresses: its examples are IPv6 (never IPv4-mapped),
/// and the kernel counts them on the rule named.
#[test]
fn nft_ip6_table_examples_are_ipv6() {
    let Some(lab) = Lab::new() else { return };
    lab.fw.run_stdin(
        &["nft", "-f", "-"],
        "table ip6 f {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 22 counter drop
        tcp dport 22 counter accept
    }
}
",
    );
    let saved = lab.fw.run(&["nft", "-j", "list", "ruleset"]);
    let rs = parse(InputFormat::Nftables, "ip6.json", &saved).unwrap();
    let report = audit(&rs, &AuditOptions::default());
    let shadowed: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == Kind::Shadowed)
        .collect();
    assert_eq!(shadowed.len(), 1, "{:#?}", report.findings);
    let ex = shadowed[0].example.as_ref().unwrap();
    assert!(ex.src.is_ipv6() && ex.dst.is_ipv6(), "{ex}");
    let (own, rel) = replay(&lab, &rs, shadowed[0]);
    assert_eq!(own, 0);
    assert!(rel[0] > 0, "the drop did not count the IPv6 example");
}

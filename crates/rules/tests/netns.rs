//! Real firewalls: rulesets are loaded into the kernel inside network namespaces
//! this test creates, dumped back by the real tools, audited, and every finding's
//! example packet is sent through a veth pair while the rule counters are read, so
//! a shadowed rule's counter is seen to stay at zero while its cover's rises.
//!
//! Needs root, `ip`, `iptables-restore`/`iptables-save` and python3 (to send the
//! packet from the peer namespace). Skips with a notice only when `ip netns add` is
//! not permitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use intraport_rules::model::{Location, RuleId, Ruleset};
use intraport_rules::{AuditOptions, Finding, InputFormat, Kind, Packet, Report, audit, parse};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Option<NetNs> {
        let name = format!(
            "intraport-rules-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "notice: skipping real-firewall test, `ip netns add` not permitted: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(NetNs(name))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A firewall namespace and a peer namespace joined by a veth pair (`vfw` on the
/// firewall side).
struct Lab {
    fw: NetNs,
    peer: NetNs,
}

impl Lab {
    fn new() -> Option<Lab> {
        let fw = NetNs::new("fw")?;
        let peer = NetNs::new("peer")?;
        fw.run(&[
            "ip", "link", "add", "vfw", "type", "veth", "peer", "name", "vpeer", "netns", &peer.0,
        ]);
        fw.run(&["ip", "link", "set", "lo", "up"]);
        fw.run(&["ip", "link", "set", "vfw", "up"]);
        peer.run(&["ip", "link", "set", "lo", "up"]);
        peer.run(&["ip", "link", "set", "vpeer", "up"]);
        fw.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Translated destinations are forwarded back out of `vfw`.
        fw.run(&["ip", "route", "add", "10.99.3.0/24", "dev", "vfw"]);
        Some(Lab { fw, peer })
    }

    /// Send the example packet from the peer: its source address is put on the
    /// peer side, its destination on the firewall side, so the kernel sees exactly
    /// this packet arrive on `vfw`.
    fn send(&self, p: &Packet) -> Child {
        let (src, dst) = (p.src.to_string(), p.dst.to_string());
        let _ = self
            .peer
            .cmd(&["ip", "addr", "add", &format!("{src}/32"), "dev", "vpeer"])
            .output();
        let _ = self
            .peer
            .cmd(&[
                "ip",
                "route",
                "replace",
                &format!("{dst}/32"),
                "dev",
                "vpeer",
                "src",
                &src,
            ])
            .output();
        let _ = self
            .fw
            .cmd(&["ip", "route", "replace", &format!("{src}/32"), "dev", "vfw"])
            .output();
        let _ = self
            .fw
            .cmd(&["ip", "addr", "add", &format!("{dst}/32"), "dev", "vfw"])
            .output();
        let kind = if p.proto == 6 {
            "SOCK_STREAM"
        } else {
            "SOCK_DGRAM"
        };
        // Keep sending (TCP retransmits its SYN by itself) until the test has read
        // the counters and kills this process.
        let script = format!(
            "import socket,time\n\
s=socket.socket(socket.AF_INET,socket.{kind})\n\
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('{src}',{sport}))\n\
s.setblocking(False)\n\
if socket.{kind}==socket.SOCK_STREAM:\n    s.connect_ex(('{dst}',{dport}))\n    time.sleep(30)\n\
else:\n    \n    for _ in range(300):\n        s.sendto(b'x',('{dst}',{dport})); time.sleep(0.1)\n",
            sport = p.sport,
            dport = p.dport
        );
        self.peer
            .cmd(&["python3", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }
}

fn dump(ns: &NetNs, format: InputFormat) -> Ruleset {
    match format {
        InputFormat::Iptables => {
            parse(format, "dump.v4", &ns.run(&["iptables-save", "-c"])).unwrap()
        }
        _ => parse(
            format,
            "dump.json",
            &ns.run(&["nft", "-j", "list", "ruleset"]),
        )
        .unwrap(),
    }
}

/// The rule a finding names (by line, or by nftables handle), as an index that is
/// stable across dumps of the same ruleset.
fn id_of(rs: &Ruleset, loc: &Location) -> RuleId {
    for (t, table) in rs.tables.iter().enumerate() {
        for (c, chain) in table.chains.iter().enumerate() {
            for (r, rule) in chain.rules.iter().enumerate() {
                if rule.loc.line == loc.line && rule.loc.name == loc.name {
                    return RuleId {
                        table: t,
                        chain: c,
                        rule: r,
                    };
                }
            }
        }
    }
    panic!("no rule at {loc}");
}

fn packets(rs: &Ruleset, id: RuleId) -> u64 {
    rs.rule(id).unwrap().packets.unwrap()
}

/// Replay a finding's example and return the counter deltas of (the rule, each
/// related rule), once the first related rule's counter moved (or a deadline).
fn replay(lab: &Lab, audited: &Ruleset, f: &Finding) -> (u64, Vec<u64>) {
    let rule = id_of(audited, &f.rule.as_ref().unwrap().loc);
    let related: Vec<RuleId> = f.related.iter().map(|r| id_of(audited, &r.loc)).collect();
    let before = dump(&lab.fw, audited.format);
    let mut child = lab.send(f.example.as_ref().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after;
    loop {
        after = dump(&lab.fw, audited.format);
        if packets(&after, related[0]) > packets(&before, related[0]) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let delta = |id| packets(&after, id) - packets(&before, id);
    (delta(rule), related.iter().map(|&id| delta(id)).collect())
}

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

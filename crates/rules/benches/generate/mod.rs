//! Generated iptables-save rulesets shaped like a large edge/host firewall, for the
//! benchmark (`benches/audit.rs`) and the at-scale correctness test
//! (`tests/scale.rs`). Deterministic: the same `n` gives the same text. This one is
//! a flat list over a few zone chains; `host` writes the chain layouts of real
//! hosts (ufw, Docker, kube-proxy, fail2ban).

use std::fmt::Write;

pub mod host;

/// A small linear congruential generator: deterministic input without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const ZONES: u64 = 8;
const PORTS: [u16; 16] = [
    22, 25, 53, 80, 88, 123, 389, 443, 445, 636, 1433, 3268, 3389, 5432, 8080, 8443,
];

/// An `iptables-save` text with about `n` rules: a nat table (about 5%: DNAT of
/// public addresses to internal servers, SNAT and MASQUERADE out) and a filter table
/// with a DROP policy, conntrack state rules, per-zone user chains with RETURN, and
/// a mix of host/port-specific accepts (most rules), drops and rejects, multiport,
/// iprange, LOG, and some wide accepts over whole subnets and port ranges.
pub fn iptables(n: usize) -> String {
    let mut g = Lcg(n as u64 ^ 0x5eed);
    let mut s = String::with_capacity(n * 96);
    let nat = n / 20;
    s += "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n";
    for i in 0..nat {
        if i % 5 == 4 {
            let z = g.next(ZONES);
            if g.next(2) == 0 {
                let _ = writeln!(s, "-A POSTROUTING -s 10.{z}.0.0/16 -o eth0 -j MASQUERADE");
            } else {
                let _ = writeln!(
                    s,
                    "-A POSTROUTING -s 10.{z}.{}.0/24 -o eth1 -j SNAT --to-source 198.51.100.{}",
                    g.next(256),
                    g.next(256)
                );
            }
        } else {
            let port = PORTS[g.next(PORTS.len() as u64) as usize];
            let _ = writeln!(
                s,
                "-A PREROUTING -d 203.0.113.{}/32 -i eth0 -p tcp -m tcp --dport {port} -j DNAT --to-destination 172.16.{}.{}:{}",
                g.next(64),
                g.next(64),
                g.next(256),
                PORTS[g.next(PORTS.len() as u64) as usize]
            );
        }
    }
    s += "COMMIT\n";

    s += "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n";
    for z in 0..ZONES {
        let _ = writeln!(s, ":zone{z} - [0:0]");
    }
    s += "-A INPUT -i lo -j ACCEPT\n\
          -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
          -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
          -A FORWARD -m conntrack --ctstate INVALID -j DROP\n";
    for z in 0..ZONES {
        let _ = writeln!(s, "-A INPUT -s 10.{z}.0.0/16 -j zone{z}");
        let _ = writeln!(s, "-A FORWARD -s 10.{z}.0.0/16 -j zone{z}");
    }
    for i in 0..n.saturating_sub(nat) {
        let chain = match i % 8 {
            0 | 1 => format!("zone{}", g.next(ZONES)),
            2 => "INPUT".to_string(),
            _ => "FORWARD".to_string(),
        };
        let z = g.next(ZONES);
        let src = if g.next(3) == 0 {
            format!("10.{z}.{}.0/24", g.next(256))
        } else {
            format!("10.{z}.{}.{}/32", g.next(256), g.next(256))
        };
        let dst = format!("172.16.{}.{}/32", g.next(64), g.next(256));
        let proto = if g.next(4) == 0 { "udp" } else { "tcp" };
        let port = PORTS[g.next(PORTS.len() as u64) as usize];
        let rule = match g.next(100) {
            // Host and port specific accepts: most of a real ruleset.
            0..=59 => format!("-s {src} -d {dst} -p {proto} -m {proto} --dport {port} -j ACCEPT"),
            60..=64 => format!(
                "-s {src} -d {dst} -p {proto} -m {proto} --dport {port} -m comment --comment \"ticket {i}\" -j ACCEPT"
            ),
            65..=71 => {
                format!("-s {src} -d {dst} -p tcp -m multiport --dports {port},443,8443 -j ACCEPT")
            }
            72..=76 => {
                let lo = 1024 + g.next(50_000);
                format!(
                    "-s {src} -d {dst} -p {proto} -m {proto} --dport {lo}:{} -j ACCEPT",
                    lo + g.next(100)
                )
            }
            77..=82 => format!("-s {src} -d {dst} -p {proto} -m {proto} --dport {port} -j DROP"),
            83..=86 => format!(
                "-s {src} -d {dst} -p {proto} -m {proto} --dport {port} -j REJECT --reject-with icmp-port-unreachable"
            ),
            87..=88 => format!(
                "-m iprange --src-range 10.{z}.{a}.1-10.{z}.{a}.99 -d {dst} -p tcp -m tcp --dport {port} -j ACCEPT",
                a = g.next(256)
            ),
            89..=90 => {
                format!("-s {src} -p {proto} -m {proto} --dport {port} -j LOG --log-prefix \"fw \"")
            }
            // Wide rules: whole subnets, high port ranges, any destination.
            91..=93 => format!(
                "-s 10.{z}.0.0/16 -d 172.16.{}.0/24 -p tcp -m tcp --dport 1024:65535 -j ACCEPT",
                g.next(64)
            ),
            94..=95 => format!("-s 10.{z}.0.0/16 -p udp -m udp --dport 53 -j ACCEPT"),
            96..=97 if chain.starts_with("zone") => "-j RETURN".to_string(),
            96..=97 => format!("-d {dst} -p tcp -m tcp --dport {port} -j ACCEPT"),
            _ => format!("-s {src} -d 172.16.{}.0/24 -j DROP", g.next(64)),
        };
        let _ = writeln!(s, "-A {chain} {rule}");
    }
    s + "COMMIT\n"
}

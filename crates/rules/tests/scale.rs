//! Audit time for generated rulesets of 1k, 10k and 50k rules. Ignored by default
//! (a measurement, not a check); run with
//! `cargo test --release -p intraport-rules --test scale -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::time::Instant;

use intraport_rules::{AuditOptions, InputFormat, audit, parse};

/// A deterministic generator (no dependency needed for a benchmark input).
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

/// A ruleset shaped like a large host/edge firewall: per-host and per-subnet
/// accepts and drops on service ports, some user chains per zone, a DROP policy.
pub fn generate(n: usize) -> String {
    let mut g = Lcg(n as u64);
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let zones = 8;
    for z in 0..zones {
        let _ = writeln!(s, ":zone{z} - [0:0]");
    }
    s +=
        "-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    for z in 0..zones {
        let _ = writeln!(s, "-A INPUT -s 10.{z}.0.0/16 -j zone{z}");
    }
    let ports = [
        22, 25, 53, 80, 88, 123, 389, 443, 445, 636, 1433, 3268, 3389, 5432, 8080, 8443,
    ];
    for i in 0..n {
        let chain = if i % 4 == 0 {
            format!("zone{}", g.next(zones))
        } else {
            "FORWARD".to_string()
        };
        let src = if g.next(3) == 0 {
            format!("10.{}.{}.0/24", g.next(zones), g.next(256))
        } else {
            format!("10.{}.{}.{}/32", g.next(zones), g.next(256), g.next(256))
        };
        let dst = format!("172.16.{}.{}/32", g.next(64), g.next(256));
        let proto = if g.next(4) == 0 { "udp" } else { "tcp" };
        let port = if g.next(5) == 0 {
            let lo = 1024 + g.next(50000);
            format!("{lo}:{}", lo + g.next(100))
        } else {
            ports[g.next(ports.len() as u64) as usize].to_string()
        };
        let action = match g.next(10) {
            0..=6 => "ACCEPT",
            7 | 8 => "DROP",
            _ => "REJECT",
        };
        let _ = writeln!(
            s,
            "-A {chain} -s {src} -d {dst} -p {proto} -m {proto} --dport {port} -j {action}"
        );
    }
    s + "COMMIT\n"
}

#[test]
#[ignore = "measurement; run explicitly with --release"]
fn audit_scaling() {
    for n in [1_000, 10_000, 50_000] {
        let text = generate(n);
        let t0 = Instant::now();
        let rs = parse(InputFormat::Iptables, "gen.rules", &text).unwrap();
        let t1 = Instant::now();
        let report = audit(&rs, &AuditOptions::default());
        let t2 = Instant::now();
        println!(
            "{n:>6} rules: parse {:>8.3} s, audit {:>8.3} s, {} findings",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            report.findings.len()
        );
    }
}

//! Writes a generated `iptables-save` ruleset to stdout, for timing the audit on the
//! command line (see the README's rule audit figures):
//!
//! `cargo run --release -p intraport-rules --example gen-ruleset -- host 10000 [SEED]`
//! (`host`: the chain layouts of a Kubernetes node with ufw, Docker and fail2ban;
//! `flat`: the benchmark's older flat list over zone chains).
#![allow(missing_docs)]

#[path = "../benches/generate/mod.rs"]
mod generate;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen-ruleset host|flat RULES [SEED]";
    let (Some(shape), Some(n)) = (args.first(), args.get(1).and_then(|n| n.parse().ok())) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let seed = match args.get(2).map(|s| s.parse()) {
        None => 1,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("{usage}: SEED must be a number");
            return ExitCode::from(2);
        }
    };
    let text = match shape.as_str() {
        "host" => generate::host::host(n, seed),
        "flat" => generate::iptables(n),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

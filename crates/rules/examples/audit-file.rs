//! Audits an `iptables-save` file and prints how long parsing and the audit took
//! and the findings by kind, for the README's rule audit figures (run it under
//! `/usr/bin/time -v` for the peak memory):
//!
//! `cargo run --release -p intraport-rules --example audit-file -- FILE`
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use intraport_rules::{AuditOptions, InputFormat, audit, parse};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: audit-file FILE");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let t = Instant::now();
    let rs = match parse(InputFormat::Iptables, &path, &text) {
        Ok(rs) => rs,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let parsed = t.elapsed();
    let t = Instant::now();
    let report = audit(&rs, &AuditOptions::default());
    let audited = t.elapsed();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &report.findings {
        *kinds.entry(f.kind.to_string()).or_default() += 1;
    }
    println!(
        "{} rules: parse {parsed:.2?}, audit {audited:.2?}, {} findings {kinds:?}",
        report.stats.rules,
        report.findings.len()
    );
    ExitCode::SUCCESS
}

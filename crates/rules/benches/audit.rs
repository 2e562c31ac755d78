//! Audit time for generated rulesets of 1k, 10k and 50k rules (iptables-save text
//! with filter and nat tables; see `generate/mod.rs` for the mix), and for the
//! real-shaped rulesets of `generate/host.rs` (1k and 10k rules; the 100k figure
//! comes from `examples/audit-file.rs`, see the README). `parse` is the
//! text to model, `audit` the whole analysis (compile, shadowing, redundancy, NAT
//! overlap, permissive rules). Single-threaded: the audit uses one core.
//!
//! `cargo bench -p intraport-rules --bench audit`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod generate;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use intraport_rules::{AuditOptions, InputFormat, audit, parse};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules");
    // Whole-audit runs take up to seconds: the fewest samples criterion allows.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    for n in [1_000, 10_000, 50_000] {
        let text = generate::iptables(n);
        group.bench_with_input(BenchmarkId::new("parse", n), &text, |b, text| {
            b.iter(|| parse(InputFormat::Iptables, "gen.rules", black_box(text)).unwrap())
        });
        let rs = parse(InputFormat::Iptables, "gen.rules", &text).unwrap();
        let report = audit(&rs, &AuditOptions::default());
        eprintln!(
            "{n} rules: {} rules parsed, {} findings",
            report.stats.rules,
            report.findings.len()
        );
        group.bench_with_input(BenchmarkId::new("audit", n), &rs, |b, rs| {
            b.iter(|| audit(black_box(rs), &AuditOptions::default()))
        });
    }
    // The shapes of real hosts (`generate/host.rs`: ufw, Docker, kube-proxy and
    // fail2ban chains), as iptables-save dumps them.
    for n in [1_000, 10_000] {
        let text = generate::host::host(n, 1);
        let rs = parse(InputFormat::Iptables, "host.rules", &text).unwrap();
        let report = audit(&rs, &AuditOptions::default());
        eprintln!(
            "host {n} rules: {} rules parsed, {} findings",
            report.stats.rules,
            report.findings.len()
        );
        group.bench_with_input(BenchmarkId::new("audit-host", n), &rs, |b, rs| {
            b.iter(|| audit(black_box(rs), &AuditOptions::default()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

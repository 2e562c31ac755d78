//! Throughput of `Audit::emit` into a file sink in group-commit mode (the default):
//! events per second from one emitting task, end to end (queued, formatted as ECS,
//! written, fsynced every 100 ms), and of the ECS and CEF formatters alone (the
//! part of an event's cost the sink worker spends on the gateway's core). Criterion's
//! throughput line reads in events/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use intraport_audit::{
    Action, Audit, AuditConfig, Durations, Event, FileSinkConfig, HttpInfo, Identity, Outcome,
    SinkConfig,
};

fn event(i: u64) -> Event {
    let mut e = Event::new(Action::UpstreamResult, Outcome::Success);
    e.connection_id = Some(i);
    e.request_id = Some("0b6f1c2e-5a1d-4e0f-9a55-3c1de2a4b7c9".into());
    e.source = Some("10.20.30.40:51515".parse().unwrap());
    e.destination = Some("10.0.0.1:8443".parse().unwrap());
    e.listener = Some("public".into());
    e.route = Some("api".into());
    e.sni = Some("api.example.test".into());
    e.identity = Some(std::sync::Arc::new(Identity {
        kid: Some("nOo3ZDrODXEK1jKWhXslHR_KXEg".into()),
        tid: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        oid: Some("00000000-0000-0000-0000-000000000001".into()),
        azp: Some("11111111-2222-3333-4444-555555555555".into()),
        cert_subject: None,
        rendered: Default::default(),
    }));
    e.http = Some(Box::new(HttpInfo {
        method: Some("GET".into()),
        path: Some("/v1/items".into()),
        status: Some(200),
        version: Some("1.1".into()),
    }));
    e.bytes_in = Some(512);
    e.bytes_out = Some(2048);
    e.durations = Durations {
        handshake: Some(Duration::from_micros(900)),
        auth: Some(Duration::from_micros(12)),
        upstream: Some(Duration::from_micros(450)),
        total: Some(Duration::from_micros(1500)),
    };
    e
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.jsonl");
    let config = AuditConfig {
        sinks: vec![SinkConfig::File(FileSinkConfig {
            name: None,
            path: path.clone(),
            format: intraport_audit::Format::Ecs,
            durability: intraport_audit::Durability::Group,
            commit_interval_ms: 100,
            rotate_size_bytes: Some(256 << 20),
            rotate_interval: None,
            compress: false,
            keep: Some(2),
        })],
        ..AuditConfig::default()
    };
    let (audit, handle) = rt.block_on(async { Audit::start(&config).unwrap() });
    let batch = 10_000u64;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(batch));
    group.sample_size(20);
    group.bench_function("emit_file_group_commit_10k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let base = audit.stats()[0].written;
                for _ in 0..iters {
                    for i in 0..batch {
                        audit.emit(event(i)).await;
                    }
                }
                // Count until the sink has written them all, not just queued.
                while audit.stats()[0].written < base + iters * batch {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        })
    });
    let sample = event(7);
    let mut buf = Vec::with_capacity(4096);
    for (name, format) in [
        ("format_ecs", intraport_audit::Format::Ecs),
        ("format_ocsf", intraport_audit::Format::Ocsf),
        ("format_cef", intraport_audit::Format::Cef),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                intraport_audit::format::write_event(format, &sample, &mut buf);
                buf.len()
            })
        });
    }
    group.finish();
    let stats = rt.block_on(handle.shutdown());
    assert_eq!(stats[0].dropped, 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Live Prometheus metrics of the probes, in the blackbox_exporter spirit: per probe
//! and stage duration histograms, success and failure counters, the last result,
//! and per replica the last replication lag, whether it caught up and whether its
//! `contextCSN` is in sync. (A replica's lag is also its stage `replication:NAME`,
//! so it has a duration histogram like every stage.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::probe::RunResult;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    probe: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    probe: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    probe: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    probe: String,
    stage: String,
    class: String,
}

fn buckets() -> Histogram {
    // 1 ms to ~33 s: logins range from a loopback issuer to a federated tenant.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The probe metrics and their registry.
pub struct Metrics {
    registry: Registry,
    stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    run_duration: Family<ProbeLabels, Histogram, fn() -> Histogram>,
    runs: Family<RunLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    last_success: Family<ProbeLabels, Gauge>,
    last_run: Family<ProbeLabels, Gauge<f64, AtomicU64>>,
    last_duration: Family<ProbeLabels, Gauge<f64, AtomicU64>>,
    replication_lag: Family<ReplicaLabels, Gauge<f64, AtomicU64>>,
    replication_caught_up: Family<ReplicaLabels, Gauge>,
    replication_csn_in_sync: Family<ReplicaLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("intraport_probe");
        let stage_duration =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                buckets as fn() -> Histogram,
            );
        let run_duration =
            Family::<ProbeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                buckets as fn() -> Histogram,
            );
        let runs = Family::<RunLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let last_success = Family::<ProbeLabels, Gauge>::default();
        let last_run = Family::<ProbeLabels, Gauge<f64, AtomicU64>>::default();
        let last_duration = Family::<ProbeLabels, Gauge<f64, AtomicU64>>::default();
        let replication_lag = Family::<ReplicaLabels, Gauge<f64, AtomicU64>>::default();
        let replication_caught_up = Family::<ReplicaLabels, Gauge>::default();
        let replication_csn_in_sync = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "stage_duration_seconds",
            "Duration of one stage of a probe run",
            stage_duration.clone(),
        );
        registry.register(
            "duration_seconds",
            "Duration of a whole probe run",
            run_duration.clone(),
        );
        registry.register("runs", "Probe runs by result", runs.clone());
        registry.register(
            "failures",
            "Failed probe runs by failing stage and failure class",
            failures.clone(),
        );
        registry.register(
            "last_success",
            "1 when the last run of the probe succeeded, else 0",
            last_success.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "Start of the probe's last run, Unix seconds",
            last_run.clone(),
        );
        registry.register(
            "last_duration_seconds",
            "Duration of the probe's last run",
            last_duration.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Replication lag of the last run: write on the provider to the marker read on the replica (the lag so far when it did not catch up)",
            replication_lag.clone(),
        );
        registry.register(
            "replication_caught_up",
            "1 when the replica showed the last run's marker before the deadline, else 0",
            replication_caught_up.clone(),
        );
        registry.register(
            "replication_context_csn_in_sync",
            "1 when the replica's contextCSN had caught up with the provider's in the last run, else 0 (absent when unknown)",
            replication_csn_in_sync.clone(),
        );
        Self {
            registry,
            stage_duration,
            run_duration,
            runs,
            failures,
            last_success,
            last_run,
            last_duration,
            replication_lag,
            replication_caught_up,
            replication_csn_in_sync,
        }
    }

    /// Account for one run.
    pub fn observe(&self, r: &RunResult) {
        let probe = ProbeLabels {
            probe: r.probe.clone(),
        };
        for s in &r.stages {
            self.stage_duration
                .get_or_create(&StageLabels {
                    probe: r.probe.clone(),
                    stage: s.stage.clone(),
                })
                .observe(s.duration_ms / 1000.0);
        }
        self.run_duration
            .get_or_create(&probe)
            .observe(r.duration_ms / 1000.0);
        self.runs
            .get_or_create(&RunLabels {
                probe: r.probe.clone(),
                result: if r.ok { "success" } else { "failure" }.into(),
            })
            .inc();
        if let Some(f) = &r.failure {
            self.failures
                .get_or_create(&FailureLabels {
                    probe: r.probe.clone(),
                    stage: f.stage.clone(),
                    class: f.error.class.as_str().into(),
                })
                .inc();
        }
        self.last_success.get_or_create(&probe).set(i64::from(r.ok));
        self.last_run
            .get_or_create(&probe)
            .set(r.started_ms as f64 / 1000.0);
        self.last_duration
            .get_or_create(&probe)
            .set(r.duration_ms / 1000.0);
        for x in r.replication.iter().flat_map(|rep| &rep.replicas) {
            let labels = ReplicaLabels {
                probe: r.probe.clone(),
                replica: x.replica.clone(),
            };
            self.replication_lag
                .get_or_create(&labels)
                .set(x.lag_ms / 1000.0);
            self.replication_caught_up
                .get_or_create(&labels)
                .set(i64::from(x.caught_up));
            match x.csn_in_sync {
                Some(v) => {
                    self.replication_csn_in_sync
                        .get_or_create(&labels)
                        .set(i64::from(v));
                }
                None => {
                    self.replication_csn_in_sync.remove(&labels);
                }
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A running metrics endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Serve `GET /metrics` on `listen`.
    pub async fn start(listen: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::replication::{ReplicaResult, ReplicationResult};
    use crate::timing::StageResult;

    fn replica(name: &str, caught_up: bool, lag_ms: f64, in_sync: Option<bool>) -> ReplicaResult {
        ReplicaResult {
            replica: name.into(),
            caught_up,
            lag_ms,
            context_csn: vec![],
            csn_in_sync: in_sync,
            csn_behind_ms: None,
            error: None,
        }
    }

    #[test]
    fn replication_gauges_follow_the_last_run() {
        let m = Metrics::new();
        let mut r = RunResult {
            probe: "repl".into(),
            started_ms: 1_000,
            duration_ms: 30.0,
            ok: true,
            stages: vec![StageResult {
                stage: "replication:dc2".into(),
                duration_ms: 25.0,
                ok: true,
            }],
            failure: None,
            replication: Some(ReplicationResult {
                marker: "m".into(),
                provider_context_csn: vec![],
                replicas: vec![replica("dc2", true, 25.0, Some(true))],
            }),
        };
        m.observe(&r);
        let text = m.encode();
        for line in [
            r#"intraport_probe_replication_lag_seconds{probe="repl",replica="dc2"} 0.025"#,
            r#"intraport_probe_replication_caught_up{probe="repl",replica="dc2"} 1"#,
            r#"intraport_probe_replication_context_csn_in_sync{probe="repl",replica="dc2"} 1"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(
            text.contains(r#"intraport_probe_stage_duration_seconds_count{probe="repl",stage="replication:dc2"} 1"#),
            "{text}"
        );
        // Not caught up, contextCSN unknown: the in-sync gauge goes away.
        r.replication = Some(ReplicationResult {
            marker: "m2".into(),
            provider_context_csn: vec![],
            replicas: vec![replica("dc2", false, 5_000.0, None)],
        });
        m.observe(&r);
        let text = m.encode();
        assert!(
            text.contains(
                r#"intraport_probe_replication_lag_seconds{probe="repl",replica="dc2"} 5.0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"intraport_probe_replication_caught_up{probe="repl",replica="dc2"} 0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"intraport_probe_replication_context_csn_in_sync{probe="repl""#),
            "{text}"
        );
    }
}

//! The analysis behind `probe report`: per probe and stage percentiles and success
//! rates, the failure timeline, periodic spike detection, and per replica of a
//! replication probe how often it caught up, its lag and its `contextCSN` state.
//! (A replica's lag is its stage `replication:NAME`, so its percentiles and
//! periodic spikes come with the stages.)
//!
//! Spike detection, per probe and stage: a sample is a spike when it is at least
//! twice the stage's median, at least six robust standard deviations (1.4826 × MAD)
//! above it and at least 5 ms above it (below that nobody waits). Spikes are
//! periodic when some period P and phase put at least three of them, and at least
//! 70 % of them, on the lattice `phase + k·P` (within half the probing interval),
//! and at least 70 % of the lattice points inside the spikes' span carry a spike.
//! Candidate periods are the gaps between consecutive spikes; the smallest period
//! that passes wins. A period of one day (or a whole number of days) is reported as
//! a time of day (UTC).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::probe::RunResult;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// First run start, ms since the Unix epoch (0 without runs).
    pub from_ms: i64,
    /// Last run start.
    pub to_ms: i64,
    /// Per probe.
    pub probes: Vec<ProbeReport>,
}

/// One probe.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The probe.
    pub probe: String,
    /// Runs.
    pub runs: u64,
    /// Successful runs.
    pub successes: u64,
    /// successes / runs.
    pub success_rate: f64,
    /// The median time between run starts, in seconds.
    pub interval_seconds: f64,
    /// Whole-run durations.
    pub duration: Stats,
    /// Per stage, in the order stages run.
    pub stages: Vec<StageReport>,
    /// Failures by class.
    pub failure_classes: BTreeMap<String, u64>,
    /// Every failed run, oldest first.
    pub failures: Vec<FailureEvent>,
    /// Periodic spikes found.
    pub spikes: Vec<SpikeFinding>,
    /// Per replica, for replication probes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<ReplicaReport>,
}

/// One replica of a replication probe, over the stored runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaReport {
    /// The replica.
    pub replica: String,
    /// Runs that wrote a marker for it.
    pub runs: u64,
    /// Runs in which it showed the marker before the deadline.
    pub caught_up: u64,
    /// caught_up / runs.
    pub catch_up_rate: f64,
    /// Lag of the runs that caught up, ms.
    pub lag: Stats,
    /// The longest lag seen, counting the lag so far of runs that did not catch up.
    pub worst_lag_ms: f64,
    /// Runs whose `contextCSN` could be compared with the provider's.
    pub csn_compared: u64,
    /// Of those, runs in which the replica's `contextCSN` was behind.
    pub csn_out_of_sync: u64,
}

/// Percentiles of successful samples, in milliseconds (rounded to µs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// One stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: String,
    /// Durations of its successful runs.
    pub stats: Stats,
    /// Times it failed.
    pub failures: u64,
    /// Successes / attempts of this stage.
    pub success_rate: f64,
    /// (start ms, duration ms) of each successful sample, for plots.
    #[serde(skip)]
    pub series: Vec<(i64, f64)>,
}

/// A failed run.
#[derive(Clone, Debug, Serialize)]
pub struct FailureEvent {
    /// Start, ms since the Unix epoch.
    pub at_ms: i64,
    /// Failing stage.
    pub stage: String,
    /// Failure class.
    pub class: String,
    /// Code, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For people.
    pub detail: String,
}

/// How a periodic spike recurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recurrence {
    /// Every `period_seconds`.
    Interval,
    /// At the same time of day (the period is a whole number of days).
    TimeOfDay,
}

/// A recurring latency spike in one stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpikeFinding {
    /// The stage it comes from.
    pub stage: String,
    /// Interval or time of day.
    pub recurrence: Recurrence,
    /// The period, in seconds.
    pub period_seconds: u64,
    /// For [`Recurrence::TimeOfDay`]: `HH:MM` UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_of_day_utc: Option<String>,
    /// First spike on the lattice, ms since the Unix epoch.
    pub first_ms: i64,
    /// Spikes on the lattice.
    pub occurrences: u64,
    /// Lattice points in the spikes' span.
    pub expected: u64,
    /// The stage's median, ms.
    pub baseline_ms: f64,
    /// The median of the spikes on the lattice, ms.
    pub spike_ms: f64,
    /// The upstream dependency the stage points to.
    pub dependency: String,
    /// One sentence for people.
    pub summary: String,
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn stats(values: &[f64]) -> Stats {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Stats {
        count: v.len() as u64,
        p50: round(percentile(&v, 50.0)),
        p90: round(percentile(&v, 90.0)),
        p95: round(percentile(&v, 95.0)),
        p99: round(percentile(&v, 99.0)),
        max: round(v.last().copied().unwrap_or(0.0)),
    }
}

/// The dependency a slow stage points to.
pub fn dependency(stage: &str) -> &'static str {
    match stage {
        s if crate::replication::replica_of(s).is_some() => {
            "replication between the directory servers (the replica's load, the link between them, the replication schedule: AD change notification or inter-site intervals, OpenLDAP syncrepl)"
        }
        "replication_write" => {
            "the provider's write path (its database and change log, the replication provider: syncprov, the AD NTDS database)"
        }
        s if s.ends_with("_dns") => {
            "the DNS resolvers (domain controllers' DNS or forwarders: zone transfers, scavenging, forwarder timeouts)"
        }
        s if s.ends_with("_connect") => {
            "the network path (firewall, NAT, proxy or load balancer connection handling)"
        }
        s if s.ends_with("_tls") => {
            "TLS in front of the service (a TLS-inspecting proxy or load balancer, certificate revocation checks)"
        }
        "token_response" => {
            "the identity provider's token issuance (conditional access policy evaluation, federation or AD FS, pass-through authentication agents and the domain controllers behind them)"
        }
        "token_validate" => "signing-key metadata (OpenID discovery and JWKS fetches)",
        "gateway_response" => "the gateway's upstream service behind the route",
        "ldap_bind" | "replication_bind" => {
            "the domain controller's authentication (password verification, account policy, load such as backups or replication)"
        }
        "ldap_search" => {
            "the domain controller's directory database (indexes, replication, backups)"
        }
        _ => "the component behind this stage",
    }
}

/// Analyse runs (any order, any probes).
pub fn analyse(runs: &[RunResult]) -> Report {
    let mut by_probe: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        by_probe.entry(r.probe.as_str()).or_default().push(r);
    }
    let mut probes = Vec::new();
    for (name, mut rs) in by_probe {
        rs.sort_by_key(|r| r.started_ms);
        let starts: Vec<f64> = rs
            .windows(2)
            .map(|w| (w[1].started_ms - w[0].started_ms) as f64)
            .collect();
        let interval_ms = if starts.is_empty() {
            0.0
        } else {
            median(&starts)
        };
        let successes = rs.iter().filter(|r| r.ok).count() as u64;
        let durations: Vec<f64> = rs.iter().filter(|r| r.ok).map(|r| r.duration_ms).collect();
        let mut order: Vec<String> = Vec::new();
        let mut samples: BTreeMap<String, (Vec<(i64, f64)>, u64)> = BTreeMap::new();
        for r in &rs {
            for s in &r.stages {
                if !order.contains(&s.stage) {
                    order.push(s.stage.clone());
                }
                let e = samples.entry(s.stage.clone()).or_default();
                if s.ok {
                    e.0.push((r.started_ms, s.duration_ms));
                } else {
                    e.1 += 1;
                }
            }
        }
        let mut stages = Vec::new();
        let mut spikes = Vec::new();
        for stage in order {
            let (series, failures) = samples.remove(&stage).unwrap_or_default();
            let values: Vec<f64> = series.iter().map(|s| s.1).collect();
            let attempts = series.len() as u64 + failures;
            if let Some(f) = find_periodic(&stage, &series, interval_ms) {
                spikes.push(f);
            }
            stages.push(StageReport {
                stage,
                stats: stats(&values),
                failures,
                success_rate: if attempts == 0 {
                    0.0
                } else {
                    round(series.len() as f64 / attempts as f64)
                },
                series,
            });
        }
        let mut failure_classes = BTreeMap::new();
        let failures: Vec<FailureEvent> = rs
            .iter()
            .filter_map(|r| {
                r.failure.as_ref().map(|f| {
                    *failure_classes
                        .entry(f.error.class.as_str().to_string())
                        .or_insert(0) += 1;
                    FailureEvent {
                        at_ms: r.started_ms,
                        stage: f.stage.clone(),
                        class: f.error.class.as_str().to_string(),
                        code: f.error.code.clone(),
                        detail: f.error.detail.clone(),
                    }
                })
            })
            .collect();
        let replication = replicas(&rs);
        probes.push(ProbeReport {
            probe: name.to_string(),
            runs: rs.len() as u64,
            successes,
            success_rate: if rs.is_empty() {
                0.0
            } else {
                round(successes as f64 / rs.len() as f64)
            },
            interval_seconds: round(interval_ms / 1000.0),
            duration: stats(&durations),
            stages,
            failure_classes,
            failures,
            spikes,
            replication,
        });
    }
    Report {
        from_ms: runs.iter().map(|r| r.started_ms).min().unwrap_or(0),
        to_ms: runs.iter().map(|r| r.started_ms).max().unwrap_or(0),
        probes,
    }
}

fn replicas(runs: &[&RunResult]) -> Vec<ReplicaReport> {
    struct Acc {
        runs: u64,
        lags: Vec<f64>,
        worst: f64,
        compared: u64,
        out_of_sync: u64,
    }
    let mut order: Vec<String> = Vec::new();
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for x in runs
        .iter()
        .filter_map(|r| r.replication.as_ref())
        .flat_map(|rep| &rep.replicas)
    {
        if !order.contains(&x.replica) {
            order.push(x.replica.clone());
        }
        let a = acc.entry(x.replica.clone()).or_insert(Acc {
            runs: 0,
            lags: Vec::new(),
            worst: 0.0,
            compared: 0,
            out_of_sync: 0,
        });
        a.runs += 1;
        if x.caught_up {
            a.lags.push(x.lag_ms);
        }
        a.worst = a.worst.max(x.lag_ms);
        if let Some(in_sync) = x.csn_in_sync {
            a.compared += 1;
            a.out_of_sync += u64::from(!in_sync);
        }
    }
    order
        .into_iter()
        .filter_map(|name| {
            let a = acc.remove(&name)?;
            let caught_up = a.lags.len() as u64;
            Some(ReplicaReport {
                replica: name,
                runs: a.runs,
                caught_up,
                catch_up_rate: round(caught_up as f64 / a.runs.max(1) as f64),
                lag: stats(&a.lags),
                worst_lag_ms: round(a.worst),
                csn_compared: a.compared,
                csn_out_of_sync: a.out_of_sync,
            })
        })
        .collect()
}

const DAY_MS: i64 = 86_400_000;

/// Periodic spikes in one stage's series of (start ms, duration ms).
pub fn find_periodic(stage: &str, series: &[(i64, f64)], interval_ms: f64) -> Option<SpikeFinding> {
    if series.len() < 8 {
        return None;
    }
    let values: Vec<f64> = series.iter().map(|s| s.1).collect();
    let m = median(&values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    let mad = median(&deviations) * 1.4826;
    let threshold = (2.0 * m).max(m + 6.0 * mad).max(m + 5.0);
    let spikes: Vec<(i64, f64)> = series
        .iter()
        .copied()
        .filter(|s| s.1 >= threshold)
        .collect();
    if spikes.len() < 3 {
        return None;
    }
    let tol = (interval_ms / 2.0).max(1_000.0) as i64;
    let mut candidates: Vec<i64> = spikes
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|g| *g > tol)
        .collect();
    candidates.sort_unstable();
    candidates.dedup_by(|a, b| (*a - *b).abs() <= tol);
    for period in candidates {
        let mut best: Option<Vec<(i64, f64)>> = None;
        for anchor in &spikes {
            let on: Vec<(i64, f64)> = spikes
                .iter()
                .copied()
                .filter(|s| {
                    let r = (s.0 - anchor.0).rem_euclid(period);
                    r.min(period - r) <= tol
                })
                .collect();
            if best.as_ref().is_none_or(|b| on.len() > b.len()) {
                best = Some(on);
            }
        }
        let Some(on) = best else { continue };
        let n = on.len();
        let first = on.first().map(|s| s.0).unwrap_or(0);
        let last = on.last().map(|s| s.0).unwrap_or(0);
        let expected = ((last - first + tol) / period + 1) as usize;
        let precision = n as f64 / spikes.len() as f64;
        let coverage = n as f64 / expected.max(1) as f64;
        if n < 3 || precision < 0.7 || coverage < 0.7 {
            continue;
        }
        let spike_ms = round(median(&on.iter().map(|s| s.1).collect::<Vec<_>>()));
        let daily = period >= DAY_MS - tol && {
            let r = period.rem_euclid(DAY_MS);
            r.min(DAY_MS - r) <= tol
        };
        let (recurrence, time_of_day_utc) = if daily {
            let minute = first.rem_euclid(DAY_MS) / 60_000;
            (
                Recurrence::TimeOfDay,
                Some(format!("{:02}:{:02}", minute / 60, minute % 60)),
            )
        } else {
            (Recurrence::Interval, None)
        };
        let dependency = dependency(stage).to_string();
        let when = match &time_of_day_utc {
            Some(t) => format!("daily at {t} UTC"),
            None => format!("every {}", human_period(period / 1000)),
        };
        let summary = format!(
            "{stage} spikes to {spike_ms} ms (median {} ms) {when}, {n} of {expected} times: review {dependency}",
            round(m)
        );
        return Some(SpikeFinding {
            stage: stage.to_string(),
            recurrence,
            period_seconds: u64::try_from((period + 500) / 1000).unwrap_or(0),
            time_of_day_utc,
            first_ms: first,
            occurrences: n as u64,
            expected: expected as u64,
            baseline_ms: round(m),
            spike_ms,
            dependency,
            summary,
        });
    }
    None
}

fn human_period(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn noise(i: i64) -> f64 {
        // deterministic jitter around 4 ms
        4.0 + ((i * 7919) % 13) as f64 / 10.0
    }

    #[test]
    fn finds_an_interval_period() {
        let start = 1_700_000_000_000;
        let series: Vec<(i64, f64)> = (0..120)
            .map(|i| {
                let v = if i % 10 == 3 {
                    80.0 + noise(i)
                } else {
                    noise(i)
                };
                (start + i * 60_000, v)
            })
            .collect();
        let f = find_periodic("token_response", &series, 60_000.0).unwrap();
        assert_eq!(f.period_seconds, 600);
        assert_eq!(f.recurrence, Recurrence::Interval);
        assert_eq!(f.occurrences, 12);
        assert!(f.summary.contains("every 10 min"), "{}", f.summary);
        assert!(f.dependency.contains("conditional access"));
    }

    #[test]
    fn finds_a_time_of_day() {
        // every 5 minutes for 4 days; 02:00-02:05 UTC is slow
        let start = 1_700_006_400_000 - 1_700_006_400_000 % DAY_MS; // a midnight
        let series: Vec<(i64, f64)> = (0..(4 * 288))
            .map(|i| {
                let t = start + i * 300_000;
                let slow = (t % DAY_MS) / 60_000 == 120;
                (t, if slow { 300.0 } else { noise(i) })
            })
            .collect();
        let f = find_periodic("ldap_bind", &series, 300_000.0).unwrap();
        assert_eq!(f.recurrence, Recurrence::TimeOfDay);
        assert_eq!(f.time_of_day_utc.as_deref(), Some("02:00"));
        assert_eq!(f.period_seconds, 86_400);
    }

    #[test]
    fn random_spikes_are_not_periodic() {
        let start = 1_700_000_000_000;
        let slow = [3, 17, 22, 41, 58, 60, 77, 95];
        let series: Vec<(i64, f64)> = (0..120)
            .map(|i| {
                let v = if slow.contains(&i) { 90.0 } else { noise(i) };
                (start + i * 60_000, v)
            })
            .collect();
        assert_eq!(find_periodic("token_tls", &series, 60_000.0), None);
        // flat series: nothing
        let flat: Vec<(i64, f64)> = (0..50).map(|i| (start + i * 60_000, noise(i))).collect();
        assert_eq!(find_periodic("token_tls", &flat, 60_000.0), None);
    }

    #[test]
    fn replicas_are_summarised_and_their_lag_spikes_found() {
        use crate::replication::{ReplicaResult, ReplicationResult, stage_of};
        use crate::timing::StageResult;
        let start = 1_700_000_000_000;
        // Every 5 minutes for 10 hours; dc2's lag jumps every hour (a replication
        // schedule), dc3 never catches up in run 7 and is behind by contextCSN.
        let runs: Vec<RunResult> = (0..120_i64)
            .map(|i| {
                let dc2 = if i % 12 == 4 { 900.0 } else { 20.0 + noise(i) };
                let dc3_ok = i != 7;
                let dc3 = if dc3_ok { 30.0 + noise(i) } else { 5_000.0 };
                let rep = |name: &str, ok: bool, lag: f64, in_sync: Option<bool>| ReplicaResult {
                    replica: name.into(),
                    caught_up: ok,
                    lag_ms: lag,
                    context_csn: vec![],
                    csn_in_sync: in_sync,
                    csn_behind_ms: None,
                    error: None,
                };
                RunResult {
                    probe: "repl".into(),
                    started_ms: start + i * 300_000,
                    duration_ms: dc3,
                    ok: dc3_ok,
                    stages: vec![
                        StageResult {
                            stage: stage_of("dc2"),
                            duration_ms: dc2,
                            ok: true,
                        },
                        StageResult {
                            stage: stage_of("dc3"),
                            duration_ms: dc3,
                            ok: dc3_ok,
                        },
                    ],
                    failure: None,
                    replication: Some(ReplicationResult {
                        marker: format!("m{i}"),
                        provider_context_csn: vec![],
                        replicas: vec![
                            rep("dc2", true, dc2, Some(true)),
                            rep("dc3", dc3_ok, dc3, (i % 2 == 0).then_some(i % 4 != 0)),
                        ],
                    }),
                }
            })
            .collect();
        let report = analyse(&runs);
        let p = &report.probes[0];
        let names: Vec<&str> = p.replication.iter().map(|r| r.replica.as_str()).collect();
        assert_eq!(names, ["dc2", "dc3"]);
        let dc3 = &p.replication[1];
        assert_eq!((dc3.runs, dc3.caught_up), (120, 119));
        assert_eq!(dc3.worst_lag_ms, 5_000.0);
        assert!(dc3.lag.max < 40.0, "{:?}", dc3.lag);
        assert_eq!((dc3.csn_compared, dc3.csn_out_of_sync), (60, 30));
        // The replica's lag is its stage: same numbers, and its spikes are found.
        let stage = p
            .stages
            .iter()
            .find(|s| s.stage == "replication:dc2")
            .unwrap();
        assert_eq!(stage.stats, p.replication[0].lag);
        let spike = p
            .spikes
            .iter()
            .find(|s| s.stage == "replication:dc2")
            .unwrap();
        assert_eq!(spike.period_seconds, 3600);
        assert!(
            spike
                .dependency
                .starts_with("replication between the directory servers")
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = stats(&v);
        assert_eq!(
            (s.p50, s.p90, s.p95, s.p99, s.max),
            (50.0, 90.0, 95.0, 99.0, 100.0)
        );
    }
}

//! The replication-delay probe: write a marker on one directory server, then read
//! each replica until it shows the marker, and report the lag per replica.
//!
//! A run:
//!
//! 1. opens a session to every replica (connect and bind with the probe's
//!    credentials) while, at the same time, the provider is reached and bound
//!    (stages `replication_dns`, `replication_connect`, `replication_tls`,
//!    `replication_bind`) and the marker written (`replication_write`): a value
//!    naming the probe, the run's start time and a random nonce, put in the
//!    configured attribute (`description` by default) of the dedicated entry,
//!    which is created when it does not exist;
//! 2. from the moment the provider acknowledged the write, reads the marker on each
//!    replica every `poll_interval`; the replica's lag is the time from that
//!    acknowledgement to the read that returned the marker, reported as the stage
//!    `replication:NAME`, so each replica has its own percentiles, spike detection
//!    and metrics;
//! 3. a replica that has not shown the marker `deadline` after the write fails the
//!    run (class `replication_timeout`) with the lag so far; a replica that cannot
//!    be reached or read fails it with that stage's class (`connect`, `ldap_bind`,
//!    `ldap_search`, ...);
//! 4. when a `suffix` is configured (OpenLDAP), reads `contextCSN` of that entry on
//!    the provider right after the write and on each replica, and compares them per
//!    server id: in sync when the replica's CSN of every provider server id is at
//!    least the provider's, and by how much the replica's is behind otherwise. A
//!    consumer applies a change before it records the change's CSN, so a replica
//!    that caught up is read again every `poll_interval` until its `contextCSN` is
//!    in sync or the deadline passes; what is reported is its last value.
//!
//! Replica sessions are opened before the marker is polled for, but not before the
//! write is sent: a replica that is slow to answer (overloaded, paused) delays its
//! own reads, which is part of the lag a client of that replica would see.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::Mod;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ReplicationSpec;
use crate::ldap;
use crate::timing::{Failure, FailureClass, Recorder, StageError, StageResult};

/// What one run of a replication probe saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicationResult {
    /// The value written.
    pub marker: String,
    /// The provider's `contextCSN` values right after the write (empty when no
    /// `suffix` is configured or none could be read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provider_context_csn: Vec<String>,
    /// Each replica, in configuration order.
    pub replicas: Vec<ReplicaResult>,
}

/// One replica in one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaResult {
    /// The replica's name.
    pub replica: String,
    /// Whether it showed the marker before the deadline.
    pub caught_up: bool,
    /// The lag: from the provider's acknowledgement of the write to the read that
    /// showed the marker; for a replica that did not catch up, the lag so far.
    pub lag_ms: f64,
    /// The replica's `contextCSN` values after its last read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_csn: Vec<String>,
    /// Whether the replica's `contextCSN` has caught up with the provider's (absent
    /// when either could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csn_in_sync: Option<bool>,
    /// How far the replica's `contextCSN` is behind the provider's, in ms (0 when in
    /// sync; absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csn_behind_ms: Option<f64>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StageError>,
}

/// The stage of a replica's lag.
pub fn stage_of(replica: &str) -> String {
    format!("replication:{replica}")
}

/// The replica named in a stage `replication:NAME`.
pub fn replica_of(stage: &str) -> Option<&str> {
    stage.strip_prefix("replication:")
}

/// Run the replication probe: the provider's stages go through `rec`, each
/// replica's lag is appended to `rec` as stage `replication:NAME`, and what was
/// seen is put in `out` (left `None` when the marker could not be written).
pub(crate) async fn run(
    rec: &mut Recorder,
    probe: &str,
    started_ms: i64,
    spec: &Arc<ReplicationSpec>,
    tls: Option<Arc<rustls::ClientConfig>>,
    out: &mut Option<ReplicationResult>,
) -> Result<(), Failure> {
    let marker: Arc<str> = marker_value(probe, started_ms).into();
    let (written_tx, written) = watch::channel(Written::default());
    // Dropping the set (an early return below) aborts the replica tasks.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.replicas.len() {
        let (spec, marker, tls, written) =
            (spec.clone(), marker.clone(), tls.clone(), written.clone());
        let run_deadline = rec.deadline();
        tasks.spawn(async move {
            let outcome = watch_replica(i, &spec, &marker, tls, written, run_deadline).await;
            (i, outcome)
        });
    }
    let mut session = ldap::open(rec, "replication", &spec.provider, tls).await?;
    ldap::bind(
        rec,
        "replication_bind",
        &mut session.handle,
        spec.bind_dn.as_deref(),
        &spec.password,
    )
    .await?;
    rec.stage(
        "replication_write",
        write_marker(&mut session.handle, spec, &marker),
    )
    .await?;
    let written_at = Instant::now();
    written_tx.send_modify(|w| w.at = Some(written_at));
    let provider_context_csn = match &spec.suffix {
        Some(suffix) => read_csn(&mut session.handle, suffix, rec.deadline()).await,
        None => Vec::new(),
    };
    let csn = provider_context_csn.clone();
    written_tx.send_modify(|w| w.provider_csn = Some(csn));
    session.close().await;

    let mut outcomes: Vec<Option<Outcome>> = vec![None; spec.replicas.len()];
    // Each task ends by the run's deadline; the margin covers its closing reads.
    let _ = tokio::time::timeout_at(rec.deadline() + Duration::from_secs(3), async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, o)) = joined
                && let Some(slot) = outcomes.get_mut(i)
            {
                *slot = Some(o);
            }
        }
    })
    .await;
    let mut failure = None;
    let mut replicas = Vec::new();
    for (r, o) in spec.replicas.iter().zip(outcomes) {
        let o = o.unwrap_or_else(|| Outcome {
            caught_up: false,
            lag_ms: ms(written_at.elapsed()),
            error: Some(StageError::new(
                FailureClass::ReplicationTimeout,
                format!("{}: the read of the marker did not end", r.name),
            )),
            context_csn: Vec::new(),
        });
        let stage = stage_of(&r.name);
        rec.stages.push(StageResult {
            stage: stage.clone(),
            duration_ms: o.lag_ms,
            ok: o.error.is_none(),
        });
        if let (None, Some(e)) = (&failure, &o.error) {
            failure = Some(Failure {
                stage,
                error: e.clone(),
            });
        }
        let (csn_in_sync, csn_behind_ms) = compare_csn(&provider_context_csn, &o.context_csn);
        replicas.push(ReplicaResult {
            replica: r.name.clone(),
            caught_up: o.caught_up,
            lag_ms: o.lag_ms,
            context_csn: o.context_csn,
            csn_in_sync,
            csn_behind_ms,
            error: o.error,
        });
    }
    *out = Some(ReplicationResult {
        marker: marker.to_string(),
        provider_context_csn,
        replicas,
    });
    failure.map_or(Ok(()), Err)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `intraport-probe NAME 2024-05-01T02:00:00.000Z 9f3c...`: which probe wrote it,
/// when the run started, and a nonce so that no earlier run's value counts.
fn marker_value(probe: &str, started_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(started_ms).unwrap_or_default());
    format!(
        "intraport-probe {probe} {} {:016x}",
        humantime::format_rfc3339_millis(at),
        fastrand::u64(..)
    )
}

async fn write_marker(
    h: &mut ldap3::Ldap,
    spec: &ReplicationSpec,
    marker: &str,
) -> Result<(), StageError> {
    let dn = spec.marker_dn.as_str();
    let attr = spec.attribute.as_str();
    let refused = |what: &str, res: &ldap3::LdapResult| {
        StageError::coded(
            FailureClass::LdapWrite,
            res.rc.to_string(),
            format!("{what} {dn}: result code {} {}", res.rc, res.text),
        )
    };
    let res = replace(h, dn, attr, marker).await?;
    match res.rc {
        0 => return Ok(()),
        32 => {}
        _ => return Err(refused(&format!("writing {attr} of"), &res)),
    }
    // noSuchObject: create the entry, named by its first RDN.
    let (rdn_attr, rdn_value) = dn
        .split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map(|(a, v)| (a.trim(), v.trim()))
        .unwrap_or_default();
    let classes: HashSet<&str> = spec.object_classes.iter().map(String::as_str).collect();
    let mut attrs = vec![("objectClass", classes)];
    if rdn_attr.eq_ignore_ascii_case(attr) {
        attrs.push((attr, HashSet::from([rdn_value, marker])));
    } else {
        attrs.push((rdn_attr, HashSet::from([rdn_value])));
        attrs.push((attr, HashSet::from([marker])));
    }
    let res = h.add(dn, attrs).await.map_err(ldap::protocol_error)?;
    match res.rc {
        0 => Ok(()),
        // entryAlreadyExists: another run created it meanwhile; write to it.
        68 => {
            let res = replace(h, dn, attr, marker).await?;
            if res.rc == 0 {
                Ok(())
            } else {
                Err(refused(&format!("writing {attr} of"), &res))
            }
        }
        _ => Err(refused("creating", &res)),
    }
}

async fn replace(
    h: &mut ldap3::Ldap,
    dn: &str,
    attr: &str,
    marker: &str,
) -> Result<ldap3::LdapResult, StageError> {
    h.modify(dn, vec![Mod::Replace(attr, HashSet::from([marker]))])
        .await
        .map_err(ldap::protocol_error)
}

/// `contextCSN` of `suffix`, or nothing when it cannot be read within a second.
async fn read_csn(h: &mut ldap3::Ldap, suffix: &str, run_deadline: Instant) -> Vec<String> {
    let until = (Instant::now() + Duration::from_secs(1)).min(run_deadline);
    match tokio::time::timeout_at(until, ldap::read_attribute(h, suffix, "contextCSN")).await {
        Ok(Ok(Some(values))) => values,
        _ => Vec::new(),
    }
}

#[derive(Clone)]
struct Outcome {
    caught_up: bool,
    lag_ms: f64,
    error: Option<StageError>,
    context_csn: Vec<String>,
}

/// What the replica tasks learn from the provider's side.
#[derive(Clone, Default)]
struct Written {
    /// When the provider acknowledged the write.
    at: Option<Instant>,
    /// Its `contextCSN` read after the write.
    provider_csn: Option<Vec<String>>,
}

/// When the provider acknowledged the write; `None` when it never will.
async fn written(mut rx: watch::Receiver<Written>) -> Option<Instant> {
    let w = rx.wait_for(|w| w.at.is_some()).await.ok()?;
    w.at
}

/// The provider's `contextCSN` after the write; `None` when it never comes.
async fn provider_csn(mut rx: watch::Receiver<Written>) -> Option<Vec<String>> {
    let w = rx.wait_for(|w| w.provider_csn.is_some()).await.ok()?;
    w.provider_csn.clone()
}

async fn watch_replica(
    i: usize,
    spec: &ReplicationSpec,
    marker: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    written_rx: watch::Receiver<Written>,
    run_deadline: Instant,
) -> Outcome {
    let Some(replica) = spec.replicas.get(i) else {
        return Outcome {
            caught_up: false,
            lag_ms: 0.0,
            error: None,
            context_csn: Vec::new(),
        };
    };
    let name = replica.name.as_str();
    // The end of the wait: `deadline` after the write (never past the run's end).
    let expiry = {
        let rx = written_rx.clone();
        async move {
            match written(rx).await {
                Some(at) => {
                    tokio::time::sleep_until((at + spec.deadline).min(run_deadline)).await;
                    at
                }
                // The marker was not written: the run aborts this task.
                None => std::future::pending().await,
            }
        }
    };
    tokio::pin!(expiry);
    let lag_so_far = || {
        written_rx
            .borrow()
            .at
            .map(|at| ms(at.elapsed()))
            .unwrap_or_default()
    };
    let timed_out = |at: Instant, what: &str| Outcome {
        caught_up: false,
        lag_ms: ms(at.elapsed()),
        error: Some(StageError::new(
            FailureClass::ReplicationTimeout,
            format!(
                "{name} did not show the marker within {} of the write ({what}; lag so far {:.0} ms)",
                humantime::format_duration(spec.deadline),
                ms(at.elapsed())
            ),
        )),
        context_csn: Vec::new(),
    };
    let failed = |e: StageError| Outcome {
        caught_up: false,
        lag_ms: lag_so_far(),
        error: Some(StageError {
            detail: format!("{name}: {}", e.detail),
            ..e
        }),
        context_csn: Vec::new(),
    };

    // The replica's own stages are not reported: its stage is the lag.
    let mut rec = Recorder::until(run_deadline);
    let opening = async {
        let mut s = ldap::open(&mut rec, "replica", &replica.url, tls)
            .await
            .map_err(|f| f.error)?;
        ldap::simple_bind(&mut s.handle, spec.bind_dn.as_deref(), &spec.password).await?;
        Ok::<_, StageError>(s)
    };
    let mut session = tokio::select! {
        s = opening => match s {
            Ok(s) => s,
            Err(e) => return failed(e),
        },
        at = &mut expiry => return timed_out(at, "no answer to connect and bind"),
    };
    let polling = async {
        let Some(at) = written(written_rx.clone()).await else {
            return std::future::pending().await;
        };
        loop {
            match ldap::read_attribute(&mut session.handle, &spec.marker_dn, &spec.attribute)
                .await?
            {
                Some(values) if values.iter().any(|v| v == marker) => {
                    return Ok::<_, StageError>(ms(at.elapsed()));
                }
                // Not there yet (or the entry itself not yet replicated).
                _ => tokio::time::sleep(spec.poll_interval).await,
            }
        }
    };
    let mut outcome = tokio::select! {
        seen = polling => match seen {
            Ok(lag_ms) => Outcome { caught_up: true, lag_ms, error: None, context_csn: Vec::new() },
            Err(e) => failed(e),
        },
        at = &mut expiry => timed_out(at, "the marker was not there"),
    };
    if let Some(suffix) = &spec.suffix {
        let written_at = written_rx.borrow().at;
        outcome.context_csn = match written_at {
            Some(at) if outcome.caught_up => {
                let end = (at + spec.deadline).min(run_deadline);
                settle_csn(&mut session.handle, spec, suffix, written_rx.clone(), end).await
            }
            _ => read_csn(&mut session.handle, suffix, run_deadline).await,
        };
    }
    session.close().await;
    outcome
}

/// The replica's `contextCSN`, read until it is in sync with the provider's or
/// `end` passes (or it cannot be compared at all); the last value read.
async fn settle_csn(
    h: &mut ldap3::Ldap,
    spec: &ReplicationSpec,
    suffix: &str,
    written_rx: watch::Receiver<Written>,
    end: Instant,
) -> Vec<String> {
    let mut last = Vec::new();
    let reading = async {
        let Some(provider) = provider_csn(written_rx).await else {
            return;
        };
        loop {
            match ldap::read_attribute(h, suffix, "contextCSN").await {
                Ok(Some(values)) => last = values,
                _ => return,
            }
            if compare_csn(&provider, &last).0 != Some(false) {
                return;
            }
            tokio::time::sleep(spec.poll_interval).await;
        }
    };
    let _ = tokio::time::timeout_at(end, reading).await;
    if last.is_empty() {
        // The deadline came before the first read ended: one bounded read.
        last = read_csn(
            h,
            suffix,
            end.max(Instant::now() + Duration::from_millis(500)),
        )
        .await;
    }
    last
}

/// One `contextCSN` value: `YYYYmmddHHMMSS.ffffffZ#count#sid#mod`.
#[derive(Debug, PartialEq)]
struct Csn<'a> {
    micros: i64,
    count: &'a str,
    sid: &'a str,
}

fn parse_csn(s: &str) -> Option<Csn<'_>> {
    let mut parts = s.split('#');
    let (ts, count, sid) = (parts.next()?, parts.next()?, parts.next()?);
    let d = ts.strip_suffix('Z')?;
    let (whole, frac) = d.split_once('.').unwrap_or((d, "0"));
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        whole.get(0..4)?,
        whole.get(4..6)?,
        whole.get(6..8)?,
        whole.get(8..10)?,
        whole.get(10..12)?,
        whole.get(12..14)?
    );
    let secs = humantime::parse_rfc3339(&rfc3339)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let frac_micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some(Csn {
        micros: i64::try_from(secs).ok()? * 1_000_000 + frac_micros,
        count,
        sid,
    })
}

/// Whether the replica's CSNs have caught up with the provider's, per server id,
/// and how far behind they are (ms); `(None, None)` when either side is unknown.
pub fn compare_csn(provider: &[String], replica: &[String]) -> (Option<bool>, Option<f64>) {
    let p: Vec<Csn<'_>> = provider.iter().filter_map(|s| parse_csn(s)).collect();
    let r: Vec<Csn<'_>> = replica.iter().filter_map(|s| parse_csn(s)).collect();
    if p.is_empty() || r.is_empty() {
        return (None, None);
    }
    let mut in_sync = true;
    let mut behind: Option<f64> = Some(0.0);
    for pc in &p {
        match r.iter().find(|rc| rc.sid == pc.sid) {
            Some(rc) => {
                if (rc.micros, rc.count) < (pc.micros, pc.count) {
                    in_sync = false;
                }
                let gap = (pc.micros - rc.micros).max(0) as f64 / 1000.0;
                behind = behind.map(|b| b.max(gap));
            }
            // The replica has nothing from that server at all.
            None => {
                in_sync = false;
                behind = None;
            }
        }
    }
    (Some(in_sync), behind)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn csn_parses() {
        let c = parse_csn("20240501020000.123456Z#000002#001#000000").unwrap();
        assert_eq!(c.micros, 1_714_528_800_123_456);
        assert_eq!((c.count, c.sid), ("000002", "001"));
        assert_eq!(parse_csn("2024-05-01#0#0#0"), None);
        assert_eq!(parse_csn("garbage"), None);
    }

    #[test]
    fn csn_comparison_per_server_id() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let provider = s(&[
            "20240501020000.500000Z#000000#001#000000",
            "20240501015000.000000Z#000000#002#000000",
        ]);
        // Equal: in sync.
        assert_eq!(compare_csn(&provider, &provider), (Some(true), Some(0.0)));
        // Server 001's change 1.5 s behind.
        let replica = s(&[
            "20240501015959.000000Z#000000#001#000000",
            "20240501015000.000000Z#000000#002#000000",
        ]);
        assert_eq!(
            compare_csn(&provider, &replica),
            (Some(false), Some(1500.0))
        );
        // Same time, earlier change count: behind by 0 ms but not in sync.
        let replica = s(&[
            "20240501020000.500000Z#000000#001#000000",
            "20240501015000.000000Z#000000#002#000000",
        ]);
        let mut later = provider.clone();
        later[0] = "20240501020000.500000Z#000001#001#000000".into();
        assert_eq!(compare_csn(&later, &replica), (Some(false), Some(0.0)));
        // Ahead is in sync (another write landed after the provider was read).
        assert_eq!(compare_csn(&replica, &later).0, Some(true));
        // A server id the replica has never heard of.
        assert_eq!(compare_csn(&provider, &replica[..1]), (Some(false), None));
        // Unknown on either side.
        assert_eq!(compare_csn(&provider, &[]), (None, None));
        assert_eq!(compare_csn(&[], &provider), (None, None));
    }

    #[test]
    fn markers_differ_between_runs() {
        let a = marker_value("dc", 1_714_528_800_000);
        let b = marker_value("dc", 1_714_528_800_000);
        assert!(
            a.starts_with("intraport-probe dc 2024-05-01T02:00:00.000Z "),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn stage_names_carry_the_replica() {
        assert_eq!(stage_of("dc2"), "replication:dc2");
        assert_eq!(replica_of("replication:dc2"), Some("dc2"));
        assert_eq!(replica_of("replication_write"), None);
    }
}

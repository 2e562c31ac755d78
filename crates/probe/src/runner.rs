//! The schedule: each probe on its own interval (fixed rate, so a slow run does not
//! shift the later ones) with a random jitter, every result stored and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::probe::{PreparedProbe, RunResult};
use crate::store::{Store, StoreError};

/// Probes, where their results go, and the clock that schedules them.
pub struct Runner {
    probes: Vec<Arc<PreparedProbe>>,
    store: Option<Arc<Mutex<Store>>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    retention: Duration,
}

impl Runner {
    /// A runner; `store` receives every result when given.
    pub fn new(
        probes: Vec<PreparedProbe>,
        store: Option<Store>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> Self {
        Self {
            probes: probes.into_iter().map(Arc::new).collect(),
            store: store.map(|s| Arc::new(Mutex::new(s))),
            metrics,
            clock,
            retention,
        }
    }

    /// Run every probe once, concurrently, and record the results.
    pub async fn run_once(&self) -> Result<Vec<RunResult>, StoreError> {
        let now = self.clock.now_ms();
        let tasks: Vec<_> = self
            .probes
            .iter()
            .map(|p| {
                let p = p.clone();
                tokio::spawn(async move { p.run(now).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                self.record(&r).await?;
                out.push(r);
            }
        }
        self.prune().await?;
        Ok(out)
    }

    /// Run every probe on its schedule until `stop` turns true or, when `limit` is
    /// given, until each probe has run that many times.
    pub async fn run(
        &self,
        stop: watch::Receiver<bool>,
        limit: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut set = tokio::task::JoinSet::new();
        for p in &self.probes {
            let p = p.clone();
            let clock = self.clock.clone();
            let metrics = self.metrics.clone();
            let store = self.store.clone();
            let retention = self.retention;
            let mut stop = stop.clone();
            set.spawn(async move {
                let interval = i64::try_from(p.spec.interval.as_millis()).unwrap_or(i64::MAX);
                let jitter = u64::try_from(p.spec.jitter.as_millis()).unwrap_or(0);
                let start = clock.now_ms();
                let mut k: i64 = 0;
                let mut runs = 0u64;
                let mut last_prune = i64::MIN;
                while limit.is_none_or(|l| runs < l) {
                    let at = start
                        .saturating_add(k.saturating_mul(interval))
                        .saturating_add(
                            i64::try_from(fastrand::u64(0..jitter.max(1))).unwrap_or(0),
                        );
                    tokio::select! {
                        _ = clock.sleep_until(at) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    let started = clock.now_ms();
                    let r = tokio::select! {
                        r = p.run(started) => r,
                        _ = stop.wait_for(|s| *s) => break,
                    };
                    log_run(&r);
                    metrics.observe(&r);
                    if let Some(store) = &store {
                        let now = clock.now_ms();
                        let prune = now.saturating_sub(last_prune) >= 60_000;
                        if prune {
                            last_prune = now;
                        }
                        write(store, r, prune.then_some((now, retention))).await?;
                    }
                    runs += 1;
                    // Fixed rate: the next slot after now, never a burst to catch up.
                    let elapsed = clock.now_ms().saturating_sub(start);
                    k = (k + 1)
                        .max(elapsed / interval.max(1) + i64::from(elapsed % interval.max(1) > 0));
                }
                Ok::<(), StoreError>(())
            });
        }
        let mut result = Ok(());
        while let Some(joined) = set.join_next().await {
            if let Ok(Err(e)) = joined {
                result = Err(e);
                // A broken database stops the service rather than losing results.
                set.abort_all();
            }
        }
        result
    }

    async fn record(&self, r: &RunResult) -> Result<(), StoreError> {
        log_run(r);
        self.metrics.observe(r);
        if let Some(store) = &self.store {
            write(store, r.clone(), None).await?;
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            let store = store.clone();
            let now = self.clock.now_ms();
            let retention = self.retention;
            return tokio::task::spawn_blocking(move || match store.lock() {
                Ok(mut s) => s.prune(now, retention).map(|_| ()),
                Err(_) => Ok(()),
            })
            .await
            .unwrap_or(Ok(()));
        }
        Ok(())
    }
}

fn log_run(r: &RunResult) {
    for x in r.replication.iter().flat_map(|rep| &rep.replicas) {
        tracing::info!(
            probe = %r.probe,
            replica = %x.replica,
            caught_up = x.caught_up,
            lag_ms = x.lag_ms,
            csn_in_sync = ?x.csn_in_sync,
            "replication lag"
        );
    }
    match &r.failure {
        None => tracing::info!(probe = %r.probe, duration_ms = r.duration_ms, "probe succeeded"),
        Some(f) => tracing::warn!(
            probe = %r.probe,
            stage = %f.stage,
            class = f.error.class.as_str(),
            code = f.error.code.as_deref().unwrap_or(""),
            detail = %f.error.detail,
            "probe failed"
        ),
    }
}

async fn write(
    store: &Arc<Mutex<Store>>,
    r: RunResult,
    prune: Option<(i64, Duration)>,
) -> Result<(), StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        // A poisoned lock means another writer panicked mid-write; SQLite rolled
        // that transaction back, so the connection is still consistent.
        let mut s = match store.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.insert(&r)?;
        if let Some((now, retention)) = prune {
            s.prune(now, retention)?;
        }
        Ok(())
    })
    .await
    .unwrap_or(Ok(()))
}

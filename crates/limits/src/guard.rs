//! The gateway's view of the shared state: a local copy of the ban list for checks at
//! accept, fallback to in-process limits while the shared store is unreachable, ban
//! escalation, the allowlist, and the events and counters of every action.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::stats::{AbuseSnapshot, AbuseStats};
use crate::store::{InProcess, Rate, RateDecision, SharedState, StoreError, now_ms, source_key};

/// When failed authentications ban a source, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Failures within `window` that ban a source (0: never ban).
    pub failures: u64,
    /// The counting window.
    pub window: Duration,
    /// The first ban's length.
    pub ban: Duration,
    /// Each further ban within `offence_memory` is this many times longer.
    pub escalation: u32,
    /// The longest ban.
    pub max_ban: Duration,
    /// How long earlier bans count towards escalation.
    pub offence_memory: Duration,
    /// Sources that are never banned.
    pub allow: Vec<IpNet>,
}

impl Default for BanPolicy {
    fn default() -> Self {
        BanPolicy {
            failures: 20,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            escalation: 4,
            max_ban: Duration::from_secs(86_400),
            offence_memory: Duration::from_secs(86_400),
            allow: Vec::new(),
        }
    }
}

impl BanPolicy {
    /// The length of the `offence`-th ban (1 for the first).
    pub fn ban_length(&self, offence: u64) -> Duration {
        let mut d = self.ban;
        for _ in 1..offence.min(64) {
            d = d.saturating_mul(self.escalation.max(1));
            if d >= self.max_ban {
                break;
            }
        }
        d.min(self.max_ban)
    }

    /// Whether `ip` is on the allowlist.
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A change of the ban list, for whoever records them (the gateway's audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanNotice {
    /// `source` was banned here after `failures` authentication failures, the last
    /// for `reason`; `offence` counts its bans within the offence memory.
    Banned {
        /// The banned address (an IPv6 source is its /64).
        source: IpAddr,
        /// How long the ban lasts.
        length: Duration,
        /// Failures within the window that triggered it.
        failures: u64,
        /// The how-manieth offence (escalation).
        offence: u64,
        /// The last failure's reason code.
        reason: String,
    },
    /// Another gateway banned `source` (learnt from the shared store).
    BannedElsewhere {
        /// The banned address.
        source: IpAddr,
        /// How long the ban has left.
        length: Duration,
    },
    /// The ban of `source` ended.
    Unbanned {
        /// The address.
        source: IpAddr,
    },
}

/// Receives every [`BanNotice`]; called on the task that made the change, so it must
/// not block.
pub type BanObserver = Box<dyn Fn(BanNotice) + Send + Sync>;

/// The gateway's abuse state. Cheap to share (`Arc`).
pub struct Guard {
    observer: RwLock<Option<Arc<BanObserver>>>,
    store: Arc<dyn SharedState>,
    local: InProcess,
    bans: RwLock<HashMap<IpAddr, u64>>,
    ban_count: AtomicUsize,
    policy: RwLock<Arc<BanPolicy>>,
    stats: Arc<AbuseStats>,
    store_up: AtomicBool,
    /// Bans made while the store was down, to hand over once it is back.
    unshared: AtomicBool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard over `store` with `policy`.
    pub fn new(store: Arc<dyn SharedState>, policy: BanPolicy) -> Arc<Guard> {
        Arc::new(Guard {
            observer: RwLock::new(None),
            store,
            local: InProcess::new(),
            bans: RwLock::new(HashMap::new()),
            ban_count: AtomicUsize::new(0),
            policy: RwLock::new(Arc::new(policy)),
            stats: Arc::new(AbuseStats::default()),
            store_up: AtomicBool::new(true),
            unshared: AtomicBool::new(false),
        })
    }

    /// An in-process guard (nothing shared).
    pub fn in_process(policy: BanPolicy) -> Arc<Guard> {
        Guard::new(Arc::new(InProcess::new()), policy)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AbuseStats> {
        &self.stats
    }

    /// The kind of shared store (`memory`, `redis`).
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Whether the shared store answered the last time it was asked.
    pub fn store_available(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Sets who is told of every ban and unban.
    pub fn set_observer(&self, observer: BanObserver) {
        *self
            .observer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(observer));
    }

    fn notify(&self, notice: BanNotice) {
        let observer = self
            .observer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(o) = observer {
            o(notice);
        }
    }

    /// The number of sources banned now.
    pub fn bans_active(&self) -> usize {
        self.ban_count.load(Ordering::Relaxed)
    }

    /// Replace the ban policy (reload). Bans in force stay.
    pub fn set_policy(&self, policy: BanPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    fn policy(&self) -> Arc<BanPolicy> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long `ip` stays banned, if it is (a lookup in memory: no I/O).
    pub fn banned(&self, ip: IpAddr) -> Option<Duration> {
        if self.ban_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let key = source_key(ip);
        let until = *self
            .bans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)?;
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    fn store_result<T>(&self, r: Result<T, StoreError>) -> Option<T> {
        match r {
            Ok(v) => {
                if !self.store_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        event = "store_up",
                        store = self.store.kind(),
                        "shared state reachable again: limits and bans are shared"
                    );
                }
                Some(v)
            }
            Err(e) => {
                AbuseStats::bump(&self.stats.store_errors);
                if self.store_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(event = "store_down", store = self.store.kind(), error = %e, "shared state unreachable: using local limits and the local ban list until it is back");
                }
                None
            }
        }
    }

    /// Count one request against `key` at `rate`, in the shared store or, while it is
    /// unreachable, locally.
    pub async fn check_rate(&self, key: &str, rate: Rate) -> RateDecision {
        let r = self.store.check_rate(key, rate).await;
        match self.store_result(r) {
            Some(d) => d,
            None => self.local.rate_now(key, rate),
        }
    }

    /// Record an authentication failure from `ip`; when it reaches the policy's
    /// threshold the source is banned, and the ban's length is returned.
    pub async fn auth_failure(&self, ip: IpAddr, reason: &str) -> Option<Duration> {
        let policy = self.policy();
        if policy.failures == 0 || policy.allowlisted(ip) {
            return None;
        }
        AbuseStats::bump(&self.stats.auth_failures);
        let source = source_key(ip);
        if self.banned(source).is_some() {
            return None;
        }
        let r = self.store.count_failure(source, policy.window).await;
        let count = match self.store_result(r) {
            Some(n) => n,
            None => self.local.failure_now(source, policy.window),
        };
        if count < policy.failures {
            return None;
        }
        let r = self.store.add_offence(source, policy.offence_memory).await;
        let offence = match self.store_result(r) {
            Some(n) => n,
            None => self.local.offence_now(source, policy.offence_memory),
        };
        let length = policy.ban_length(offence);
        let until = now_ms().saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.insert_local(source, until);
        let r = self.store.add_ban(source, until).await;
        if self.store_result(r).is_none() {
            self.unshared.store(true, Ordering::Relaxed);
        }
        AbuseStats::bump(&self.stats.bans);
        tracing::warn!(
            event = "ban",
            source = %source,
            failures = count,
            offence,
            seconds = length.as_secs(),
            last_reason = reason,
            "source banned after repeated authentication failures"
        );
        self.notify(BanNotice::Banned {
            source,
            length,
            failures: count,
            offence,
            reason: reason.to_string(),
        });
        Some(length)
    }

    fn insert_local(&self, source: IpAddr, until: u64) -> bool {
        let mut b = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        let e = b.entry(source).or_insert(0);
        let new = *e < now_ms();
        *e = (*e).max(until);
        self.ban_count.store(b.len(), Ordering::Relaxed);
        new
    }

    /// One round of upkeep: take in the shared store's bans (and hand over bans made
    /// while it was unreachable), end expired bans, and forget expired counters.
    pub async fn sync(&self) {
        let r = self.store.bans().await;
        if let Some(remote) = self.store_result(r) {
            for (ip, until) in remote {
                if self.insert_local(ip, until) {
                    let left = until.saturating_sub(now_ms());
                    tracing::info!(event = "ban_shared", source = %ip, seconds = left / 1000, "ban from another gateway applied");
                    self.notify(BanNotice::BannedElsewhere {
                        source: ip,
                        length: Duration::from_millis(left),
                    });
                }
            }
            if self.unshared.swap(false, Ordering::Relaxed) {
                let local: Vec<(IpAddr, u64)> = self
                    .bans
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(ip, until)| (*ip, *until))
                    .collect();
                for (ip, until) in local {
                    let r = self.store.add_ban(ip, until).await;
                    if self.store_result(r).is_none() {
                        self.unshared.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        let now = now_ms();
        let mut ended = Vec::new();
        {
            let mut b = self.bans.write().unwrap_or_else(PoisonError::into_inner);
            b.retain(|ip, until| {
                let keep = *until > now;
                if !keep {
                    ended.push(*ip);
                }
                keep
            });
            self.ban_count.store(b.len(), Ordering::Relaxed);
        }
        for ip in ended {
            AbuseStats::bump(&self.stats.unbans);
            tracing::info!(event = "unban", source = %ip, "ban ended");
            self.notify(BanNotice::Unbanned { source: ip });
        }
        self.local.sweep();
        self.store.sweep();
    }

    /// Run [`Guard::sync`] every `every`, and log a one-line summary every `summary`
    /// in which some defence acted, until `cancel`.
    pub fn spawn(self: &Arc<Self>, every: Duration, summary: Duration, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last_summary = tokio::time::Instant::now();
            let mut seen: AbuseSnapshot = this.stats.snapshot();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                this.sync().await;
                if last_summary.elapsed() >= summary {
                    last_summary = tokio::time::Instant::now();
                    let now = this.stats.snapshot();
                    let changes = now.changes_since(&seen);
                    seen = now;
                    if !changes.is_empty() {
                        let text: Vec<String> =
                            changes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        tracing::warn!(
                            event = "abuse_summary",
                            seconds = summary.as_secs(),
                            banned_now = this.ban_count.load(Ordering::Relaxed),
                            store = this.store.kind(),
                            store_up = this.store_available(),
                            "under attack: {}",
                            text.join(" ")
                        );
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(failures: u64) -> BanPolicy {
        BanPolicy {
            failures,
            ban: Duration::from_secs(10),
            escalation: 3,
            max_ban: Duration::from_secs(60),
            allow: vec!["10.9.0.0/16".parse().unwrap()],
            ..BanPolicy::default()
        }
    }

    #[test]
    fn escalation_is_capped() {
        let p = policy(3);
        assert_eq!(p.ban_length(1), Duration::from_secs(10));
        assert_eq!(p.ban_length(2), Duration::from_secs(30));
        assert_eq!(p.ban_length(3), Duration::from_secs(60));
        assert_eq!(p.ban_length(1000), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn threshold_bans_and_allowlist_never() {
        let g = Guard::in_process(policy(3));
        let ip: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(g.auth_failure(ip, "bad_signature").await, None);
        assert_eq!(g.auth_failure(ip, "bad_signature").await, None);
        assert_eq!(g.banned(ip), None);
        assert_eq!(
            g.auth_failure(ip, "bad_signature").await,
            Some(Duration::from_secs(10))
        );
        assert!(g.banned(ip).is_some());
        let friend: IpAddr = "10.9.3.4".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(g.auth_failure(friend, "expired").await, None);
        }
        assert_eq!(g.banned(friend), None);
        assert_eq!(g.stats().snapshot().bans, 1);
    }
}

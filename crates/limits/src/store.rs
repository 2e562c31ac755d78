//! The shared-state trait and its in-process implementation.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A boxed future, so that [`SharedState`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the shared store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable (connection refused, timed out, or waiting before the
    /// next reconnection attempt).
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// A request rate: one request per `period` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// The emission interval (time per request at the sustained rate).
    pub period: Duration,
    /// How many requests may arrive back to back.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `requests` per `per`, with bursts of up to `burst`; `None` when a number is zero.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Option<Rate> {
        let requests = NonZeroU32::new(requests)?;
        let period = per / requests.get();
        if period.is_zero() {
            return None;
        }
        Some(Rate {
            period,
            burst: NonZeroU32::new(burst)?,
        })
    }
}

/// The answer of a rate check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Under the rate: go on.
    Allowed,
    /// Over the rate: the request conforms again after this long.
    Limited {
        /// Time until a request would be allowed.
        retry_after: Duration,
    },
}

/// Where the ban list and the rate counters live. Keys are opaque strings chosen by
/// the caller (e.g. `ip:public:10.1.2.3`); sources are addresses already reduced by
/// [`source_key`]. Times are milliseconds since the Unix epoch, so that replicas agree.
pub trait SharedState: Send + Sync {
    /// A short name for logs (`memory`, `redis`).
    fn kind(&self) -> &'static str;
    /// Count one request against `key` at `rate` (GCRA).
    fn check_rate<'a>(
        &'a self,
        key: &'a str,
        rate: Rate,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>>;
    /// Count one authentication failure of `source`; the number of failures in the
    /// current window of length `window`.
    fn count_failure(
        &self,
        source: IpAddr,
        window: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Count one ban of `source`, remembered for `memory`; the number of bans in that
    /// time including this one (1 for a first offence).
    fn add_offence(
        &self,
        source: IpAddr,
        memory: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Ban `source` until `until_ms` (a later ban already in place is kept).
    fn add_ban(&self, source: IpAddr, until_ms: u64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every ban still in force, with its end.
    fn bans(&self) -> BoxFuture<'_, Result<Vec<(IpAddr, u64)>, StoreError>>;
    /// Forget expired state (called periodically).
    fn sweep(&self) {}
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The address bans and per-source limits are keyed by: IPv4 addresses as they are,
/// IPv6 addresses reduced to their /64 (one host usually holds a whole /64, so
/// counting single addresses would let it rotate through them). IPv4-mapped IPv6
/// addresses count as IPv4.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// In-process state: GCRA limiters from `governor`, failure windows, offences and bans
/// in maps. Nothing to install; each gateway process counts on its own.
#[derive(Default)]
pub struct InProcess {
    limiters: Mutex<HashMap<Rate, Arc<DefaultKeyedRateLimiter<String>>>>,
    failures: Mutex<HashMap<IpAddr, (u64, Instant)>>,
    offences: Mutex<HashMap<IpAddr, (u64, Instant)>>,
    bans: Mutex<HashMap<IpAddr, u64>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").finish_non_exhaustive()
    }
}

impl InProcess {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The synchronous form of [`SharedState::check_rate`].
    pub fn rate_now(&self, key: &str, rate: Rate) -> RateDecision {
        let limiter = lock(&self.limiters)
            .entry(rate)
            .or_insert_with(|| {
                let quota = Quota::with_period(rate.period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(rate.burst);
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone();
        let key = key.to_string();
        match limiter.check_key(&key) {
            Ok(()) => RateDecision::Allowed,
            Err(not_until) => RateDecision::Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    fn window_count(
        map: &Mutex<HashMap<IpAddr, (u64, Instant)>>,
        source: IpAddr,
        window: Duration,
    ) -> u64 {
        let now = Instant::now();
        let mut m = lock(map);
        let e = m.entry(source).or_insert((0, now + window));
        if e.1 <= now {
            *e = (0, now + window);
        }
        e.0 += 1;
        e.0
    }

    /// The synchronous form of [`SharedState::count_failure`].
    pub fn failure_now(&self, source: IpAddr, window: Duration) -> u64 {
        Self::window_count(&self.failures, source, window)
    }

    /// The synchronous form of [`SharedState::add_offence`].
    pub fn offence_now(&self, source: IpAddr, memory: Duration) -> u64 {
        Self::window_count(&self.offences, source, memory)
    }

    /// The synchronous form of [`SharedState::add_ban`].
    pub fn ban_now(&self, source: IpAddr, until_ms: u64) {
        let mut b = lock(&self.bans);
        let e = b.entry(source).or_insert(until_ms);
        *e = (*e).max(until_ms);
    }

    /// The synchronous form of [`SharedState::bans`].
    pub fn bans_now(&self) -> Vec<(IpAddr, u64)> {
        let now = now_ms();
        lock(&self.bans)
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(ip, until)| (*ip, *until))
            .collect()
    }
}

impl SharedState for InProcess {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn check_rate<'a>(
        &'a self,
        key: &'a str,
        rate: Rate,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        let d = self.rate_now(key, rate);
        Box::pin(async move { Ok(d) })
    }

    fn count_failure(
        &self,
        source: IpAddr,
        window: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let n = self.failure_now(source, window);
        Box::pin(async move { Ok(n) })
    }

    fn add_offence(
        &self,
        source: IpAddr,
        memory: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let n = self.offence_now(source, memory);
        Box::pin(async move { Ok(n) })
    }

    fn add_ban(&self, source: IpAddr, until_ms: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.ban_now(source, until_ms);
        Box::pin(async move { Ok(()) })
    }

    fn bans(&self) -> BoxFuture<'_, Result<Vec<(IpAddr, u64)>, StoreError>> {
        let b = self.bans_now();
        Box::pin(async move { Ok(b) })
    }

    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.failures).retain(|_, (_, end)| *end > now);
        lock(&self.offences).retain(|_, (_, end)| *end > now);
        let ms = now_ms();
        lock(&self.bans).retain(|_, until| *until > ms);
        for l in lock(&self.limiters).values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_limits_with_a_wait() {
        let s = InProcess::new();
        let rate = Rate::new(1, Duration::from_secs(10), 3).unwrap();
        for _ in 0..3 {
            assert_eq!(s.rate_now("k", rate), RateDecision::Allowed);
        }
        match s.rate_now("k", rate) {
            RateDecision::Limited { retry_after } => {
                assert!(
                    retry_after > Duration::from_secs(8) && retry_after <= Duration::from_secs(10)
                );
            }
            RateDecision::Allowed => panic!("the fourth request is over the burst"),
        }
        assert_eq!(
            s.rate_now("other", rate),
            RateDecision::Allowed,
            "keys are separate"
        );
    }

    #[test]
    fn failures_count_per_window() {
        let s = InProcess::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(s.failure_now(ip, Duration::from_secs(60)), 1);
        assert_eq!(s.failure_now(ip, Duration::from_secs(60)), 2);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(s.failure_now(other, Duration::from_secs(60)), 1);
        let short: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(s.failure_now(short, Duration::ZERO), 1);
        assert_eq!(
            s.failure_now(short, Duration::ZERO),
            1,
            "an elapsed window starts over"
        );
    }

    #[test]
    fn source_keys() {
        let k = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(k("10.1.2.3"), "10.1.2.3");
        assert_eq!(k("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    }

    #[test]
    fn bans_keep_the_later_end_and_expire() {
        let s = InProcess::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = now_ms();
        s.ban_now(ip, now + 60_000);
        s.ban_now(ip, now + 1_000);
        assert_eq!(s.bans_now(), vec![(ip, now + 60_000)]);
        let old: IpAddr = "10.0.0.2".parse().unwrap();
        s.ban_now(old, now.saturating_sub(1));
        s.sweep();
        assert_eq!(s.bans_now().len(), 1);
    }
}

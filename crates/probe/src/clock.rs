//! The scheduler's clock, injectable so that a day of probing can be compressed
//! into seconds in tests: [`SystemClock`] is the real one; [`SteppedClock`] is a
//! virtual wall clock that jumps to each deadline instead of sleeping. Stage
//! durations are always measured with the real monotonic clock; only the run
//! timestamps (and so the schedule) come from the injected clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall time for run timestamps and the schedule.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Resolves when [`Clock::now_ms`] has reached `deadline_ms`.
    fn sleep_until(&self, deadline_ms: i64) -> Sleep;
}

/// The system's wall clock and real sleeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: i64) -> Sleep {
        let wait = deadline_ms.saturating_sub(self.now_ms()).max(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        )))
    }
}

/// A virtual clock: sleeping moves it forward to the deadline at once (never
/// backwards). With one probe it replays an exact schedule as fast as the probes
/// run; it is meant for tests and simulations, not for a service.
#[derive(Debug)]
pub struct SteppedClock {
    now: AtomicI64,
}

impl SteppedClock {
    /// A clock that starts at `start_ms` (milliseconds since the Unix epoch).
    pub fn new(start_ms: i64) -> Self {
        Self {
            now: AtomicI64::new(start_ms),
        }
    }
}

impl Clock for SteppedClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: i64) -> Sleep {
        self.now.fetch_max(deadline_ms, Ordering::SeqCst);
        Box::pin(tokio::task::yield_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stepped_clock_jumps_forward_only() {
        let c = SteppedClock::new(1_000);
        c.sleep_until(61_000).await;
        assert_eq!(c.now_ms(), 61_000);
        c.sleep_until(5_000).await;
        assert_eq!(c.now_ms(), 61_000);
    }
}

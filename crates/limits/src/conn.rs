//! Open-connection caps per listener and per source (with a fair share of the last
//! places), and the per-source cap on upstream requests held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::source_key;

/// The caps of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCaps {
    /// Open connections on the listener.
    pub max: usize,
    /// Open connections from one source (see [`source_key`]).
    pub per_source: usize,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRefusal {
    /// The listener holds `max` connections.
    ListenerFull,
    /// The source holds `per_source` connections.
    SourceFull,
    /// The listener is more than half full and the source holds its share of what is
    /// left (see [`ConnCaps::share`]).
    OverShare,
}

impl ConnRefusal {
    /// A stable label for logs and audit events (the README's refusal reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::ListenerFull => "listener_cap",
            ConnRefusal::SourceFull => "source_cap",
            ConnRefusal::OverShare => "source_share",
        }
    }
}

impl ConnCaps {
    /// How many connections one source may hold while the listener holds `open`.
    ///
    /// Up to half the listener's cap a source may hold `per_source`. Above half, the
    /// allowance shrinks in proportion to the places still free: `per_source × free /
    /// (max − max/2)`, rounded down. A source that holds nothing may always take a free
    /// place; one that holds `h` may take another only while `h` is below the
    /// allowance (holding one, it needs `2 × (max − max/2) / per_source` places free,
    /// rounded up). So the last 39 places of 10,000 (256 per source) go only to
    /// sources that hold none, and a few addresses holding silent connections cannot
    /// take the room that other clients need: with the defaults, 41 addresses opening
    /// 250 connections each in turn end up holding 8,241 and the listener keeps
    /// admitting newcomers.
    pub fn share(&self, open: usize) -> usize {
        let half = self.max / 2;
        if open <= half {
            return self.per_source;
        }
        let free = self.max.saturating_sub(open);
        let span = self.max - half;
        let scaled = (self.per_source as u128 * free as u128) / span.max(1) as u128;
        usize::try_from(scaled)
            .unwrap_or(usize::MAX)
            .min(self.per_source)
    }
}

#[derive(Debug, Default)]
struct Held {
    open: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Counts the open connections of one listener.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    /// A copy of `held.open`, read without the lock.
    open: AtomicUsize,
    held: Mutex<Held>,
}

/// One open connection; released when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    source: IpAddr,
}

impl ConnLimiter {
    /// A limiter with no connection open.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Take a place for a connection from `ip`, or say why there is none.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        caps: ConnCaps,
    ) -> Result<ConnPermit, ConnRefusal> {
        let source = source_key(ip);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.open >= caps.max {
            return Err(ConnRefusal::ListenerFull);
        }
        let mine = held.per_source.get(&source).copied().unwrap_or(0);
        if mine >= caps.per_source {
            return Err(ConnRefusal::SourceFull);
        }
        if mine > 0 && mine >= caps.share(held.open) {
            return Err(ConnRefusal::OverShare);
        }
        held.open += 1;
        *held.per_source.entry(source).or_insert(0) += 1;
        self.open.store(held.open, Ordering::Relaxed);
        Ok(ConnPermit {
            limiter: self.clone(),
            source,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut held = self
            .limiter
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_source.remove(&self.source);
            }
        }
        held.open = held.open.saturating_sub(1);
        self.limiter.open.store(held.open, Ordering::Relaxed);
    }
}

/// Forwarded requests of one listener whose upstream exchange is not over yet (the
/// response head awaited, or its body still being sent to the client), per source:
/// each holds an upstream connection, so one source may hold only so many.
#[derive(Debug, Default)]
pub struct UpstreamHolds {
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One forwarded request's hold; released when dropped.
#[derive(Debug)]
pub struct HoldPermit {
    holds: Arc<UpstreamHolds>,
    source: IpAddr,
}

impl UpstreamHolds {
    /// No request held.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A hold for a request from `ip`, unless its source already holds `cap`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<HoldPermit> {
        let source = source_key(ip);
        let mut m = self
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(source).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(HoldPermit {
            holds: self.clone(),
            source,
        })
    }

    /// Requests held by `ip`'s source now.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&source_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        let mut m = self
            .holds
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_per_source_and_listener() {
        let l = ConnLimiter::new();
        let caps = ConnCaps {
            max: 3,
            per_source: 2,
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a, caps).unwrap();
        let _p2 = l.try_acquire(a, caps).unwrap();
        assert_eq!(l.try_acquire(a, caps).unwrap_err(), ConnRefusal::SourceFull);
        let _p3 = l.try_acquire(b, caps).unwrap();
        assert_eq!(
            l.try_acquire(b, caps).unwrap_err(),
            ConnRefusal::ListenerFull
        );
        drop(p1);
        assert_eq!(l.open(), 2);
        // The place is given back (a newcomer: `a` is over its share above half).
        let _p4 = l.try_acquire("10.0.0.3".parse().unwrap(), caps).unwrap();
    }

    #[test]
    fn above_half_a_source_gets_a_shrinking_share_and_newcomers_the_last_places() {
        let caps = ConnCaps {
            max: 40,
            per_source: 20,
        };
        assert_eq!(caps.share(20), 20);
        assert_eq!(caps.share(30), 10);
        assert_eq!(caps.share(39), 1);
        assert_eq!(caps.share(40), 0);
        let l = ConnLimiter::new();
        let take = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            let mut held = Vec::new();
            loop {
                match l.try_acquire(ip, caps) {
                    Ok(p) => held.push(p),
                    Err(r) => return (held, r),
                }
            }
        };
        let (a, ra) = take("10.0.0.1");
        assert_eq!((a.len(), ra), (20, ConnRefusal::SourceFull));
        // 20 + b places open, b below 20 x (20 - b) / 20: b stops at 10.
        let (b, rb) = take("10.0.0.2");
        assert_eq!((b.len(), rb), (10, ConnRefusal::OverShare));
        // Each later source gets less; the last place goes to a source holding none.
        let mut later = Vec::new();
        let mut kept = Vec::new();
        for ip in ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"] {
            let (held, r) = take(ip);
            later.push((held.len(), r));
            kept.push(held);
        }
        use ConnRefusal::{ListenerFull, OverShare};
        assert_eq!(
            later,
            [
                (5, OverShare),
                (3, OverShare),
                (1, OverShare),
                (1, ListenerFull)
            ]
        );
        assert_eq!(l.open(), 40);
        assert_eq!(
            l.try_acquire("10.0.0.7".parse().unwrap(), caps)
                .unwrap_err(),
            ListenerFull
        );
    }

    #[test]
    fn the_default_caps_leave_room_after_41_sources_of_250() {
        let caps = ConnCaps {
            max: 10_000,
            per_source: 256,
        };
        // The allowances the README states.
        assert_eq!(caps.share(5_000), 256);
        assert_eq!(caps.share(7_500), 128);
        assert_eq!(caps.share(9_000), 51);
        assert_eq!(caps.share(9_900), 5);
        // A source holding one may take another only while 40 are free.
        assert_eq!(caps.share(9_960), 2);
        assert_eq!(caps.share(9_961), 1);
        let l = ConnLimiter::new();
        let mut held = Vec::new();
        for i in 0..41u8 {
            let ip = IpAddr::from([10, 1, 0, i]);
            for _ in 0..250 {
                if let Ok(p) = l.try_acquire(ip, caps) {
                    held.push(p);
                }
            }
        }
        assert_eq!(l.open(), 8_241);
        assert!(l.try_acquire(IpAddr::from([10, 2, 0, 1]), caps).is_ok());
    }

    #[test]
    fn upstream_holds_are_capped_per_source_and_given_back() {
        let h = UpstreamHolds::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let p1 = h.try_acquire(a, 2).unwrap();
        let _p2 = h.try_acquire(a, 2).unwrap();
        assert!(h.try_acquire(a, 2).is_none());
        assert!(h.try_acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(p1);
        assert_eq!(h.held(a), 1);
        assert!(h.try_acquire(a, 2).is_some());
    }
}

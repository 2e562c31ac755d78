//! Open-connection caps per listener and per source.

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
}

impl ConnRefusal {
    /// A stable label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::ListenerFull => "listener_connection_cap",
            ConnRefusal::SourceFull => "source_connection_cap",
        }
    }
}

/// Counts the open connections of one listener.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    open: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
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
        if self.open.fetch_add(1, Ordering::AcqRel) >= caps.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnRefusal::ListenerFull);
        }
        let mut m = self
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(source).or_insert(0);
        if *n >= caps.per_source {
            drop(m);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnRefusal::SourceFull);
        }
        *n += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            source,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut m = self
            .limiter
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.source);
            }
        }
        drop(m);
        self.limiter.open.fetch_sub(1, Ordering::AcqRel);
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
        let _p4 = l.try_acquire(a, caps).unwrap();
    }
}

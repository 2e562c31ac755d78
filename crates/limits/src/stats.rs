//! Counters of every defensive action.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of every defensive action, shared by the gateway's listeners.
        #[derive(Debug, Default)]
        pub struct AbuseStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`AbuseStats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct AbuseSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl AbuseStats {
            /// Read every counter.
            pub fn snapshot(&self) -> AbuseSnapshot {
                AbuseSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl AbuseSnapshot {
            /// Every counter with its name, in declaration order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// What changed since `earlier`, as `name=delta` pairs (only non-zero ones).
            pub fn changes_since(&self, earlier: &AbuseSnapshot) -> Vec<(&'static str, u64)> {
                let mut out = Vec::new();
                $(
                    let d = self.$name.saturating_sub(earlier.$name);
                    if d > 0 {
                        out.push((stringify!($name), d));
                    }
                )*
                out
            }
        }
    };
}

counters! {
    /// Connections closed at accept because the source is banned.
    connections_refused_banned,
    /// Connections closed at accept because the listener holds its maximum.
    connections_refused_listener_cap,
    /// Connections closed at accept because the source holds its maximum.
    connections_refused_source_cap,
    /// Connections closed at accept because the listener is more than half full and
    /// the source holds its share of the places left.
    connections_refused_source_share,
    /// Requests refused (429) because their source holds its cap of upstream requests.
    upstream_holds_refused,
    /// Connections closed because the client took no piece of an answer within the
    /// send timeout (a slow or stopped reader).
    send_timeouts,
    /// Requests refused because the (forwarded) client address is banned.
    requests_refused_banned,
    /// Requests answered 429 by a per-source rate limit.
    rate_limited_source,
    /// Requests answered 429 by a per-identity rate limit.
    rate_limited_identity,
    /// Authentication failures counted towards bans.
    auth_failures,
    /// Bans applied.
    bans,
    /// Bans that ended.
    unbans,
    /// Connections closed because the request headers did not arrive in time.
    header_timeouts,
    /// Requests whose body stalled past the body timeout (408).
    body_timeouts,
    /// Keep-alive connections closed after the idle timeout.
    idle_closes,
    /// Requests refused because the body is too large (413).
    body_too_large,
    /// Requests refused because the URI is too long (414).
    uri_too_long,
    /// HTTP/2 connections closed for too many stream resets (CVE-2023-44487).
    h2_reset_floods,
    /// Identity provider fetches refused by the global ceiling.
    idp_fetches_refused,
    /// Operations on the shared store that failed (answered locally instead).
    store_errors,
}

impl AbuseStats {
    /// Add one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_counters_that_moved() {
        let s = AbuseStats::default();
        let before = s.snapshot();
        AbuseStats::bump(&s.bans);
        AbuseStats::bump(&s.bans);
        AbuseStats::bump(&s.uri_too_long);
        assert_eq!(
            s.snapshot().changes_since(&before),
            vec![("bans", 2), ("uri_too_long", 1)]
        );
    }
}

//! Abuse resistance state for the intraport gateway.
//!
//! What it is for: the pieces of the gateway's defences that keep state — which
//! sources are banned, how many authentication failures a source has had, how fast a
//! source or an identity is sending requests (GCRA), and how many connections each
//! source holds open — together with the counters and log events every defensive
//! action produces.
//!
//! Layout: [`SharedState`] is the small trait behind which the ban list and the rate
//! counters live, with two implementations: [`InProcess`] (the default, nothing to
//! install) and [`RedisState`] (replicas behind one load balancer share bans and
//! limits). [`Guard`] is what the gateway talks to: it keeps a local copy of every
//! ban so that the check at accept is a lookup in memory, falls back to in-process
//! limits when the shared store is unreachable (never letting a banned source in
//! because of an outage), escalates repeat offenders' bans, honours the allowlist, and
//! counts and logs every action ([`AbuseStats`]). [`ConnLimiter`] caps open
//! connections per listener and per source, keeping the last places for sources
//! that hold few, and [`UpstreamHolds`] caps the upstream requests one source holds.
//!
//! What it is not: the HTTP side (status codes, headers, timeouts) — that is the
//! gateway's.

mod conn;
mod guard;
mod redis_state;
mod stats;
mod store;

pub use conn::{ConnCaps, ConnLimiter, ConnPermit, ConnRefusal, HoldPermit, UpstreamHolds};
pub use guard::{BanNotice, BanObserver, BanPolicy, Guard};
pub use redis_state::{RedisSettings, RedisState};
pub use stats::{AbuseSnapshot, AbuseStats};
pub use store::{BoxFuture, InProcess, Rate, RateDecision, SharedState, StoreError, source_key};

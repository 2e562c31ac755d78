//! The abuse-resistance settings: `[abuse]` (bans, shared store, identity-provider
//! ceiling), `[listener.limits]` (connection caps, slow-client timeouts, size limits,
//! HTTP/2 limits, rate limits) and `[route.limits]` (overrides), checked into the types
//! the data plane uses. Every limit has a default that is on.

use std::ops::Range;
use std::time::Duration;

use intraport_limits::{BanPolicy, ConnCaps, Rate, RedisSettings};
use serde::Deserialize;
use toml::Spanned;

use super::doc::{Diagnostics, join};
use super::raw::RawNets;

/// `rate_per_source = { requests = 100, per_seconds = 1, burst = 200 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Requests per `per_seconds` (0: no limit).
    pub requests: u32,
    #[serde(default = "one")]
    pub per_seconds: u64,
    pub burst: Option<u32>,
}

fn one() -> u64 {
    1
}

/// `[listener.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerLimits {
    pub max_connections: Option<Spanned<u64>>,
    pub max_connections_per_source: Option<Spanned<u64>>,
    pub header_read_timeout_ms: Option<Spanned<u64>>,
    pub body_timeout_ms: Option<Spanned<u64>>,
    pub idle_timeout_ms: Option<Spanned<u64>>,
    pub send_timeout_ms: Option<Spanned<u64>>,
    pub max_upstream_requests_per_source: Option<Spanned<u64>>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub max_uri_bytes: Option<Spanned<u64>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub h2_max_concurrent_streams: Option<Spanned<u64>>,
    pub h2_max_pending_reset_streams: Option<Spanned<u64>>,
    pub h2_max_local_error_resets: Option<Spanned<u64>>,
    pub rate_per_source: Option<Spanned<RawRate>>,
    pub rate_per_identity: Option<Spanned<RawRate>>,
}

/// `[route.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub max_body_bytes: Option<Spanned<u64>>,
    pub rate_per_source: Option<Spanned<RawRate>>,
    pub rate_per_identity: Option<Spanned<RawRate>>,
}

/// `[abuse]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAbuse {
    pub store: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    pub redis_prefix: Option<String>,
    pub redis_timeout_ms: Option<Spanned<u64>>,
    pub sync_interval_ms: Option<Spanned<u64>>,
    pub summary_interval_seconds: Option<Spanned<u64>>,
    pub idp_fetches_per_minute: Option<u32>,
    pub bans: Option<RawBans>,
}

/// `[abuse.bans]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBans {
    pub failures: Option<u64>,
    pub window_seconds: Option<Spanned<u64>>,
    pub ban_seconds: Option<Spanned<u64>>,
    pub escalation: Option<Spanned<u32>>,
    pub max_ban_seconds: Option<Spanned<u64>>,
    pub offence_memory_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    pub allow: RawNets,
}

/// The limits of one listener, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections, listener-wide and per source.
    pub conn: ConnCaps,
    /// Time for an HTTP/1.1 request head to be complete after its first byte.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body (408 after).
    pub body_timeout: Duration,
    /// A connection with no request in flight and no byte either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Longest wait for the client to take the next piece of an answer (the response
    /// head, then each piece of its body); the connection is closed after, which
    /// gives back the upstream connections its answers held.
    pub send_timeout: Duration,
    /// Forwarded requests one source may hold at once (from forwarding until the
    /// answer's body has been sent); 429 `upstream_hold_limited` above.
    pub max_upstream_requests_per_source: usize,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list); 431 above.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1.1 request; 431 above.
    pub max_headers: usize,
    /// Longest request target; 414 above.
    pub max_uri_bytes: usize,
    /// Largest request body; 413 above.
    pub max_body_bytes: u64,
    /// HTTP/2 streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams the client may reset before they are served (rapid reset,
    /// CVE-2023-44487); the connection is closed above.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 streams we may reset for the client's protocol errors; the connection
    /// is closed above.
    pub h2_max_local_error_resets: usize,
    /// Request rate per source address (`None`: unlimited).
    pub rate_per_source: Option<Rate>,
    /// Request rate per identity (token `oid`/`sub`, or client-certificate subject).
    pub rate_per_identity: Option<Rate>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            conn: ConnCaps {
                max: 10_000,
                per_source: 256,
            },
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            send_timeout: Duration::from_secs(30),
            max_upstream_requests_per_source: 256,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_resets: 64,
            rate_per_source: Rate::new(1000, Duration::from_secs(1), 2000),
            rate_per_identity: Rate::new(200, Duration::from_secs(1), 400),
        }
    }
}

/// A route's overrides of its listener's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteLimits {
    /// Largest request body.
    pub max_body_bytes: Option<u64>,
    /// Request rate per source on this route (`Some(None)`: unlimited here).
    pub rate_per_source: Option<Option<Rate>>,
    /// Request rate per identity on this route.
    pub rate_per_identity: Option<Option<Rate>>,
}

/// Where bans and rate counters are kept.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// In this process.
    Memory,
    /// In Redis, shared with the other gateways using it.
    Redis(RedisSettings),
}

/// `[abuse]`, checked.
#[derive(Clone, Debug)]
pub struct AbuseConfig {
    /// Where bans and rate counters live (takes effect at start).
    pub store: StoreConfig,
    /// How often bans are exchanged with the shared store and expired ones ended.
    pub sync_interval: Duration,
    /// How often a summary line is logged while defences act.
    pub summary_interval: Duration,
    /// Failed-authentication bans.
    pub bans: BanPolicy,
    /// Global ceiling on identity-provider metadata fetches (0: none).
    pub idp_fetches_per_minute: u32,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            store: StoreConfig::Memory,
            sync_interval: Duration::from_secs(1),
            summary_interval: Duration::from_secs(60),
            bans: BanPolicy::default(),
            idp_fetches_per_minute: 60,
        }
    }
}

/// A setting that must be at least 1, when it is set.
pub(super) fn positive(
    v: &Option<Spanned<u64>>,
    path: &str,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<u64> {
    let v = v.as_ref()?;
    if *v.get_ref() == 0 {
        d.at_value(v, join(path, key), "must be at least 1");
        return None;
    }
    Some(*v.get_ref())
}

fn rate(
    r: &Option<Spanned<RawRate>>,
    path: &str,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<Option<Rate>> {
    let s = r.as_ref()?;
    let raw = s.get_ref();
    if raw.requests == 0 {
        return Some(None);
    }
    let burst = raw.burst.unwrap_or(raw.requests);
    match Rate::new(raw.requests, Duration::from_secs(raw.per_seconds), burst) {
        Some(r) => Some(Some(r)),
        None => {
            d.at_value(
                s,
                join(path, key),
                "expected requests (0 for no limit), per_seconds and burst of at least 1, at most one request per microsecond",
            );
            None
        }
    }
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Check `[listener.limits]`. `http` says whether the listener carries HTTP.
pub fn listener_limits(
    raw: Option<&Spanned<RawListenerLimits>>,
    path: &str,
    http: bool,
    d: &mut Diagnostics<'_>,
) -> ListenerLimits {
    let mut l = ListenerLimits::default();
    let Some(raw) = raw else { return l };
    let span: Range<usize> = raw.span();
    let raw = raw.get_ref();
    let path = &join(path, "limits");
    if let Some(v) = positive(&raw.max_connections, path, "max_connections", d) {
        l.conn.max = usize_of(v);
    }
    if let Some(v) = positive(
        &raw.max_connections_per_source,
        path,
        "max_connections_per_source",
        d,
    ) {
        l.conn.per_source = usize_of(v);
    }
    if !http {
        for (key, set) in [
            (
                "header_read_timeout_ms",
                raw.header_read_timeout_ms.is_some(),
            ),
            ("body_timeout_ms", raw.body_timeout_ms.is_some()),
            ("idle_timeout_ms", raw.idle_timeout_ms.is_some()),
            ("send_timeout_ms", raw.send_timeout_ms.is_some()),
            (
                "max_upstream_requests_per_source",
                raw.max_upstream_requests_per_source.is_some(),
            ),
            ("max_header_bytes", raw.max_header_bytes.is_some()),
            ("max_headers", raw.max_headers.is_some()),
            ("max_uri_bytes", raw.max_uri_bytes.is_some()),
            ("max_body_bytes", raw.max_body_bytes.is_some()),
            (
                "h2_max_concurrent_streams",
                raw.h2_max_concurrent_streams.is_some(),
            ),
            (
                "h2_max_pending_reset_streams",
                raw.h2_max_pending_reset_streams.is_some(),
            ),
            (
                "h2_max_local_error_resets",
                raw.h2_max_local_error_resets.is_some(),
            ),
            ("rate_per_source", raw.rate_per_source.is_some()),
            ("rate_per_identity", raw.rate_per_identity.is_some()),
        ] {
            if set {
                d.at(
                    Some(span.clone()),
                    join(path, key),
                    format!("`{key}` applies to HTTP listeners; TCP listeners take max_connections and max_connections_per_source"),
                );
            }
        }
        return l;
    }
    let ms = Duration::from_millis;
    if let Some(v) = positive(
        &raw.header_read_timeout_ms,
        path,
        "header_read_timeout_ms",
        d,
    ) {
        l.header_read_timeout = ms(v);
    }
    if let Some(v) = positive(&raw.body_timeout_ms, path, "body_timeout_ms", d) {
        l.body_timeout = ms(v);
    }
    if let Some(v) = positive(&raw.idle_timeout_ms, path, "idle_timeout_ms", d) {
        l.idle_timeout = ms(v);
    }
    if let Some(v) = positive(&raw.send_timeout_ms, path, "send_timeout_ms", d) {
        l.send_timeout = ms(v);
    }
    if let Some(v) = positive(
        &raw.max_upstream_requests_per_source,
        path,
        "max_upstream_requests_per_source",
        d,
    ) {
        l.max_upstream_requests_per_source = usize_of(v);
    }
    if let Some(s) = &raw.max_header_bytes {
        // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
        if *s.get_ref() < 8192 {
            d.at_value(s, join(path, "max_header_bytes"), "must be at least 8192");
        } else {
            l.max_header_bytes = usize_of(*s.get_ref());
        }
    }
    if let Some(v) = positive(&raw.max_headers, path, "max_headers", d) {
        l.max_headers = usize_of(v);
    }
    if let Some(v) = positive(&raw.max_uri_bytes, path, "max_uri_bytes", d) {
        l.max_uri_bytes = usize_of(v);
    }
    if let Some(v) = &raw.max_body_bytes {
        l.max_body_bytes = *v.get_ref();
    }
    if let Some(v) = positive(
        &raw.h2_max_concurrent_streams,
        path,
        "h2_max_concurrent_streams",
        d,
    ) {
        l.h2_max_concurrent_streams = u32::try_from(v).unwrap_or(u32::MAX);
    }
    if let Some(v) = positive(
        &raw.h2_max_pending_reset_streams,
        path,
        "h2_max_pending_reset_streams",
        d,
    ) {
        l.h2_max_pending_reset_streams = usize_of(v);
    }
    if let Some(v) = positive(
        &raw.h2_max_local_error_resets,
        path,
        "h2_max_local_error_resets",
        d,
    ) {
        l.h2_max_local_error_resets = usize_of(v);
    }
    if let Some(r) = rate(&raw.rate_per_source, path, "rate_per_source", d) {
        l.rate_per_source = r;
    }
    if let Some(r) = rate(&raw.rate_per_identity, path, "rate_per_identity", d) {
        l.rate_per_identity = r;
    }
    l
}

/// Check `[route.limits]`.
pub fn route_limits(
    raw: Option<&RawRouteLimits>,
    path: &str,
    d: &mut Diagnostics<'_>,
) -> RouteLimits {
    let Some(raw) = raw else {
        return RouteLimits::default();
    };
    let path = &join(path, "limits");
    RouteLimits {
        max_body_bytes: raw.max_body_bytes.as_ref().map(|v| *v.get_ref()),
        rate_per_source: rate(&raw.rate_per_source, path, "rate_per_source", d),
        rate_per_identity: rate(&raw.rate_per_identity, path, "rate_per_identity", d),
    }
}

/// Check `[abuse]`.
pub fn abuse(raw: RawAbuse, d: &mut Diagnostics<'_>) -> AbuseConfig {
    let mut a = AbuseConfig::default();
    let path = "abuse";
    let secs = Duration::from_secs;
    if let Some(v) = positive(&raw.sync_interval_ms, path, "sync_interval_ms", d) {
        a.sync_interval = Duration::from_millis(v);
    }
    if let Some(v) = positive(
        &raw.summary_interval_seconds,
        path,
        "summary_interval_seconds",
        d,
    ) {
        a.summary_interval = secs(v);
    }
    if let Some(v) = raw.idp_fetches_per_minute {
        a.idp_fetches_per_minute = v;
    }
    let timeout = positive(&raw.redis_timeout_ms, path, "redis_timeout_ms", d)
        .map_or(Duration::from_millis(250), Duration::from_millis);
    match raw.store.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("memory") => {
            if let Some(u) = &raw.redis_url {
                d.at_value(
                    u,
                    join(path, "redis_url"),
                    "redis_url needs store = \"redis\"",
                );
            }
        }
        Some("redis") => match &raw.redis_url {
            None => d.at(
                raw.store.as_ref().map(Spanned::span),
                join(path, "redis_url"),
                "store = \"redis\" needs redis_url, e.g. \"redis://127.0.0.1:6379/0\"",
            ),
            Some(u) => {
                let settings = RedisSettings {
                    url: u.get_ref().clone(),
                    prefix: raw
                        .redis_prefix
                        .clone()
                        .unwrap_or_else(|| "intraport:".into()),
                    timeout,
                    retry: Duration::from_secs(1),
                };
                match intraport_limits::RedisState::new(settings.clone()) {
                    Ok(_) => a.store = StoreConfig::Redis(settings),
                    Err(e) => d.at_value(u, join(path, "redis_url"), e),
                }
            }
        },
        Some(other) => {
            if let Some(s) = &raw.store {
                d.at_value(
                    s,
                    join(path, "store"),
                    format!("unknown store `{other}`: expected \"memory\" or \"redis\""),
                );
            }
        }
    }
    let b = raw.bans.unwrap_or_default();
    let bpath = "abuse.bans";
    if let Some(v) = b.failures {
        a.bans.failures = v;
    }
    if let Some(v) = positive(&b.window_seconds, bpath, "window_seconds", d) {
        a.bans.window = secs(v);
    }
    if let Some(v) = positive(&b.ban_seconds, bpath, "ban_seconds", d) {
        a.bans.ban = secs(v);
    }
    if let Some(v) = &b.escalation {
        if *v.get_ref() == 0 {
            d.at_value(
                v,
                join(bpath, "escalation"),
                "must be at least 1 (1: every ban has the same length)",
            );
        } else {
            a.bans.escalation = *v.get_ref();
        }
    }
    if let Some(v) = positive(&b.max_ban_seconds, bpath, "max_ban_seconds", d) {
        a.bans.max_ban = secs(v);
    }
    if let Some(v) = positive(
        &b.offence_memory_seconds,
        bpath,
        "offence_memory_seconds",
        d,
    ) {
        a.bans.offence_memory = secs(v);
    }
    if a.bans.max_ban < a.bans.ban {
        d.at(
            b.max_ban_seconds.as_ref().map(Spanned::span),
            join(bpath, "max_ban_seconds"),
            "must be at least ban_seconds",
        );
    }
    for (i, s) in b.allow.iter().enumerate() {
        match intraport_policy::parse_net(s.get_ref()) {
            Ok(n) => a.bans.allow.push(n),
            Err(e) => d.at_value(s, format!("{bpath}.allow[{i}]"), e.to_string()),
        }
    }
    a
}

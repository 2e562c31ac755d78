//! The gateway's Prometheus / OpenMetrics metrics (`/metrics` on the admin listener).
//!
//! Data-plane metrics are updated where things happen (accept, handshake, request,
//! upstream); state that already lives elsewhere (bans, the defences' counters, key
//! sets, audit queues, reloads) is read at scrape time by [`StateCollector`], so the
//! data plane pays nothing for it. Label values are the listener and route names of
//! the configuration and codes of fixed vocabularies, so cardinality stays bounded.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::gateway::Shared;

/// A listener, route or provider name, shared by every label set that carries it.
pub(crate) type Name = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub listener: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnLabels {
    pub listener: Name,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub listener: Name,
    pub route: Name,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub route: Name,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub provider: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabels {
    pub route: Name,
    pub decision: &'static str,
    pub rule: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs to ~13 s: a loopback handshake to one that times out.
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// 1 µs to ~8 s: a cached token to one whose key set had to be fetched.
fn token_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 2.0, 24))
}

/// 100 µs to ~52 s: upstream responses.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

/// Every metric the data plane updates, and the registry they are encoded from.
pub(crate) struct Metrics {
    registry: Registry,
    pub connections: Family<ConnLabels, Counter>,
    pub connections_active: Family<ListenerLabels, Gauge>,
    pub handshakes: Histograms<ConnLabels>,
    pub requests: Family<RequestLabels, Counter>,
    pub in_flight: Family<RouteLabels, Gauge>,
    pub upstream_connect: Histograms<RouteLabels>,
    pub upstream_response: Histograms<RouteLabels>,
    pub upstream_results: Family<UpstreamLabels, Counter>,
    pub token_validation: Histograms<TokenLabels>,
    pub policy: Family<PolicyLabels, Counter>,
}

impl Metrics {
    /// Registers every metric; `shared` is read at scrape time for the state metrics.
    pub fn new(shared: Weak<Shared>) -> Metrics {
        let mut registry = Registry::with_prefix("intraport");
        let connections = Family::<ConnLabels, Counter>::default();
        registry.register(
            "connections",
            "TCP connections by listener and outcome (accepted, refused_banned, refused_listener_cap, refused_source_cap, refused_source_share, refused_source)",
            connections.clone(),
        );
        let connections_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_active",
            "Connections open now, by listener",
            connections_active.clone(),
        );
        let handshakes: Histograms<ConnLabels> = Family::new_with_constructor(short_buckets);
        registry.register_with_unit(
            "tls_handshake_duration",
            "TLS handshake duration by listener and outcome (success or the failure reason)",
            Unit::Seconds,
            handshakes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by listener, route and outcome code (forwarded, or the refusal's error code)",
            requests.clone(),
        );
        let in_flight = Family::<RouteLabels, Gauge>::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered now, by route",
            in_flight.clone(),
        );
        let upstream_connect: Histograms<RouteLabels> = Family::new_with_constructor(short_buckets);
        registry.register_with_unit(
            "upstream_connect_duration",
            "Time a request waited for a new upstream connection (connect and TLS), by route; requests that reuse a pooled connection do not wait",
            Unit::Seconds,
            upstream_connect.clone(),
        );
        let upstream_response: Histograms<RouteLabels> = Family::new_with_constructor(long_buckets);
        registry.register_with_unit(
            "upstream_response_duration",
            "From forwarding a request to the upstream's response head, by route",
            Unit::Seconds,
            upstream_response.clone(),
        );
        let upstream_results = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Upstream results by route and class (1xx..5xx, error, timeout)",
            upstream_results.clone(),
        );
        let token_validation: Histograms<TokenLabels> = Family::new_with_constructor(token_buckets);
        registry.register_with_unit(
            "token_validation_duration",
            "Access-token validation duration by provider and result (valid, or the error code)",
            Unit::Seconds,
            token_validation.clone(),
        );
        let policy = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy decisions by route, decision (allow, deny) and rule",
            policy.clone(),
        );
        registry.register_collector(Box::new(StateCollector { shared }));
        Metrics {
            registry,
            connections,
            connections_active,
            handshakes,
            requests,
            in_flight,
            upstream_connect,
            upstream_response,
            upstream_results,
            token_validation,
            policy,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a collector bug must not take /metrics down.
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// The class of an HTTP status for `upstream_responses_total`.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// State read at scrape time: bans, the defences' counters, key sets, audit queues
/// and reloads.
#[derive(Debug)]
struct StateCollector {
    shared: Weak<Shared>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    provider: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// One metric family written by hand: a name, help, unit, type, and its samples.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let guard = &shared.guard;
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let bans = e.encode_descriptor(
            "bans_active",
            "Source addresses banned now",
            None,
            MetricType::Gauge,
        )?;
        gauge(guard.bans_active() as u64).encode(bans)?;
        let snap = guard.stats().snapshot();
        family(
            &mut e,
            "defence_actions",
            "Actions of the abuse defences (bans, refusals, limits hit), by action",
            None,
            MetricType::Counter,
            snap.counters()
                .into_iter()
                .map(|(action, v)| (ActionLabels { action }, ConstCounter::new(v))),
        )?;
        family(
            &mut e,
            "shared_state_up",
            "Whether the shared ban and rate store answered last time (1) or the gateway runs on local limits (0)",
            None,
            MetricType::Gauge,
            [(
                StoreLabels {
                    store: guard.store_kind(),
                },
                gauge(u64::from(guard.store_available())),
            )],
        )?;
        let mut ages = Vec::new();
        let mut fetches = Vec::new();
        let mut failures = Vec::new();
        for p in shared.providers.load().iter() {
            for s in p.status() {
                let labels = SourceLabels {
                    provider: p.name().to_string(),
                    source: s.source,
                };
                if let Some(age) = s.age_seconds {
                    ages.push((labels.clone(), gauge(age)));
                }
                fetches.push((labels.clone(), ConstCounter::new(s.fetches)));
                failures.push((labels, ConstCounter::new(s.fetch_failures)));
            }
        }
        family(
            &mut e,
            "jwks_age",
            "Time since each provider source's key set was last loaded (absent: never loaded)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            ages,
        )?;
        family(
            &mut e,
            "jwks_fetches",
            "Metadata and key-set fetch attempts per provider source",
            None,
            MetricType::Counter,
            fetches,
        )?;
        family(
            &mut e,
            "jwks_fetch_failures",
            "Failed metadata or key-set fetches per provider source (the last good set kept serving)",
            None,
            MetricType::Counter,
            failures,
        )?;
        let sinks = shared.audit.as_ref().map(|a| a.stats()).unwrap_or_default();
        let per_sink = |f: fn(&intraport_audit::SinkStats) -> u64| {
            sinks
                .iter()
                .map(move |s| {
                    (
                        SinkLabels {
                            sink: s.name.clone(),
                            kind: s.kind,
                        },
                        f(s),
                    )
                })
                .collect::<Vec<_>>()
        };
        let as_gauges = |v: Vec<(SinkLabels, u64)>| {
            v.into_iter()
                .map(|(l, n)| (l, gauge(n)))
                .collect::<Vec<_>>()
        };
        let as_counters = |v: Vec<(SinkLabels, u64)>| {
            v.into_iter()
                .map(|(l, n)| (l, ConstCounter::new(n)))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "audit_queue_depth",
            "Audit events waiting in each sink's queue",
            None,
            MetricType::Gauge,
            as_gauges(per_sink(|s| s.queue_depth as u64)),
        )?;
        family(
            &mut e,
            "audit_events_written",
            "Audit events written by each sink (file: handed to the OS; syslog TCP/TLS: acknowledged by the collector)",
            None,
            MetricType::Counter,
            as_counters(per_sink(|s| s.written)),
        )?;
        family(
            &mut e,
            "audit_events_dropped",
            "Audit events dropped by each sink (queue full under `drop`, spool full, unrecoverable errors)",
            None,
            MetricType::Counter,
            as_counters(per_sink(|s| s.dropped)),
        )?;
        family(
            &mut e,
            "audit_events_spooled",
            "Audit events that went through the disk spool while a collector was down",
            None,
            MetricType::Counter,
            as_counters(per_sink(|s| s.spooled)),
        )?;
        family(
            &mut e,
            "audit_spool_pending",
            "Audit events in the disk spool now, waiting for their collector",
            None,
            MetricType::Gauge,
            as_gauges(per_sink(|s| s.spool_pending)),
        )?;
        family(
            &mut e,
            "audit_sink_errors",
            "Write, fsync or connection errors of each audit sink",
            None,
            MetricType::Counter,
            as_counters(per_sink(|s| s.errors)),
        )?;
        family(
            &mut e,
            "audit_syncs",
            "Fsyncs of each audit file sink (group mode: about one per commit interval while events arrive)",
            None,
            MetricType::Counter,
            as_counters(per_sink(|s| s.syncs)),
        )?;
        let reloads = &shared.reloads;
        family(
            &mut e,
            "config_reloads",
            "Configuration reloads by outcome (applied, rejected)",
            None,
            MetricType::Counter,
            [
                (
                    OutcomeLabels { outcome: "applied" },
                    ConstCounter::new(reloads.applied.load(std::sync::atomic::Ordering::Relaxed)),
                ),
                (
                    OutcomeLabels {
                        outcome: "rejected",
                    },
                    ConstCounter::new(reloads.rejected.load(std::sync::atomic::Ordering::Relaxed)),
                ),
            ],
        )?;
        Ok(())
    }
}

//! Name resolution with hickory: every address, the time taken, and, with two or more
//! resolvers, whether they agree.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use serde::Serialize;

/// One resolver's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsAnswer {
    /// `system` or the resolver's address.
    pub resolver: String,
    /// Every address returned, sorted.
    pub addresses: Vec<IpAddr>,
    /// Time taken, in milliseconds.
    pub elapsed_ms: f64,
    /// Why resolution failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where names are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverSpec {
    /// The system configuration (resolv.conf and the hosts file).
    System,
    /// One DNS server, over UDP with TCP fallback.
    Server(SocketAddr),
}

impl ResolverSpec {
    fn name(&self) -> String {
        match self {
            ResolverSpec::System => "system".into(),
            ResolverSpec::Server(a) => a.to_string(),
        }
    }

    fn build(&self, timeout: Duration) -> Result<TokioResolver, String> {
        let mut builder = match self {
            ResolverSpec::System => {
                TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?
            }
            ResolverSpec::Server(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        // Each check must see what the resolver says now, not a cached answer.
        opts.cache_size = 0;
        Ok(builder.build())
    }
}

/// Resolve `host` with one resolver.
pub async fn resolve(host: &str, spec: &ResolverSpec, timeout: Duration) -> DnsAnswer {
    let started = Instant::now();
    let result = match spec.build(timeout) {
        Ok(resolver) => resolver
            .lookup_ip(host)
            .await
            .map(|l| l.iter().collect::<BTreeSet<IpAddr>>())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(set) => DnsAnswer {
            resolver: spec.name(),
            addresses: set.into_iter().collect(),
            elapsed_ms,
            error: None,
        },
        Err(e) => DnsAnswer {
            resolver: spec.name(),
            addresses: Vec::new(),
            elapsed_ms,
            error: Some(e),
        },
    }
}

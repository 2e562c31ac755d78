//! Upstream HTTP clients: one pooled client per route, HTTP/1.1 or HTTP/2 (chosen by
//! ALPN on `https` upstreams), trusting the route's own CA file or else the system's
//! roots, with the route's connect timeout. New connections are timed into the
//! route's `upstream_connect_duration_seconds`: the wait a request has when the pool
//! has no idle connection for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::histogram::Histogram;
use rustls::RootCertStore;

use crate::body::GuardedBody;
use crate::config::HttpRoute;

/// A route's pooled client.
pub type UpstreamClient = Client<Timed<HttpsConnector<HttpConnector>>, GuardedBody>;

/// A connector that times each new connection (TCP connect and TLS).
#[derive(Clone)]
pub struct Timed<C> {
    inner: C,
    histogram: Histogram,
}

impl<C> tower_service::Service<http::Uri> for Timed<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let started = Instant::now();
        let connecting = self.inner.call(uri);
        let histogram = self.histogram.clone();
        Box::pin(async move {
            let r = connecting.await;
            histogram.observe(started.elapsed().as_secs_f64());
            r
        })
    }
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates loaded");
            Arc::new(roots)
        })
        .clone()
}

/// Build the route's client once and throw it away: what the configuration check runs,
/// so that it refuses whatever [`new_client`] would refuse at start or reload.
pub(crate) fn check(route: &HttpRoute) -> Result<(), String> {
    new_client(route, Histogram::new(std::iter::empty())).map(drop)
}

/// Build the client of a route; its new connections are timed into `connect`.
pub fn new_client(route: &HttpRoute, connect: Histogram) -> Result<UpstreamClient, String> {
    let roots = route.upstream_ca.clone().unwrap_or_else(system_roots);
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("upstream TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(route.connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let connector = Timed {
        inner: connector,
        histogram: connect,
    };
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

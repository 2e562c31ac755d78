//! Real components on loopback for the probe tests: the dev issuer, a gateway in
//! front of an upstream that echoes the identity headers, a token endpoint proxy
//! that slows every Nth request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use intraport_devissuer::demo_env::{DemoUpstream, GATEWAY_LISTENER, gateway_config};
use intraport_devissuer::{DevIssuer, DevIssuerConfig};
use intraport_gateway::{Config, Gateway, GatewayHandle};

pub async fn issuer(tls: bool) -> DevIssuer {
    DevIssuer::start(DevIssuerConfig {
        tls,
        ..DevIssuerConfig::demo()
    })
    .await
    .unwrap()
}

pub fn token_endpoint(issuer: &DevIssuer) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        issuer.authority(),
        issuer.tenant_id()
    )
}

pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `intraport dev` demo upstream: 200 with the `X-Intraport-*` headers it was
/// given, running for the whole test.
pub async fn echo_upstream() -> SocketAddr {
    let up = DemoUpstream::start().await.unwrap();
    let addr = up.addr();
    std::mem::forget(up);
    addr
}

/// The `intraport dev` gateway (HTTPS with the issuer's certificate) trusting the
/// issuer; route `/` needs role Reader or Writer, `/admin` role Writer.
pub async fn gateway(issuer: &DevIssuer, upstream: SocketAddr) -> (Arc<GatewayHandle>, SocketAddr) {
    let text = gateway_config(issuer, upstream, 0, r#"roles_any = ["Reader", "Writer"]"#);
    let config = Config::from_toml_str(&text, Path::new(".")).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gw.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = gw.listener_addr(GATEWAY_LISTENER).await.unwrap();
    (gw, addr)
}

/// A plain-HTTP proxy in front of `target` (a token endpoint URL) that holds
/// every `every`-th request (1st, every+1-th, ...) for `delay` before forwarding.
pub async fn slow_proxy(
    target: String,
    every: u64,
    delay: Duration,
) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let c = c.clone();
        let client = client.clone();
        let target = target.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst);
            if n % every == 0 {
                tokio::time::sleep(delay).await;
            }
            let resp = client
                .post(&target)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            (
                status,
                [("content-type", "application/json")],
                resp.bytes().await.unwrap(),
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, count)
}

//! Real components on loopback for the probe tests: the dev issuer, a gateway in
//! front of an upstream that echoes the identity headers, a token endpoint proxy
//! that slows every Nth request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use intraport_devissuer::{DevIssuer, DevIssuerConfig, demo};
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

/// An upstream answering 200 with the `X-Intraport-*` headers it was given.
pub async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let identity: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-intraport-"))
            .map(|(n, v)| {
                (
                    n.to_string(),
                    serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                )
            })
            .collect();
        axum::Json(serde_json::json!({ "identity": identity }))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A gateway (HTTPS with the issuer's certificate) trusting the issuer; route `/`
/// needs role Reader or Writer, `/admin` role Writer.
pub async fn gateway(issuer: &DevIssuer, upstream: SocketAddr) -> (Arc<GatewayHandle>, SocketAddr) {
    let (cert, key) = issuer.server_cert_paths().unwrap();
    let text = format!(
        r#"[server]
worker_threads = 1
shutdown_grace_seconds = 1

[admin]
listen = "127.0.0.1:0"

[[provider]]
name = "dev"
authority = {authority}
tenant = {tenant}
audiences = [{api_id}, {api_uri}]
ca_file = {ca}

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"

[listener.tls]
cert = {cert}
key = {key}

[[route]]
name = "read"
listener = "web"
path_prefix = "/"
upstream = "http://{upstream}"
identity = "token"
provider = "dev"

[route.source]
allow = ["127.0.0.0/8"]

[route.require]
roles_any = ["Reader", "Writer"]

[[route]]
name = "admin"
listener = "web"
path_prefix = "/admin"
upstream = "http://{upstream}"
identity = "token"
provider = "dev"

[route.source]
allow = ["127.0.0.0/8"]

[route.require]
roles_all = ["Writer"]
"#,
        authority = q(&issuer.authority()),
        tenant = q(&issuer.tenant_id().to_string()),
        api_id = q(&demo::API_APP_ID.to_string()),
        api_uri = q(demo::API_APP_ID_URI),
        ca = q(&issuer.ca_pem_path().unwrap().display().to_string()),
        cert = q(&cert.display().to_string()),
        key = q(&key.display().to_string()),
    );
    let config = Config::from_toml_str(&text, Path::new(".")).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gw.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = gw.listener_addr("web").await.unwrap();
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

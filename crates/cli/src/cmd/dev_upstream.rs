//! The demo upstream of `intraport dev`: an internal service that trusts the gateway
//! and answers every request with what the gateway told it about the caller (the
//! `X-Intraport-*` identity headers and `X-Forwarded-*`), so a new user sees exactly
//! what an upstream receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::Request;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running demo upstream.
pub struct DemoUpstream {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoUpstream {
    /// Serve plain HTTP on 127.0.0.1, any free port.
    pub async fn start() -> std::io::Result<DemoUpstream> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = axum::Router::new().fallback(echo);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(DemoUpstream { addr, stop, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn echo(req: Request) -> Json<Value> {
    let mut identity = BTreeMap::new();
    let mut forwarded = BTreeMap::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if n.starts_with("x-intraport-") {
            identity.insert(n.to_string(), v);
        } else if n.starts_with("x-forwarded-") || n == "x-request-id" {
            forwarded.insert(n.to_string(), v);
        }
    }
    Json(json!({
        "upstream": "intraport dev demo upstream",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "identity": identity,
        "forwarded": forwarded,
        "authorization_forwarded": req.headers().contains_key("authorization"),
    }))
}

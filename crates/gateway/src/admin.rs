//! The admin listener (loopback by default): `/healthz` (the process serves),
//! `/readyz` (every provider has a key set, so tokens can be checked), `/metrics`
//! (OpenMetrics text) and `/status` (the live HTML page).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gateway::Shared;

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = shared.drain.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &shared)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let typed = |status: StatusCode, body: String, content_type: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        r
    };
    let reply = |status: StatusCode, body: String| typed(status, body, "application/json");
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "{\"error\":\"method_not_allowed\"}".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "{\"status\":\"ok\"}".into()),
        "/readyz" => {
            let providers = shared.providers.load();
            let waiting: Vec<&str> = providers
                .iter()
                .filter(|p| !p.is_ready())
                .map(|p| p.name())
                .collect();
            if waiting.is_empty() {
                reply(StatusCode::OK, "{\"status\":\"ready\"}".into())
            } else {
                let body = serde_json::json!({"status": "not_ready", "waiting_for_keys": waiting});
                reply(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
            }
        }
        "/metrics" => typed(
            StatusCode::OK,
            shared.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/status" => typed(
            StatusCode::OK,
            crate::status::render(shared),
            "text/html; charset=utf-8",
        ),
        _ => reply(StatusCode::NOT_FOUND, "{\"error\":\"not_found\"}".into()),
    }
}

//! A tiny loopback metadata server whose documents can change and fail on command,
//! counting every request: for the discovery and JWKS cache tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

#[derive(Default)]
pub struct Shared {
    pub docs: Mutex<HashMap<String, String>>,
    pub hits: Mutex<HashMap<String, u64>>,
    pub failing: AtomicBool,
    pub total: AtomicU64,
}

pub struct Server {
    pub base: String,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn set(&self, path: &str, body: String) {
        self.shared
            .docs
            .lock()
            .unwrap()
            .insert(path.to_string(), body);
    }
    pub fn hits(&self, path: &str) -> u64 {
        *self.shared.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
    pub fn fail(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> axum::response::Response {
    let path = req.uri().path().to_string();
    s.total.fetch_add(1, Ordering::SeqCst);
    *s.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match s.docs.lock().unwrap().get(&path) {
        Some(body) => ([("content-type", "application/json")], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serve `docs` (path, body) on 127.0.0.1:0; the string `JWKS` in a body is replaced
/// by the absolute URL of `/keys`.
pub async fn serve(docs: Vec<(String, String)>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Shared::default());
    for (p, b) in docs {
        shared
            .docs
            .lock()
            .unwrap()
            .insert(p, b.replace("\"JWKS\"", &format!("\"{base}/keys\"")));
    }
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { base, shared, task }
}

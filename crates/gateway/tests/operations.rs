//! Operations: hot reload from the file (a broken file keeps the old routes), reload in
//! the middle of a streaming response, graceful shutdown that drains or cuts at the
//! deadline, certificate files swapped while serving, health and readiness.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use intraport_gateway::{Config, Gateway, GatewayHandle, load_config};
use support::mint::{self, Minter};
use support::pki::{Ca, Pki};

fn plain_config(upstream: SocketAddr, routes: &[&str], extra: &str) -> String {
    let mut text = format!(
        "[server]\nshutdown_grace_seconds = 5\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n"
    );
    for r in routes {
        text += &format!(
            "\n[[route]]\nname = \"{r}\"\nlistener = \"web\"\npath_prefix = \"/{r}\"\n\
             upstream = \"http://{upstream}\"\nidentity = \"none\"\n\
             [route.source]\nallow = [\"127.0.0.1\"]\n"
        );
    }
    text
}

async fn status(c: &reqwest::Client, url: String) -> u16 {
    c.get(url).send().await.unwrap().status().as_u16()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn file_reload_applies_good_files_and_keeps_serving_on_bad_ones() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let file = pki.path("gateway.toml");
    std::fs::write(&file, plain_config(up, &["a"], "watch_config = true")).unwrap();
    let gw = Gateway::start(load_config(&file).unwrap()).await.unwrap();
    let web = gw.listener_addr("web").await.unwrap();
    let c = client();
    let url = |p: &str| format!("http://{web}{p}");
    assert_eq!(status(&c, url("/a")).await, 200);
    assert_eq!(status(&c, url("/b")).await, 404);

    // A broken file (an unknown key, a bad CIDR) is rejected; the old routes serve.
    let broken = plain_config(up, &["a", "b"], "watch_config = true\ncolour = 1")
        .replace("allow = [\"127.0.0.1\"]", "allow = [\"127.0.0.1/8\"]");
    std::fs::write(&file, broken).unwrap();
    support::eventually(10, "the broken file to be rejected", || async {
        (gw.reload_stats().rejected.load(Ordering::Relaxed) >= 1).then_some(())
    })
    .await;
    assert_eq!(status(&c, url("/a")).await, 200);
    assert_eq!(status(&c, url("/b")).await, 404);
    // SIGHUP's path (reload_from_file) reports every error too.
    match gw.reload_from_file().await {
        Err(intraport_gateway::StartError::Config(errors)) => assert!(errors.len() >= 3),
        other => panic!("expected the configuration errors, got {other:?}"),
    }

    // A good file is applied on the same socket.
    std::fs::write(&file, plain_config(up, &["a", "b"], "watch_config = true")).unwrap();
    support::eventually(10, "the new route", || async {
        (status(&c, url("/b")).await == 200).then_some(())
    })
    .await;
    assert_eq!(gw.listener_addr("web").await, Some(web));
    assert_eq!(status(&c, url("/a")).await, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_reload_does_not_cut_a_streaming_response() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let gw = Gateway::start(
        Config::from_toml_str(&plain_config(up, &["stream"], ""), &pki.dir).unwrap(),
    )
    .await
    .unwrap();
    let web = gw.listener_addr("web").await.unwrap();
    let c = client();
    let mut resp = c.get(format!("http://{web}/stream")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    assert!(body.starts_with(b"chunk-00"));

    // The new configuration drops the route while the response is streaming.
    let next = Config::from_toml_str(&plain_config(up, &["other"], ""), &pki.dir).unwrap();
    gw.reload(next).await.unwrap();
    assert_eq!(status(&c, format!("http://{web}/stream")).await, 404);

    while let Some(chunk) = resp.chunk().await.expect("the stream must not be cut") {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 30, "{text}");
    assert!(text.ends_with("chunk-29\n"));
}

async fn start_streaming(gw: &GatewayHandle) -> (reqwest::Response, Vec<u8>) {
    let web = gw.listener_addr("web").await.unwrap();
    let mut resp = client()
        .get(format!("http://{web}/stream"))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap().to_vec();
    (resp, first)
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let gw = Gateway::start(
        Config::from_toml_str(&plain_config(up, &["stream"], ""), &pki.dir).unwrap(),
    )
    .await
    .unwrap();
    let web = gw.listener_addr("web").await.unwrap();
    let (mut resp, mut body) = start_streaming(&gw).await;

    let gw2 = gw.clone();
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { gw2.shutdown(Duration::from_secs(10)).await });
    // New connections are refused while the old request drains.
    support::eventually(5, "the listener to close", || async {
        tokio::net::TcpStream::connect(web)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    while let Some(chunk) = resp.chunk().await.expect("drained, not cut") {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8(body).unwrap().lines().count(), 30);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown returns once drained")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn shutdown_cuts_what_is_left_at_the_deadline() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let gw = Gateway::start(
        Config::from_toml_str(&plain_config(up, &["stream"], ""), &pki.dir).unwrap(),
    )
    .await
    .unwrap();
    let (mut resp, _) = start_streaming(&gw).await;
    let started = Instant::now();
    gw.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the response outlived the grace period");
}

#[tokio::test]
async fn certificate_files_are_reloaded_while_serving() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
reload_interval_seconds = 1
[[route]]
name = "open"
listener = "web"
upstream = "http://{up}"
identity = "none"
[route.source]
allow = ["127.0.0.1"]
"#
    );
    let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
        .await
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{}/",
        gw.listener_addr("web").await.unwrap().port()
    );
    let old = support::http_client(support::client_tls(
        &pki.server_ca.pem,
        None,
        rustls::DEFAULT_VERSIONS,
    ));
    assert_eq!(old.get(&url).send().await.unwrap().status(), 200);

    // A garbage file is ignored: the old certificate keeps serving.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = support::http_client(support::client_tls(
        &pki.server_ca.pem,
        None,
        rustls::DEFAULT_VERSIONS,
    ));
    assert_eq!(fresh.get(&url).send().await.unwrap().status(), 200);

    // A certificate from a new CA replaces it.
    let new_ca = Ca::new("renewed CA");
    let leaf = new_ca.server();
    std::fs::write(pki.path("server-key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(pki.path("server.pem"), &leaf.cert_pem).unwrap();
    support::eventually(10, "the new certificate", || async {
        let c = support::http_client(support::client_tls(
            &new_ca.pem,
            None,
            rustls::DEFAULT_VERSIONS,
        ));
        c.get(&url)
            .send()
            .await
            .ok()
            .map(|r| assert_eq!(r.status(), 200))
    })
    .await;
    let stale = support::http_client(support::client_tls(
        &pki.server_ca.pem,
        None,
        rustls::DEFAULT_VERSIONS,
    ));
    assert!(stale.get(&url).send().await.is_err());
}

#[tokio::test]
async fn health_and_readiness_follow_the_providers() {
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = support::upstream::http1().await;
    let closed = support::upstream::closed_port();
    let provider = |jwks: &str| {
        format!(
            "[[provider]]\nname = \"p\"\nissuer = \"{}\"\njwks = \"{jwks}\"\naudiences = [\"{}\"]\n\
             unknown_kid_cooldown_seconds = 1\nfetch_timeout_seconds = 1\n",
            mint::ISSUER,
            mint::AUDIENCE
        )
    };
    let routes = format!(
        "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
         [[route]]\nname = \"api\"\nlistener = \"web\"\nupstream = \"http://{up}\"\nprovider = \"p\"\n\
         [route.source]\nallow = [\"127.0.0.1\"]\n"
    );
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let down = format!(
        "{admin}{}{routes}",
        provider(&format!("http://127.0.0.1:{closed}/keys"))
    );
    let gw: Arc<GatewayHandle> = Gateway::start(Config::from_toml_str(&down, &pki.dir).unwrap())
        .await
        .unwrap();
    let c = client();
    let admin_url = |p: &str| format!("http://{}{p}", gw.admin_addr());
    assert_eq!(status(&c, admin_url("/healthz")).await, 200);
    let r = c.get(admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("\"p\""));
    assert!(!gw.is_ready());

    let up_cfg = format!(
        "{admin}{}{routes}",
        provider(&minter.jwks_path.display().to_string())
    );
    gw.reload(Config::from_toml_str(&up_cfg, &pki.dir).unwrap())
        .await
        .unwrap();
    support::eventually(10, "readiness", || async {
        (status(&c, admin_url("/readyz")).await == 200).then_some(())
    })
    .await;
    let web = gw.listener_addr("web").await.unwrap();
    let r = c
        .get(format!("http://{web}/x"))
        .bearer_auth(minter.token(&minter.claims()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&c, admin_url("/nope")).await, 404);
}

#[tokio::test]
async fn a_reload_that_would_close_every_listener_is_refused() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let text = plain_config(up, &["a"], "");
    let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
        .await
        .unwrap();
    let web = gw.listener_addr("web").await.unwrap();
    let c = client();
    // `load_config` refuses a file without listeners; a `Config` built otherwise is
    // refused by the reload itself.
    let mut empty = Config::from_toml_str(&text, &pki.dir).unwrap();
    empty.listeners.clear();
    match gw.reload(empty).await {
        Err(intraport_gateway::StartError::NoListener) => {}
        other => panic!("expected the reload to be refused, got {other:?}"),
    }
    assert_eq!(gw.reload_stats().rejected.load(Ordering::Relaxed), 1);
    assert_eq!(gw.reload_stats().applied.load(Ordering::Relaxed), 0);
    assert_eq!(gw.listener_addr("web").await, Some(web));
    assert_eq!(status(&c, format!("http://{web}/a")).await, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}

/// The JSON lines of an audit file.
fn audit_lines(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_events_of_the_http2_streams_it_cuts() {
    let pki = Pki::new();
    let up = support::upstream::http1().await;
    let log = pki.dir.join("audit.jsonl");
    let text = plain_config(up, &["slow", "stream"], "")
        + &format!(
            "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            log.display()
        );
    let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
        .await
        .unwrap();
    let web = gw.listener_addr("web").await.unwrap();
    // HTTP/2: each stream's request runs in a task of its own.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // /slow answers after 3 s; /stream streams for 3 s. Several slow streams: each
    // one's event is a chance to be lost when the flush does not wait for it.
    const SLOW: usize = 16;
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let h2 = h2.clone();
            tokio::spawn(async move { h2.get(format!("http://{web}/slow")).send().await })
        })
        .collect();
    let mut stream = h2.get(format!("http://{web}/stream")).send().await.unwrap();
    assert_eq!(stream.version(), http::Version::HTTP_2);
    assert!(stream.chunk().await.unwrap().is_some());
    let metrics = format!("http://{}/metrics", gw.admin_addr());
    let in_flight = format!(" {SLOW}");
    support::eventually(10, "the slow requests in flight", || async {
        let text = client()
            .get(&metrics)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| {
                l.starts_with("intraport_http_requests_in_flight{")
                    && l.contains("route=\"slow\"")
                    && l.ends_with(&in_flight)
            })
            .then_some(())
    })
    .await;

    gw.shutdown(Duration::from_millis(300)).await;
    for r in slow {
        assert!(r.await.unwrap().is_err(), "the slow request was cut");
    }
    let stats = gw.audit_stats();
    assert_eq!(stats[0].dropped, 0, "{stats:?}");
    let events = audit_lines(&log);
    assert_eq!(stats[0].written, events.len() as u64, "{stats:?}");
    for (path, count) in [("/slow", SLOW), ("/stream", 1)] {
        let of: Vec<_> = events.iter().filter(|e| e["url"]["path"] == path).collect();
        assert_eq!(of.len(), count, "{path}: {events:#?}");
        for e in of {
            assert_eq!(e["event"]["outcome"], "failure", "{e:#}");
            assert_eq!(e["event"]["reason"], "shutdown", "{e:#}");
            assert_eq!(e["http"]["version"], "2", "{e:#}");
        }
    }
}

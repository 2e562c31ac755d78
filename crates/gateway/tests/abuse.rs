//! Abuse resistance end to end, with real traffic on loopback: connection caps (and
//! the fair share of the last places), silent connections, a slowloris client, slow
//! uploads, clients that stop reading their answers (HTTP/1.1 and an HTTP/2 zero
//! window) and the per-source cap on upstream requests held, size limits, rate limits
//! with Retry-After, failed-authentication bans enforced before TLS (with the
//! allowlist and expiry, expired tokens not counted), the listen queue, each while a
//! legitimate client keeps being served.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intraport_gateway::{Config, Gateway, GatewayHandle};
use support::mint::{self, Minter};
use support::pki::Pki;
use support::{closed_within, eventually, reset_within, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Gw {
    pki: Pki,
    minter: Minter,
    gw: Arc<GatewayHandle>,
    plain: SocketAddr,
    tls: SocketAddr,
}

/// A gateway with a plain HTTP listener and an HTTPS one, both with `limits`, and
/// `abuse` settings.
async fn start(limits: &str, abuse: &str) -> Gw {
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = upstream::http1().await;
    let text = format!(
        r#"
[server]
watch_config = false
shutdown_grace_seconds = 1
[admin]
listen = "127.0.0.1:0"
{abuse}
[[provider]]
name = "local"
issuer = "{iss}"
jwks = "{jwks}"
audiences = ["{aud}"]

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"
[listener.limits]
{limits}

[[listener]]
name = "tls"
listen = "127.0.0.1:0"
protocol = "https"
[listener.limits]
{limits}
[listener.tls]
cert = "server.pem"
key = "server-key.pem"

[[route]]
name = "open"
listener = "plain"
path_prefix = "/open"
upstream = "http://{up}"
identity = "none"
[route.source]
allow = ["127.0.0.0/8"]

[[route]]
name = "timed"
listener = "plain"
path_prefix = "/timed"
upstream = "http://{up}"
identity = "none"
response_timeout_ms = 1500
[route.source]
allow = ["127.0.0.0/8"]

[[route]]
name = "api"
listener = "plain"
path_prefix = "/api"
upstream = "http://{up}"
provider = "local"
[route.source]
allow = ["127.0.0.0/8"]

[[route]]
name = "tls-api"
listener = "tls"
upstream = "http://{up}"
provider = "local"
[route.source]
allow = ["127.0.0.0/8"]
"#,
        iss = mint::ISSUER,
        jwks = minter.jwks_path.display(),
        aud = mint::AUDIENCE,
    );
    let config = support::parse_config(&text, &pki.dir);
    let gw = Gateway::start(config).await.unwrap();
    let plain = gw.listener_addr("plain").await.unwrap();
    let tls = gw.listener_addr("tls").await.unwrap();
    eventually(10, "provider ready", || async {
        gw.is_ready().then_some(())
    })
    .await;
    Gw {
        pki,
        minter,
        gw,
        plain,
        tls,
    }
}

/// A plain HTTP client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

async fn get(c: &reqwest::Client, url: String) -> u16 {
    c.get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn per_source_connection_cap_refuses_the_excess_before_any_byte() {
    let g = start("max_connections_per_source = 3", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.3", g.plain).await);
    }
    // Wait until the gateway has accepted the three.
    eventually(5, "three connections accepted", || async {
        let s = g.gw.listener_stats("plain").await.unwrap();
        (s.connections.load(std::sync::atomic::Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    let mut fourth = connect_from("127.0.0.3", g.plain).await;
    assert!(
        reset_within(&mut fourth, 5).await,
        "the fourth connection is reset"
    );
    assert_eq!(g.gw.abuse_stats().connections_refused_source_cap, 1);
    // Another source is served meanwhile.
    let other = client_from("127.0.0.4");
    assert_eq!(get(&other, format!("http://{}/open", g.plain)).await, 200);
    drop(held);
    // Places are given back when connections close.
    eventually(5, "the source can connect again", || async {
        let c = client_from("127.0.0.3");
        (c.get(format!("http://{}/open", g.plain))
            .send()
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn slowloris_is_cut_at_the_header_timeout_while_others_are_served() {
    let g = start("header_read_timeout_ms = 800", "").await;
    let mut slow = connect_from("127.0.0.5", g.plain).await;
    let started = Instant::now();
    let head = b"GET /open HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        // A legitimate client is served while the slow one dribbles.
        let c = client_from("127.0.0.6");
        assert_eq!(get(&c, format!("http://{}/open", g.plain)).await, 200);
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                cut = true;
                break;
            }
            // 408 written by hyper before closing counts as cut too.
            Ok(Ok(_)) => {
                cut = true;
                break;
            }
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut");
    }
    assert!(cut, "the slow client was disconnected");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    eventually(5, "header timeout counted", || async {
        (g.gw.abuse_stats().header_timeouts >= 1).then_some(())
    })
    .await;
}

/// The head timeout runs from a head's first byte, not while a keep-alive connection
/// waits between requests (that is the idle timeout's), nor while an earlier answer
/// still streams; an HTTP/2 connection (prior knowledge) quiet before its first
/// request is not cut by it either.
#[tokio::test]
async fn keep_alive_waits_are_the_idle_timeouts_and_heads_the_header_timeouts() {
    let g = start("header_read_timeout_ms = 1000\nidle_timeout_ms = 5000", "").await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    let mut s = connect_from("127.0.0.30", g.plain).await;
    s.write_all(get("/open/a").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await, (200, false));
    // Quiet between requests for two and a half head timeouts: the connection is kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(get("/open/b").as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut s).await,
        (200, false),
        "kept while quiet"
    );
    // A head started and not finished is cut at the head timeout from its first byte.
    s.write_all(b"GET /open/c HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut s, 8).await, "an unfinished head kept");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4000),
        "cut after {took:?}"
    );
    eventually(5, "header timeout counted", || async {
        (g.gw.abuse_stats().header_timeouts >= 1).then_some(())
    })
    .await;

    // The next request sent while a three-second answer streams is served after it.
    let mut s = connect_from("127.0.0.31", g.plain).await;
    s.write_all(get("/open/stream").as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut sent_next = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = "\"path\":\"/open/d\"";
    while !String::from_utf8_lossy(&seen).contains(second) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("both answers in time")
            .unwrap();
        assert!(n > 0, "closed before the second answer");
        seen.extend_from_slice(&chunk[..n]);
        if !sent_next && String::from_utf8_lossy(&seen).contains("chunk-00") {
            s.write_all(get("/open/d").as_bytes()).await.unwrap();
            sent_next = true;
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    let (last_chunk, answer) = (seen.find("chunk-29"), seen.find(second));
    assert!(
        last_chunk.is_some() && last_chunk < answer,
        "answers out of order"
    );

    // A keep-alive connection quiet for the idle timeout is closed, as idle.
    drop(s);
    let idle_before = g.gw.abuse_stats().idle_closes;
    let mut s = connect_from("127.0.0.32", g.plain).await;
    s.write_all(get("/open/e").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await, (200, false));
    let quiet = Instant::now();
    assert!(closed_within(&mut s, 12).await, "an idle connection kept");
    assert!(quiet.elapsed() >= Duration::from_millis(4500));
    eventually(5, "idle close counted", || async {
        (g.gw.abuse_stats().idle_closes > idle_before).then_some(())
    })
    .await;

    // HTTP/2 with prior knowledge, quiet before its first request, then served.
    let tcp = connect_from("127.0.0.33", g.plain).await;
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/open/f", g.plain))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

/// An upload that goes on after the upstream has answered is still the request's
/// body, not the start of the next request head: it is not cut at the head timeout,
/// and the connection then serves the next request.
#[tokio::test]
async fn an_upload_outlasting_an_early_answer_is_not_a_slow_head() {
    let g = start("header_read_timeout_ms = 800", "").await;
    let mut s = connect_from("127.0.0.36", g.plain).await;
    s.write_all(b"POST /open/early HTTP/1.1\r\nHost: gw\r\nContent-Length: 2000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 100]).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200, "the early answer");
    // The rest of the upload, 100 bytes every 150 ms: 2.85 s, past the head timeout.
    for _ in 0..19 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(&[b'x'; 100]).await.unwrap();
    }
    s.write_all(b"GET /open/next HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200, "the next request");
    assert_eq!(g.gw.abuse_stats().header_timeouts, 0);
}

/// A POST from `from` to `path` announcing 2,000 bytes and sending 100.
async fn stalled_upload(g: &Gw, from: &str, path: &str) -> TcpStream {
    let mut s = connect_from(from, g.plain).await;
    let head = format!("POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 100]).await.unwrap();
    s
}

/// What `started` waited for came at the 600 ms body timeout (within a loaded
/// machine's slack).
fn near_the_timeout(started: Instant) {
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(4000),
        "{took:?}"
    );
}

/// An upload that stalls after its early answer: no byte arrives, so no head is
/// timed; the body timeout ends it (the upload is still passed on upstream), and the
/// connection with it, counted like a body cut before the answer.
#[tokio::test]
async fn an_upload_that_stalls_after_an_early_answer_is_cut_at_the_body_timeout() {
    let g = start("header_read_timeout_ms = 800\nbody_timeout_ms = 600", "").await;
    let mut s = stalled_upload(&g, "127.0.0.37", "/open/early").await;
    assert_eq!(read_response(&mut s).await.0, 200, "the early answer");
    let started = Instant::now();
    assert!(closed_within(&mut s, 8).await, "a stalled upload kept");
    near_the_timeout(started);
    eventually(5, "the body timeout counted", || async {
        (g.gw.abuse_stats().body_timeouts == 1).then_some(())
    })
    .await;
    assert_eq!(g.gw.abuse_stats().header_timeouts, 0);
}

/// A request body that stalls on its way upstream is refused at the body timeout
/// with 408, and counted.
#[tokio::test]
async fn a_stalled_request_body_is_refused_at_the_body_timeout() {
    let g = start("body_timeout_ms = 600", "").await;
    let mut s = stalled_upload(&g, "127.0.0.38", "/open/upload").await;
    let started = Instant::now();
    assert_eq!(read_response(&mut s).await.0, 408);
    near_the_timeout(started);
    assert_eq!(g.gw.abuse_stats().body_timeouts, 1);
}

/// The head timer cannot be switched off by looking like HTTP/2: a plaintext head
/// that starts like the HTTP/2 preface but is not it, and HTTP/1.1 spoken over a TLS
/// connection whose ALPN agreed on h2, are both cut at the head timeout.
#[tokio::test]
async fn an_http2_lookalike_does_not_escape_the_head_timeout() {
    let g = start("header_read_timeout_ms = 800", "").await;
    let mut s = connect_from("127.0.0.34", g.plain).await;
    s.write_all(b"PRI /x HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut s, 8).await, "a PRI head kept");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_millis(4000));
    eventually(5, "the PRI head's timeout counted", || async {
        (g.gw.abuse_stats().header_timeouts >= 1).then_some(())
    })
    .await;

    let mut tls = support::client_tls(&g.pki.server_ca.pem, None, rustls::DEFAULT_VERSIONS);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = connect_from("127.0.0.35", g.tls).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut s, 8).await,
        "HTTP/1.1 after ALPN h2 kept"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_millis(4000));
    eventually(5, "the second head's timeout counted", || async {
        (g.gw.abuse_stats().header_timeouts >= 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn oversized_body_uri_and_headers_are_refused_with_their_status() {
    let g = start("max_body_bytes = 1000\nmax_uri_bytes = 200", "").await;
    let c = client_from("127.0.0.7");
    let url = format!("http://{}/open", g.plain);
    let r = c.post(&url).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.text().await.unwrap().contains("body_too_large"));
    // A chunked body without a length is cut when it passes the limit.
    let mut raw = connect_from("127.0.0.7", g.plain).await;
    raw.write_all(b"POST /open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        raw.write_all(format!("1f4\r\n{}\r\n", "y".repeat(500)).as_bytes())
            .await
            .ok();
    }
    raw.write_all(b"0\r\n\r\n").await.ok();
    let mut resp = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        resp[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&resp[..n])
    );
    assert_eq!(
        c.post(&url)
            .body(vec![b'x'; 900])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let long = format!("{url}?q={}", "a".repeat(300));
    assert_eq!(get(&c, long).await, 414);
    let mut req = c.get(&url);
    req = req.header("x-big", "b".repeat(70 * 1024));
    assert_eq!(req.send().await.unwrap().status().as_u16(), 431);
    let s = g.gw.abuse_stats();
    assert_eq!((s.body_too_large, s.uri_too_long), (2, 1));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_then_recovers() {
    let g = start(
        "rate_per_source = { requests = 1, per_seconds = 1, burst = 3 }",
        "",
    )
    .await;
    let c = client_from("127.0.0.8");
    let url = format!("http://{}/open", g.plain);
    for _ in 0..3 {
        assert_eq!(get(&c, url.clone()).await, 200);
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(r.text().await.unwrap().contains("\"rate_limited\""));
    // Another source has its own budget.
    assert_eq!(get(&client_from("127.0.0.9"), url.clone()).await, 200);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get(&c, url).await, 200, "allowed again after Retry-After");
    assert_eq!(g.gw.abuse_stats().rate_limited_source, 1);
}

#[tokio::test]
async fn token_spraying_bans_the_source_before_tls_allowlist_never_and_bans_expire() {
    let g = start(
        "",
        "[abuse]\nsync_interval_ms = 200\n[abuse.bans]\nfailures = 5\nwindow_seconds = 60\nban_seconds = 2\nallow = [\"127.0.0.11\"]\n",
    )
    .await;
    let good = g.minter.token(&g.minter.claims());
    let sprayer = client_from("127.0.0.10");
    let friend = client_from("127.0.0.11");
    let legit = client_from("127.0.0.12");
    let api = format!("http://{}/api", g.plain);
    for i in 0..5 {
        let bad = format!("{}x", good);
        let r = sprayer.get(&api).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "attempt {i}");
        let r = friend.get(&api).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // The legitimate client keeps succeeding throughout.
        let r = legit.get(&api).bearer_auth(&good).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert!(g.gw.banned("127.0.0.10".parse().unwrap()).is_some());
    assert!(
        g.gw.banned("127.0.0.11".parse().unwrap()).is_none(),
        "allowlisted"
    );
    // Refused at accept, before TLS: the connection is closed without a ServerHello.
    let mut s = connect_from("127.0.0.10", g.tls).await;
    s.write_all(b"\x16\x03\x01\x00\x05hello").await.ok();
    assert!(closed_within(&mut s, 5).await);
    // Even with a good token; a connection opened before the ban is answered 403.
    match sprayer.get(&api).bearer_auth(&good).send().await {
        Err(_) => {}
        Ok(r) => {
            assert_eq!(r.status().as_u16(), 403);
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    let st = g.gw.abuse_stats();
    assert_eq!(st.bans, 1);
    assert!(st.connections_refused_banned >= 1);
    // The allowlisted and the legitimate sources are served over TLS too.
    let tls = support::http_client(support::client_tls(
        &g.pki.server_ca.pem,
        None,
        rustls::DEFAULT_VERSIONS,
    ));
    let r = tls
        .get(format!("https://127.0.0.1:{}/", g.tls.port()))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The ban ends on time.
    let ended = Instant::now();
    eventually(6, "the ban ends", || async {
        let r = sprayer.get(&api).bearer_auth(&good).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ended.elapsed() < Duration::from_secs(4));
    eventually(3, "unban counted", || async {
        (g.gw.abuse_stats().unbans == 1).then_some(())
    })
    .await;
}

/// Reads one HTTP/1.1 response (head and `content-length` body) from `s`: its status
/// and whether the head says `connection: close`.
async fn read_response(s: &mut TcpStream) -> (u16, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, head.contains("connection: close"))
}

/// A ban cuts the banned source's open keep-alive connections: the one whose failure
/// banned it is closed after that answer, another one after its next answer (403), so
/// the sprayer has to reconnect and is refused at accept. A client behind the same
/// listener from another address keeps its connection.
#[tokio::test]
async fn a_ban_closes_the_banned_sources_open_connections() {
    let g = start(
        "",
        "[abuse.bans]\nfailures = 3\nwindow_seconds = 60\nban_seconds = 30\n",
    )
    .await;
    let good = g.minter.token(&g.minter.claims());
    let request = |token: &str| {
        format!("GET /api HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    let bad = request(&format!("{good}x"));
    let mut spray = connect_from("127.0.0.20", g.plain).await;
    let mut other = connect_from("127.0.0.20", g.plain).await;
    let mut legit = connect_from("127.0.0.21", g.plain).await;
    for i in 0..2 {
        spray.write_all(bad.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut spray).await, (401, false), "attempt {i}");
    }
    // The third failure bans the source: answered, then the connection is closed.
    spray.write_all(bad.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut spray).await.0, 401);
    assert!(
        closed_within(&mut spray, 5).await,
        "the banning connection stays open"
    );
    assert!(g.gw.banned("127.0.0.20".parse().unwrap()).is_some());
    // The other connection it opened before the ban: refused with 403, then closed.
    other.write_all(request(&good).as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut other).await.0, 403);
    assert!(
        closed_within(&mut other, 5).await,
        "the older connection stays open"
    );
    // Reconnecting is refused at accept, with a reset.
    let mut again = connect_from("127.0.0.20", g.plain).await;
    assert!(reset_within(&mut again, 5).await);
    // The legitimate client's keep-alive connection serves on, twice.
    for _ in 0..2 {
        legit.write_all(request(&good).as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut legit).await, (200, false));
    }
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and resets them
/// once the gateway has started on them (so that they are not "pending accept" resets
/// that h2 already limits), in a loop, has its connection closed after a bounded
/// number of resets, and the flood is counted; another client is served meanwhile.
#[tokio::test]
async fn http2_rapid_reset_closes_the_connection() {
    let g = start("h2_max_pending_reset_streams = 20", "").await;
    let token = g.minter.token(&g.minter.claims());
    let tcp = TcpStream::connect(g.plain).await.unwrap();
    // h2 with prior knowledge on the plain listener.
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let mut reset = 0u32;
    'flood: while reset < 2_000 {
        let mut batch = Vec::new();
        for _ in 0..10 {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => break 'flood,
            };
            let req = http::Request::get(format!("http://{}/api/slow", g.plain))
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
            match client.send_request(req, true) {
                Ok((_response, stream)) => batch.push(stream),
                Err(_) => break 'flood,
            }
        }
        // The gateway takes them up (the upstream answers /slow after 3 s) ...
        tokio::time::sleep(Duration::from_millis(30)).await;
        // ... and the client abandons them all.
        for mut stream in batch {
            stream.send_reset(h2::Reason::CANCEL);
            reset += 1;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after {reset} streams reset"
    );
    assert!(reset <= 100, "closed only after {reset} resets");
    eventually(10, "the flood counted", || async {
        (g.gw.abuse_stats().h2_reset_floods >= 1).then_some(())
    })
    .await;
    // Everyone else is still served.
    let ok = client_from("127.0.0.1")
        .get(format!("http://{}/open/hello", g.plain))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Clients that never finish the TLS handshake (silent, or a ClientHello cut short)
/// are disconnected at the handshake timeout and counted, and do not keep a
/// legitimate client from being served meanwhile.
#[tokio::test]
async fn unfinished_tls_handshakes_are_cut_at_the_timeout() {
    let g = start("", "").await;
    let good = g.minter.token(&g.minter.claims());
    let mut silent = connect_from("127.0.0.41", g.tls).await;
    let mut partial = connect_from("127.0.0.42", g.tls).await;
    // The first bytes of a TLS record header, then nothing.
    partial.write_all(b"\x16\x03\x01\x02").await.unwrap();
    let tls = support::http_client(support::client_tls(
        &g.pki.server_ca.pem,
        None,
        rustls::DEFAULT_VERSIONS,
    ));
    let r = tls
        .get(format!("https://127.0.0.1:{}/", g.tls.port()))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "served while handshakes hang");
    // The default handshake timeout is 10 s.
    assert!(closed_within(&mut silent, 15).await, "silent client kept");
    assert!(closed_within(&mut partial, 5).await, "partial client kept");
    let stats = g.gw.listener_stats("tls").await.unwrap();
    assert!(stats.handshake_failures_of(intraport_gateway::HandshakeFailure::Timeout) >= 2);
}

/// A loopback identity provider: discovery and the Minter's key set, counting every
/// request it answers.
async fn counting_idp(jwks: String) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::TokioIo;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (seen, jwks) = (seen.clone(), jwks.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = if req.uri().path().ends_with("openid-configuration") {
                            serde_json::json!({
                                "issuer": mint::ISSUER,
                                "jwks_uri": format!("http://{addr}/keys"),
                            })
                            .to_string()
                        } else {
                            jwks.clone()
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

/// Tokens naming 30 key ids the provider never published (signed with a key it does
/// not hold either, so that trying its published keys does not verify them), each of
/// which would make a provider without a cool-down fetch again: with the global ceiling the identity
/// provider sees at most the ceiling's fetches; without it, one per token.
#[tokio::test]
async fn the_global_ceiling_bounds_identity_provider_fetches_whatever_the_traffic() {
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let jwks = std::fs::read_to_string(&minter.jwks_path).unwrap();
    let elsewhere = Pki::new();
    let stranger = Minter::new(&elsewhere.dir);
    let up = upstream::http1().await;
    let mut fetched = Vec::new();
    for ceiling in [3, 0] {
        let (idp, count) = counting_idp(jwks.clone()).await;
        let text = format!(
            r#"
[server]
watch_config = false
[admin]
listen = "127.0.0.1:0"
[abuse]
idp_fetches_per_minute = {ceiling}
[abuse.bans]
failures = 0

[[provider]]
name = "local"
discovery = "http://{idp}/.well-known/openid-configuration"
audiences = ["{aud}"]
unknown_kid_cooldown_seconds = 0

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"

[[route]]
name = "api"
listener = "plain"
upstream = "http://{up}"
provider = "local"
[route.source]
allow = ["127.0.0.0/8"]
"#,
            aud = mint::AUDIENCE,
        );
        let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
            .await
            .unwrap();
        eventually(10, "provider ready", || async {
            gw.is_ready().then_some(())
        })
        .await;
        let loaded = count.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(loaded, 2, "discovery and key set");
        let api = format!("http://{}/api", gw.listener_addr("plain").await.unwrap());
        let c = client_from("127.0.0.1");
        for i in 0..30 {
            let token = stranger.sign(
                &serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": format!("rotated-{i}")}),
                &minter.claims(),
            );
            let r = c.get(&api).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 401);
        }
        // The key set it has keeps serving.
        let good = minter.token(&minter.claims());
        assert_eq!(
            c.get(&api).bearer_auth(good).send().await.unwrap().status(),
            200
        );
        let n = count.load(std::sync::atomic::Ordering::SeqCst);
        let refused = gw.abuse_stats().idp_fetches_refused;
        if ceiling > 0 {
            assert!(
                n <= ceiling,
                "{n} fetches with a ceiling of {ceiling} per minute"
            );
            assert!(
                refused >= 25,
                "only {refused} fetches refused by the ceiling"
            );
        } else {
            assert_eq!(refused, 0);
        }
        fetched.push(n);
        gw.shutdown(Duration::from_secs(1)).await;
    }
    // Without the ceiling the same traffic fetches once per unknown key id (at least).
    assert!(fetched[1] >= 30, "{fetched:?}");
}

/// Opens `n` connections from `from`, one after the other, each once the gateway has
/// decided on the one before (accepted, or refused at accept); returns the accepted
/// ones, which stay silent.
async fn fill_from(g: &Gw, from: &str, n: usize) -> Vec<TcpStream> {
    let stats = g.gw.listener_stats("plain").await.unwrap();
    let decided = || {
        let a = g.gw.abuse_stats();
        let accepted = stats.connections.load(std::sync::atomic::Ordering::Relaxed);
        let refused = a.connections_refused_listener_cap
            + a.connections_refused_source_cap
            + a.connections_refused_source_share;
        (accepted, refused)
    };
    let mut held = Vec::new();
    for _ in 0..n {
        let (a0, r0) = decided();
        let s = connect_from(from, g.plain).await;
        let (a1, _) = eventually(5, "the gateway decides on the connection", || async {
            let (a, r) = decided();
            (a + r > a0 + r0).then_some((a, r))
        })
        .await;
        if a1 > a0 {
            held.push(s);
        }
    }
    held
}

/// Two sources holding silent connections cannot fill the listener: above half its
/// cap a source's allowance shrinks with the places left (40 places, 20 per source:
/// the second source gets 10, not 20), and a third source is served.
#[tokio::test]
async fn sources_holding_silent_connections_leave_room_for_others() {
    let g = start(
        "max_connections = 40\nmax_connections_per_source = 20\nheader_read_timeout_ms = 30000",
        "",
    )
    .await;
    let a = fill_from(&g, "127.0.0.81", 25).await;
    assert_eq!(a.len(), 20, "the per-source cap");
    let b = fill_from(&g, "127.0.0.82", 25).await;
    assert_eq!(b.len(), 10, "the second source's share above half");
    let st = g.gw.abuse_stats();
    assert_eq!(st.connections_refused_source_cap, 5);
    assert_eq!(st.connections_refused_source_share, 15);
    assert_eq!(st.connections_refused_listener_cap, 0);
    let legit = client_from("127.0.0.83");
    assert_eq!(get(&legit, format!("http://{}/open", g.plain)).await, 200);
}

/// A connection that never sends a byte is closed at the head timeout, plain or after
/// its TLS handshake, not held until the idle timeout.
#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout() {
    let g = start("header_read_timeout_ms = 800\nidle_timeout_ms = 60000", "").await;
    let mut plain = connect_from("127.0.0.84", g.plain).await;
    let started = Instant::now();
    assert!(
        closed_within(&mut plain, 5).await,
        "a silent connection kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));

    let mut tls = support::client_tls(&g.pki.server_ca.pem, None, rustls::DEFAULT_VERSIONS);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = connect_from("127.0.0.85", g.tls).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut s, 5).await,
        "silent after the handshake kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    eventually(5, "both counted as head timeouts", || async {
        (g.gw.abuse_stats().header_timeouts == 2).then_some(())
    })
    .await;
}

/// An upload that trickles in, each piece within the body timeout, but is not done
/// when the response timeout runs out is the client's delay: 408, counted as a body
/// timeout, not a 504 blamed on the upstream.
#[tokio::test]
async fn a_slow_upload_past_the_response_timeout_is_the_clients_body_timeout() {
    let g = start("body_timeout_ms = 600", "").await;
    let mut s = connect_from("127.0.0.86", g.plain).await;
    s.write_all(b"POST /timed/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        // 50 bytes every 200 ms: never a 600 ms stall, never done.
        loop {
            if w.write_all(&[b'x'; 50]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(8), r.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("body_timeout"), "{head}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "{took:?}"
    );
    writer.abort();
    assert_eq!(g.gw.abuse_stats().body_timeouts, 1);
}

/// Expired tokens, correctly signed, do not count towards a ban: a client retrying
/// with one (behind a NAT, many do) is refused 401 `expired` each time and not
/// banned. An expired token with a forged signature still counts.
#[tokio::test]
async fn expired_tokens_do_not_ban_but_forged_ones_do() {
    let g = start(
        "",
        "[abuse.bans]\nfailures = 3\nwindow_seconds = 60\nban_seconds = 30\n",
    )
    .await;
    let t = mint::now();
    let expired = g
        .minter
        .with(serde_json::json!({"iat": t - 7200, "nbf": t - 7200, "exp": t - 3600}));
    let good = g.minter.token(&g.minter.claims());
    let api = format!("http://{}/api", g.plain);
    let c = client_from("127.0.0.87");
    for i in 0..6 {
        let r = c.get(&api).bearer_auth(&expired).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "attempt {i}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("\"expired\""), "{challenge}");
    }
    assert!(g.gw.banned("127.0.0.87".parse().unwrap()).is_none());
    assert_eq!(g.gw.abuse_stats().auth_failures, 0);
    assert_eq!(get_auth(&c, &api, &good).await, 200);
    // The same expired token with a forged signature is a failure like any forgery.
    let forged = format!("{expired}x");
    for _ in 0..3 {
        let _ = c.get(&api).bearer_auth(&forged).send().await;
    }
    assert!(g.gw.banned("127.0.0.87".parse().unwrap()).is_some());
    assert_eq!(g.gw.abuse_stats().bans, 1);
}

async fn get_auth(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    c.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An upstream whose every answer is endless (64 KiB pieces as fast as they are
/// taken), counting the answers being sent now.
async fn endless_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let live2 = live.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let live = live2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let live = live.clone();
                    async move {
                        let (mut tx, body) = http_body_util::channel::Channel::<
                            bytes::Bytes,
                            std::convert::Infallible,
                        >::new(1);
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            let piece = bytes::Bytes::from(vec![b'z'; 64 * 1024]);
                            while tx.send_data(piece.clone()).await.is_ok() {}
                            live.fetch_sub(1, Ordering::SeqCst);
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, live)
}

/// A gateway with one plain listener (`listener` keys, `limits`) whose one route
/// forwards everything to `upstream`.
async fn start_plain(
    listener: &str,
    limits: &str,
    upstream: SocketAddr,
) -> (Arc<GatewayHandle>, SocketAddr, String) {
    let text = plain_text(listener, limits, upstream);
    let config = Config::from_toml_str(&text, std::path::Path::new(".")).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.listener_addr("plain").await.unwrap();
    (gw, addr, text)
}

fn plain_text(listener: &str, limits: &str, upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
watch_config = false
shutdown_grace_seconds = 1
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"
{listener}
[listener.limits]
{limits}
[[route]]
name = "all"
listener = "plain"
upstream = "http://{upstream}"
identity = "none"
[route.source]
allow = ["127.0.0.0/8"]
"#
    )
}

/// A client that stops reading a large answer has its connection closed at the send
/// timeout, which gives the upstream connection back; until then it is the only
/// answer held.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
    use std::sync::atomic::Ordering;
    let (up, live) = endless_upstream().await;
    let (gw, addr, _) = start_plain("", "send_timeout_ms = 800\nidle_timeout_ms = 60000", up).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.88:0".parse().unwrap()).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0;
    while got < 256 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the answer streams")
            .unwrap();
        assert!(n > 0);
        got += n;
    }
    assert_eq!(live.load(Ordering::SeqCst), 1);
    // The client stops reading.
    let stopped = Instant::now();
    eventually(10, "the send timeout", || async {
        (gw.abuse_stats().send_timeouts == 1).then_some(())
    })
    .await;
    assert!(stopped.elapsed() >= Duration::from_millis(700));
    eventually(5, "the upstream's answer given up", || async {
        (live.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    assert!(closed_within(&mut s, 10).await, "the connection kept");
}

/// An HTTP/2 client that leaves every stream's window at zero: its source holds at
/// most `max_upstream_requests_per_source` upstream requests (the rest are refused
/// 429), another source is served meanwhile, and the connection is closed at the send
/// timeout, giving every upstream connection back.
#[tokio::test]
async fn an_http2_zero_window_holds_a_capped_number_of_upstream_requests_until_the_send_timeout() {
    use std::sync::atomic::Ordering;
    let (up, live) = endless_upstream().await;
    let (gw, addr, _) = start_plain(
        "",
        "send_timeout_ms = 1500\nmax_upstream_requests_per_source = 4\nidle_timeout_ms = 60000",
        up,
    )
    .await;
    let tcp = connect_from("127.0.0.89", addr).await;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    let mut responses = Vec::new();
    let mut client = client;
    for i in 0..10 {
        client = client.ready().await.unwrap();
        let req = http::Request::get(format!("http://{addr}/big/{i}"))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        responses.push(resp);
    }
    // Kept: a dropped answer is a stream the client resets.
    let mut answers = Vec::new();
    let mut statuses = Vec::new();
    for r in responses {
        let r = tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .expect("a response head")
            .unwrap();
        statuses.push(r.status().as_u16());
        answers.push(r);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429, 429, 429]);
    assert_eq!(gw.abuse_stats().upstream_holds_refused, 6);
    eventually(5, "four upstream answers held", || async {
        (live.load(Ordering::SeqCst) == 4).then_some(())
    })
    .await;
    // Another source is served meanwhile.
    let other = client_from("127.0.0.90");
    let mut r = other
        .get(format!("http://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    // Nothing of the answers can be sent: the connection is closed at the timeout.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    assert!(
        ended.is_ok(),
        "the zero-window connection kept: {:?}, {} upstream answers",
        gw.abuse_stats(),
        live.load(Ordering::SeqCst)
    );
    assert_eq!(gw.abuse_stats().send_timeouts, 1);
    eventually(5, "every upstream answer given up", || async {
        (live.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
}

/// The listen queue is what the listener says (4096 unless it says otherwise, as far
/// as the kernel's somaxconn allows), and a reload changes it on the same socket.
#[tokio::test]
async fn the_listen_backlog_is_configurable_and_reloadable() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let up = upstream::http1().await;
    let (gw, addr, _) = start_plain("", "", up).await;
    assert_eq!(listen_queue(addr), 4096.min(somaxconn));
    let want = 1500.min(somaxconn - 1);
    let (gw2, addr2, text) = start_plain(&format!("backlog = {want}"), "", up).await;
    assert_eq!(listen_queue(addr2), want);
    drop(gw);
    // A reload that changes it keeps the socket (same port) and changes the queue.
    let text = text.replace(&format!("backlog = {want}"), "backlog = 700");
    gw2.reload(Config::from_toml_str(&text, std::path::Path::new(".")).unwrap())
        .await
        .unwrap();
    assert_eq!(gw2.listener_addr("plain").await.unwrap(), addr2);
    assert_eq!(listen_queue(addr2), 700);
}

/// The listen queue of the socket listening on `addr`, as the kernel reports it
/// (`ss`: Send-Q of a listening socket).
fn listen_queue(addr: SocketAddr) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no socket: {text}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

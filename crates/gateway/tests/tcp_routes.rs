//! TCP routes end to end: a raw byte proxy to a real TCP echo upstream with half-close,
//! TLS terminated with a required client certificate, source refusals, idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use intraport_gateway::{Config, Gateway};
use support::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(echo: std::net::SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "tcp"
listen = "127.0.0.1:0"
protocol = "tcp"

[[listener]]
name = "refused"
listen = "127.0.0.1:0"
protocol = "tcp"

[[listener]]
name = "tls"
listen = "127.0.0.1:0"
protocol = "tls"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "client-ca.pem"
client_cert = "required"

[[listener]]
name = "idle"
listen = "127.0.0.1:0"
protocol = "tcp"

[[route]]
name = "echo"
listener = "tcp"
upstream = "{echo}"
[route.source]
allow = ["127.0.0.1"]

[[route]]
name = "refused"
listener = "refused"
upstream = "{echo}"
[route.source]
allow = ["10.0.0.0/8"]

[[route]]
name = "echo-tls"
listener = "tls"
upstream = "{echo}"
identity = "client_cert"
[route.source]
allow = ["127.0.0.1"]
[route.require]
client_cert_sans = ["dns:agent.example.test"]

[[route]]
name = "idle"
listener = "idle"
upstream = "{echo}"
idle_timeout_s = 1
[route.source]
allow = ["127.0.0.1"]
"#
    )
}

fn tls_connector(pki: &Pki, cert: &str) -> tokio_rustls::TlsConnector {
    let c = std::fs::read_to_string(pki.path(&format!("{cert}.pem"))).unwrap();
    let k = std::fs::read_to_string(pki.path(&format!("{cert}-key.pem"))).unwrap();
    let mut tls = support::client_tls(&pki.server_ca.pem, Some((&c, &k)), rustls::DEFAULT_VERSIONS);
    tls.alpn_protocols.clear();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

#[tokio::test]
async fn tcp_and_tls_routes_proxy_bytes_and_refuse_with_reasons() {
    let pki = Pki::new();
    let echo = support::upstream::tcp_echo().await;
    let cfg = Config::from_toml_str(&config(echo), &pki.dir).unwrap();
    let gw = Gateway::start(cfg).await.unwrap();

    // Plain TCP: 1 MiB up, a half-close, everything back, then EOF.
    let addr = gw.listener_addr("tcp").await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let writer = async {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let reader = r.read_to_end(&mut got);
    let ((), n) = tokio::join!(writer, reader);
    assert_eq!(n.unwrap(), sent.len());
    assert!(got == sent, "the echo came back altered");

    // A refused source: closed without a byte, counted.
    let refused = gw.listener_addr("refused").await.unwrap();
    let mut s = TcpStream::connect(refused).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    assert!(buf.is_empty());
    let stats = gw.listener_stats("refused").await.unwrap();
    support::eventually(5, "refusal counted", || async {
        (stats.refused.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;

    // TLS terminated here, with the client certificate checked against the route.
    let tls_addr = gw.listener_addr("tls").await.unwrap();
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let mut s = tls_connector(&pki, "agent")
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(b"dn: cn=agent\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"dn: cn=agent\n");
    // A verified certificate whose SAN the route does not allow.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let mut s = tls_connector(&pki, "other")
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let _ = s.write_all(b"x").await;
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert!(got.is_empty());
    let tls_stats = gw.listener_stats("tls").await.unwrap();
    support::eventually(5, "certificate refusal counted", || async {
        (tls_stats.refused.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    // No certificate: the handshake itself fails.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let mut plain = support::client_tls(&pki.server_ca.pem, None, rustls::DEFAULT_VERSIONS);
    plain.alpn_protocols.clear();
    let r = tokio_rustls::TlsConnector::from(Arc::new(plain))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await;
    // With TLS 1.3 the client learns of the refusal at its first read.
    if let Ok(mut s) = r {
        let _ = s.write_all(b"x").await;
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b).await, Ok(0) | Err(_)));
    }
    support::eventually(5, "missing certificate counted", || async {
        (tls_stats.handshake_failures_of(intraport_gateway::HandshakeFailure::ClientCertMissing)
            == 1)
            .then_some(())
    })
    .await;

    // Idle timeout: a quiet connection is closed after about a second.
    let idle = gw.listener_addr("idle").await.unwrap();
    let mut s = TcpStream::connect(idle).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    let quiet_since = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the idle connection must be closed")
        .unwrap();
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

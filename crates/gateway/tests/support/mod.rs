//! Shared pieces of the gateway's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod env;
pub mod mint;
pub mod pki;
pub mod real;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A gateway configuration from TOML text, or a panic that lists every error.
pub fn parse_config(text: &str, dir: &std::path::Path) -> intraport_gateway::Config {
    intraport_gateway::Config::from_toml_str(text, dir).unwrap_or_else(|e| {
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        panic!("{}", shown.join("\n"))
    })
}

/// Poll `f` until it returns `Some`, or panic after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server closes `s` (EOF or reset) within `secs`, reading past anything
/// it sends first.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, secs: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let drained = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), drained)
        .await
        .is_ok()
}

/// Whether the server resets `s` within `secs`, before sending anything: a refusal at
/// accept is a reset (zero linger), which leaves no TIME_WAIT socket on the gateway
/// per refused attempt.
pub async fn reset_within(s: &mut tokio::net::TcpStream, secs: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(Duration::from_secs(secs), s.read(&mut buf)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset
    )
}

/// A rustls client configuration trusting `ca_pem`, with an optional client
/// certificate, offering h2 and http/1.1.
pub fn client_tls(
    ca_pem: &str,
    client: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// A reqwest client over `tls`.
pub fn http_client(tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

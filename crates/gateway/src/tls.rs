//! TLS for listeners and upstreams: certificate and key from PEM files (swapped in when
//! the files change), TLS 1.2 minimum or 1.3 only, ALPN, optional or required client
//! certificates, and the reason a handshake failed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

/// The one crypto provider used everywhere (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Read a certificate chain and its private key, and check that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("reading certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading private key {}: {e}", key.display()))?;
    let ck = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        format!(
            "certificate {} with key {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(ck)
}

/// Read CA certificates (PEM) into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
    for c in iter {
        let c = c.map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(roots)
}

/// A server certificate that is re-read when its files change: handshakes always see
/// the last good pair; a bad new pair is logged and ignored.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl ReloadingCert {
    /// Load the pair now.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let ck = load_certified_key(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            current: ArcSwap::from_pointee(ck),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    /// Check the files' modification times every `interval` until cancelled, and swap
    /// in the new pair when they change and it loads.
    pub fn watch(self: &Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut seen = mtimes(&this.cert, &this.key);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let now = mtimes(&this.cert, &this.key);
                if now == seen {
                    continue;
                }
                seen = now;
                match load_certified_key(&this.cert, &this.key) {
                    Ok(ck) => {
                        this.current.store(Arc::new(ck));
                        tracing::info!(cert = %this.cert.display(), "server certificate reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "new server certificate rejected; keeping the previous one");
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Whether a listener asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Never asked for.
    None,
    /// Asked for; a presented certificate must verify, none is accepted.
    Optional,
    /// A verified certificate is required to complete the handshake.
    Required,
}

/// What a TLS listener needs, checked.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    /// Certificate chain file (PEM).
    pub cert: PathBuf,
    /// Private key file (PEM).
    pub key: PathBuf,
    /// True for TLS 1.3 only; TLS 1.2 and 1.3 otherwise.
    pub tls13_only: bool,
    /// CA certificates clients' certificates must chain to.
    pub client_ca: Option<Arc<RootCertStore>>,
    /// Whether client certificates are asked for.
    pub client_cert: ClientCertMode,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
}

/// A listener's TLS acceptor and the certificate it serves (re-read when its files
/// change): the one way both the configuration check and the running gateway build it,
/// so that `config check` refuses whatever would stop `serve` here. `http` offers ALPN
/// `h2` and `http/1.1`; a raw TLS listener offers none.
pub fn acceptor(
    spec: &TlsSpec,
    http: bool,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<ReloadingCert>), String> {
    let cert = ReloadingCert::load(&spec.cert, &spec.key)?;
    let alpn: &[&[u8]] = if http { &[b"h2", b"http/1.1"] } else { &[] };
    let cfg = server_config(spec, cert.clone(), alpn)?;
    Ok((tokio_rustls::TlsAcceptor::from(cfg), cert))
}

/// Build the rustls server configuration of a listener.
pub fn server_config(
    spec: &TlsSpec,
    cert: Arc<ReloadingCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if spec.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (spec.client_cert, &spec.client_ca) {
        (ClientCertMode::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(roots)) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let v = if mode == ClientCertMode::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("client CA: {e}"))?)
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Why a TLS handshake failed, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The client sent something that is not TLS.
    NotTls,
    /// No common protocol version (e.g. a TLS 1.2 client on a 1.3-only listener).
    ProtocolVersion,
    /// No common cipher suite, signature scheme or ALPN protocol.
    Incompatible,
    /// A client certificate was required and none was sent.
    ClientCertMissing,
    /// The client certificate did not verify (unknown CA, expired, bad usage).
    ClientCertInvalid,
    /// The client rejected our certificate (it sent an alert).
    PeerAlert,
    /// The client closed or reset the connection during the handshake.
    Eof,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Every reason, in a fixed order (counter indexes).
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::NotTls,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::Incompatible,
        HandshakeFailure::ClientCertMissing,
        HandshakeFailure::ClientCertInvalid,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Eof,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::ClientCertMissing => "client_cert_missing",
            HandshakeFailure::ClientCertInvalid => "client_cert_invalid",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classify the error of a failed `accept`.
    pub fn classify(e: &io::Error) -> HandshakeFailure {
        use rustls::{Error as E, PeerIncompatible as PI};
        let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => HandshakeFailure::Eof,
                io::ErrorKind::InvalidData => HandshakeFailure::NotTls,
                _ => HandshakeFailure::Other,
            };
        };
        match inner {
            E::InvalidMessage(_) => HandshakeFailure::NotTls,
            E::NoCertificatesPresented => HandshakeFailure::ClientCertMissing,
            E::InvalidCertificate(_) => HandshakeFailure::ClientCertInvalid,
            E::AlertReceived(_) => HandshakeFailure::PeerAlert,
            E::PeerIncompatible(
                PI::Tls12NotOffered
                | PI::Tls12NotOfferedOrEnabled
                | PI::SupportedVersionsExtensionRequired,
            ) => HandshakeFailure::ProtocolVersion,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => HandshakeFailure::Incompatible,
            E::PeerMisbehaved(_) => HandshakeFailure::NotTls,
            _ => HandshakeFailure::Other,
        }
    }
}

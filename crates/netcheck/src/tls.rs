//! The real TLS handshake (rustls): what was negotiated, the presented chain and its
//! validity, and — when the handshake fails — how it failed.
//!
//! The verifier records the chain and the standard verdict but lets the handshake
//! finish, so one connection yields both the negotiated parameters and every problem
//! with the certificate, instead of stopping at the first.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::tcp::{self, Counted, TcpOutcome};

/// What the chain verification concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum ChainVerdict {
    /// Trusted, in date, and valid for the name.
    Valid,
    /// No path to a trusted root.
    Untrusted,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate does not name the host.
    HostnameMismatch,
    /// Anything else the verifier refused.
    Invalid {
        /// The verifier's reason, in a sentence (see [`crate::explain`]).
        detail: String,
    },
}

/// One certificate of the presented chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Issuer common name, or organisation when there is no CN.
    pub issuer_name: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// DNS names and addresses the certificate is valid for.
    pub subject_alt_names: Vec<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo, base64 (the HPKP pin form).
    pub spki_sha256: String,
}

/// A completed handshake.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2` (the names `intraport pcap` and Wireshark use).
    pub version: String,
    /// IANA cipher suite name.
    pub cipher_suite: String,
    /// The ALPN protocol the server chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The chain as presented, leaf first.
    pub chain: Vec<CertSummary>,
    /// Verification against the trust store and the host name.
    pub verdict: ChainVerdict,
    /// Whether the server stapled an OCSP response.
    pub ocsp_stapled: bool,
    /// Days until the leaf expires (negative when expired).
    pub leaf_days_left: Option<i64>,
}

/// How a handshake attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum HandshakeOutcome {
    /// The handshake completed.
    Completed(Box<Negotiated>),
    /// The connection was reset; `server_bytes` is what the server sent first.
    Reset {
        /// Bytes received from the server before the reset.
        server_bytes: u64,
    },
    /// The connection was closed without a TLS alert.
    Closed {
        /// Bytes received from the server before the close.
        server_bytes: u64,
    },
    /// No handshake progress before the deadline.
    Stalled {
        /// Bytes received from the server before the deadline.
        server_bytes: u64,
    },
    /// The server sent a fatal alert.
    Alert {
        /// The alert's RFC name in snake case, e.g. `handshake_failure` (as
        /// `intraport pcap` names it).
        description: String,
    },
    /// TCP did not connect.
    NoConnection {
        /// The TCP outcome.
        tcp: TcpOutcome,
    },
    /// Any other failure.
    Failed {
        /// What went wrong, in a sentence (see [`crate::explain`]).
        detail: String,
    },
}

/// One handshake attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandshakeReport {
    /// Whether SNI was sent.
    pub sni: bool,
    /// What happened.
    #[serde(flatten)]
    pub outcome: HandshakeOutcome,
    /// Time from connect to outcome, in milliseconds.
    pub elapsed_ms: f64,
}

/// Settings for a handshake.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Trust anchors for chain verification.
    pub roots: Arc<RootCertStore>,
    /// Deadline for connect plus handshake.
    pub timeout: Duration,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    ocsp: bool,
    verdict: Option<Result<(), rustls::Error>>,
}

/// Records the chain and the standard verifier's verdict, and accepts, so the handshake
/// completes and the caller sees everything. Handshake signatures are still verified.
#[derive(Debug)]
struct Recorder {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Seen>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
            seen.ocsp = !ocsp_response.is_empty();
            seen.verdict = Some(verdict);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshake with `host` at `addr`, sending SNI or not.
pub async fn handshake(
    host: &str,
    addr: SocketAddr,
    sni: bool,
    settings: &TlsSettings,
) -> HandshakeReport {
    let started = Instant::now();
    let outcome = handshake_inner(host, addr, sni, settings).await;
    HandshakeReport {
        sni,
        outcome,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

async fn handshake_inner(
    host: &str,
    addr: SocketAddr,
    sni: bool,
    settings: &TlsSettings,
) -> HandshakeOutcome {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // An empty trust store cannot build a verifier; every chain is then untrusted.
    let inner = WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&settings.roots),
        Arc::clone(&provider),
    )
    .build()
    .ok();
    let recorder = Arc::new(Recorder {
        inner,
        provider: Arc::clone(&provider),
        seen: Mutex::new(Seen::default()),
    });
    let config = match ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            return HandshakeOutcome::Failed {
                detail: crate::explain::error(&e),
            };
        }
    };
    let mut config = config
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = settings.alpn.clone();
    let server_name = match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(e) => {
            return HandshakeOutcome::Failed {
                detail: format!("{host:?} is not a valid server name: {e}"),
            };
        }
    };
    let deadline = Instant::now() + settings.timeout;
    let (tcp_report, stream) = tcp::connect(addr, settings.timeout).await;
    let Some(stream) = stream else {
        return HandshakeOutcome::NoConnection {
            tcp: tcp_report.outcome,
        };
    };
    let (stream, server_bytes) = Counted::new(stream);
    let connector = TlsConnector::from(Arc::new(config));
    let remaining = deadline.saturating_duration_since(Instant::now());
    let result = tokio::time::timeout(remaining, connector.connect(server_name, stream)).await;
    let bytes = server_bytes.load(Ordering::Relaxed);
    let tls = match result {
        Err(_) => {
            return HandshakeOutcome::Stalled {
                server_bytes: bytes,
            };
        }
        Ok(Err(e)) => return classify_failure(&e, bytes),
        Ok(Ok(tls)) => tls,
    };
    let (_, conn) = tls.get_ref();
    let version = conn
        .protocol_version()
        .map(|v| version_name(u16::from(v)))
        .unwrap_or_default();
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|c| cipher_name(u16::from(c.suite())))
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let seen = match recorder.seen.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => Seen::default(),
    };
    let verdict = match seen.verdict {
        Some(Ok(())) => ChainVerdict::Valid,
        Some(Err(e)) => verdict_of(&e),
        None => ChainVerdict::Invalid {
            detail: "no certificate was presented".into(),
        },
    };
    let chain: Vec<CertSummary> = seen.chain.iter().filter_map(|c| summarize(c)).collect();
    let leaf_days_left = chain
        .first()
        .map(|leaf| days_left(leaf.not_after, SystemTime::now()));
    HandshakeOutcome::Completed(Box::new(Negotiated {
        version,
        cipher_suite,
        alpn,
        chain,
        verdict,
        ocsp_stapled: seen.ocsp,
        leaf_days_left,
    }))
}

fn classify_failure(e: &std::io::Error, server_bytes: u64) -> HandshakeOutcome {
    use std::io::ErrorKind;
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::AlertReceived(alert)) = tls_error {
        return HandshakeOutcome::Alert {
            description: intraport_capture::alert_name(u8::from(*alert)),
        };
    }
    match (e.kind(), tls_error) {
        (ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe, _) => {
            HandshakeOutcome::Reset { server_bytes }
        }
        (ErrorKind::UnexpectedEof, _) => HandshakeOutcome::Closed { server_bytes },
        (_, Some(tls)) => HandshakeOutcome::Failed {
            detail: crate::explain::error(tls),
        },
        (kind, None) => HandshakeOutcome::Failed {
            detail: format!("the connection failed during the handshake: {kind}"),
        },
    }
}

fn verdict_of(e: &rustls::Error) -> ChainVerdict {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => ChainVerdict::Untrusted,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ChainVerdict::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ChainVerdict::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ChainVerdict::HostnameMismatch
            }
            other => ChainVerdict::Invalid {
                detail: crate::explain::certificate(other),
            },
        },
        other => ChainVerdict::Invalid {
            detail: crate::explain::error(other),
        },
    }
}

/// Whole days from `now` to `not_after` (negative once past).
pub fn days_left(not_after: i64, now: SystemTime) -> i64 {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    };
    (not_after - now).div_euclid(86_400)
}

/// Summarize one DER certificate; None when it does not parse.
pub fn summarize(der: &CertificateDer<'_>) -> Option<CertSummary> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let issuer_name = cert
        .issuer()
        .iter_common_name()
        .chain(cert.issuer().iter_organization())
        .find_map(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => subject_alt_names.push(d.to_string()),
                GeneralName::IPAddress(ip) => subject_alt_names.push(ip_to_string(ip)),
                _ => {}
            }
        }
    }
    let spki = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    Some(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        issuer_name,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject_alt_names,
        spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki.as_ref()),
    })
}

fn ip_to_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let a: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            std::net::IpAddr::from(a).to_string()
        }
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::IpAddr::from(a).to_string()
        }
        _ => format!("{bytes:02x?}"),
    }
}

/// Trust anchors from the system store.
pub fn system_roots() -> (RootCertStore, Vec<String>) {
    let mut store = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let errors = loaded.errors.iter().map(|e| e.to_string()).collect();
    let (_added, _ignored) = store.add_parsable_certificates(loaded.certs);
    (store, errors)
}

/// Trust anchors from a PEM file.
pub fn roots_from_pem(path: &str) -> Result<RootCertStore, crate::Error> {
    let text = std::fs::read(path).map_err(|source| crate::Error::Read {
        path: path.to_string(),
        source,
    })?;
    let mut store = RootCertStore::empty();
    let mut reader = std::io::BufReader::new(text.as_slice());
    for (i, cert) in rustls_pemfile::certs(&mut reader).enumerate() {
        let cert = cert.map_err(|e| {
            crate::Error::input(path, format!("certificate {}", i + 1), e.to_string())
        })?;
        store.add(cert).map_err(|e| {
            crate::Error::input(path, format!("certificate {}", i + 1), e.to_string())
        })?;
    }
    if store.is_empty() {
        return Err(crate::Error::input(
            path,
            "certificates",
            "no PEM CERTIFICATE blocks found",
        ));
    }
    Ok(store)
}

/// The usual name of a protocol version (`TLSv1.3`), as `intraport pcap` reports it,
/// so that a check and a capture of it can be compared field by field.
pub(crate) fn version_name(v: u16) -> String {
    match v {
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        v => format!("0x{v:04x}"),
    }
}

/// The IANA name of a cipher suite (rustls's own names differ for TLS 1.3:
/// `TLS13_AES_128_GCM_SHA256` for IANA's `TLS_AES_128_GCM_SHA256`); the hex value
/// only for a number IANA has not assigned.
pub(crate) fn cipher_name(id: u16) -> String {
    tls_parser::TlsCipherSuite::from_id(id)
        .map(|c| c.name.to_string())
        .unwrap_or_else(|| format!("0x{id:04x}"))
}

//! Stages, their timing and the classification of failures, and the HTTP exchange
//! timed stage by stage.
//!
//! Why not reqwest here: a pooled client hides DNS, TCP connect and the TLS
//! handshake inside one `send()`, and the whole point of a probe is to tell them
//! apart. So each run resolves the name itself (hickory, through
//! `intraport-netcheck`), connects with tokio, shakes hands with tokio-rustls and
//! sends one HTTP/1.1 request over that connection with hyper's client connection,
//! timing each step on the monotonic clock.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use intraport_netcheck::dns::{ResolverSpec, resolve};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a stage failed: a fixed vocabulary, stored and used as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The name did not resolve.
    Dns,
    /// The TCP connection was refused, reset or unreachable.
    Connect,
    /// The TLS handshake failed (certificate, version, interception).
    Tls,
    /// The stage did not finish before the probe's deadline.
    Timeout,
    /// The HTTP exchange broke (connection closed, malformed response).
    Http,
    /// An HTTP status other than the expected one.
    HttpStatus,
    /// The token endpoint answered with an OAuth error (`error`, `error_codes`).
    TokenError,
    /// The token endpoint answered success but no usable token.
    BadResponse,
    /// The token did not validate (code of the token error vocabulary).
    Validation,
    /// The LDAP bind was refused (LDAP result code).
    LdapBind,
    /// The LDAP search failed (LDAP result code).
    LdapSearch,
    /// The LDAP search returned fewer entries than required.
    TooFewEntries,
    /// The LDAP session broke (protocol or connection error).
    Ldap,
    /// Writing the replication marker was refused (LDAP result code).
    LdapWrite,
    /// A replica did not show the marker within the replication deadline.
    ReplicationTimeout,
}

impl FailureClass {
    /// Every class.
    pub const ALL: [FailureClass; 15] = [
        FailureClass::Dns,
        FailureClass::Connect,
        FailureClass::Tls,
        FailureClass::Timeout,
        FailureClass::Http,
        FailureClass::HttpStatus,
        FailureClass::TokenError,
        FailureClass::BadResponse,
        FailureClass::Validation,
        FailureClass::LdapBind,
        FailureClass::LdapSearch,
        FailureClass::TooFewEntries,
        FailureClass::Ldap,
        FailureClass::LdapWrite,
        FailureClass::ReplicationTimeout,
    ];

    /// The class of a stored name.
    pub fn parse(s: &str) -> Option<FailureClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Dns => "dns",
            FailureClass::Connect => "connect",
            FailureClass::Tls => "tls",
            FailureClass::Timeout => "timeout",
            FailureClass::Http => "http",
            FailureClass::HttpStatus => "http_status",
            FailureClass::TokenError => "token_error",
            FailureClass::BadResponse => "bad_response",
            FailureClass::Validation => "validation",
            FailureClass::LdapBind => "ldap_bind",
            FailureClass::LdapSearch => "ldap_search",
            FailureClass::TooFewEntries => "too_few_entries",
            FailureClass::Ldap => "ldap",
            FailureClass::LdapWrite => "ldap_write",
            FailureClass::ReplicationTimeout => "replication_timeout",
        }
    }
}

/// What went wrong in a stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageError {
    /// The class.
    pub class: FailureClass,
    /// A machine-readable code when there is one: the OAuth `error` (with
    /// `error_codes`), the token error code, the HTTP status or gateway error code,
    /// the LDAP result code.
    pub code: Option<String>,
    /// For people.
    pub detail: String,
}

impl StageError {
    /// A failure without a code.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        Self {
            class,
            code: None,
            detail: detail.into(),
        }
    }

    /// A failure with a code.
    pub fn coded(class: FailureClass, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            class,
            code: Some(code.into()),
            detail: detail.into(),
        }
    }
}

/// The failure of a run: the stage and what went wrong there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// The stage that failed.
    pub stage: String,
    /// What went wrong.
    #[serde(flatten)]
    pub error: StageError,
}

/// One timed stage of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageResult {
    /// Stage name (see the crate documentation for the list).
    pub stage: String,
    /// Time taken, in milliseconds.
    pub duration_ms: f64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Runs stages one after the other under one deadline and keeps their timings.
pub(crate) struct Recorder {
    pub(crate) stages: Vec<StageResult>,
    deadline: tokio::time::Instant,
}

impl Recorder {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self::until(tokio::time::Instant::now() + timeout)
    }

    /// A recorder whose stages end at `deadline`.
    pub(crate) fn until(deadline: tokio::time::Instant) -> Self {
        Self {
            stages: Vec::new(),
            deadline,
        }
    }

    /// The end of the run.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Time `fut` as stage `name`; a failure or the deadline fails the stage.
    pub(crate) async fn stage<T>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, StageError>>,
    ) -> Result<T, Failure> {
        let start = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, fut).await;
        let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(StageError::new(
                FailureClass::Timeout,
                format!(
                    "no answer within the probe's deadline ({duration_ms:.0} ms in this stage)"
                ),
            )),
        };
        self.stages.push(StageResult {
            stage: name.to_string(),
            duration_ms,
            ok: result.is_ok(),
        });
        result.map_err(|error| Failure {
            stage: name.to_string(),
            error,
        })
    }
}

/// A TLS client configuration trusting the system's roots plus `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    tls_config_with_identity(ca_file, None)
}

/// [`tls_config`], presenting the client certificate chain and key of the PEM
/// files `identity` (certificate, key) when given.
pub fn tls_config_with_identity(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("{}: no PEM certificate in it", cert.display()));
            }
            let private = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| format!("{}: {e}", key.display()))?
                .ok_or_else(|| format!("{}: no PEM private key in it", key.display()))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolve `host` (stage `{prefix}_dns`, skipped for an IP literal) and connect
/// (stage `{prefix}_connect`).
pub(crate) async fn connect(
    rec: &mut Recorder,
    prefix: &str,
    host: &str,
    port: u16,
) -> Result<TcpStream, Failure> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            rec.stage(&format!("{prefix}_dns"), async {
                let answer = resolve(host, &ResolverSpec::System, Duration::from_secs(5)).await;
                match answer.error {
                    Some(e) => Err(StageError::new(FailureClass::Dns, format!("{host}: {e}"))),
                    None if answer.addresses.is_empty() => Err(StageError::new(
                        FailureClass::Dns,
                        format!("{host}: no address"),
                    )),
                    None => Ok(answer.addresses),
                }
            })
            .await?
        }
    };
    rec.stage(&format!("{prefix}_connect"), async {
        let mut last = String::new();
        for ip in &addrs {
            match TcpStream::connect(SocketAddr::new(*ip, port)).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = format!("{ip}:{port}: {e}"),
            }
        }
        Err(StageError::new(FailureClass::Connect, last))
    })
    .await
}

/// One HTTP response, whole.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// A request to send.
pub(crate) struct HttpRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a url::Url,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<(String, &'static str)>,
}

/// DNS, connect, TLS (for `https`) and the exchange (stage `{prefix}_response`:
/// request sent to last body byte), each its own stage.
pub(crate) async fn http_exchange(
    rec: &mut Recorder,
    prefix: &str,
    tls: &Arc<rustls::ClientConfig>,
    req: HttpRequest<'_>,
) -> Result<HttpResponse, Failure> {
    let host = req.url.host_str().unwrap_or_default().to_string();
    let port = req.url.port_or_known_default().unwrap_or(443);
    let tcp = connect(rec, prefix, &host, port).await?;
    if req.url.scheme() == "https" {
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| Failure {
            stage: format!("{prefix}_tls"),
            error: StageError::new(FailureClass::Tls, format!("{host}: {e}")),
        })?;
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream = rec
            .stage(&format!("{prefix}_tls"), async {
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| StageError::new(FailureClass::Tls, tls_error_text(&e)))
            })
            .await?;
        rec.stage(&format!("{prefix}_response"), send(stream, &req))
            .await
    } else {
        rec.stage(&format!("{prefix}_response"), send(tcp, &req))
            .await
    }
}

fn tls_error_text(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

async fn send<S>(io: S, req: &HttpRequest<'_>) -> Result<HttpResponse, StageError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: &dyn std::fmt::Display| StageError::new(FailureClass::Http, e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http_err(&e))?;
    let driver = tokio::spawn(conn);
    let mut path = req.url.path().to_string();
    if let Some(q) = req.url.query() {
        path.push('?');
        path.push_str(q);
    }
    let authority = match (req.url.host_str(), req.url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let mut builder = hyper::Request::builder()
        .method(req.method)
        .uri(path)
        .header("host", authority)
        .header(
            "user-agent",
            concat!("intraport-probe/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &req.headers {
        builder = builder.header(*k, v);
    }
    let body = match &req.body {
        Some((text, content_type)) => {
            builder = builder.header("content-type", *content_type);
            Full::new(Bytes::from(text.clone()))
        }
        None => Full::new(Bytes::new()),
    };
    let request = builder.body(body).map_err(|e| http_err(&e))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| http_err(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http_err(&e))?
        .to_bytes();
    driver.abort();
    Ok(HttpResponse { status, body })
}

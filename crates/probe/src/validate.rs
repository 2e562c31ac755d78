//! Staging validation (`intraport validate --plan FILE`): live authentication flows
//! through a gateway, each case checked against its expectation, run in parallel;
//! results as JSON and JUnit XML; with a second gateway, every case whose outcome
//! differs (the cutover check).
//!
//! The plan:
//!
//! ```toml
//! gateway = "https://staging-gw.contoso.example"   # base URL; case paths go below it
//! ca_file = "ca.pem"          # extra CA for the gateway and the token endpoints
//! concurrency = 8             # cases in flight at once (default 8)
//!
//! [[identity]]
//! name = "reader"
//! kind = "client_credentials" # password | token_file | client_cert | none
//! token_endpoint = "https://login.microsoftonline.com/TENANT/oauth2/v2.0/token"
//! client_id = "..."
//! client_secret = "..."       # or client_secret_env = "VAR"
//! scope = ["api://intraport-demo/.default"]   # or resource = "..."
//! # password: username, password / password_env; token_file: file = "token.txt";
//! # client_cert: cert = "client.pem", key = "client.key" (PEM)
//!
//! [[case]]
//! name = "reader reads orders"
//! identity = "reader"         # an [[identity]] name, or "none" (no credential)
//! method = "GET"              # default GET
//! path = "/orders"
//! headers = { "x-request-id" = "validate-1" }
//!
//! [case.expect]
//! status = 200
//! allowed = true              # the gateway let it through (not 401/403)
//! error = "role_missing"      # the gateway's error code (JSON body `error`)
//! upstream_identity = { "x-intraport-roles" = "Reader" }
//! ```
//!
//! `upstream_identity` is read from the upstream's answer: a JSON body whose
//! `identity` object holds the `X-Intraport-*` headers it received, as the demo
//! upstream of `intraport dev` answers.
//!
//! A request that gets no HTTP answer has status 0 and an `error` code saying why,
//! so a plan can expect it too (the message is in `detail`): `connect_failed`,
//! `timeout`, `tls_alert_<alert>` when the gateway refused the TLS handshake with an
//! alert (`tls_alert_certificate_required` for no client certificate on a listener
//! that requires one, `tls_alert_unknown_ca` or `tls_alert_bad_certificate` for one
//! it does not trust), `tls_failed` when this side refused it (e.g. the gateway's
//! certificate), `no_answer` otherwise. A TLS 1.3 server refuses a client
//! certificate after the client has finished its side of the handshake, so the
//! request can fail writing before the alert is read; when a request gets no answer
//! for no reason the client could see, one more connection with the same identity
//! shakes hands and only reads, and the alert it gets names the refusal. Outcomes,
//! and `--compare`, thus do not depend on that race.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intraport_token::client::{Grant, Target, acquire};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    gateway: Option<String>,
    ca_file: Option<PathBuf>,
    concurrency: Option<usize>,
    #[serde(default)]
    identity: Vec<Spanned<RawIdentity>>,
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    kind: String,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    resource: Option<String>,
    file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    identity: String,
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: Expect,
}

/// What a case expects; absent fields are not checked.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Let through by the gateway (not 401/403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// The gateway's error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Identity headers the upstream saw (name lower-case → value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_identity: BTreeMap<String, String>,
}

/// How a case gets its credential.
#[derive(Clone, Debug)]
pub enum IdentitySpec {
    /// A token from a grant.
    Grant {
        /// Token endpoint.
        endpoint: String,
        /// The grant.
        grant: Grant,
        /// Scopes or resource.
        target: Target,
    },
    /// A token read from a file.
    TokenFile(PathBuf),
    /// A client certificate and key (PEM) for mTLS.
    ClientCert {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// No credential.
    None,
}

/// One checked case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Name.
    pub name: String,
    /// Identity name.
    pub identity: String,
    /// HTTP method.
    pub method: String,
    /// Path (and query) below the gateway URL.
    pub path: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Expectation.
    pub expect: Expect,
}

/// A checked plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The gateway base URL, if the plan names one.
    pub gateway: Option<String>,
    /// Extra CA.
    pub ca_file: Option<PathBuf>,
    /// Cases in flight at once.
    pub concurrency: usize,
    /// Identities by name.
    pub identities: BTreeMap<String, IdentitySpec>,
    /// Cases, in file order.
    pub cases: Vec<Case>,
}

/// Read and check a plan file.
pub fn load_plan(path: &Path) -> Result<Plan, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse_plan(&text, path, path.parent().unwrap_or(Path::new(".")))
}

/// Check a plan given as text.
pub fn parse_plan(text: &str, file: &Path, base: &Path) -> Result<Plan, Vec<ConfigError>> {
    let line_of = |offset: usize| {
        text.get(..offset)
            .map(|s| s.matches('\n').count() + 1)
            .unwrap_or(0)
    };
    let raw: RawPlan = toml::from_str(text).map_err(|e| {
        vec![ConfigError {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(s.start)).unwrap_or(0),
            field: String::new(),
            message: e.message().to_string(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut err = |at: usize, field: String, message: String| {
        errors.push(ConfigError {
            file: file.to_path_buf(),
            line: line_of(at),
            field,
            message,
        })
    };
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let mut identities = BTreeMap::new();
    identities.insert("none".to_string(), IdentitySpec::None);
    for sp in raw.identity {
        let at = sp.span().start;
        let i = sp.into_inner();
        let f = |field: &str| format!("identity[{}].{field}", i.name);
        let secret = |v: Option<String>, env: Option<String>, what: &str| match (v, env) {
            (Some(v), None) => Ok(Some(v)),
            (None, Some(var)) => std::env::var(&var)
                .map(Some)
                .map_err(|_| format!("environment variable `{var}` is not set")),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(format!("give `{what}` or `{what}_env`, not both")),
        };
        let spec = match i.kind.as_str() {
            "client_credentials" | "password" => {
                let (Some(endpoint), Some(client_id)) =
                    (i.token_endpoint.clone(), i.client_id.clone())
                else {
                    err(
                        at,
                        f("token_endpoint"),
                        "a grant needs `token_endpoint` and `client_id`".into(),
                    );
                    continue;
                };
                let target = match (i.scope.is_empty(), i.resource.clone()) {
                    (false, None) => Target::Scopes(i.scope.clone()),
                    (true, Some(r)) => Target::Resource(r),
                    _ => {
                        err(
                            at,
                            f("scope"),
                            "give `scope` or `resource`, exactly one".into(),
                        );
                        continue;
                    }
                };
                let client_secret =
                    match secret(i.client_secret, i.client_secret_env, "client_secret") {
                        Ok(s) => s,
                        Err(m) => {
                            err(at, f("client_secret"), m);
                            continue;
                        }
                    };
                let grant = if i.kind == "password" {
                    let password = match secret(i.password, i.password_env, "password") {
                        Ok(Some(p)) => p,
                        Ok(None) => {
                            err(
                                at,
                                f("password"),
                                "the password grant needs `password` or `password_env`".into(),
                            );
                            continue;
                        }
                        Err(m) => {
                            err(at, f("password"), m);
                            continue;
                        }
                    };
                    let Some(username) = i.username else {
                        err(
                            at,
                            f("username"),
                            "the password grant needs `username`".into(),
                        );
                        continue;
                    };
                    Grant::Password {
                        client_id,
                        client_secret,
                        username,
                        password,
                    }
                } else {
                    let Some(client_secret) = client_secret else {
                        err(
                            at,
                            f("client_secret"),
                            "client credentials need `client_secret` or `client_secret_env`".into(),
                        );
                        continue;
                    };
                    Grant::ClientCredentials {
                        client_id,
                        client_secret,
                    }
                };
                IdentitySpec::Grant {
                    endpoint,
                    grant,
                    target,
                }
            }
            "token_file" => match i.file {
                Some(p) => IdentitySpec::TokenFile(resolve(p)),
                None => {
                    err(at, f("file"), "a token_file identity needs `file`".into());
                    continue;
                }
            },
            "client_cert" => match (i.cert, i.key) {
                (Some(c), Some(k)) => IdentitySpec::ClientCert {
                    cert: resolve(c),
                    key: resolve(k),
                },
                _ => {
                    err(
                        at,
                        f("cert"),
                        "a client_cert identity needs `cert` and `key`".into(),
                    );
                    continue;
                }
            },
            "none" => IdentitySpec::None,
            other => {
                err(
                    at,
                    f("kind"),
                    format!(
                        "`{other}` is not client_credentials, password, token_file, client_cert or none"
                    ),
                );
                continue;
            }
        };
        if identities.insert(i.name.clone(), spec).is_some() {
            err(at, f("name"), "duplicate identity name".into());
        }
    }
    let mut cases = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for sp in raw.case {
        let at = sp.span().start;
        let c = sp.into_inner();
        if !identities.contains_key(&c.identity) {
            err(
                at,
                format!("case[{}].identity", c.name),
                format!("no identity named `{}`", c.identity),
            );
        }
        if !c.path.starts_with('/') {
            err(
                at,
                format!("case[{}].path", c.name),
                format!("`{}` must start with /", c.path),
            );
        }
        if !names.insert(c.name.clone()) {
            err(
                at,
                format!("case[{}].name", c.name),
                "duplicate case name".into(),
            );
        }
        cases.push(Case {
            name: c.name,
            identity: c.identity,
            method: c
                .method
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase(),
            path: c.path,
            headers: c.headers,
            expect: c.expect,
        });
    }
    if cases.is_empty() {
        err(0, "case".into(), "no `[[case]]` defined".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        gateway: raw.gateway,
        ca_file: raw.ca_file.map(resolve),
        concurrency: raw.concurrency.unwrap_or(8).max(1),
        identities,
        cases,
    })
}

/// What a case saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observed {
    /// HTTP status (0 when no answer).
    pub status: u16,
    /// Let through by the gateway (not 401/403).
    pub allowed: bool,
    /// The gateway's error code, or why there was no answer (a code, see the
    /// module documentation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why there was no answer, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Identity headers the upstream reported.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_identity: BTreeMap<String, String>,
}

/// One case's result.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Identity used.
    pub identity: String,
    /// Method and URL.
    pub request: String,
    /// Expectation met.
    pub passed: bool,
    /// Expected.
    pub expected: Expect,
    /// Observed.
    pub observed: Observed,
    /// Each unmet expectation: "field: expected X, got Y".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
    /// Time taken, ms.
    pub duration_ms: f64,
}

/// A whole run against one gateway.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The gateway.
    pub gateway: String,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Every case, in plan order.
    pub cases: Vec<CaseResult>,
}

/// A case whose outcome differs between two gateways.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// Case name.
    pub case: String,
    /// Outcome on the first gateway.
    pub primary: Observed,
    /// Outcome on the other.
    pub other: Observed,
}

/// Why validation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A file of the plan could not be read or used.
    #[error("{0}")]
    Setup(String),
}

/// An identity ready to send: the HTTP client (with its certificate, if any), the
/// bearer token, and the TLS configuration of the diagnostic handshake.
struct Credential {
    client: reqwest::Client,
    token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

struct Prepared {
    clients: BTreeMap<String, Credential>,
    failures: BTreeMap<String, String>,
}

fn client_builder(ca: Option<&[u8]>) -> Result<reqwest::ClientBuilder, ValidateError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca {
        for c in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ValidateError::Setup(format!("ca_file: {e}")))?
        {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// Acquire each identity's credential once: a token, or a client with the
/// certificate. An identity whose token cannot be had fails its cases (with the
/// token endpoint's error), not the whole run.
async fn prepare(plan: &Plan) -> Result<Prepared, ValidateError> {
    let ca = match &plan.ca_file {
        Some(p) => Some(
            std::fs::read(p).map_err(|e| ValidateError::Setup(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let plain = client_builder(ca.as_deref())?
        .build()
        .map_err(|e| ValidateError::Setup(e.to_string()))?;
    let plain_tls =
        crate::timing::tls_config(plan.ca_file.as_deref()).map_err(ValidateError::Setup)?;
    let credential = |client: &reqwest::Client, token: Option<String>| Credential {
        client: client.clone(),
        token,
        tls: plain_tls.clone(),
    };
    let mut clients = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let used: std::collections::BTreeSet<&str> =
        plan.cases.iter().map(|c| c.identity.as_str()).collect();
    for (name, spec) in &plan.identities {
        if !used.contains(name.as_str()) {
            continue;
        }
        match spec {
            IdentitySpec::None => {
                clients.insert(name.clone(), credential(&plain, None));
            }
            IdentitySpec::TokenFile(p) => {
                let token = std::fs::read_to_string(p)
                    .map_err(|e| ValidateError::Setup(format!("{}: {e}", p.display())))?;
                clients.insert(
                    name.clone(),
                    credential(&plain, Some(token.trim().to_string())),
                );
            }
            IdentitySpec::Grant {
                endpoint,
                grant,
                target,
            } => match acquire(&plain, endpoint, grant, target).await {
                Ok(t) => {
                    clients.insert(name.clone(), credential(&plain, Some(t.access_token)));
                }
                Err(e) => {
                    failures.insert(name.clone(), format!("no token for identity {name}: {e}"));
                }
            },
            IdentitySpec::ClientCert { cert, key } => {
                let mut pem = std::fs::read(cert)
                    .map_err(|e| ValidateError::Setup(format!("{}: {e}", cert.display())))?;
                pem.extend(
                    std::fs::read(key)
                        .map_err(|e| ValidateError::Setup(format!("{}: {e}", key.display())))?,
                );
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ValidateError::Setup(format!("{}: {e}", cert.display())))?;
                let client = client_builder(ca.as_deref())?
                    .identity(id)
                    .build()
                    .map_err(|e| ValidateError::Setup(e.to_string()))?;
                let tls = crate::timing::tls_config_with_identity(
                    plan.ca_file.as_deref(),
                    Some((cert.as_path(), key.as_path())),
                )
                .map_err(ValidateError::Setup)?;
                clients.insert(
                    name.clone(),
                    Credential {
                        client,
                        token: None,
                        tls,
                    },
                );
            }
        }
    }
    Ok(Prepared { clients, failures })
}

/// Run every case of `plan` against `gateway` (a base URL).
pub async fn run_plan(plan: &Plan, gateway: &str) -> Result<RunReport, ValidateError> {
    let prepared = Arc::new(prepare(plan).await?);
    let limit = Arc::new(tokio::sync::Semaphore::new(plan.concurrency));
    let base = gateway.trim_end_matches('/').to_string();
    let mut tasks = Vec::new();
    for case in plan.cases.clone() {
        let prepared = prepared.clone();
        let limit = limit.clone();
        let url = format!("{base}{}", case.path);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            run_case(&prepared, case, url).await
        }));
    }
    let mut cases = Vec::new();
    for t in tasks {
        cases.push(
            t.await
                .map_err(|e| ValidateError::Setup(format!("a case task failed: {e}")))?,
        );
    }
    let passed = cases.iter().filter(|c| c.passed).count();
    Ok(RunReport {
        gateway: gateway.to_string(),
        passed,
        failed: cases.len() - passed,
        cases,
    })
}

async fn run_case(prepared: &Prepared, case: Case, url: String) -> CaseResult {
    let start = Instant::now();
    let observed = match (
        prepared.clients.get(&case.identity),
        prepared.failures.get(&case.identity),
    ) {
        (Some(cred), _) => {
            let method =
                reqwest::Method::from_bytes(case.method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut req = cred.client.request(method, &url);
            for (k, v) in &case.headers {
                req = req.header(k, v);
            }
            if let Some(t) = &cred.token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: Option<serde_json::Value> = resp.json().await.ok();
                    let error = (status >= 400)
                        .then(|| {
                            body.as_ref()
                                .and_then(|b| b.get("error"))
                                .and_then(|e| e.as_str())
                                .map(String::from)
                        })
                        .flatten();
                    let upstream_identity = body
                        .as_ref()
                        .and_then(|b| b.get("identity"))
                        .and_then(|i| i.as_object())
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_ascii_lowercase(),
                                        v.as_str()
                                            .map(String::from)
                                            .unwrap_or_else(|| v.to_string()),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Observed {
                        status,
                        allowed: status != 401 && status != 403,
                        error,
                        detail: None,
                        upstream_identity,
                    }
                }
                Err(e) => {
                    let mut code = transport_code(&e);
                    if code == "no_answer"
                        && let Some(refusal) = tls_refusal(&url, &cred.tls).await
                    {
                        code = refusal;
                    }
                    Observed::none(code, format!("no answer: {}", error_chain(&e)))
                }
            }
        }
        (None, Some(why)) => Observed::none("identity_unavailable".into(), why.clone()),
        (None, None) => Observed::none(
            "identity_unavailable".into(),
            format!("identity {} unavailable", case.identity),
        ),
    };
    let mismatches = check(&case.expect, &observed);
    CaseResult {
        name: case.name,
        identity: case.identity,
        request: format!("{} {url}", case.method),
        passed: mismatches.is_empty(),
        expected: case.expect,
        observed,
        mismatches,
        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}

impl Observed {
    /// No HTTP answer: status 0, a code and a message.
    fn none(code: String, detail: String) -> Observed {
        Observed {
            status: 0,
            allowed: false,
            error: Some(code),
            detail: Some(detail),
            upstream_identity: BTreeMap::new(),
        }
    }
}

/// The code of a request that got no HTTP answer.
fn transport_code(e: &reqwest::Error) -> String {
    if let Some(code) = tls_code(e) {
        code
    } else if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect_failed".into()
    } else {
        "no_answer".into()
    }
}

/// The TLS failure in `e`'s chain: `tls_alert_<alert>` for an alert from the
/// server, `tls_failed` for one of this side.
fn tls_code(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(tls) = typed_tls_error(x) {
            return Some(match tls {
                rustls::Error::AlertReceived(alert) => {
                    format!("tls_alert_{}", snake(&format!("{alert:?}")))
                }
                _ => "tls_failed".into(),
            });
        }
        // An alert read after the handshake reaches us as an I/O error that
        // carries only rustls's text for it.
        let text = x.to_string();
        if let Some((_, rest)) = text.split_once("received fatal alert: ") {
            let name: String = rest
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            if !name.is_empty() {
                return Some(format!("tls_alert_{}", snake(&name)));
            }
        }
        cur = x.source();
    }
    None
}

/// Why the server at `url` (https) refuses this client at the TLS layer, if it
/// does: a new connection with the identity's configuration that completes the
/// handshake and then only reads, so the alert of a refusal that comes after the
/// client's side of the handshake (TLS 1.3 client certificates) is always read.
async fn tls_refusal(url: &str, tls: &Arc<rustls::ClientConfig>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let url = url::Url::parse(url).ok()?;
    if url.scheme() != "https" {
        return None;
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default()?;
    let name = rustls::pki_types::ServerName::try_from(host.clone()).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let mut stream = match tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
        {
            Ok(s) => s,
            Err(e) => return tls_code(&e),
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await {
            Ok(Err(e)) => tls_code(&e),
            // Accepted (nothing to read, or the server closed cleanly).
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// `x` as a rustls error, or the rustls error an I/O error carries.
fn typed_tls_error<'a>(x: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    x.downcast_ref::<rustls::Error>().or_else(|| {
        x.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

/// `CertificateRequired` → `certificate_required`, `UnknownCA` → `unknown_ca`.
fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if !prev.is_ascii_uppercase() || next_lower {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Every unmet expectation, "field: expected X, got Y".
pub fn check(expect: &Expect, seen: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let got_error = seen.error.as_deref().unwrap_or("none");
    if let Some(s) = expect.status
        && s != seen.status
    {
        out.push(format!(
            "status: expected {s}, got {} (error: {got_error})",
            seen.status
        ));
    }
    if let Some(a) = expect.allowed
        && a != seen.allowed
    {
        out.push(format!(
            "allowed: expected {a}, got {} (status {}, error: {got_error})",
            seen.allowed, seen.status
        ));
    }
    if let Some(e) = &expect.error
        && Some(e) != seen.error.as_ref()
    {
        out.push(format!("error: expected {e}, got {got_error}"));
    }
    for (k, v) in &expect.upstream_identity {
        let k = k.to_ascii_lowercase();
        match seen.upstream_identity.get(&k) {
            Some(got) if got == v => {}
            Some(got) => out.push(format!(
                "upstream_identity.{k}: expected {v:?}, got {got:?}"
            )),
            None => out.push(format!(
                "upstream_identity.{k}: expected {v:?}, the upstream did not see it"
            )),
        }
    }
    out
}

/// Cases whose outcome (status, allowed, error) differs between two runs.
pub fn compare(a: &RunReport, b: &RunReport) -> Vec<Difference> {
    a.cases
        .iter()
        .zip(&b.cases)
        .filter(|(x, y)| {
            (x.observed.status, x.observed.allowed, &x.observed.error)
                != (y.observed.status, y.observed.allowed, &y.observed.error)
        })
        .map(|(x, y)| Difference {
            case: x.name.clone(),
            primary: x.observed.clone(),
            other: y.observed.clone(),
        })
        .collect()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML of one or two runs (one `<testsuite>` per gateway), the format CI
/// systems show as test results.
pub fn junit(runs: &[&RunReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = runs.iter().map(|r| r.cases.len()).sum();
    let failures: usize = runs.iter().map(|r| r.failed).sum();
    out.push_str(&format!(
        "<testsuites name=\"intraport validate\" tests=\"{tests}\" failures=\"{failures}\">\n"
    ));
    for r in runs {
        let time: f64 = r.cases.iter().map(|c| c.duration_ms).sum::<f64>() / 1000.0;
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{time:.3}\">\n",
            xml(&r.gateway),
            r.cases.len(),
            r.failed
        ));
        for c in &r.cases {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml(&r.gateway),
                xml(&c.name),
                c.duration_ms / 1000.0
            ));
            if c.passed {
                out.push_str("/>\n");
            } else {
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(&c.mismatches.join("; ")),
                    xml(&format!("{}\n{}", c.request, c.mismatches.join("\n")))
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn plan_errors_are_located() {
        let e = parse_plan(
            "[[case]]\nname = \"a\"\nidentity = \"ghost\"\npath = \"x\"\n[case.expect]\nstatus = 200\n",
            Path::new("plan.toml"),
            Path::new("."),
        )
        .unwrap_err();
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(
            text[0].starts_with("plan.toml:1: case[a].identity: no identity named `ghost`"),
            "{text:?}"
        );
        assert!(
            text[1].contains("case[a].path: `x` must start with /"),
            "{text:?}"
        );
        let e = parse_plan(
            "[[identity]]\nname = \"i\"\nkind = \"kerberos\"\n",
            Path::new("plan.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e[0].to_string().contains("identity[i].kind: `kerberos`"),
            "{e:?}"
        );
    }

    #[test]
    fn tls_alert_names_are_snake_case() {
        assert_eq!(snake("CertificateRequired"), "certificate_required");
        assert_eq!(snake("UnknownCA"), "unknown_ca");
        assert_eq!(snake("TLSAlertX"), "tls_alert_x");
        assert_eq!(snake("BadCertificate"), "bad_certificate");
    }

    #[test]
    fn mismatches_say_expected_and_got() {
        let expect = Expect {
            status: Some(200),
            allowed: Some(true),
            error: None,
            upstream_identity: BTreeMap::from([("X-Intraport-Roles".into(), "Reader".into())]),
        };
        let seen = Observed {
            status: 403,
            allowed: false,
            error: Some("role_missing".into()),
            detail: None,
            upstream_identity: BTreeMap::new(),
        };
        assert_eq!(
            check(&expect, &seen),
            [
                "status: expected 200, got 403 (error: role_missing)",
                "allowed: expected true, got false (status 403, error: role_missing)",
                "upstream_identity.x-intraport-roles: expected \"Reader\", the upstream did not see it",
            ]
        );
    }
}

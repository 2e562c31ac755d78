//! Configuration: the TOML file (see `examples/gateway.toml`), read into raw serde
//! structs that reject unknown keys, then validated into a [`Config`], the only form
//! the data plane sees. Validation reports **every** problem with its file, line,
//! column and field path: unknown keys, wrong types, bad addresses and CIDRs,
//! unreadable or mismatched certificates, unknown listener and provider names,
//! overlapping routes, and combinations that cannot work (a TLS listener without a
//! certificate, a route needing a client certificate on a listener that asks for none,
//! a file without listeners, a listener on the admin listener's port).
//!
//! It is the one validation of `config check`, start-up and reload: what the gateway
//! builds at start and could fail on is built here once too (TLS acceptors, upstream
//! clients, identity-provider clients), and every file named is looked at on its own
//! (audit sinks' files through [`intraport_audit::AuditConfig::check_files`], which
//! creates nothing), so that one run reports every missing file and a file that
//! passes can fail at start only to bind its sockets.
//!
//! String values may refer to the environment: `${NAME}` (an error when unset or
//! empty) or `${NAME:-default}`; `$$` is a literal `$`.

mod doc;
mod limits;
mod raw;

pub use limits::{AbuseConfig, ListenerLimits, RouteLimits, StoreConfig};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use intraport_policy::{
    CertRequirements, CidrSet, ClaimRequirements, IdentityRequirement, RouteEntry, RoutePolicy,
    RouteTable, SourceRule,
};
use intraport_token::{IdentityKind, ProviderConfig, ProviderSettings, SetupError};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::tls::{self, ClientCertMode, TlsSpec};
use doc::{Diagnostics, join, typed};
use raw::{RawAdmin, RawListener, RawRoute, RawServer, RawTls};

/// One configuration problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// 1-based line (0 when the problem is not at one place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, e.g. `route[2].source.allow[1]` (empty for the whole file).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "<config>".to_string(), |p| p.display().to_string());
        if self.line > 0 {
            write!(f, "{file}:{}:{}: ", self.line, self.column)?;
        } else {
            write!(f, "{file}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 over TLS.
    Https,
    /// Plain HTTP/1.1 (and HTTP/2 with prior knowledge); only when written explicitly.
    Http,
    /// Raw TCP, proxied byte for byte (TLS passes through untouched).
    Tcp,
    /// TLS terminated here, then raw bytes to the upstream.
    Tls,
}

impl Protocol {
    /// Whether the listener carries HTTP routes.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Http)
    }

    /// Whether the listener terminates TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Https => "https",
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
        }
    }
}

/// A checked HTTP route.
#[derive(Debug)]
pub struct HttpRoute {
    /// Route name (logs, audit).
    pub name: String,
    /// Upstream scheme and authority (`http://host:port`).
    pub upstream: http::uri::Uri,
    /// CA certificates for an `https` upstream (`None`: the system's roots).
    pub upstream_ca: Option<Arc<rustls::RootCertStore>>,
    /// Time to connect to the upstream.
    pub connect_timeout: Duration,
    /// Time until the upstream's response head arrives.
    pub response_timeout: Duration,
    /// Identity and claims policy.
    pub policy: RoutePolicy,
    /// Index of the provider in [`Config::providers`].
    pub provider: Option<usize>,
    /// Remove `Authorization` before forwarding.
    pub strip_authorization: bool,
    /// Accept tokens with neither `scp` nor `roles` (the ACL mode: the route
    /// authorises callers by who they are, e.g. `app_ids`); refused by default.
    pub allow_acl_tokens: bool,
    /// Overrides of the listener's limits.
    pub limits: RouteLimits,
}

/// A checked TCP route (the only route of a `tcp` or `tls` listener).
#[derive(Debug)]
pub struct TcpRoute {
    /// Route name.
    pub name: String,
    /// `host:port` of the upstream.
    pub upstream: String,
    /// Time to connect to the upstream.
    pub connect_timeout: Duration,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Source and client-certificate policy.
    pub policy: RoutePolicy,
}

/// The routes of a listener.
#[derive(Debug)]
pub enum Routes {
    /// Host and path-prefix routes.
    Http {
        /// The lookup table.
        table: RouteTable<Arc<HttpRoute>>,
        /// The same routes in file order.
        routes: Vec<Arc<HttpRoute>>,
    },
    /// One raw TCP route.
    Tcp(Arc<TcpRoute>),
}

/// A checked listener and its routes.
#[derive(Debug)]
pub struct Listener {
    /// Name (routes refer to it).
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// What it speaks.
    pub protocol: Protocol,
    /// TLS settings, for `https` and `tls`.
    pub tls: Option<TlsSpec>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: CidrSet,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// The listen queue: connections the kernel completes before the gateway accepts
    /// them (capped by the kernel's `net.core.somaxconn`).
    pub backlog: u32,
    /// Connection, slow-client, size, HTTP/2 and rate limits.
    pub limits: ListenerLimits,
    /// Its routes.
    pub routes: Routes,
}

/// A checked provider.
#[derive(Debug)]
pub struct ProviderSpec {
    /// Name routes refer to.
    pub name: String,
    /// What the token crate needs.
    pub config: ProviderConfig,
    /// Equal fingerprints mean equal settings: a reload keeps the running provider
    /// (its keys and verified-token cache) when its settings did not change.
    pub fingerprint: String,
}

/// A validated configuration: what the gateway runs.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from (reloads re-read it).
    pub file: Option<PathBuf>,
    /// Worker threads of the runtime (`None`: one per core).
    pub worker_threads: Option<usize>,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    /// Whether the file is watched for changes (reloaded when it changes).
    pub watch_config: bool,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`, `/status`).
    pub admin_listen: SocketAddr,
    /// How often `/status` samples the metrics for its one-hour charts.
    pub status_sample_interval: Duration,
    /// The audit pipeline (`[audit]`), checked; `None` when no sink is configured.
    /// Relative paths are already resolved against the configuration's directory.
    pub audit: Option<intraport_audit::AuditConfig>,
    /// Identity providers.
    pub providers: Vec<ProviderSpec>,
    /// Listeners with their routes.
    pub listeners: Vec<Listener>,
    /// Bans, the shared store and the identity-provider ceiling.
    pub abuse: AbuseConfig,
}

/// Read and validate a configuration file.
pub fn load_config(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: Some(path.to_path_buf()),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration: {e}"),
        }]
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    build(&text, &base, Some(path))
}

impl Config {
    /// Validate a configuration given as TOML text; relative paths are taken from
    /// `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        build(text, base_dir, None)
    }

    /// The listener names, in file order.
    pub fn listener_names(&self) -> Vec<&str> {
        self.listeners.iter().map(|l| l.name.as_str()).collect()
    }
}

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

fn build(text: &str, base: &Path, file: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let mut d = Diagnostics::new(text, file);
    let Some(mut root) = doc::parse(text, &mut d) else {
        return Err(d.errors);
    };
    doc::expand_env(root.get_mut(), "", &mut d);
    let root = root.into_inner();
    for (k, v) in root.iter() {
        let key = k.get_ref().as_ref();
        let want_array = matches!(key, "provider" | "listener" | "route");
        match key {
            "server" | "admin" | "abuse" | "audit" | "provider" | "listener" | "route" => {
                let is_array = matches!(v.get_ref(), DeValue::Array(_));
                if want_array && !is_array {
                    d.at(
                        Some(k.span()),
                        key,
                        format!("write [[{key}]]: a list of tables"),
                    );
                } else if !want_array && !matches!(v.get_ref(), DeValue::Table(_)) {
                    d.at(Some(k.span()), key, format!("write [{key}]: a table"));
                }
            }
            other => d.at(
                Some(k.span()),
                other,
                format!(
                    "unknown section `{other}`: expected server, admin, abuse, audit, provider, listener or route"
                ),
            ),
        }
    }
    let server: RawServer = table(&root, "server")
        .and_then(|v| typed(v, "server", &mut d))
        .unwrap_or_default();
    let admin: RawAdmin = table(&root, "admin")
        .and_then(|v| typed(v, "admin", &mut d))
        .unwrap_or_default();
    let raw_abuse: limits::RawAbuse = table(&root, "abuse")
        .and_then(|v| typed(v, "abuse", &mut d))
        .unwrap_or_default();
    let abuse = limits::abuse(raw_abuse, &mut d);
    let audit = table(&root, "audit").and_then(|v| audit(v, base, &mut d));
    let status_sample_interval = match admin.status_sample_interval_ms {
        None => Duration::from_secs(10),
        Some(ms) if (100..=60_000).contains(ms.get_ref()) => Duration::from_millis(*ms.get_ref()),
        Some(ms) => {
            d.at_value(
                &ms,
                "admin.status_sample_interval_ms",
                format!("expected 100..=60000, found {}", ms.get_ref()),
            );
            Duration::from_secs(10)
        }
    };
    if let Some(w) = &server.worker_threads {
        if *w.get_ref() == 0 {
            d.at_value(w, "server.worker_threads", "must be at least 1");
        }
    }
    let admin_listen = match &admin.listen {
        Some(s) => parse_addr(s, "admin.listen", &mut d),
        None => DEFAULT_ADMIN.parse().ok(),
    };

    let providers = providers(&root, base, &mut d);
    let mut listeners = listeners(&root, base, admin_listen, &mut d);
    if !root.contains_key("listener") {
        // An empty or truncated file, most likely: serving it would close every
        // listener (on a reload) or serve nothing (at start).
        d.at(
            None,
            "listener",
            "no [[listener]]: the gateway would serve nothing (is the file empty or cut short?); define at least one listener and its routes",
        );
    }
    routes(&root, base, &providers, &mut listeners, &mut d);

    let mut built = Vec::new();
    for l in listeners {
        let Some(l) = l else { continue };
        match finish_listener(l, &mut d) {
            Some(l) => built.push(l),
            None => continue,
        }
    }
    if !d.errors.is_empty() {
        return Err(d.errors);
    }
    Ok(Config {
        file: file.map(Path::to_path_buf),
        worker_threads: server.worker_threads.map(Spanned::into_inner),
        shutdown_grace: Duration::from_secs(server.shutdown_grace_seconds.unwrap_or(30)),
        watch_config: server.watch_config.unwrap_or(true),
        admin_listen: admin_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
        status_sample_interval,
        audit,
        providers: providers.into_iter().flatten().collect(),
        listeners: built,
        abuse,
    })
}

/// `[audit]`: typed by the audit crate, relative paths resolved here, then checked
/// whole so that a bad sink stops start-up (or a reload) with its place in the file.
fn audit(
    v: &Spanned<DeValue<'_>>,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> Option<intraport_audit::AuditConfig> {
    use intraport_audit::SinkConfig;
    let mut c: intraport_audit::AuditConfig = typed(v, "audit", d)?;
    c.spool_dir = c.spool_dir.map(|p| resolve(base, &p));
    for s in &mut c.sinks {
        match s {
            SinkConfig::File(f) => f.path = resolve(base, &f.path),
            SinkConfig::Syslog(y) => {
                for p in [&mut y.ca, &mut y.client_cert, &mut y.client_key] {
                    *p = p.take().map(|p| resolve(base, &p));
                }
            }
            SinkConfig::Stdout(_) => {}
        }
    }
    if c.sinks.is_empty() {
        return None;
    }
    // Point at what the error names (`audit.sink[1].address`, `audit.spool_dir`),
    // else at the table.
    let report = |e: intraport_audit::Error, d: &mut Diagnostics<'_>| -> String {
        let message = e.to_string();
        let (field, msg) = match e {
            intraport_audit::Error::Config { field, message } => (field, message),
            _ => ("audit".to_string(), message),
        };
        let DeValue::Table(t) = v.get_ref() else {
            d.at(Some(v.span()), field.clone(), msg);
            return field;
        };
        let span = match field.strip_prefix("audit.sink[") {
            Some(r) => r.split_once(']').and_then(|(i, rest)| {
                let i: usize = i.parse().ok()?;
                let DeValue::Array(sinks) = t.get("sink")?.get_ref() else {
                    return None;
                };
                let elem = sinks.get(i)?;
                let key = rest.trim_start_matches('.');
                Some(span_of(elem, key.split('.').next().unwrap_or("")))
            }),
            None => field
                .strip_prefix("audit.")
                .and_then(|k| t.get(k))
                .map(Spanned::span),
        };
        d.at(Some(span.unwrap_or_else(|| v.span())), field.clone(), msg);
        field
    };
    // Every file first (all of them are reported), then the rest, which stops at its
    // first problem: not reported again when it is about a file already named.
    let files: Vec<String> = c.check_files().into_iter().map(|e| report(e, d)).collect();
    match c.check() {
        Ok(_) if files.is_empty() => Some(c),
        Ok(_) => None,
        Err(e) => {
            let same =
                matches!(&e, intraport_audit::Error::Config { field, .. } if files.contains(field));
            if !same {
                report(e, d);
            }
            None
        }
    }
}

fn table<'a, 'i>(root: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    root.get(key)
        .filter(|v| matches!(v.get_ref(), DeValue::Table(_)))
}

/// The elements of a `[[key]]` list with their paths.
fn elements<'a, 'i>(root: &'a DeTable<'i>, key: &str) -> Vec<(String, &'a Spanned<DeValue<'i>>)> {
    match root.get(key).map(Spanned::get_ref) {
        Some(DeValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{key}[{i}]"), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// The span of a key's value in a table element, else of the element.
fn span_of(elem: &Spanned<DeValue<'_>>, key: &str) -> Range<usize> {
    match elem.get_ref() {
        DeValue::Table(t) => t.get(key).map_or_else(|| elem.span(), Spanned::span),
        _ => elem.span(),
    }
}

fn resolve(base: &Path, p: impl AsRef<Path>) -> PathBuf {
    let p = p.as_ref();
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parse_addr(s: &Spanned<String>, path: &str, d: &mut Diagnostics<'_>) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.at_value(
                s,
                path,
                format!(
                    "`{}` is not an address: expected IP:PORT, e.g. 127.0.0.1:8443 or [::1]:8443",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

fn providers(
    root: &DeTable<'_>,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> Vec<Option<ProviderSpec>> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (path, elem) in elements(root, "provider") {
        let Some(settings) = typed::<ProviderSettings>(elem, &path, d) else {
            out.push(None);
            continue;
        };
        if names.insert(settings.name.clone(), out.len()).is_some() {
            d.at(
                Some(span_of(elem, "name")),
                join(&path, "name"),
                format!("provider `{}` is defined twice", settings.name),
            );
        }
        // The files first, each on its own: every missing one is reported in one run.
        let before = d.errors.len();
        let mut checked = settings.clone();
        if let Some(ca) = &settings.ca_file {
            if let Err(e) = readable("CA file", &resolve(base, ca)) {
                d.at(Some(span_of(elem, "ca_file")), join(&path, "ca_file"), e);
                checked.ca_file = None;
            }
        }
        if let Some(jwks) = settings.jwks.as_deref().filter(|j| !is_url(j)) {
            let file = resolve(base, jwks);
            let algorithms = if settings.algorithms.is_empty() {
                vec![intraport_token::Algorithm::RS256]
            } else {
                settings.algorithms.clone()
            };
            // Read and parsed as the provider will at its first load: a key set file
            // that cannot serve is refused now rather than found unready later.
            let parsed = std::fs::read(&file)
                .map_err(|e| format!("cannot read key set file {}: {e}", file.display()))
                .and_then(|bytes| {
                    intraport_token::KeySet::from_json(&bytes, &algorithms)
                        .map_err(|e| format!("key set file {}: {e}", file.display()))
                });
            if let Err(e) = parsed {
                d.at(Some(span_of(elem, "jwks")), join(&path, "jwks"), e);
            }
        }
        // Then the settings, and the provider the gateway would create from them.
        let built = checked
            .to_config(base)
            .and_then(|config| intraport_token::Provider::new(config.clone()).map(|_| config));
        match built {
            Ok(config) if d.errors.len() == before => out.push(Some(ProviderSpec {
                name: settings.name.clone(),
                config,
                // ProviderSettings has no PartialEq; its Debug form names every
                // setting, after environment expansion, so it serves as a fingerprint.
                fingerprint: format!("{settings:?}@{}", base.display()),
            })),
            Ok(_) => out.push(None),
            Err(e) => {
                let (field, message) = match &e {
                    SetupError::Config { field, message } => (*field, message.clone()),
                    other => ("", other.to_string()),
                };
                // `field` may list alternatives ("authority/tenant, discovery, issuer"),
                // and the provider's own names differ from the file's in two places.
                let key = match field {
                    "ca" => "ca_file",
                    "tenants" => "allowed_tenants",
                    f => f,
                };
                let key = key
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .find(|k| matches!(elem.get_ref(), DeValue::Table(t) if t.contains_key(*k)))
                    .unwrap_or("");
                let span = if key.is_empty() {
                    elem.span()
                } else {
                    span_of(elem, key)
                };
                d.at(
                    Some(span),
                    if key.is_empty() {
                        path.clone()
                    } else {
                        join(&path, key)
                    },
                    message,
                );
                out.push(None);
            }
        }
    }
    out
}

/// A listener's listen queue unless it says otherwise.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// The largest listen queue accepted (the kernel caps it lower still).
const MAX_BACKLOG: u32 = 65_535;

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A listener being built: routes are added as they are read.
struct PendingListener {
    name: String,
    listen: SocketAddr,
    protocol: Protocol,
    tls: Option<TlsSpec>,
    trusted_proxies: CidrSet,
    handshake_timeout: Duration,
    backlog: u32,
    limits: ListenerLimits,
    span: Range<usize>,
    path: String,
    /// Its TLS settings were wrong (already reported).
    tls_failed: bool,
    http: Vec<RouteEntry<Arc<HttpRoute>>>,
    /// Host and prefix of every HTTP route naming this listener, valid or not, so
    /// that overlaps and "no route" are judged on what the file says.
    http_keys: Vec<RouteEntry<()>>,
    /// (route name, route path, route span) for locating overlaps.
    http_spans: Vec<(String, String, Range<usize>)>,
    /// Routes naming this listener, valid or not.
    route_count: usize,
    tcp: Vec<Arc<TcpRoute>>,
}

/// The names and addresses the listeners read so far hold, and the admin address.
struct Taken {
    names: HashSet<String>,
    addrs: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
}

/// Whether two listening sockets would fight over one port: the same address, or a
/// wildcard beside any address of its family (`[::]` also takes IPv4, as Linux binds
/// it by default). Port 0 (the system picks) never collides.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |w: SocketAddr, o: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

fn listeners(
    root: &DeTable<'_>,
    base: &Path,
    admin: Option<SocketAddr>,
    d: &mut Diagnostics<'_>,
) -> Vec<Option<PendingListener>> {
    let mut out = Vec::new();
    let mut taken = Taken {
        names: HashSet::new(),
        addrs: Vec::new(),
        admin,
    };
    for (path, elem) in elements(root, "listener") {
        let Some(raw) = typed::<RawListener>(elem, &path, d) else {
            out.push(None);
            continue;
        };
        out.push(listener(raw, &path, elem.span(), base, &mut taken, d));
    }
    out
}

fn listener(
    raw: RawListener,
    path: &str,
    span: Range<usize>,
    base: &Path,
    taken: &mut Taken,
    d: &mut Diagnostics<'_>,
) -> Option<PendingListener> {
    let Taken {
        names,
        addrs,
        admin,
    } = taken;
    let admin = *admin;
    if !names.insert(raw.name.get_ref().clone()) {
        d.at_value(
            &raw.name,
            join(path, "name"),
            format!("listener `{}` is defined twice", raw.name.get_ref()),
        );
    }
    let listen = parse_addr(&raw.listen, &join(path, "listen"), d);
    if let Some(a) = listen {
        if admin.is_some_and(|b| same_socket(a, b)) {
            d.at_value(
                &raw.listen,
                join(path, "listen"),
                format!(
                    "the admin listener (admin.listen) is on {}: a listener cannot bind the same port",
                    admin.map_or_else(String::new, |b| b.to_string())
                ),
            );
        } else if let Some((other, b)) = addrs.iter().find(|(_, b)| same_socket(a, *b)) {
            d.at_value(
                &raw.listen,
                join(path, "listen"),
                format!("listener `{other}` already listens on {b}: both cannot bind {a}"),
            );
        }
        addrs.push((raw.name.get_ref().clone(), a));
    }
    let protocol = match raw.protocol.get_ref().as_str() {
        "https" => Some(Protocol::Https),
        "http" => Some(Protocol::Http),
        "tcp" => Some(Protocol::Tcp),
        "tls" => Some(Protocol::Tls),
        other => {
            d.at_value(
                &raw.protocol,
                join(path, "protocol"),
                format!("unknown protocol `{other}`: expected https, http, tcp or tls"),
            );
            None
        }
    };
    let tls = match (protocol, &raw.tls) {
        (Some(p), None) if p.is_tls() => {
            d.at(
                Some(raw.protocol.span()),
                join(path, "tls"),
                format!(
                    "a `{}` listener needs a [listener.tls] table with `cert` and `key`",
                    p.as_str()
                ),
            );
            None
        }
        (Some(p), Some(t)) if !p.is_tls() => {
            d.at_value(t, join(path, "tls"), format!(
                "a `{}` listener does not terminate TLS: remove [listener.tls] or use protocol {}",
                p.as_str(),
                if p == Protocol::Http { "https" } else { "tls" }
            ));
            None
        }
        (Some(p), Some(t)) => tls_spec(t.get_ref(), &join(path, "tls"), base, p.is_http(), d),
        (None, Some(t)) => tls_spec(t.get_ref(), &join(path, "tls"), base, true, d),
        _ => None,
    };
    let mut nets = Vec::new();
    for (i, s) in raw.trusted_proxies.iter().enumerate() {
        match intraport_policy::parse_net(s.get_ref()) {
            Ok(n) => nets.push(n),
            Err(e) => d.at_value(s, format!("{path}.trusted_proxies[{i}]"), e.to_string()),
        }
    }
    if !nets.is_empty() && protocol.is_some_and(|p| !p.is_http()) {
        d.at(
            Some(span.clone()),
            join(path, "trusted_proxies"),
            "only HTTP listeners read forwarded headers",
        );
    }
    let tls_failed = protocol.is_some_and(Protocol::is_tls) && tls.is_none();
    let backlog = match &raw.backlog {
        None => DEFAULT_BACKLOG,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(n @ 1..=MAX_BACKLOG) => n,
            _ => {
                d.at_value(
                    b,
                    join(path, "backlog"),
                    format!(
                        "expected 1 to {MAX_BACKLOG} (the kernel caps it at net.core.somaxconn)"
                    ),
                );
                DEFAULT_BACKLOG
            }
        },
    };
    let limits = limits::listener_limits(
        raw.limits.as_ref(),
        path,
        protocol.is_none_or(Protocol::is_http),
        d,
    );
    let handshake_timeout = Duration::from_millis(
        limits::positive(&raw.handshake_timeout_ms, path, "handshake_timeout_ms", d)
            .unwrap_or(10_000),
    );
    // Kept even when something above was wrong, so that its routes are still checked
    // (the configuration as a whole is refused anyway).
    Some(PendingListener {
        name: raw.name.into_inner(),
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        protocol: protocol?,
        tls,
        trusted_proxies: CidrSet::new(nets),
        handshake_timeout,
        backlog,
        limits,
        span,
        path: path.to_string(),
        tls_failed,
        http: Vec::new(),
        http_keys: Vec::new(),
        http_spans: Vec::new(),
        route_count: 0,
        tcp: Vec::new(),
    })
}

/// Whether a file the configuration names can be read, as an error naming `what`.
fn readable(what: &str, p: &Path) -> Result<(), String> {
    std::fs::File::open(p)
        .and_then(|f| f.metadata())
        .and_then(|m| {
            if m.is_dir() {
                Err(std::io::Error::other("is a directory"))
            } else {
                Ok(())
            }
        })
        .map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
}

fn tls_spec(
    t: &RawTls,
    path: &str,
    base: &Path,
    http: bool,
    d: &mut Diagnostics<'_>,
) -> Option<TlsSpec> {
    let before = d.errors.len();
    let cert = resolve(base, t.cert.get_ref());
    let key = resolve(base, t.key.get_ref());
    // Each file on its own, so that a missing certificate does not hide a missing key.
    if let Err(e) = readable("certificate", &cert) {
        d.at_value(&t.cert, join(path, "cert"), e);
    }
    if let Err(e) = readable("private key", &key) {
        d.at_value(&t.key, join(path, "key"), e);
    }
    let tls13_only = match t.min_version.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(other) => {
            if let Some(v) = &t.min_version {
                d.at_value(
                    v,
                    join(path, "min_version"),
                    format!("`{other}` is not offered: expected \"1.2\" or \"1.3\""),
                );
            }
            false
        }
    };
    let client_ca = match &t.client_ca {
        Some(p) => match tls::load_roots(&resolve(base, p.get_ref())) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                d.at_value(p, join(path, "client_ca"), e);
                None
            }
        },
        None => None,
    };
    let client_cert = match t.client_cert.as_ref().map(|v| v.get_ref().as_str()) {
        None if t.client_ca.is_some() => ClientCertMode::Optional,
        None | Some("none") => ClientCertMode::None,
        Some("optional") => ClientCertMode::Optional,
        Some("required") => ClientCertMode::Required,
        Some(other) => {
            if let Some(v) = &t.client_cert {
                d.at_value(
                    v,
                    join(path, "client_cert"),
                    format!("`{other}`: expected \"none\", \"optional\" or \"required\""),
                );
            }
            ClientCertMode::None
        }
    };
    if client_cert != ClientCertMode::None && t.client_ca.is_none() {
        if let Some(v) = &t.client_cert {
            d.at_value(
                v,
                join(path, "client_cert"),
                "client certificates need `client_ca`, the CA file they must chain to",
            );
        }
    }
    if d.errors.len() > before {
        return None;
    }
    let spec = TlsSpec {
        cert,
        key,
        tls13_only,
        client_ca,
        client_cert,
        reload_interval: Duration::from_secs(t.reload_interval_seconds.unwrap_or(5).max(1)),
    };
    // What the gateway builds at start and reload, built here once to see it works.
    if let Err(e) = tls::acceptor(&spec, http) {
        let (at, field) = if e.contains("private key") {
            (&t.key, "key")
        } else if e.contains("client CA") {
            (t.client_ca.as_ref().unwrap_or(&t.cert), "client_ca")
        } else {
            (&t.cert, "cert")
        };
        d.at_value(at, join(path, field), e);
        return None;
    }
    Some(spec)
}

fn routes(
    root: &DeTable<'_>,
    base: &Path,
    providers: &[Option<ProviderSpec>],
    listeners: &mut [Option<PendingListener>],
    d: &mut Diagnostics<'_>,
) {
    let mut names = HashSet::new();
    // Indexes into the valid providers, which become `Config::providers`.
    let provider_index: HashMap<&str, Option<usize>> = providers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), Some(i)))
        .collect();
    let bad_providers: HashSet<String> = elements(root, "provider")
        .iter()
        .filter_map(|(_, e)| match e.get_ref() {
            DeValue::Table(t) => t
                .get("name")
                .and_then(|n| n.get_ref().as_str().map(str::to_string)),
            _ => None,
        })
        .collect();
    let listener_names: HashSet<String> = elements(root, "listener")
        .iter()
        .filter_map(|(_, e)| match e.get_ref() {
            DeValue::Table(t) => t
                .get("name")
                .and_then(|n| n.get_ref().as_str().map(str::to_string)),
            _ => None,
        })
        .collect();
    for (path, elem) in elements(root, "route") {
        let Some(raw) = typed::<RawRoute>(elem, &path, d) else {
            continue;
        };
        if !names.insert(raw.name.get_ref().clone()) {
            d.at_value(
                &raw.name,
                join(&path, "name"),
                format!("route `{}` is defined twice", raw.name.get_ref()),
            );
        }
        let lname = raw.listener.get_ref().as_str();
        let Some(listener) = listeners.iter_mut().flatten().find(|l| l.name == lname) else {
            if !listener_names.contains(lname) {
                let known: Vec<&str> = listener_names.iter().map(String::as_str).collect();
                d.at_value(
                    &raw.listener,
                    join(&path, "listener"),
                    format!(
                        "no listener is named `{lname}` (listeners: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            continue;
        };
        let provider = match &raw.provider {
            Some(p) => match provider_index.get(p.get_ref().as_str()) {
                Some(i) => *i,
                None => {
                    if !bad_providers.contains(p.get_ref()) {
                        let known: Vec<&str> = provider_index.keys().copied().collect();
                        d.at_value(
                            p,
                            join(&path, "provider"),
                            format!(
                                "no provider is named `{}` (providers: {})",
                                p.get_ref(),
                                if known.is_empty() {
                                    "none".into()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                    None
                }
            },
            None => None,
        };
        route(raw, &path, elem.span(), base, provider, listener, d);
    }
}

fn parse_nets(items: &[Spanned<String>], path: &str, d: &mut Diagnostics<'_>) -> CidrSet {
    let mut nets = Vec::new();
    for (i, s) in items.iter().enumerate() {
        match intraport_policy::parse_net(s.get_ref()) {
            Ok(n) => nets.push(n),
            Err(e) => d.at_value(s, format!("{path}[{i}]"), e.to_string()),
        }
    }
    CidrSet::new(nets)
}

fn route(
    raw: RawRoute,
    path: &str,
    span: Range<usize>,
    base: &Path,
    provider: Option<usize>,
    listener: &mut PendingListener,
    d: &mut Diagnostics<'_>,
) {
    let before = d.errors.len();
    let http = listener.protocol.is_http();
    let name = raw.name.get_ref().clone();
    listener.route_count += 1;
    if http {
        listener.http_keys.push(RouteEntry {
            hosts: raw.hosts.iter().map(|h| h.get_ref().clone()).collect(),
            path_prefix: raw
                .path_prefix
                .as_ref()
                .map_or_else(|| "/".to_string(), |p| p.get_ref().clone()),
            case_sensitive: raw.case_sensitive.unwrap_or(false),
            value: (),
            name: name.clone(),
        });
        listener
            .http_spans
            .push((name.clone(), path.to_string(), span.clone()));
    }

    // Source policy: default deny, so an allow list is required.
    let source = raw.source.unwrap_or_default();
    let allow = parse_nets(&source.allow, &join(path, "source.allow"), d);
    let deny = parse_nets(&source.deny, &join(path, "source.deny"), d);
    if source.allow.is_empty() {
        d.at(Some(span.clone()), join(path, "source.allow"), "no source network is allowed, so every client would be refused: add [route.source] allow = [...] (e.g. [\"0.0.0.0/0\", \"::/0\"] for any address)");
    }

    // Identity.
    let identity_text = raw.identity.as_ref().map(|s| s.get_ref().as_str());
    let mut identity_known = true;
    let identity = match identity_text {
        None if http => IdentityRequirement::Token,
        None => IdentityRequirement::None,
        Some("token") => IdentityRequirement::Token,
        Some("client_cert") => IdentityRequirement::ClientCert,
        Some("token_or_cert") => IdentityRequirement::TokenOrCert,
        Some("token_and_cert") => IdentityRequirement::TokenAndCert,
        Some("none") => IdentityRequirement::None,
        Some(other) => {
            identity_known = false;
            if let Some(s) = &raw.identity {
                d.at_value(s, join(path, "identity"), format!(
                    "unknown identity `{other}`: expected token, client_cert, token_or_cert, token_and_cert or none"
                ));
            }
            IdentityRequirement::None
        }
    };
    let uses_token = matches!(
        identity,
        IdentityRequirement::Token
            | IdentityRequirement::TokenOrCert
            | IdentityRequirement::TokenAndCert
    );
    let uses_cert = !matches!(
        identity,
        IdentityRequirement::None | IdentityRequirement::Token
    );
    let identity_span = raw.identity.as_ref().map_or(span.clone(), Spanned::span);
    if uses_token && !http {
        d.at(Some(identity_span.clone()), join(path, "identity"), format!(
            "a `{}` listener carries no HTTP requests, so no bearer token: use client_cert or none",
            listener.protocol.as_str()
        ));
    }
    if uses_token && http && raw.provider.is_none() {
        d.at(
            Some(identity_span.clone()),
            join(path, "provider"),
            "this route checks bearer tokens: name the `provider` that validates them",
        );
    }
    if !uses_token {
        if let Some(p) = &raw.provider {
            d.at_value(
                p,
                join(path, "provider"),
                "the route checks no token (identity is client_cert or none): remove `provider`",
            );
        }
    }
    if uses_cert && !listener.tls_failed {
        let asks = listener
            .tls
            .as_ref()
            .is_some_and(|t| t.client_cert != ClientCertMode::None && t.client_ca.is_some());
        if !asks {
            d.at(Some(identity_span.clone()), join(path, "identity"), format!(
                "the route needs a client certificate but listener `{}` asks for none: set client_ca (and client_cert) in its [listener.tls]",
                listener.name
            ));
        }
    }

    // Claims and certificate requirements.
    let req = raw.require.unwrap_or_default();
    let mut versions = Vec::new();
    for (i, v) in req.versions.iter().enumerate() {
        match v.get_ref().as_str() {
            "1.0" | "2.0" => versions.push(v.get_ref().clone()),
            "v1" => versions.push("1.0".to_string()),
            "v2" => versions.push("2.0".to_string()),
            other => d.at_value(
                v,
                format!("{path}.require.versions[{i}]"),
                format!("`{other}`: expected \"1.0\" or \"2.0\""),
            ),
        }
    }
    let mut kinds = Vec::new();
    for (i, v) in req.identity_types.iter().enumerate() {
        match v.get_ref().as_str() {
            "app" => kinds.push(IdentityKind::App),
            "user" => kinds.push(IdentityKind::User),
            other => d.at_value(
                v,
                format!("{path}.require.identity_types[{i}]"),
                format!("`{other}`: expected \"app\" or \"user\""),
            ),
        }
    }
    let claims = ClaimRequirements {
        tenants: req.tenants,
        roles_any: req.roles_any,
        roles_all: req.roles_all,
        scopes_any: req.scopes_any,
        scopes_all: req.scopes_all,
        groups_any: req.groups_any,
        app_ids: req.app_ids,
        versions,
        kinds,
    };
    let cert = CertRequirements {
        subjects: req.client_cert_subjects,
        sans: req.client_cert_sans,
    };
    let policy = RoutePolicy {
        name: name.clone(),
        source: SourceRule { allow, deny },
        identity,
        claims,
        cert,
    };
    if identity_known {
        if let Err(e) = policy.validate() {
            d.at(Some(span.clone()), join(path, "require"), e.to_string());
        }
    }

    let connect_timeout = Duration::from_millis(raw.connect_timeout_ms.unwrap_or(5_000).max(1));
    let route_limits = limits::route_limits(raw.limits.as_ref(), path, d);
    if http {
        let upstream = match raw.upstream.get_ref().parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none() =>
            {
                Some(u)
            }
            _ => {
                d.at_value(&raw.upstream, join(path, "upstream"), format!(
                    "`{}` is not an upstream for an HTTP route: expected http://HOST:PORT or https://HOST:PORT (no path)",
                    raw.upstream.get_ref()
                ));
                None
            }
        };
        let upstream_ca = match &raw.upstream_ca {
            Some(p) => {
                if upstream
                    .as_ref()
                    .is_some_and(|u| u.scheme_str() != Some("https"))
                {
                    d.at_value(
                        p,
                        join(path, "upstream_ca"),
                        "the upstream is plain http: upstream_ca applies to https upstreams only",
                    );
                }
                match tls::load_roots(&resolve(base, p.get_ref())) {
                    Ok(r) => Some(Arc::new(r)),
                    Err(e) => {
                        d.at_value(p, join(path, "upstream_ca"), e);
                        None
                    }
                }
            }
            None => None,
        };
        if raw.idle_timeout_s.is_some() {
            d.at(
                Some(span.clone()),
                join(path, "idle_timeout_s"),
                "idle_timeout_s applies to TCP routes only",
            );
        }
        let hosts: Vec<String> = raw.hosts.iter().map(|h| h.get_ref().clone()).collect();
        let prefix = raw
            .path_prefix
            .as_ref()
            .map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
        if let Err(e) = intraport_policy::validate_route(&name, &hosts, &prefix) {
            let (field, at) = match &e {
                intraport_policy::PolicyError::BadPathPrefix { .. } => {
                    ("path_prefix", raw.path_prefix.as_ref().map(Spanned::span))
                }
                _ => ("hosts", raw.hosts.first().map(Spanned::span)),
            };
            d.at(at.or(Some(span.clone())), join(path, field), e.to_string());
        }
        if d.errors.len() > before {
            return;
        }
        let Some(upstream) = upstream else { return };
        let r = Arc::new(HttpRoute {
            name: name.clone(),
            upstream,
            upstream_ca,
            connect_timeout,
            response_timeout: Duration::from_millis(
                raw.response_timeout_ms.unwrap_or(30_000).max(1),
            ),
            policy,
            provider,
            strip_authorization: raw.strip_authorization.unwrap_or(false),
            allow_acl_tokens: raw.allow_acl_tokens.unwrap_or(false),
            limits: route_limits,
        });
        if let Err(e) = crate::upstream::check(&r) {
            d.at_value(&raw.upstream, join(path, "upstream"), e);
            return;
        }
        listener.http.push(RouteEntry {
            hosts,
            path_prefix: prefix,
            case_sensitive: raw.case_sensitive.unwrap_or(false),
            value: r,
            name: name.clone(),
        });
    } else {
        for (field, present) in [
            ("hosts", !raw.hosts.is_empty()),
            ("path_prefix", raw.path_prefix.is_some()),
            ("case_sensitive", raw.case_sensitive.is_some()),
            ("upstream_ca", raw.upstream_ca.is_some()),
            ("response_timeout_ms", raw.response_timeout_ms.is_some()),
            ("strip_authorization", raw.strip_authorization.is_some()),
            ("allow_acl_tokens", raw.allow_acl_tokens.is_some()),
            ("limits", raw.limits.is_some()),
        ] {
            if present {
                d.at(
                    Some(span.clone()),
                    join(path, field),
                    format!(
                        "`{field}` applies to HTTP routes; listener `{}` is {}",
                        listener.name,
                        listener.protocol.as_str()
                    ),
                );
            }
        }
        let up = raw.upstream.get_ref();
        let ok = up.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            d.at_value(&raw.upstream, join(path, "upstream"), format!(
                "`{up}` is not an upstream for a TCP route: expected HOST:PORT, e.g. 127.0.0.1:389"
            ));
        }
        if !listener.tcp.is_empty() {
            d.at(
                Some(span.clone()),
                join(path, "listener"),
                format!(
                    "listener `{}` already has a route: a {} listener carries exactly one",
                    listener.name,
                    listener.protocol.as_str()
                ),
            );
        }
        if d.errors.len() > before {
            return;
        }
        listener.tcp.push(Arc::new(TcpRoute {
            name,
            upstream: up.clone(),
            connect_timeout,
            idle_timeout: Duration::from_secs(raw.idle_timeout_s.unwrap_or(3600).max(1)),
            policy,
        }));
    }
}

fn finish_listener(l: PendingListener, d: &mut Diagnostics<'_>) -> Option<Listener> {
    if l.route_count == 0 {
        d.at(
            Some(l.span.clone()),
            l.path.clone(),
            format!("listener `{}` has no route", l.name),
        );
        return None;
    }
    let routes = if l.protocol.is_http() {
        if let Err(overlaps) = RouteTable::new(l.http_keys) {
            for o in overlaps {
                let found = l.http_spans.iter().rev().find(|(n, _, _)| *n == o.second);
                match found {
                    Some((_, path, span)) => d.at(Some(span.clone()), path.clone(), o.to_string()),
                    None => d.at(Some(l.span.clone()), l.path.clone(), o.to_string()),
                }
            }
            return None;
        }
        let routes: Vec<Arc<HttpRoute>> = l.http.iter().map(|e| e.value.clone()).collect();
        // Overlaps were checked above on every route; this table holds the valid ones.
        let table = RouteTable::new(l.http).ok()?;
        Routes::Http { table, routes }
    } else {
        Routes::Tcp(l.tcp.into_iter().next()?)
    };
    Some(Listener {
        name: l.name,
        listen: l.listen,
        protocol: l.protocol,
        tls: l.tls,
        trusted_proxies: l.trusted_proxies,
        handshake_timeout: l.handshake_timeout,
        backlog: l.backlog,
        limits: l.limits,
        routes,
    })
}

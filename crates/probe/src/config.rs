//! The probe configuration file (`probe run --config FILE`): raw TOML tables with
//! unknown fields refused, then checked into [`ProbeSet`], the only form the runner
//! sees. Every error names the file, the line and the field.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use intraport_token::ProviderSettings;
use serde::Deserialize;
use toml::Spanned;

/// A configuration error: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// The field, e.g. `probe[login].token.client_id`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    database: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    probe: Vec<Spanned<RawProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: String,
    interval: Option<String>,
    jitter: Option<String>,
    timeout: Option<String>,
    token: Option<RawToken>,
    validate: Option<ProviderSettings>,
    gateway: Option<RawGateway>,
    ldap: Option<RawLdap>,
    replication: Option<RawReplication>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token_endpoint: String,
    grant: String,
    client_id: String,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    resource: Option<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    url: String,
    method: Option<String>,
    expect_status: Option<u16>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    bind_dn: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    base: String,
    filter: Option<String>,
    #[serde(default)]
    attributes: Vec<String>,
    min_entries: Option<usize>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    provider: String,
    bind_dn: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    marker_dn: String,
    attribute: Option<String>,
    object_classes: Option<Vec<String>>,
    suffix: Option<String>,
    deadline: Option<String>,
    poll_interval: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    replica: Vec<RawReplica>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    name: String,
    url: String,
}

/// A checked configuration: what the runner uses.
#[derive(Clone, Debug)]
pub struct ProbeSet {
    /// The SQLite database, if one is configured.
    pub database: Option<PathBuf>,
    /// How long results are kept.
    pub retention: Duration,
    /// Where Prometheus metrics are served (loopback only).
    pub metrics_listen: Option<SocketAddr>,
    /// The probes, in file order.
    pub probes: Vec<ProbeSpec>,
}

/// One checked probe.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// Unique name.
    pub name: String,
    /// Time between the starts of two runs.
    pub interval: Duration,
    /// A random delay in `[0, jitter)` added to each scheduled start.
    pub jitter: Duration,
    /// Deadline of one whole run.
    pub timeout: Duration,
    /// Token acquisition, when configured.
    pub token: Option<TokenSpec>,
    /// Token validation settings (`[probe.validate]`), when configured.
    pub validate: Option<ProviderSettings>,
    /// Directory of the configuration file, for relative paths in `validate`.
    pub base_dir: PathBuf,
    /// A call through the gateway with the token, when configured.
    pub gateway: Option<GatewaySpec>,
    /// LDAP bind and search, when configured.
    pub ldap: Option<LdapSpec>,
    /// Replication delay between directory servers, when configured.
    pub replication: Option<ReplicationSpec>,
}

/// Grant of a token probe.
#[derive(Clone, Debug)]
pub enum GrantSpec {
    /// Client credentials.
    ClientCredentials {
        /// The client secret.
        client_secret: String,
    },
    /// Resource-owner password grant.
    Password {
        /// Optional client secret (confidential clients).
        client_secret: Option<String>,
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// Token acquisition.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// Token endpoint URL (`http` or `https`).
    pub endpoint: url::Url,
    /// Client id.
    pub client_id: String,
    /// The grant.
    pub grant: GrantSpec,
    /// `scope` values (v2) ...
    pub scope: Vec<String>,
    /// ... or a `resource` (v1).
    pub resource: Option<String>,
    /// Extra CA certificates (PEM file).
    pub ca_file: Option<PathBuf>,
}

/// A gateway call with the token.
#[derive(Clone, Debug)]
pub struct GatewaySpec {
    /// The URL through the gateway.
    pub url: url::Url,
    /// HTTP method.
    pub method: String,
    /// The expected status (default 200).
    pub expect_status: u16,
    /// Extra CA certificates (PEM file).
    pub ca_file: Option<PathBuf>,
}

/// LDAP bind and search.
#[derive(Clone, Debug)]
pub struct LdapSpec {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: url::Url,
    /// Bind DN (anonymous when absent).
    pub bind_dn: Option<String>,
    /// Bind password.
    pub password: String,
    /// Search base.
    pub base: String,
    /// Search filter (default `(objectClass=*)`).
    pub filter: String,
    /// Attributes to return.
    pub attributes: Vec<String>,
    /// Fewer entries than this fails the probe (default 1).
    pub min_entries: usize,
    /// Extra CA certificates (PEM file) for `ldaps`.
    pub ca_file: Option<PathBuf>,
}

/// The replication-delay probe: a marker written on one directory server, polled
/// for on each replica.
#[derive(Clone, Debug)]
pub struct ReplicationSpec {
    /// The server the marker is written to (`ldap://` or `ldaps://`).
    pub provider: url::Url,
    /// Bind DN, on the provider and the replicas (anonymous when absent).
    pub bind_dn: Option<String>,
    /// Bind password.
    pub password: String,
    /// The dedicated entry that carries the marker (created when missing).
    pub marker_dn: String,
    /// The attribute the marker is written to (default `description`).
    pub attribute: String,
    /// Object classes of the marker entry when it is created (default
    /// `organizationalRole`, whose naming attribute `cn` and optional `description`
    /// exist in every LDAP core schema).
    pub object_classes: Vec<String>,
    /// The naming context whose `contextCSN` (OpenLDAP) is read on the provider and
    /// each replica and compared; not read when absent.
    pub suffix: Option<String>,
    /// How long after the write a replica may take to show the marker.
    pub deadline: Duration,
    /// Time between two reads of the marker on a replica.
    pub poll_interval: Duration,
    /// Extra CA certificates (PEM file) for `ldaps`.
    pub ca_file: Option<PathBuf>,
    /// The replicas, in file order.
    pub replicas: Vec<ReplicaSpec>,
}

/// One replica of a replication probe.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// Name (letters, digits, `-`, `_`, `.`), used in the stage `replication:NAME`.
    pub name: String,
    /// `ldap://` or `ldaps://` URL.
    pub url: url::Url,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset)
            .map(|s| s.matches('\n').count() + 1)
            .unwrap_or(0)
    }

    fn err(&mut self, offset: usize, field: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(offset);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like `30s` ({e})"))
}

fn secret(
    value: Option<String>,
    env: Option<String>,
    what: &str,
) -> Result<Option<String>, String> {
    match (value, env) {
        (Some(_), Some(_)) => Err(format!("give `{what}` or `{what}_env`, not both")),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(var)) => std::env::var(&var)
            .map(Some)
            .map_err(|_| format!("environment variable `{var}` (from `{what}_env`) is not set")),
        (None, None) => Ok(None),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn ldap_url(cx: &mut Ctx<'_>, at: usize, field: String, text: &str) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "ldap" | "ldaps") && u.host_str().is_some() => Some(u),
        _ => {
            cx.err(
                at,
                field,
                format!("`{text}` is not an ldap:// or ldaps:// URL with a host"),
            );
            None
        }
    }
}

fn resolve(base: &Path, p: Option<PathBuf>) -> Option<PathBuf> {
    p.map(|p| if p.is_absolute() { p } else { base.join(p) })
}

/// Read and check a probe configuration file.
pub fn load(path: &Path) -> Result<ProbeSet, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base)
}

/// Check a probe configuration given as text; `file` names it in errors and `base`
/// anchors relative paths.
pub fn parse(text: &str, file: &Path, base: &Path) -> Result<ProbeSet, Vec<ConfigError>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|s| s.matches('\n').count() + 1)
            .unwrap_or(0);
        vec![ConfigError {
            file: file.to_path_buf(),
            line,
            field: String::new(),
            message: e.message().to_string(),
        }]
    })?;
    let mut cx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let retention = match &raw.retention {
        Some(r) => match duration(r.get_ref()) {
            Ok(d) => d,
            Err(m) => {
                cx.err(r.span().start, "retention", m);
                Duration::ZERO
            }
        },
        None => Duration::from_secs(30 * 86_400),
    };
    let metrics_listen =
        raw.metrics_listen
            .as_ref()
            .and_then(|m| match m.get_ref().parse::<SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => Some(a),
                Ok(a) => {
                    cx.err(
                    m.span().start,
                    "metrics_listen",
                    format!(
                        "{a} is not a loopback address: metrics are served on 127.0.0.1 or ::1 only"
                    ),
                );
                    None
                }
                Err(e) => {
                    cx.err(
                        m.span().start,
                        "metrics_listen",
                        format!("`{}` is not an address:port ({e})", m.get_ref()),
                    );
                    None
                }
            });
    let database = raw
        .database
        .map(|d| resolve(base, Some(PathBuf::from(d.into_inner()))).unwrap_or_default());
    let mut probes = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    if raw.probe.is_empty() {
        cx.err(0, "probe", "no `[[probe]]` defined");
    }
    for sp in raw.probe {
        let at = sp.span().start;
        let p = sp.into_inner();
        if let Some(spec) = check_probe(&mut cx, at, base, p) {
            if !names.insert(spec.name.clone()) {
                cx.err(
                    at,
                    format!("probe[{}].name", spec.name),
                    "duplicate probe name",
                );
            }
            probes.push(spec);
        }
    }
    if cx.errors.is_empty() {
        Ok(ProbeSet {
            database,
            retention,
            metrics_listen,
            probes,
        })
    } else {
        Err(cx.errors)
    }
}

fn check_probe(cx: &mut Ctx<'_>, at: usize, base: &Path, p: RawProbe) -> Option<ProbeSpec> {
    let before = cx.errors.len();
    let name = p.name.clone();
    let f = |field: &str| format!("probe[{name}].{field}");
    if !valid_name(&name) {
        cx.err(at, f("name"), "use letters, digits, `-`, `_` and `.` only");
    }
    let dur = |cx: &mut Ctx<'_>, field: &str, v: Option<String>, default: u64| match v {
        Some(s) => match duration(&s) {
            Ok(d) => d,
            Err(m) => {
                cx.err(at, f(field), m);
                Duration::ZERO
            }
        },
        None => Duration::from_secs(default),
    };
    let interval = dur(cx, "interval", p.interval, 60);
    let jitter = dur(cx, "jitter", p.jitter, 0);
    let timeout_given = p.timeout.is_some();
    let mut timeout = dur(cx, "timeout", p.timeout, 10);
    if interval.is_zero() && cx.errors.len() == before {
        cx.err(at, f("interval"), "must be more than zero");
    }
    if jitter >= interval && !interval.is_zero() {
        cx.err(at, f("jitter"), "must be less than `interval`");
    }
    if timeout.is_zero() {
        cx.err(at, f("timeout"), "must be more than zero");
    }
    let token = p.token.and_then(|t| check_token(cx, at, base, &name, t));
    let gateway = p.gateway.and_then(|g| {
        let url = match url::Url::parse(&g.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                cx.err(
                    at,
                    f("gateway.url"),
                    format!("`{}` is not an http(s) URL", g.url),
                );
                return None;
            }
        };
        Some(GatewaySpec {
            url,
            method: g
                .method
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase(),
            expect_status: g.expect_status.unwrap_or(200),
            ca_file: resolve(base, g.ca_file),
        })
    });
    if (gateway.is_some() || p.validate.is_some()) && token.is_none() && cx.errors.len() == before {
        cx.err(
            at,
            f("token"),
            "`[probe.gateway]` and `[probe.validate]` need a `[probe.token]` to get the token",
        );
    }
    if let Some(v) = &p.validate
        && let Err(e) = v.to_config(base)
    {
        cx.err(at, f("validate"), e.to_string());
    }
    let ldap = p.ldap.and_then(|l| {
        let url = ldap_url(cx, at, f("ldap.url"), &l.url)?;
        let password = match secret(l.password, l.password_env, "password") {
            Ok(p) => p.unwrap_or_default(),
            Err(m) => {
                cx.err(at, f("ldap.password"), m);
                return None;
            }
        };
        Some(LdapSpec {
            url,
            bind_dn: l.bind_dn,
            password,
            base: l.base,
            filter: l.filter.unwrap_or_else(|| "(objectClass=*)".into()),
            attributes: l.attributes,
            min_entries: l.min_entries.unwrap_or(1),
            ca_file: resolve(base, l.ca_file),
        })
    });
    let replication = p
        .replication
        .and_then(|r| check_replication(cx, at, base, &name, r));
    if let Some(r) = &replication {
        if !timeout_given {
            // The run must outlast the wait for the replicas.
            timeout = r.deadline + Duration::from_secs(10);
        } else if r.deadline >= timeout {
            cx.err(
                at,
                f("replication.deadline"),
                format!(
                    "must be less than the probe's `timeout` ({}), which bounds the whole run",
                    humantime::format_duration(timeout)
                ),
            );
        }
    }
    if token.is_none() && ldap.is_none() && replication.is_none() && cx.errors.len() == before {
        cx.err(
            at,
            format!("probe[{name}]"),
            "a probe needs a `[probe.token]`, `[probe.ldap]` or `[probe.replication]` table",
        );
    }
    (cx.errors.len() == before).then(|| ProbeSpec {
        name,
        interval,
        jitter,
        timeout,
        token,
        validate: p.validate,
        base_dir: base.to_path_buf(),
        gateway,
        ldap,
        replication,
    })
}

fn check_replication(
    cx: &mut Ctx<'_>,
    at: usize,
    base: &Path,
    name: &str,
    r: RawReplication,
) -> Option<ReplicationSpec> {
    let before = cx.errors.len();
    let f = |field: &str| format!("probe[{name}].replication.{field}");
    let provider = ldap_url(cx, at, f("provider"), &r.provider);
    let password = match secret(r.password, r.password_env, "password") {
        Ok(p) => p.unwrap_or_default(),
        Err(m) => {
            cx.err(at, f("password"), m);
            String::new()
        }
    };
    // The entry is created with its naming attribute, so its first RDN must be
    // one `attribute=value`.
    let rdn_ok = r
        .marker_dn
        .split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .is_some_and(|(a, v)| !a.trim().is_empty() && !v.trim().is_empty() && !v.contains('+'));
    if !rdn_ok {
        cx.err(
            at,
            f("marker_dn"),
            format!(
                "`{}` is not a DN whose first RDN is one attribute=value",
                r.marker_dn
            ),
        );
    }
    let dur = |cx: &mut Ctx<'_>, field: &str, v: Option<String>, default: Duration| match v {
        Some(s) => match duration(&s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                cx.err(at, f(field), "must be more than zero");
                default
            }
            Err(m) => {
                cx.err(at, f(field), m);
                default
            }
        },
        None => default,
    };
    let deadline = dur(cx, "deadline", r.deadline, Duration::from_secs(30));
    let poll_interval = dur(
        cx,
        "poll_interval",
        r.poll_interval,
        Duration::from_millis(100),
    );
    if poll_interval >= deadline {
        cx.err(at, f("poll_interval"), "must be less than `deadline`");
    }
    if r.replica.is_empty() {
        cx.err(
            at,
            f("replica"),
            "no `[[probe.replication.replica]]`: name at least one replica to poll",
        );
    }
    let mut names = std::collections::BTreeSet::new();
    let mut replicas = Vec::new();
    for rep in r.replica {
        let rf = format!("replica[{}]", rep.name);
        if !valid_name(&rep.name) {
            cx.err(
                at,
                f(&format!("{rf}.name")),
                "use letters, digits, `-`, `_` and `.` only",
            );
        } else if !names.insert(rep.name.clone()) {
            cx.err(at, f(&format!("{rf}.name")), "duplicate replica name");
        }
        if let Some(url) = ldap_url(cx, at, f(&format!("{rf}.url")), &rep.url) {
            replicas.push(ReplicaSpec {
                name: rep.name,
                url,
            });
        }
    }
    let attribute = r.attribute.unwrap_or_else(|| "description".into());
    let object_classes = r
        .object_classes
        .unwrap_or_else(|| vec!["organizationalRole".into()]);
    if object_classes.is_empty() {
        cx.err(at, f("object_classes"), "name at least one object class");
    }
    let provider = provider?;
    (cx.errors.len() == before).then(|| ReplicationSpec {
        provider,
        bind_dn: r.bind_dn,
        password,
        marker_dn: r.marker_dn,
        attribute,
        object_classes,
        suffix: r.suffix,
        deadline,
        poll_interval,
        ca_file: resolve(base, r.ca_file),
        replicas,
    })
}

fn check_token(
    cx: &mut Ctx<'_>,
    at: usize,
    base: &Path,
    name: &str,
    t: RawToken,
) -> Option<TokenSpec> {
    let f = |field: &str| format!("probe[{name}].token.{field}");
    let endpoint = match url::Url::parse(&t.token_endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            cx.err(
                at,
                f("token_endpoint"),
                format!("`{}` is not an http(s) URL", t.token_endpoint),
            );
            return None;
        }
    };
    let client_secret = match secret(t.client_secret, t.client_secret_env, "client_secret") {
        Ok(s) => s,
        Err(m) => {
            cx.err(at, f("client_secret"), m);
            return None;
        }
    };
    let grant = match t.grant.as_str() {
        "client_credentials" => match client_secret {
            Some(client_secret) => GrantSpec::ClientCredentials { client_secret },
            None => {
                cx.err(
                    at,
                    f("client_secret"),
                    "the client credentials grant needs `client_secret` or `client_secret_env`",
                );
                return None;
            }
        },
        "password" => {
            let password = match secret(t.password, t.password_env, "password") {
                Ok(Some(p)) => p,
                Ok(None) => {
                    cx.err(
                        at,
                        f("password"),
                        "the password grant needs `password` or `password_env`",
                    );
                    return None;
                }
                Err(m) => {
                    cx.err(at, f("password"), m);
                    return None;
                }
            };
            let Some(username) = t.username else {
                cx.err(at, f("username"), "the password grant needs `username`");
                return None;
            };
            GrantSpec::Password {
                client_secret,
                username,
                password,
            }
        }
        other => {
            cx.err(
                at,
                f("grant"),
                format!("`{other}` is not `client_credentials` or `password`"),
            );
            return None;
        }
    };
    if t.scope.is_empty() == t.resource.is_none() {
        cx.err(
            at,
            f("scope"),
            "give `scope` (v2.0 endpoint) or `resource` (v1.0 endpoint), exactly one",
        );
        return None;
    }
    Some(TokenSpec {
        endpoint,
        client_id: t.client_id,
        grant,
        scope: t.scope,
        resource: t.resource,
        ca_file: resolve(base, t.ca_file),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse(text, Path::new("p.toml"), Path::new("."))
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = errs(
            "database = \"x.db\"\n\n[[probe]]\nname = \"a\"\ninterval = \"soon\"\n[probe.ldap]\nurl = \"ldap://h\"\nbase = \"dc=x\"\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("p.toml:3: probe[a].interval: `soon`"),
            "{e:?}"
        );
        let e = errs("[[probe]]\nname = \"a\"\nbogus = 1\n");
        assert!(e[0].starts_with("p.toml:3"), "{e:?}");
        assert!(e[0].contains("bogus"), "{e:?}");
        let e = errs(
            "[[probe]]\nname = \"a\"\n[probe.token]\ntoken_endpoint = \"https://h/t\"\ngrant = \"device\"\nclient_id = \"c\"\nscope = [\"s\"]\n",
        );
        assert!(e[0].contains("probe[a].token.grant: `device`"), "{e:?}");
        let e = errs(
            "metrics_listen = \"0.0.0.0:9000\"\n[[probe]]\nname = \"a\"\n[probe.ldap]\nurl = \"ldap://h\"\nbase = \"b\"\n",
        );
        assert!(e[0].contains("p.toml:1: metrics_listen"), "{e:?}");
        let e = errs("[[probe]]\nname = \"a\"\n");
        assert!(e[0].contains("needs a `[probe.token]`"), "{e:?}");
        let e = errs(
            "[[probe]]\nname = \"a\"\n[probe.ldap]\nurl = \"ldap://h\"\nbase = \"b\"\n[[probe]]\nname = \"a\"\n[probe.ldap]\nurl = \"ldap://h\"\nbase = \"b\"\n",
        );
        assert!(e[0].contains("p.toml:6: probe[a].name: duplicate"), "{e:?}");
    }

    const REPL: &str = "[[probe]]\nname = \"r\"\n[probe.replication]\nprovider = \"ldap://p\"\nmarker_dn = \"cn=m,dc=x\"\n";

    #[test]
    fn replication_defaults_and_checks() {
        let text =
            format!("{REPL}[[probe.replication.replica]]\nname = \"c\"\nurl = \"ldap://c:3890\"\n");
        let set = parse(&text, Path::new("p.toml"), Path::new(".")).unwrap();
        let p = &set.probes[0];
        let r = p.replication.as_ref().unwrap();
        assert_eq!(r.deadline, Duration::from_secs(30));
        assert_eq!(p.timeout, Duration::from_secs(40), "deadline + 10 s");
        assert_eq!(r.poll_interval, Duration::from_millis(100));
        assert_eq!(r.attribute, "description");
        assert_eq!(r.object_classes, ["organizationalRole"]);
        assert_eq!(r.replicas[0].url.port(), Some(3890));

        let e = errs(REPL);
        assert!(
            e[0].contains("probe[r].replication.replica: no `[[probe.replication.replica]]`"),
            "{e:?}"
        );
        let e = errs(&format!(
            "{}timeout = \"5s\"\n[probe.replication]\nprovider = \"ldap://p\"\nmarker_dn = \"m\"\ndeadline = \"5s\"\n[[probe.replication.replica]]\nname = \"c\"\nurl = \"http://c\"\n[[probe.replication.replica]]\nname = \"c\"\nurl = \"ldap://c\"\n",
            "[[probe]]\nname = \"r\"\n"
        ));
        let all = e.join("\n");
        for want in [
            "probe[r].replication.marker_dn: `m` is not a DN",
            "probe[r].replication.replica[c].url: `http://c` is not an ldap://",
            "probe[r].replication.replica[c].name: duplicate replica name",
        ] {
            assert!(all.contains(want), "{want}\n{all}");
        }
        let e = errs(&format!(
            "{}deadline = \"5s\"\n[[probe.replication.replica]]\nname = \"c\"\nurl = \"ldap://c\"\n",
            REPL.replacen("name = \"r\"\n", "name = \"r\"\ntimeout = \"5s\"\n", 1)
        ));
        assert!(
            e[0].contains(
                "probe[r].replication.deadline: must be less than the probe's `timeout` (5s)"
            ),
            "{e:?}"
        );
    }
}

//! Configuration: the `[audit]` table and its `[[audit.sink]]` entries as they appear in
//! the gateway's TOML, and their validation into a checked [`AuditPlan`] that the
//! pipeline runs. The data plane never sees the raw tables.
//!
//! ```toml
//! [audit]
//! queue_capacity = 65536        # events per sink queue
//! queue_full = "block"          # or "drop" (every drop is counted)
//! spool_dir = "/var/lib/intraport/audit-spool"   # required by tcp/tls syslog sinks
//!
//! [[audit.sink]]
//! type = "file"
//! path = "/var/log/intraport/audit.jsonl"
//! durability = "group"          # or "sync"
//! commit_interval_ms = 100
//! rotate_size_bytes = 104857600
//! rotate_interval = "1d"
//! keep = 14
//!
//! [[audit.sink]]
//! type = "syslog"
//! transport = "tls"             # udp | tcp | tls
//! address = "siem.example.net:6514"
//! format = "cef"                # MSG part: cef | ecs | ocsf
//! ca = "/etc/intraport/siem-ca.pem"
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;
use crate::format::{FACILITIES, Format, SyslogHeader};

/// `[audit]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Capacity of each sink's queue, in events (default 65536).
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
    /// What `emit` does when a sink's queue is full (default `block`).
    #[serde(default)]
    pub queue_full: QueueFull,
    /// Directory for the spool files of network sinks that are down.
    pub spool_dir: Option<PathBuf>,
    /// Largest spool file per sink, in bytes (default 1 GiB); events beyond it are
    /// dropped and counted.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// How long shutdown waits for network sinks to confirm delivery before it
    /// spools what is left (default 5000).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_ms: u64,
    /// The sinks (`[[audit.sink]]`); several at once.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            queue_capacity: default_capacity(),
            queue_full: QueueFull::default(),
            spool_dir: None,
            spool_max_bytes: default_spool_max(),
            shutdown_grace_ms: default_shutdown_grace(),
            sinks: Vec::new(),
        }
    }
}

fn default_capacity() -> usize {
    65_536
}
fn default_spool_max() -> u64 {
    1 << 30
}
fn default_shutdown_grace() -> u64 {
    5_000
}
fn default_commit_ms() -> u64 {
    100
}
fn default_true() -> bool {
    true
}
fn default_facility() -> String {
    "local0".into()
}
fn default_app_name() -> String {
    "intraport".into()
}
fn default_sd_id() -> String {
    // 32473 is the enterprise number RFC 5612 reserves for examples; a site with its
    // own private enterprise number sets `sd_id`.
    "intraport@32473".into()
}
fn default_reconnect_max() -> u64 {
    5_000
}

/// Queue-full policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueFull {
    /// `emit` waits for room (back-pressure on the data plane; nothing is lost).
    #[default]
    Block,
    /// `emit` drops the event for that sink and counts it.
    Drop,
}

/// File sink durability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Group commit: the events of up to 25 ms (or the commit interval, if shorter)
    /// are written together, and an `fsync` follows at most `commit_interval_ms` after
    /// the sink took the first event not yet on disk (plus one batch's write, or the
    /// end of an fsync still running), however steadily events keep arriving. The
    /// fsync runs beside the writes, so a slow disk delays no write (but a rotation's,
    /// and none past 32 MiB not yet fsynced).
    #[default]
    Group,
    /// Every batch is fsynced before `emit_durable` returns.
    Sync,
}

/// Syslog transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 5426: one message per datagram, best effort (no spool: loss is not
    /// detectable).
    Udp,
    /// RFC 6587 octet-counted framing over TCP.
    Tcp,
    /// RFC 5425: octet-counted framing over TLS.
    Tls,
}

/// One `[[audit.sink]]`, by its `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// Standard output, one event per line.
    Stdout(StdoutSinkConfig),
    /// A local file, one event per line.
    File(FileSinkConfig),
    /// A syslog collector (SIEM).
    Syslog(SyslogSinkConfig),
}

/// `type = "stdout"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Name in statistics (default `stdout<index>`).
    pub name: Option<String>,
    /// `ecs` (default), `ocsf` or `cef`.
    #[serde(default = "ecs")]
    pub format: Format,
}

fn ecs() -> Format {
    Format::Ecs
}
fn cef() -> Format {
    Format::Cef
}

/// `type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Name in statistics (default `file<index>`).
    pub name: Option<String>,
    /// The file written (created if missing, appended to otherwise).
    pub path: PathBuf,
    /// `ecs` (default), `ocsf` or `cef`.
    #[serde(default = "ecs")]
    pub format: Format,
    /// `group` (default) or `sync`.
    #[serde(default)]
    pub durability: Durability,
    /// Group commit interval in milliseconds (default 100, 1..=10000).
    #[serde(default = "default_commit_ms")]
    pub commit_interval_ms: u64,
    /// Rotate when the file would grow past this many bytes (it may pass them by what
    /// is written while an fsync runs, or while fsyncs fail).
    pub rotate_size_bytes: Option<u64>,
    /// Rotate when the file is this old (`"1h"`, `"1d"`).
    pub rotate_interval: Option<String>,
    /// Gzip rotated files (default true).
    #[serde(default = "default_true")]
    pub compress: bool,
    /// Rotated files to keep (default: all).
    pub keep: Option<usize>,
}

/// `type = "syslog"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// Name in statistics and of the spool file (default `syslog<index>`).
    pub name: Option<String>,
    /// `udp`, `tcp` or `tls`.
    pub transport: Transport,
    /// The collector, `host:port`.
    pub address: String,
    /// MSG part: `cef` (default), `ecs` or `ocsf`.
    #[serde(default = "cef")]
    pub format: Format,
    /// Facility name (default `local0`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME (default `intraport`).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME (default: this machine's name).
    pub hostname: Option<String>,
    /// SD-ID of the structured-data element (default `intraport@32473`).
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
    /// TLS: PEM file of the CA certificates that sign the collector's certificate.
    pub ca: Option<PathBuf>,
    /// TLS: the name the collector's certificate must carry (default: the host part
    /// of `address`).
    pub server_name: Option<String>,
    /// TLS: client certificate chain (PEM) for collectors that require one.
    pub client_cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Longest wait between reconnect attempts, in ms (default 5000; attempts start
    /// at 100 ms and double).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

/// The checked configuration the pipeline runs.
#[derive(Clone, Debug)]
pub struct AuditPlan {
    pub(crate) queue_capacity: usize,
    pub(crate) queue_full: QueueFull,
    pub(crate) spool_max_bytes: u64,
    pub(crate) shutdown_grace: Duration,
    pub(crate) sinks: Vec<SinkPlan>,
}

impl AuditPlan {
    /// The sinks' names, in configuration order.
    pub fn sink_names(&self) -> Vec<&str> {
        self.sinks.iter().map(|s| s.name.as_str()).collect()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SinkPlan {
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Clone, Debug)]
pub(crate) enum SinkKind {
    Stdout {
        format: Format,
    },
    File(FilePlan),
    Udp {
        address: String,
        header: SyslogHeader,
        format: Format,
    },
    Stream(StreamPlan),
}

#[derive(Clone, Debug)]
pub(crate) struct FilePlan {
    pub path: PathBuf,
    pub format: Format,
    pub durability: Durability,
    pub commit_interval: Duration,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    pub compress: bool,
    pub keep: Option<usize>,
}

#[derive(Clone)]
pub(crate) struct StreamPlan {
    pub address: String,
    pub header: SyslogHeader,
    pub format: Format,
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub spool_path: PathBuf,
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for StreamPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPlan")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("spool_path", &self.spool_path)
            .finish()
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        message: message.into(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits `host:port` (IPv6 hosts in brackets) and checks the port.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

fn machine_hostname() -> String {
    let u = rustix::system::uname();
    u.nodename().to_string_lossy().into_owned()
}

impl AuditConfig {
    /// Checks every field and builds the plan; errors name the field as
    /// `audit.sink[i].field` (the gateway adds the file and line).
    pub fn check(&self) -> Result<AuditPlan, Error> {
        if self.queue_capacity == 0 || self.queue_capacity > 16 << 20 {
            return Err(bad(
                "audit.queue_capacity",
                format!(
                    "expected 1..=16777216 events, found {}",
                    self.queue_capacity
                ),
            ));
        }
        let mut names = HashSet::new();
        let mut sinks = Vec::with_capacity(self.sinks.len());
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |f: &str| format!("audit.sink[{i}].{f}");
            let (name, default) = match s {
                SinkConfig::Stdout(c) => (c.name.clone(), format!("stdout{i}")),
                SinkConfig::File(c) => (c.name.clone(), format!("file{i}")),
                SinkConfig::Syslog(c) => (c.name.clone(), format!("syslog{i}")),
            };
            let name = name.unwrap_or(default);
            if !valid_name(&name) {
                return Err(bad(
                    at("name"),
                    format!("expected 1..64 of A-Z a-z 0-9 - _ ., found {name:?}"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(bad(at("name"), format!("sink name {name:?} is used twice")));
            }
            let kind = match s {
                SinkConfig::Stdout(c) => SinkKind::Stdout { format: c.format },
                SinkConfig::File(c) => SinkKind::File(check_file(c, &at)?),
                SinkConfig::Syslog(c) => check_syslog(self, c, &name, &at)?,
            };
            sinks.push(SinkPlan { name, kind });
        }
        let paths: Vec<&Path> = sinks
            .iter()
            .filter_map(|s| match &s.kind {
                SinkKind::File(f) => Some(f.path.as_path()),
                _ => None,
            })
            .collect();
        for (i, p) in paths.iter().enumerate() {
            if paths[..i].contains(p) {
                return Err(bad(
                    "audit.sink.path",
                    format!("two file sinks write {}", p.display()),
                ));
            }
        }
        Ok(AuditPlan {
            queue_capacity: self.queue_capacity,
            queue_full: self.queue_full,
            spool_max_bytes: self.spool_max_bytes,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            sinks,
        })
    }
}

impl AuditConfig {
    /// The files the sinks will open, looked at without creating anything: each file
    /// sink's path (where [`crate::Audit::start`] creates the file and its
    /// directories), the spool directory of TCP and TLS sinks, and a TLS sink's CA,
    /// certificate and key. One error per file, so that a configuration check reports
    /// them all at once, where [`AuditConfig::check`] stops at the first problem.
    pub fn check_files(&self) -> Vec<Error> {
        let mut out = Vec::new();
        let mut spooled = false;
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |f: &str| format!("audit.sink[{i}].{f}");
            match s {
                SinkConfig::Stdout(_) => {}
                SinkConfig::File(c) => {
                    if let Err(e) = creatable(&c.path) {
                        out.push(bad(at("path"), e));
                    }
                }
                SinkConfig::Syslog(c) => {
                    spooled |= c.transport != Transport::Udp;
                    for (field, p) in [
                        ("ca", &c.ca),
                        ("client_cert", &c.client_cert),
                        ("client_key", &c.client_key),
                    ] {
                        if let Some(p) = p
                            && let Err(e) = std::fs::read(p)
                        {
                            out.push(bad(at(field), format!("{}: {e}", p.display())));
                        }
                    }
                }
            }
        }
        if spooled && let Some(dir) = &self.spool_dir {
            // What `Spool::open` needs: the directory (made if missing) and a file in it.
            if let Err(e) = creatable(&dir.join("sink.spool")) {
                out.push(bad("audit.spool_dir", e));
            }
        }
        out
    }
}

/// Whether `path` can be opened for writing, creating it and its missing directories
/// as the sinks do: it is not a directory and is writable, or the nearest directory
/// that exists is a directory (not, say, a regular file where one is needed) and is
/// writable.
fn creatable(path: &Path) -> Result<(), String> {
    use rustix::fs::{Access, access};
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        )
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(format!("{} is a directory", path.display())),
        Ok(_) => {
            return access(path, Access::WRITE_OK)
                .map_err(|e| format!("{}: cannot write: {e}", path.display()));
        }
        Err(e) if gone(&e) => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    for dir in path.ancestors().skip(1) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                return access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
                    format!("cannot create {} in {}: {e}", path.display(), dir.display())
                });
            }
            Ok(_) => {
                return Err(format!(
                    "cannot create {}: {} is not a directory",
                    path.display(),
                    dir.display()
                ));
            }
            Err(e) if gone(&e) => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Ok(())
}

fn check_file(c: &FileSinkConfig, at: &dyn Fn(&str) -> String) -> Result<FilePlan, Error> {
    if c.path.as_os_str().is_empty() || c.path.file_name().is_none() {
        return Err(bad(at("path"), "expected a file path"));
    }
    if !(1..=10_000).contains(&c.commit_interval_ms) {
        return Err(bad(
            at("commit_interval_ms"),
            format!("expected 1..=10000, found {}", c.commit_interval_ms),
        ));
    }
    if c.rotate_size_bytes == Some(0) {
        return Err(bad(at("rotate_size_bytes"), "expected more than 0"));
    }
    let rotate_interval = match &c.rotate_interval {
        None => None,
        Some(s) => {
            let d = humantime::parse_duration(s).map_err(|e| {
                bad(
                    at("rotate_interval"),
                    format!("expected a duration like \"1h\" or \"1d\", found {s:?}: {e}"),
                )
            })?;
            if d < Duration::from_secs(1) {
                return Err(bad(at("rotate_interval"), "expected at least 1s"));
            }
            Some(d)
        }
    };
    if c.keep == Some(0) {
        return Err(bad(at("keep"), "expected at least 1 (omit it to keep all)"));
    }
    Ok(FilePlan {
        path: c.path.clone(),
        format: c.format,
        durability: c.durability,
        commit_interval: Duration::from_millis(c.commit_interval_ms),
        rotate_size: c.rotate_size_bytes,
        rotate_interval,
        compress: c.compress,
        keep: c.keep,
    })
}

fn check_syslog(
    cfg: &AuditConfig,
    c: &SyslogSinkConfig,
    name: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<SinkKind, Error> {
    let Some((host, _port)) = split_address(&c.address) else {
        return Err(bad(
            at("address"),
            format!("expected host:port, found {:?}", c.address),
        ));
    };
    let facility = FACILITIES
        .iter()
        .find(|(n, _)| *n == c.facility)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            bad(
                at("facility"),
                format!(
                    "expected a facility name like local0, found {:?}",
                    c.facility
                ),
            )
        })?;
    if c.sd_id.is_empty()
        || c.sd_id.len() > 32
        || !c.sd_id.contains('@')
        || !c
            .sd_id
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
    {
        return Err(bad(
            at("sd_id"),
            format!(
                "expected name@enterprise-number (RFC 5424 SD-ID), found {:?}",
                c.sd_id
            ),
        ));
    }
    let hostname = c.hostname.clone().unwrap_or_else(machine_hostname);
    let header = SyslogHeader::new(facility, &hostname, &c.app_name, &c.sd_id);
    let tls_fields = c.ca.is_some()
        || c.server_name.is_some()
        || c.client_cert.is_some()
        || c.client_key.is_some();
    if c.transport != Transport::Tls && tls_fields {
        return Err(bad(
            at("transport"),
            "ca, server_name, client_cert and client_key need transport = \"tls\"",
        ));
    }
    if c.transport == Transport::Udp {
        return Ok(SinkKind::Udp {
            address: c.address.clone(),
            header,
            format: c.format,
        });
    }
    let Some(dir) = &cfg.spool_dir else {
        return Err(bad(
            "audit.spool_dir",
            format!(
                "sink {name:?} uses {:?}: a spool directory is required",
                c.transport
            ),
        ));
    };
    let tls = if c.transport == Transport::Tls {
        Some(tls_config(c, host, at)?)
    } else {
        None
    };
    Ok(SinkKind::Stream(StreamPlan {
        address: c.address.clone(),
        header,
        format: c.format,
        tls,
        spool_path: dir.join(format!("{name}.spool")),
        reconnect_max: Duration::from_millis(c.reconnect_max_ms.max(100)),
    }))
}

fn read_certs(
    path: &Path,
    field: String,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    let pem = std::fs::read(path).map_err(|e| bad(&field, format!("{}: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            &field,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}

fn tls_config(
    c: &SyslogSinkConfig,
    host: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<
    (
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
    Error,
> {
    let Some(ca) = &c.ca else {
        return Err(bad(
            at("ca"),
            "transport = \"tls\" needs the collector's CA (ca = \"FILE\")",
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca, at("ca"))? {
        roots
            .add(cert)
            .map_err(|e| bad(at("ca"), format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(at("transport"), e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&c.client_cert, &c.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, at("client_cert"))?;
            let pem = std::fs::read(key)
                .map_err(|e| bad(at("client_key"), format!("{}: {e}", key.display())))?;
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| bad(at("client_key"), format!("{}: {e}", key.display())))?
                .ok_or_else(|| {
                    bad(
                        at("client_key"),
                        format!("{}: no PEM private key found", key.display()),
                    )
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad(at("client_key"), e.to_string()))?
        }
        _ => {
            return Err(bad(
                at("client_cert"),
                "client_cert and client_key go together",
            ));
        }
    };
    let sni = c.server_name.as_deref().unwrap_or(host).to_string();
    let server_name = rustls::pki_types::ServerName::try_from(sni.clone())
        .map_err(|_| bad(at("server_name"), format!("not a DNS name or IP: {sni:?}")))?;
    Ok((Arc::new(config), server_name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        audit: AuditConfig,
    }

    fn parse(s: &str) -> Result<AuditConfig, String> {
        toml::from_str::<Doc>(s)
            .map(|d| d.audit)
            .map_err(|e| e.to_string())
    }

    fn err(s: &str) -> String {
        match parse(s).unwrap().check() {
            Err(Error::Config { field, message }) => format!("{field}: {message}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn full_example_checks() {
        let c = parse(
            r#"
            [audit]
            queue_capacity = 1024
            queue_full = "drop"
            spool_dir = "/tmp/spool"
            [[audit.sink]]
            type = "file"
            path = "/tmp/a.jsonl"
            durability = "sync"
            rotate_size_bytes = 1000
            rotate_interval = "1h"
            keep = 3
            [[audit.sink]]
            type = "stdout"
            format = "cef"
            [[audit.sink]]
            type = "syslog"
            name = "siem"
            transport = "tcp"
            address = "127.0.0.1:514"
            format = "ocsf"
            "#,
        )
        .unwrap();
        let p = c.check().unwrap();
        assert_eq!(p.sink_names(), ["file0", "stdout1", "siem"]);
        assert_eq!(p.queue_full, QueueFull::Drop);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = parse("[audit]\nqueue_size = 3\n").unwrap_err();
        assert!(e.contains("queue_size"), "{e}");
        let e = parse("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\nrotate = 1\n").unwrap_err();
        assert!(e.contains("rotate"), "{e}");
        let e = parse("[[audit.sink]]\ntype = \"kafka\"\n").unwrap_err();
        assert!(e.contains("kafka"), "{e}");
        let e = parse("[[audit.sink]]\ntype = \"stdout\"\nformat = \"leef\"\n").unwrap_err();
        assert!(e.contains("leef") && e.contains("ocsf"), "{e}");
        let e = parse("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\ndurability = \"fast\"\n")
            .unwrap_err();
        assert!(e.contains("fast"), "{e}");
    }

    #[test]
    fn each_check_names_its_field() {
        assert!(err("[audit]\nqueue_capacity = 0").starts_with("audit.queue_capacity"));
        assert!(
            err("[[audit.sink]]\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"nohost\"")
                .starts_with("audit.sink[0].address")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"h:1\"")
                .starts_with("audit.spool_dir")
        );
        assert!(
            err("[audit]\nspool_dir = \"/s\"\n[[audit.sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"h:1\"")
                .starts_with("audit.sink[0].ca")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"h:1\"\nca = \"/x\"")
                .starts_with("audit.sink[0].transport")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"h:1\"\nfacility = \"nope\"")
                .starts_with("audit.sink[0].facility")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"h:1\"\nsd_id = \"no-at\"")
                .starts_with("audit.sink[0].sd_id")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\ncommit_interval_ms = 0")
                .starts_with("audit.sink[0].commit_interval_ms")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\nrotate_interval = \"soon\"")
                .starts_with("audit.sink[0].rotate_interval")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\nkeep = 0")
                .starts_with("audit.sink[0].keep")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\nrotate_size_bytes = 0")
                .starts_with("audit.sink[0].rotate_size_bytes")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"stdout\"\nname = \"a b\"")
                .starts_with("audit.sink[0].name")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"stdout\"\nname = \"a\"\n[[audit.sink]]\ntype = \"stdout\"\nname = \"a\"")
                .starts_with("audit.sink[1].name")
        );
        assert!(
            err("[[audit.sink]]\ntype = \"file\"\npath = \"/x\"\n[[audit.sink]]\ntype = \"file\"\npath = \"/x\"")
                .starts_with("audit.sink.path")
        );
        assert!(
            err("[audit]\nspool_dir = \"/s\"\n[[audit.sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"h:1\"\nca = \"/nonexistent/ca.pem\"")
                .starts_with("audit.sink[0].ca")
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(split_address("[::1]:514"), Some(("::1", 514)));
        assert_eq!(split_address("siem:6514"), Some(("siem", 6514)));
        assert_eq!(split_address("siem:0"), None);
        assert_eq!(split_address(":514"), None);
    }
}

//! `check`: DNS, TCP, TLS, old-version, interception and silent-failure checks against
//! one target, turned into findings with a fixed vocabulary.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use serde::Serialize;

use crate::dns::{self, DnsAnswer, ResolverSpec};
use crate::expect::{self, Expectations, Interception};
use crate::legacy::{self, LegacyAnswer, LegacyProbe, LegacyVersion};
use crate::table::Table;
use crate::target::Target;
use crate::tcp::{self, TcpOutcome, TcpReport};
use crate::tls::{self, ChainVerdict, HandshakeOutcome, HandshakeReport, TlsSettings};

/// At most this many resolved addresses are connected to per target.
const MAX_ADDRESSES: usize = 4;
/// Targets checked at the same time.
const PARALLEL: usize = 8;

/// How a check runs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Resolvers to ask; empty means the system's. Two or more are compared.
    pub resolvers: Vec<ResolverSpec>,
    /// Trust anchors for chain verification.
    pub roots: Arc<RootCertStore>,
    /// Deadline for each DNS query, connect and handshake.
    pub timeout: Duration,
    /// Expected chains, for interception detection.
    pub expectations: Expectations,
    /// Probe TLS 1.0 and 1.1 after a successful handshake.
    pub legacy: bool,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
    /// Warn when the leaf expires within this many days.
    pub expiry_warn_days: i64,
    /// Fixed addresses for host names, skipping DNS (like curl's `--resolve`): check
    /// what an endpoint presents for a name before DNS points there.
    pub overrides: Vec<(String, IpAddr)>,
}

/// The fixed vocabulary of findings; scripts match on these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The name did not resolve.
    DnsFailed,
    /// Resolvers returned different addresses.
    DnsMismatch,
    /// TCP refused (RST to SYN).
    TcpRefused,
    /// TCP timed out: filtered.
    TcpTimeout,
    /// TCP reset during connect.
    TcpReset,
    /// No route / ICMP unreachable.
    TcpUnreachable,
    /// Another TCP error.
    TcpError,
    /// Reset right after our ClientHello, before any server byte.
    TlsResetAfterClientHello,
    /// Closed right after our ClientHello, before any server byte.
    TlsClosedAfterClientHello,
    /// No answer to our ClientHello before the deadline.
    TlsStallAfterClientHello,
    /// The handshake fails with SNI but works without: SNI-based filtering.
    TlsSniFiltered,
    /// The server sent a fatal alert.
    TlsAlert,
    /// The handshake failed after the server answered.
    TlsHandshakeFailed,
    /// No path to a trusted root.
    CertificateUntrusted,
    /// The leaf has expired.
    CertificateExpired,
    /// The leaf expires soon.
    CertificateExpiringSoon,
    /// The leaf is not valid yet.
    CertificateNotYetValid,
    /// The certificate is otherwise invalid.
    CertificateInvalid,
    /// The certificate does not name the host.
    HostnameMismatch,
    /// The server accepts TLS 1.0 or 1.1.
    LegacyTlsAccepted,
    /// The server speaks only TLS 1.0 or 1.1: it refused TLS 1.2 and 1.3 and
    /// accepted an older version.
    TlsLegacyOnly,
    /// The chain is not the expected one: TLS interception.
    Interception,
}

/// Whether a finding fails the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fails the check (exit 1).
    Fail,
    /// Worth knowing; does not fail the check.
    Warn,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// Whether it fails the check.
    pub severity: Severity,
    /// For people.
    pub message: String,
}

/// Everything learned about one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetReport {
    /// The target.
    pub target: Target,
    /// One answer per resolver (empty for address literals).
    pub dns: Vec<DnsAnswer>,
    /// One connection attempt per address.
    pub tcp: Vec<TcpReport>,
    /// Handshakes: with SNI first; without SNI when that failed.
    pub tls: Vec<HandshakeReport>,
    /// TLS 1.0/1.1 probes.
    pub legacy: Vec<LegacyProbe>,
    /// The interception verdict, when an expectation covers the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interception: Option<Interception>,
    /// Problems found.
    pub findings: Vec<Finding>,
    /// No finding fails the check.
    pub ok: bool,
}

impl TargetReport {
    fn find(&mut self, kind: FindingKind, severity: Severity, message: String) {
        self.findings.push(Finding {
            kind,
            severity,
            message,
        });
    }
}

/// Check every target, a few at a time; reports come back in target order.
pub async fn check_all(targets: Vec<Target>, opts: &CheckOptions) -> Vec<TargetReport> {
    let opts = Arc::new(opts.clone());
    let mut set = tokio::task::JoinSet::new();
    let mut reports: Vec<Option<TargetReport>> = vec![None; targets.len()];
    let mut queue = targets.into_iter().enumerate();
    loop {
        while set.len() < PARALLEL {
            let Some((i, t)) = queue.next() else { break };
            let opts = Arc::clone(&opts);
            set.spawn(async move { (i, check_target(t, &opts).await) });
        }
        match set.join_next().await {
            Some(Ok((i, r))) => reports[i] = Some(r),
            // A panicking check is a bug; it loses its report rather than the run.
            Some(Err(_)) => {}
            None => break,
        }
    }
    reports.into_iter().flatten().collect()
}

/// Check one target.
pub async fn check_target(target: Target, opts: &CheckOptions) -> TargetReport {
    let mut r = TargetReport {
        target,
        dns: Vec::new(),
        tcp: Vec::new(),
        tls: Vec::new(),
        legacy: Vec::new(),
        interception: None,
        findings: Vec::new(),
        ok: true,
    };
    let addresses = resolve(&mut r, opts).await;
    let mut connected: Option<SocketAddr> = None;
    for ip in addresses.into_iter().take(MAX_ADDRESSES) {
        let addr = SocketAddr::new(ip, r.target.port);
        let (report, stream) = tcp::connect(addr, opts.timeout).await;
        drop(stream);
        let (kind, what) = match &report.outcome {
            TcpOutcome::Connected => {
                connected.get_or_insert(addr);
                r.tcp.push(report);
                continue;
            }
            TcpOutcome::Refused => (FindingKind::TcpRefused, "refused (RST to SYN)".to_string()),
            TcpOutcome::Timeout => (
                FindingKind::TcpTimeout,
                format!("no answer within {:?}: filtered", opts.timeout),
            ),
            TcpOutcome::Reset => (FindingKind::TcpReset, "reset during connect".to_string()),
            TcpOutcome::Unreachable { detail } => (FindingKind::TcpUnreachable, detail.clone()),
            TcpOutcome::Error { detail } => (FindingKind::TcpError, detail.clone()),
        };
        r.find(kind, Severity::Fail, format!("tcp {addr}: {what}"));
        r.tcp.push(report);
    }
    if let (true, Some(addr)) = (r.target.tls, connected) {
        check_tls(&mut r, addr, opts).await;
    }
    r.ok = !r.findings.iter().any(|f| f.severity == Severity::Fail);
    r
}

async fn resolve(r: &mut TargetReport, opts: &CheckOptions) -> Vec<IpAddr> {
    if let Some(ip) = r.target.ip() {
        return vec![ip];
    }
    let fixed: Vec<IpAddr> = opts
        .overrides
        .iter()
        .filter(|(h, _)| h.eq_ignore_ascii_case(&r.target.host))
        .map(|(_, ip)| *ip)
        .collect();
    if !fixed.is_empty() {
        return fixed;
    }
    let specs = if opts.resolvers.is_empty() {
        vec![ResolverSpec::System]
    } else {
        opts.resolvers.clone()
    };
    for spec in &specs {
        r.dns
            .push(dns::resolve(&r.target.host, spec, opts.timeout).await);
    }
    let mut answers: Vec<(String, BTreeSet<IpAddr>)> = Vec::new();
    for a in &r.dns {
        if let Some(e) = &a.error {
            let msg = format!("{} via {}: {e}", r.target.host, a.resolver);
            r.findings.push(Finding {
                kind: FindingKind::DnsFailed,
                severity: Severity::Fail,
                message: msg,
            });
        } else {
            answers.push((a.resolver.clone(), a.addresses.iter().copied().collect()));
        }
    }
    if let Some((first_name, first)) = answers.first() {
        for (name, set) in &answers[1..] {
            if set != first {
                // Split-horizon DNS and CDNs differ legitimately; a hijacked or stale
                // resolver differs too, so this is shown, not failed.
                r.find(
                    FindingKind::DnsMismatch,
                    Severity::Warn,
                    format!(
                        "{first_name} answered {}, {name} answered {}",
                        join_ips(first),
                        join_ips(set)
                    ),
                );
            }
        }
    }
    answers
        .into_iter()
        .next()
        .map(|(_, set)| set.into_iter().collect())
        .unwrap_or_default()
}

fn join_ips(set: &BTreeSet<IpAddr>) -> String {
    let v: Vec<String> = set.iter().map(|i| i.to_string()).collect();
    format!("[{}]", v.join(", "))
}

async fn check_tls(r: &mut TargetReport, addr: SocketAddr, opts: &CheckOptions) {
    let settings = TlsSettings {
        roots: Arc::clone(&opts.roots),
        timeout: opts.timeout,
        alpn: opts.alpn.clone(),
    };
    let host = r.target.host.clone();
    let by_name = r.target.ip().is_none();
    let first = tls::handshake(&host, addr, by_name, &settings).await;
    let outcome = first.outcome.clone();
    r.tls.push(first);
    match outcome {
        HandshakeOutcome::Completed(n) => {
            chain_findings(r, &n, opts);
            if opts.legacy {
                let sni = by_name.then_some(host.as_str());
                for v in [LegacyVersion::Tls10, LegacyVersion::Tls11] {
                    let probe = legacy::probe(addr, sni, v, opts.timeout).await;
                    if let LegacyAnswer::Accepted { cipher_suite } = &probe.answer {
                        r.find(
                            FindingKind::LegacyTlsAccepted,
                            Severity::Fail,
                            format!(
                                "the server accepts {} (with {cipher_suite}); TLS 1.2 is the minimum",
                                legacy_name(v)
                            ),
                        );
                    }
                    r.legacy.push(probe);
                }
            }
        }
        failed => {
            let silent = matches!(
                failed,
                HandshakeOutcome::Reset { server_bytes: 0 }
                    | HandshakeOutcome::Closed { server_bytes: 0 }
                    | HandshakeOutcome::Stalled { server_bytes: 0 }
            );
            let server_answered =
                !silent && !matches!(failed, HandshakeOutcome::NoConnection { .. });
            // A server that answers TLS 1.2 and 1.3 with an alert (protocol_version,
            // usually) may still speak TLS 1.0 or 1.1: ask it, so that the report says
            // so instead of showing a bare alert.
            if server_answered && opts.legacy {
                let sni = by_name.then_some(host.as_str());
                let mut accepted = Vec::new();
                for v in [LegacyVersion::Tls10, LegacyVersion::Tls11] {
                    let probe = legacy::probe(addr, sni, v, opts.timeout).await;
                    if let LegacyAnswer::Accepted { cipher_suite } = &probe.answer {
                        accepted.push(format!("{} (with {cipher_suite})", legacy_name(v)));
                    }
                    r.legacy.push(probe);
                }
                if !accepted.is_empty() {
                    let refusal = match &failed {
                        HandshakeOutcome::Alert { description } => format!("alert {description}"),
                        other => silent_failure(other, opts.timeout).1,
                    };
                    r.find(
                        FindingKind::TlsLegacyOnly,
                        Severity::Fail,
                        format!(
                            "the server speaks only TLS 1.0/1.1: it refused TLS 1.2 and 1.3 ({refusal}) and accepted {}; TLS 1.2 is the minimum",
                            accepted.join(" and ")
                        ),
                    );
                    return;
                }
            }
            let (kind, message) = silent_failure(&failed, opts.timeout);
            r.find(kind, Severity::Fail, message);
            // Does the same server answer when the name is not sent? Then something on
            // the path filters on SNI. Only a silent failure (no byte from the server)
            // can be that: a server that answered with an alert was reached.
            if by_name && silent {
                let second = tls::handshake(&host, addr, false, &settings).await;
                let server_spoke = match &second.outcome {
                    HandshakeOutcome::Completed(_) | HandshakeOutcome::Alert { .. } => true,
                    HandshakeOutcome::Reset { server_bytes }
                    | HandshakeOutcome::Closed { server_bytes }
                    | HandshakeOutcome::Stalled { server_bytes } => *server_bytes > 0,
                    _ => false,
                };
                r.tls.push(second);
                if server_spoke {
                    r.find(
                        FindingKind::TlsSniFiltered,
                        Severity::Fail,
                        format!(
                            "the handshake fails when SNI {host:?} is sent and the server answers without it: SNI-based filtering on the path"
                        ),
                    );
                }
            }
        }
    }
}

fn legacy_name(v: LegacyVersion) -> &'static str {
    match v {
        LegacyVersion::Tls10 => "TLS 1.0",
        LegacyVersion::Tls11 => "TLS 1.1",
    }
}

fn silent_failure(outcome: &HandshakeOutcome, timeout: Duration) -> (FindingKind, String) {
    match outcome {
        HandshakeOutcome::Reset { server_bytes: 0 } => (
            FindingKind::TlsResetAfterClientHello,
            "connection reset right after the ClientHello, before any server byte (a middlebox acting on the ClientHello)".into(),
        ),
        HandshakeOutcome::Closed { server_bytes: 0 } => (
            FindingKind::TlsClosedAfterClientHello,
            "connection closed right after the ClientHello, before any server byte".into(),
        ),
        HandshakeOutcome::Stalled { server_bytes: 0 } => (
            FindingKind::TlsStallAfterClientHello,
            format!("no answer to the ClientHello within {timeout:?} (dropped by a middlebox)"),
        ),
        HandshakeOutcome::Reset { server_bytes }
        | HandshakeOutcome::Closed { server_bytes }
        | HandshakeOutcome::Stalled { server_bytes } => (
            FindingKind::TlsHandshakeFailed,
            format!("handshake broke off after {server_bytes} bytes from the server"),
        ),
        HandshakeOutcome::Alert { description } => (
            FindingKind::TlsAlert,
            format!("the server sent fatal alert {description}"),
        ),
        HandshakeOutcome::NoConnection { tcp } => (
            FindingKind::TlsHandshakeFailed,
            format!("could not reconnect for the handshake: {}", tcp.describe()),
        ),
        HandshakeOutcome::Failed { detail } => (FindingKind::TlsHandshakeFailed, detail.clone()),
        HandshakeOutcome::Completed(_) => (
            FindingKind::TlsHandshakeFailed,
            "internal: completed handshake classified as failure".into(),
        ),
    }
}

fn chain_findings(r: &mut TargetReport, n: &tls::Negotiated, opts: &CheckOptions) {
    let leaf = n.chain.first();
    let issuer = leaf.map(|l| l.issuer.clone()).unwrap_or_default();
    let verdict = match &n.verdict {
        ChainVerdict::Valid => None,
        ChainVerdict::Untrusted => Some((
            FindingKind::CertificateUntrusted,
            format!("no path to a trusted root (leaf issued by {issuer})"),
        )),
        ChainVerdict::Expired => Some((
            FindingKind::CertificateExpired,
            "the certificate has expired".to_string(),
        )),
        ChainVerdict::NotYetValid => Some((
            FindingKind::CertificateNotYetValid,
            "the certificate is not valid yet".to_string(),
        )),
        ChainVerdict::HostnameMismatch => Some((
            FindingKind::HostnameMismatch,
            format!(
                "the certificate is not valid for {:?} (it names {})",
                r.target.host,
                leaf.map(|l| l.subject_alt_names.join(", "))
                    .unwrap_or_default()
            ),
        )),
        ChainVerdict::Invalid { detail } => Some((
            FindingKind::CertificateInvalid,
            format!("the certificate was refused: {detail}"),
        )),
    };
    if let Some((kind, message)) = verdict {
        r.find(kind, Severity::Fail, message);
    }
    if let Some(days) = n.leaf_days_left {
        if (0..opts.expiry_warn_days).contains(&days) {
            r.find(
                FindingKind::CertificateExpiringSoon,
                Severity::Warn,
                format!("the certificate expires in {days} days"),
            );
        }
    }
    if let Some(ep) = opts.expectations.find(&r.target.host, r.target.port) {
        let verdict = expect::evaluate(ep, &n.chain);
        if let Interception::Intercepted {
            intercepting_ca,
            expected,
        } = &verdict
        {
            r.find(
                FindingKind::Interception,
                Severity::Fail,
                format!(
                    "TLS interception: the chain was issued by {intercepting_ca:?}, expected {expected}"
                ),
            );
        }
        r.interception = Some(verdict);
    }
}

/// Reports as an aligned table, one line per target, then the findings.
pub fn check_table(reports: &[TargetReport]) -> String {
    let mut t = Table::new(&["TARGET", "ADDRESS", "TCP", "TLS", "CERTIFICATE", "RESULT"]);
    let mut findings = Table::new(&["TARGET", "SEVERITY", "FINDING", "DETAIL"]);
    for r in reports {
        let tcp = r
            .tcp
            .iter()
            .find(|t| t.outcome == TcpOutcome::Connected)
            .or(r.tcp.first());
        let (address, tcp_text) = match tcp {
            Some(t) => (
                t.address.to_string(),
                match &t.outcome {
                    TcpOutcome::Connected => format!("ok {:.1}ms", t.elapsed_ms),
                    other => tcp_word(other).to_string(),
                },
            ),
            None => ("-".into(), "-".into()),
        };
        let (tls_text, cert_text) = match r.tls.first().map(|h| &h.outcome) {
            None => ("-".to_string(), "-".to_string()),
            Some(HandshakeOutcome::Completed(n)) => (
                format!("{} {}", n.version, n.cipher_suite),
                format!(
                    "{} ({}{})",
                    verdict_word(&n.verdict),
                    n.chain
                        .first()
                        .map(|l| l.issuer_name.as_str())
                        .unwrap_or(""),
                    n.leaf_days_left
                        .map(|d| format!(", {d}d left"))
                        .unwrap_or_default()
                ),
            ),
            Some(_) => {
                let old: Vec<String> = r
                    .legacy
                    .iter()
                    .filter(|p| matches!(p.answer, LegacyAnswer::Accepted { .. }))
                    .map(|p| {
                        serde_json::to_value(p.version)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    })
                    .collect();
                if old.is_empty() {
                    ("failed".to_string(), "-".to_string())
                } else {
                    (format!("only {}", old.join(",")), "-".to_string())
                }
            }
        };
        t.row(vec![
            r.target.label.clone(),
            address,
            tcp_text,
            tls_text,
            cert_text,
            if r.ok { "ok" } else { "FAIL" }.to_string(),
        ]);
        for f in &r.findings {
            let kind = serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            findings.row(vec![
                r.target.label.clone(),
                match f.severity {
                    Severity::Fail => "fail",
                    Severity::Warn => "warn",
                }
                .to_string(),
                kind,
                f.message.clone(),
            ]);
        }
    }
    let mut out = t.render();
    if reports.iter().any(|r| !r.findings.is_empty()) {
        out.push('\n');
        out.push_str(&findings.render());
    }
    out
}

fn tcp_word(o: &TcpOutcome) -> &'static str {
    match o {
        TcpOutcome::Connected => "ok",
        TcpOutcome::Refused => "refused",
        TcpOutcome::Timeout => "timeout",
        TcpOutcome::Reset => "reset",
        TcpOutcome::Unreachable { .. } => "unreachable",
        TcpOutcome::Error { .. } => "error",
    }
}

fn verdict_word(v: &ChainVerdict) -> &'static str {
    match v {
        ChainVerdict::Valid => "valid",
        ChainVerdict::Untrusted => "untrusted",
        ChainVerdict::Expired => "expired",
        ChainVerdict::NotYetValid => "not yet valid",
        ChainVerdict::HostnameMismatch => "wrong name",
        ChainVerdict::Invalid { .. } => "invalid",
    }
}

//! The analysis result: one entry per TCP connection, a summary and warnings.
//! Serialised as the JSON of `intraport pcap`, a public interface.

use std::collections::BTreeMap;

use serde::Serialize;

/// The whole result of analysing one capture.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `pcap` or `pcapng`.
    pub format: String,
    /// Packets in the file.
    pub packets: u64,
    /// Packets that decoded as TCP.
    pub tcp_packets: u64,
    /// Time from the first to the last packet, milliseconds.
    pub duration_ms: f64,
    /// Every TCP connection, in order of its first packet.
    pub connections: Vec<Connection>,
    /// Counts by outcome and by server.
    pub summary: Summary,
    /// TCP packets found inside tunnels (`gre`, `vxlan`, `geneve`, `gtp-u`,
    /// `ip-in-ip`; the outermost when nested), by tunnel.
    pub tunnels: BTreeMap<String, u64>,
    /// Packets skipped or streams abandoned, with the packet number where known.
    pub warnings: Vec<Warning>,
    /// Warnings beyond the first [`crate::MAX_WARNINGS`], counted but not listed.
    pub warnings_suppressed: u64,
}

impl Report {
    /// Whether any connection's handshake failed (see [`Outcome::is_failure`]).
    pub fn any_failed(&self) -> bool {
        self.connections.iter().any(|c| c.outcome.is_failure())
    }
}

/// How a connection's TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both sides finished the handshake (TLS 1.2: both encrypted Finished seen;
    /// TLS 1.3: the client's encrypted Finished seen after the ServerHello).
    Completed,
    /// An alert ended the handshake; see [`Connection::alert`].
    Alert,
    /// A TCP reset after the ClientHello and before any ServerHello: the classic
    /// signature of a middlebox or server refusing the hello.
    ResetAfterClientHello,
    /// A FIN after the ClientHello and before any ServerHello.
    ClosedBeforeServerHello,
    /// A TCP reset after the ServerHello, before the handshake completed.
    ResetDuringHandshake,
    /// A FIN after the ServerHello, before the handshake completed.
    ClosedDuringHandshake,
    /// The handshake started and neither completed nor ended before the capture
    /// did: a stall (see [`Connection::idle_ms`]) or a capture stopped too early; or
    /// the client gave up and closed without a single byte from the server (a stall
    /// seen from the client; `closed_by` is then the client).
    TimeoutOrIncomplete,
    /// The connection carries something other than TLS.
    NotTls,
    /// TLS records, but the handshake happened before the capture started.
    HandshakeNotCaptured,
    /// No payload at all (refused, or opened and closed without data), or none from
    /// a client whose connection was captured from its SYN (a port check; a note
    /// says what the server sent anyway).
    NoPayload,
}

impl Outcome {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Alert => "alert",
            Outcome::ResetAfterClientHello => "reset_after_client_hello",
            Outcome::ClosedBeforeServerHello => "closed_before_server_hello",
            Outcome::ResetDuringHandshake => "reset_during_handshake",
            Outcome::ClosedDuringHandshake => "closed_during_handshake",
            Outcome::TimeoutOrIncomplete => "timeout_or_incomplete",
            Outcome::NotTls => "not_tls",
            Outcome::HandshakeNotCaptured => "handshake_not_captured",
            Outcome::NoPayload => "no_payload",
        }
    }

    /// A TLS handshake was attempted (ClientHello seen) and did not complete.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Alert
                | Outcome::ResetAfterClientHello
                | Outcome::ClosedBeforeServerHello
                | Outcome::ResetDuringHandshake
                | Outcome::ClosedDuringHandshake
                | Outcome::TimeoutOrIncomplete
        )
    }
}

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The end that sent the SYN (or, without one, the ClientHello).
    Client,
    /// The other end.
    Server,
}

/// One TCP connection and its handshake.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    /// 1-based, in order of first packet.
    pub id: usize,
    /// `address:port` of the client.
    pub client: String,
    /// `address:port` of the server.
    pub server: String,
    /// Packet number of the connection's first packet.
    pub first_packet: u64,
    /// Packets of this connection.
    pub packets: u64,
    /// Outcome of the handshake.
    pub outcome: Outcome,
    /// Server name from the ClientHello.
    pub sni: Option<String>,
    /// What the client offered.
    pub client_hello: Option<ClientHello>,
    /// What the server chose.
    pub server_hello: Option<ServerHello>,
    /// The negotiated version (from the ServerHello's supported_versions when present).
    pub version: Option<String>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<String>,
    /// The ALPN protocol chosen; always null for TLS 1.3, where it is encrypted.
    pub alpn_selected: Option<String>,
    /// The server answered with a TLS 1.3 HelloRetryRequest first (the client then
    /// sent a second ClientHello; `client_hello` is the first).
    pub hello_retry_request: bool,
    /// What carried the handshake when it did not start the connection:
    /// `http-connect`, `socks5`, `smtp-starttls`, `imap-starttls`, `pop3-stls`,
    /// `ftp-auth-tls`, `ldap-starttls` (or `starttls` when the client's side was not
    /// captured).
    pub via: Option<String>,
    /// The tunnel the connection's packets were captured in (`gre`, `vxlan`,
    /// `geneve`, `gtp-u`, `ip-in-ip`).
    pub tunnel: Option<String>,
    /// The fatal (or encrypted) alert that ended the handshake, when the outcome is
    /// `alert`.
    pub alert: Option<Alert>,
    /// Warning-level alerts (such as `unrecognized_name`), in order: listed, they
    /// do not end a handshake.
    pub warning_alerts: Vec<Alert>,
    /// Which side sent the RST or FIN that ended a failed handshake.
    pub closed_by: Option<Side>,
    /// SYN (or first packet) to ServerHello, milliseconds.
    pub server_hello_ms: Option<f64>,
    /// SYN (or first packet) to handshake completion, milliseconds.
    pub handshake_ms: Option<f64>,
    /// Time from this connection's last packet to the end of the capture, milliseconds.
    pub idle_ms: f64,
    /// Segments carrying only bytes already seen, both directions.
    pub retransmissions: u64,
    /// What could not be analysed (gaps, truncation) for this connection.
    pub notes: Vec<String>,
}

/// The ClientHello's offer.
#[derive(Debug, Clone, Serialize)]
pub struct ClientHello {
    /// The record-layer compatible version field (`legacy_version`).
    pub legacy_version: String,
    /// The supported_versions extension (TLS 1.3 clients), GREASE left out.
    pub supported_versions: Vec<String>,
    /// Offered cipher suites by IANA name, GREASE left out.
    pub cipher_suites: Vec<String>,
    /// The server_name extension.
    pub sni: Option<String>,
    /// Offered ALPN protocols.
    pub alpn: Vec<String>,
    /// Sent in the SSLv2 record format (RFC 5246, E.2), as clients from before TLS
    /// 1.1 did to reach servers of any version: no extensions, so no SNI.
    pub sslv2_format: bool,
}

/// The ServerHello's choice.
#[derive(Debug, Clone, Serialize)]
pub struct ServerHello {
    /// The `legacy_version` field (TLSv1.2 for a TLS 1.3 server).
    pub legacy_version: String,
    /// The version really chosen.
    pub version: String,
    /// The chosen cipher suite.
    pub cipher_suite: String,
    /// The ALPN protocol chosen (TLS 1.2 and below only).
    pub alpn: Option<String>,
}

/// A TLS alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Who sent it.
    pub from: Side,
    /// `fatal`, `warning`, or null when encrypted.
    pub level: Option<String>,
    /// RFC name in snake case (`unknown_ca`, `protocol_version`, ...), or
    /// `encrypted` when the alert was sent under encryption and cannot be read.
    pub description: String,
    /// Packet number of the alert (of the packet that completed its record).
    pub packet: u64,
}

/// Counts across the capture.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// TCP connections.
    pub connections: u64,
    /// Connections with a ClientHello.
    pub handshakes: u64,
    /// Handshakes that failed.
    pub failed: u64,
    /// Connections by outcome name.
    pub by_outcome: BTreeMap<String, u64>,
    /// Per server, sorted by address.
    pub by_server: Vec<ServerSummary>,
}

/// Counts for one server endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    /// `address:port`.
    pub server: String,
    /// Server names clients asked for.
    pub sni: Vec<String>,
    /// Connections to it.
    pub connections: u64,
    /// By outcome name.
    pub by_outcome: BTreeMap<String, u64>,
}

/// Something skipped or not fully analysed.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// Packet number (1-based) where known.
    pub packet: Option<u64>,
    /// What happened.
    pub message: String,
}

impl Summary {
    pub(crate) fn of(connections: &[Connection]) -> Summary {
        let mut s = Summary::default();
        let mut servers: BTreeMap<&str, ServerSummary> = BTreeMap::new();
        for c in connections {
            s.connections += 1;
            if c.client_hello.is_some() {
                s.handshakes += 1;
            }
            if c.outcome.is_failure() {
                s.failed += 1;
            }
            *s.by_outcome.entry(c.outcome.as_str().into()).or_default() += 1;
            let entry = servers.entry(&c.server).or_insert_with(|| ServerSummary {
                server: c.server.clone(),
                sni: Vec::new(),
                connections: 0,
                by_outcome: BTreeMap::new(),
            });
            entry.connections += 1;
            *entry
                .by_outcome
                .entry(c.outcome.as_str().into())
                .or_default() += 1;
            if let Some(sni) = &c.sni {
                if !entry.sni.contains(sni) {
                    entry.sni.push(sni.clone());
                }
            }
        }
        s.by_server = servers.into_values().collect();
        s
    }
}

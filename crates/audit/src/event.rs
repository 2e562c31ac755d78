//! The audit event: one struct for every kind of thing the gateway witnesses.
//!
//! Every connection attempt and request outcome becomes one [`Event`]. The kind is an
//! [`Action`]; fields that do not apply to a kind stay `None`. Field types are cheap to
//! build on the data plane: [`Text`] is a small-string type (inline up to 23 bytes,
//! `&'static str` without allocation, shared otherwise), addresses are `SocketAddr`,
//! durations are `Duration`. The token itself never enters an event: only its `kid`,
//! `tid`, `oid` and `azp` ([`Identity`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cheap string for event fields: static strings and short strings do not allocate,
/// clones are O(1).
pub type Text = smol_str::SmolStr;

/// What happened: the kind of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A TCP connection was accepted by a listener.
    ConnectionAccepted,
    /// A TCP connection was refused before TLS (reason: `limit`, `ban`, `cidr`, ...).
    ConnectionRefused,
    /// An HTTP connection ended (reason: `client_closed`, `idle_timeout`,
    /// `header_read_timeout`, `h2_reset_flood`, `banned`, `shutdown`, `error`), with
    /// its bytes and total duration.
    ConnectionClosed,
    /// A TLS handshake finished; the outcome says whether it succeeded (reason on
    /// failure: `no_shared_cipher`, `no_shared_version`, `bad_client_cert`, `timeout`,
    /// `reset`, ...).
    TlsHandshake,
    /// A token or client certificate was checked; on failure the reason is a code of
    /// the token vocabulary (`expired`, `bad_signature`, ...).
    Authentication,
    /// The route's policy allowed or denied the request (route and rule set).
    PolicyDecision,
    /// The upstream answered (or failed): status, bytes and durations.
    UpstreamResult,
    /// A source address was banned (for example after repeated failed authentication).
    Ban,
    /// A ban was lifted.
    Unban,
    /// The configuration was reloaded (outcome failure with the reason if it was not).
    Reload,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 10] = [
        Action::ConnectionAccepted,
        Action::ConnectionRefused,
        Action::ConnectionClosed,
        Action::TlsHandshake,
        Action::Authentication,
        Action::PolicyDecision,
        Action::UpstreamResult,
        Action::Ban,
        Action::Unban,
        Action::Reload,
    ];

    /// The action as it appears in `event.action`, the CEF signature id and the
    /// syslog MSGID (lowercase, hyphenated, at most 32 printable ASCII characters).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ConnectionAccepted => "connection-accepted",
            Action::ConnectionRefused => "connection-refused",
            Action::ConnectionClosed => "connection-closed",
            Action::TlsHandshake => "tls-handshake",
            Action::Authentication => "authentication",
            Action::PolicyDecision => "policy-decision",
            Action::UpstreamResult => "upstream-result",
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Reload => "reload",
        }
    }

    /// A short human name (the CEF `Name` header field).
    pub fn title(self) -> &'static str {
        match self {
            Action::ConnectionAccepted => "Connection accepted",
            Action::ConnectionRefused => "Connection refused",
            Action::ConnectionClosed => "Connection closed",
            Action::TlsHandshake => "TLS handshake",
            Action::Authentication => "Authentication",
            Action::PolicyDecision => "Policy decision",
            Action::UpstreamResult => "Upstream result",
            Action::Ban => "Source banned",
            Action::Unban => "Source unbanned",
            Action::Reload => "Configuration reload",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the thing the event describes succeeded (ECS `event.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded (accepted, allowed, authenticated, answered).
    Success,
    /// It failed or was refused; [`Event::reason`] says why.
    Failure,
    /// Not applicable or not known.
    Unknown,
}

impl Outcome {
    /// `success`, `failure` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// A unique event id: a random 64-bit process nonce and a 64-bit sequence number,
/// shown as a UUID-shaped 32-digit hex string. Unique across restarts (the nonce) and
/// ordered within one process (the sequence), without a system call per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// Random per process.
    pub nonce: u64,
    /// Increments by one per event in this process.
    pub seq: u64,
}

impl EventId {
    /// The next id of this process.
    pub fn next() -> EventId {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        EventId {
            nonce: process_nonce(),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl EventId {
    /// The id in its UUID shape (`8-4-4-4-12` lowercase hex digits), as bytes: the
    /// nonce's 16 digits, then the sequence's 16. Written without the formatting
    /// machinery, which costs more than the rest of an event on the hot path.
    pub fn to_bytes(self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.nonce.to_be_bytes());
        bytes[8..].copy_from_slice(&self.seq.to_be_bytes());
        // Where each byte's two digits go: groups of 4, 2, 2, 2 and 6 bytes.
        const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        for (b, at) in bytes.into_iter().zip(AT) {
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        // Only ASCII hex digits and hyphens.
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        // The standard library's randomly keyed hasher is the one source of process
        // randomness without another dependency; mixed with the clock and pid so two
        // processes started in the same nanosecond still differ.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// Who the token or certificate says the caller is. Never the token itself.
///
/// The gateway builds one per verified token and shares it (behind an `Arc`) between
/// that token's requests; the ECS writer renders its fields once, into
/// [`Identity::rendered`], and copies that text into each event. Fill the fields
/// before the identity is first written, and leave them alone afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The token's key id (`kid` header).
    pub kid: Option<Text>,
    /// The tenant (`tid`).
    pub tid: Option<Text>,
    /// The object id of the user or service principal (`oid`); ECS `user.id`.
    pub oid: Option<Text>,
    /// The client application (`azp` or v1 `appid`).
    pub azp: Option<Text>,
    /// The client certificate's subject, for mTLS identities.
    pub cert_subject: Option<Text>,
    /// The ECS text of the token's fields, written on first use: leave it at its
    /// default. Ignored by `==`; a clone starts empty.
    pub rendered: Rendered,
}

/// An [`Identity`]'s ECS text, kept with the identity so that its strings are escaped
/// once per token rather than once per event (they are a fifth of an event's fields).
#[derive(Default)]
pub struct Rendered(pub(crate) OnceLock<crate::format::EcsIdentity>);

impl Clone for Rendered {
    fn clone(&self) -> Rendered {
        // The clone's fields may be changed before it is written: render it afresh.
        Rendered::default()
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Rendered) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered(ecs)"
        } else {
            "Rendered(-)"
        })
    }
}

/// TLS facts of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, as IANA names it without the prefix: `1.2`, `1.3`.
    pub version: Option<Text>,
    /// The negotiated cipher suite's IANA name.
    pub cipher: Option<Text>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`).
    pub alpn: Option<Text>,
}

/// HTTP facts of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInfo {
    /// Request method.
    pub method: Option<Text>,
    /// The normalised request path (never the query string: it may carry secrets).
    pub path: Option<Text>,
    /// The status code sent to the client.
    pub status: Option<u16>,
    /// HTTP version: `1.1`, `2`.
    pub version: Option<Text>,
}

/// Time spent in each stage of a connection or request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durations {
    /// TLS handshake.
    pub handshake: Option<Duration>,
    /// Token or certificate validation.
    pub auth: Option<Duration>,
    /// From sending to the upstream until its response head (or the TCP session's end).
    pub upstream: Option<Duration>,
    /// From accept (or request start) to the end.
    pub total: Option<Duration>,
}

/// One audit event. Build it with [`Event::new`] and set the fields that apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id, set by [`Event::new`].
    pub id: EventId,
    /// When it happened, set by [`Event::new`].
    pub timestamp: SystemTime,
    /// What happened.
    pub action: Action,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// Why (refusal reason, TLS failure reason, token error code, deny reason, ban
    /// cause, reload error): a code from a fixed vocabulary wherever one exists.
    pub reason: Option<Text>,
    /// The connection's id, shared by all events of one connection.
    pub connection_id: Option<u64>,
    /// The request's id (also sent upstream), for HTTP events.
    pub request_id: Option<Text>,
    /// The client's address as the gateway saw it (or as trusted proxies reported it).
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the listener's local address).
    pub destination: Option<SocketAddr>,
    /// The listener's name.
    pub listener: Option<Text>,
    /// The route's name.
    pub route: Option<Text>,
    /// The policy rule that decided (for example `source.deny[2]`, `require.roles`).
    pub rule: Option<Text>,
    /// The TLS server name the client asked for.
    pub sni: Option<Text>,
    /// TLS facts.
    pub tls: Option<Box<TlsInfo>>,
    /// Who the caller is (shared: the gateway builds it once per verified token).
    pub identity: Option<Arc<Identity>>,
    /// HTTP facts.
    pub http: Option<Box<HttpInfo>>,
    /// The upstream's address.
    pub upstream: Option<SocketAddr>,
    /// Bytes received from the client.
    pub bytes_in: Option<u64>,
    /// Bytes sent to the client.
    pub bytes_out: Option<u64>,
    /// Stage durations.
    pub durations: Durations,
    /// How long a ban lasts (for [`Action::Ban`]).
    pub ban_duration: Option<Duration>,
    /// A free-form human message (for example the reload's summary).
    pub message: Option<Text>,
}

impl Event {
    /// A new event of `action` with `outcome`, a fresh id and the current time; every
    /// other field empty.
    pub fn new(action: Action, outcome: Outcome) -> Event {
        Event {
            id: EventId::next(),
            timestamp: SystemTime::now(),
            action,
            outcome,
            reason: None,
            connection_id: None,
            request_id: None,
            source: None,
            destination: None,
            listener: None,
            route: None,
            rule: None,
            sni: None,
            tls: None,
            identity: None,
            http: None,
            upstream: None,
            bytes_in: None,
            bytes_out: None,
            durations: Durations::default(),
            ban_duration: None,
            message: None,
        }
    }

    /// Sets the reason (builder style).
    pub fn with_reason(mut self, reason: impl Into<Text>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    /// The event's severity on the syslog scale (0 emergency .. 7 debug): failures and
    /// bans are warnings (4), everything else informational (6).
    pub fn syslog_severity(&self) -> u8 {
        match (self.action, self.outcome) {
            (Action::Ban, _) => 4,
            (_, Outcome::Failure) => 4,
            _ => 6,
        }
    }

    /// The event's CEF severity (0..10).
    pub fn cef_severity(&self) -> u8 {
        match (self.action, self.outcome) {
            (Action::Ban, _) => 7,
            (Action::Authentication, Outcome::Failure) => 6,
            (Action::Reload, Outcome::Failure) => 6,
            (_, Outcome::Failure) => 5,
            _ => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_uuid_shaped() {
        let a = EventId::next();
        let b = EventId::next();
        assert_ne!(a, b);
        assert_eq!(a.nonce, b.nonce);
        let s = a.to_string();
        assert_eq!(s.len(), 36, "{s}");
        assert_eq!(s.matches('-').count(), 4);
        let id = EventId {
            nonce: 0x0123_4567_89ab_cdef,
            seq: 0xfedc_ba98_7654_3210,
        };
        assert_eq!(id.to_string(), "01234567-89ab-cdef-fedc-ba9876543210");
    }

    #[test]
    fn action_names_fit_a_syslog_msgid() {
        for a in Action::ALL {
            let s = a.as_str();
            assert!(s.len() <= 32 && s.bytes().all(|b| (33..=126).contains(&b)));
        }
    }

    #[test]
    fn event_stays_small() {
        // Boxed optional groups keep the common event small to move through queues.
        assert!(
            std::mem::size_of::<Event>() <= 512,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}

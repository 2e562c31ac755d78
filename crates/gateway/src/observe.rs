//! What the data plane tells the audit log: the facts of a connection that every one
//! of its events carries ([`ConnInfo`]), the one event each HTTP request ends with
//! ([`RequestTrace`] → [`RequestTrace::event`]), and the response body that writes
//! that event when the last byte has gone ([`AuditedBody`]).
//!
//! A request produces exactly one event, named after the stage that decided it:
//! `authentication` (a token was refused), `policy-decision` (a route, source, limit
//! or claims rule refused it), or `upstream-result` (it was forwarded: status, bytes,
//! durations, and the identity and rule that let it through).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use intraport_audit::{Action, Audit, Event, HttpInfo, Outcome, Text, TlsInfo};
use intraport_policy::CertIdentity;
use intraport_token::Identity;

use crate::gateway::Shared;
use crate::http::Body;
use crate::metrics::Name;

/// The facts of one accepted connection, shared by all its events.
pub(crate) struct ConnInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Name,
    pub accepted: Instant,
    /// Set once the TLS handshake completed.
    pub tls: Option<TlsFacts>,
}

/// What the TLS handshake established.
pub(crate) struct TlsFacts {
    pub sni: Option<Text>,
    pub info: TlsInfo,
    pub handshake: Duration,
}

impl ConnInfo {
    /// An event of this connection: id, addresses, listener, SNI and TLS facts set.
    pub fn event(&self, action: Action, outcome: Outcome) -> Event {
        let mut e = Event::new(action, outcome);
        e.connection_id = Some(self.id);
        e.source = Some(self.peer);
        e.destination = Some(self.local);
        e.listener = Some(Text::from(&*self.listener));
        if let Some(t) = &self.tls {
            e.sni = t.sni.clone();
            e.tls = Some(Box::new(t.info.clone()));
            e.durations.handshake = Some(t.handshake);
        }
        e
    }
}

/// The audit identity of a caller: the token's ids (never the token) and the client
/// certificate's subject. A token alone (the common case) has its audit identity
/// built once and kept with the verified identity, which the token cache shares
/// between requests; a request's event then costs one reference count.
pub(crate) fn identity(
    token: Option<&Identity>,
    kid: Option<Text>,
    cert: Option<&CertIdentity>,
) -> Option<Arc<intraport_audit::Identity>> {
    if let (Some(t), None, None) = (token, &kid, cert) {
        let shared = t.derived.get_or_init(|| {
            let id: Arc<dyn std::any::Any + Send + Sync> =
                Arc::new(build_identity(Some(t), None, None));
            id
        });
        if let Ok(id) = shared.clone().downcast::<intraport_audit::Identity>() {
            return Some(id);
        }
    }
    if token.is_none() && kid.is_none() && cert.is_none() {
        return None;
    }
    Some(Arc::new(build_identity(token, kid, cert)))
}

fn build_identity(
    token: Option<&Identity>,
    kid: Option<Text>,
    cert: Option<&CertIdentity>,
) -> intraport_audit::Identity {
    // The token's strings are shared (`Arc<str>`): a reference-count bump each.
    let text = |s: &Option<Arc<str>>| s.clone().map(Text::from);
    intraport_audit::Identity {
        kid: kid.or_else(|| token.and_then(|t| text(&t.kid))),
        tid: token.and_then(|t| text(&t.tenant_id)),
        oid: token.and_then(|t| text(&t.object_id)),
        azp: token.and_then(|t| text(&t.app_id)),
        cert_subject: cert.map(|c| Text::from(c.subject.as_str())),
        rendered: Default::default(),
    }
}

/// The `kid` header of a token that failed validation, read without trusting it, for
/// the audit log (which key an attacker claims is a useful signal).
pub(crate) fn unverified_kid(token: &str) -> Option<Text> {
    if token.split('.').next()?.len() > 2048 {
        return None;
    }
    let header = intraport_token::decode_header_json(token)?;
    let kid = header.get("kid")?.as_str()?;
    // Bounded and printable: it is attacker-chosen and goes to a SIEM.
    (kid.len() <= 128 && kid.bytes().all(|b| (0x21..0x7f).contains(&b))).then(|| Text::from(kid))
}

/// What one HTTP request went through, filled in stage by stage.
#[derive(Default)]
pub(crate) struct RequestTrace {
    pub route: Option<Name>,
    /// The client as the policy saw it (differs from the peer behind trusted proxies).
    pub client: Option<std::net::IpAddr>,
    pub identity: Option<Arc<Identity>>,
    /// The `kid` of a refused token.
    pub refused_kid: Option<Text>,
    pub auth: Option<Duration>,
    /// The rule that allowed the request (`allow.token`, ...).
    pub rule: Option<&'static str>,
    pub upstream: Option<Duration>,
    /// Request body bytes read so far (shared with the body on its way upstream).
    pub bytes_in: Option<Arc<AtomicU64>>,
}

impl RequestTrace {
    /// The request's one event, before the response body is known.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        conn: &ConnInfo,
        cert: Option<&CertIdentity>,
        rid: &str,
        method: &http::Method,
        path: &str,
        version: http::Version,
        status: u16,
        refusal: Option<(&'static str, bool)>,
    ) -> Event {
        // `refusal`: the error code, and whether the token was what failed.
        let (action, outcome, reason) = match refusal {
            None => (Action::UpstreamResult, Outcome::Success, None),
            Some((code, true)) => (Action::Authentication, Outcome::Failure, Some(code)),
            Some((code, false)) if code.starts_with("upstream_") => {
                (Action::UpstreamResult, Outcome::Failure, Some(code))
            }
            Some((code, false)) => (Action::PolicyDecision, Outcome::Failure, Some(code)),
        };
        let mut e = conn.event(action, outcome);
        e.reason = reason.map(Text::new_static);
        e.request_id = Some(Text::from(rid));
        if let Some(ip) = self.client.filter(|ip| *ip != conn.peer.ip()) {
            // Behind a trusted proxy: the event is about the client it named.
            e.source = Some(SocketAddr::new(ip, 0));
        }
        e.route = self.route.as_deref().map(Text::from);
        e.rule = self.rule.map(Text::new_static);
        e.identity = identity(self.identity.as_deref(), self.refused_kid.clone(), cert);
        e.http = Some(Box::new(HttpInfo {
            method: Some(Text::from(method.as_str())),
            path: Some(Text::from(path)),
            status: Some(status),
            version: Some(Text::new_static(match version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            })),
        }));
        e.durations.auth = self.auth;
        e.durations.upstream = self.upstream;
        e
    }
}

/// A response body that counts the bytes sent and writes the request's event when it
/// ends (or the client goes away): exact byte counts without holding the response.
/// A body cut by the end of the shutdown's grace period is recorded as such (outcome
/// failure, reason `shutdown`, the bytes sent so far).
pub(crate) struct AuditedBody {
    inner: Body,
    sent: u64,
    /// The last frame was read.
    ended: bool,
    /// Shared from the start, so that queueing it for the sinks is a move, not a copy.
    event: Option<Arc<Event>>,
    audit: Audit,
    /// For the shutdown's kill signal, looked at only when a body is dropped unended.
    shared: Arc<Shared>,
    bytes_in: Option<Arc<AtomicU64>>,
    started: Instant,
}

impl AuditedBody {
    pub fn new(
        inner: Body,
        event: Event,
        audit: Audit,
        shared: Arc<Shared>,
        bytes_in: Option<Arc<AtomicU64>>,
        started: Instant,
    ) -> AuditedBody {
        AuditedBody {
            inner,
            sent: 0,
            ended: false,
            event: Some(Arc::new(event)),
            audit,
            shared,
            bytes_in,
            started,
        }
    }
}

impl hyper::body::Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            // Not shared yet: `make_mut` changes it in place.
            let e = Arc::make_mut(&mut event);
            e.bytes_out = Some(self.sent);
            e.bytes_in = self.bytes_in.as_ref().map(|b| b.load(Ordering::Relaxed));
            e.durations.total = Some(self.started.elapsed());
            if !self.ended
                && !hyper::body::Body::is_end_stream(&self.inner)
                && self.shared.kill.is_cancelled()
            {
                e.outcome = Outcome::Failure;
                e.reason = Some(Text::new_static("shutdown"));
            }
            self.audit.emit_detached(event);
        }
    }
}

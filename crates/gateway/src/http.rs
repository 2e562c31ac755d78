//! HTTP routes: TLS handshake (with the client certificate), then per request the
//! stages route → source → identity → policy → forward, each refusing with its own
//! status and code. Bodies stream both ways; WebSocket (HTTP/1.1 upgrade) requests
//! become a byte tunnel once both sides have switched protocols.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use intraport_limits::{AbuseStats, RateDecision};
use intraport_policy::forward::{self, HopByHop};
use intraport_policy::{CertIdentity, Denial, DenyReason, IdentityRequirement, PathError};
use intraport_token::{ErrorCode, Identity, TokenError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use intraport_audit::{Action, Outcome, Text, TlsInfo};

use crate::body::{BodyLimit, ClientBodyError, GuardedBody};
use crate::config::{HttpRoute, Routes};
use crate::gateway::{ListenerRuntime, Shared};
use crate::metrics::{
    ConnLabels, PolicyLabels, RequestLabels, RouteLabels, TokenLabels, UpstreamLabels, status_class,
};
use crate::observe::{AuditedBody, ConnInfo, RequestTrace, TlsFacts};
use crate::send::SendWatch;
use crate::tcp::{Activity, Tracked};
use crate::tls::HandshakeFailure;

/// Response bodies: the upstream's, streamed, or a short one of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// What a connection carries into each of its requests.
struct ConnCtx {
    conn: ConnInfo,
    scheme: &'static str,
    cert: Option<Arc<CertIdentity>>,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    shared: Arc<Shared>,
    /// Requests being answered (the idle timeout waits while there are some).
    in_flight: AtomicUsize,
    /// Requests answered, and requests the client abandoned before their answer.
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    /// Cancelled when the client abandons too many requests (rapid reset).
    reset_flood: CancellationToken,
    /// Cancelled when the connection's own peer is banned: the connection is closed
    /// once the current answers are sent, so a banned sprayer cannot keep using a
    /// connection it opened before the ban (a new one is refused at accept).
    banned: CancellationToken,
    /// The client's activity: the idle timeout and the request-head clock.
    clock: Arc<Activity>,
    /// The answers being sent: the send timeout.
    sends: Arc<SendWatch>,
}

impl ConnCtx {
    fn new(
        conn: ConnInfo,
        scheme: &'static str,
        cert: Option<Arc<CertIdentity>>,
        runtime: Arc<ArcSwap<ListenerRuntime>>,
        shared: Arc<Shared>,
        clock: Arc<Activity>,
    ) -> ConnCtx {
        ConnCtx {
            conn,
            scheme,
            cert,
            runtime,
            shared,
            in_flight: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            reset_flood: CancellationToken::new(),
            banned: CancellationToken::new(),
            clock,
            sends: SendWatch::new(),
        }
    }

    /// Closes this connection after its current answers if `client` (the address the
    /// policy saw) is its socket peer; behind a trusted proxy the connection carries
    /// other clients too and stays open.
    fn close_if_peer(&self, client: IpAddr) {
        if client == self.conn.peer.ip() {
            self.banned.cancel();
        }
    }
}

/// One request being answered. It counts requests in flight (the idle timeout waits
/// for them) and, when the client abandons the request before its answer (HTTP/2
/// RST_STREAM, or a closed connection), a cancellation. In the HTTP/2 rapid-reset
/// attack (CVE-2023-44487) hyper hands every stream to the service at once, so its
/// own pending-reset limit never sees the resets; a connection whose cancellations
/// reach `limit` and outnumber its answered requests is closed here instead.
struct RequestGuard {
    ctx: Arc<ConnCtx>,
    limit: usize,
    answered: bool,
}

impl RequestGuard {
    fn new(ctx: Arc<ConnCtx>, limit: usize) -> RequestGuard {
        ctx.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            ctx,
            limit,
            answered: false,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.ctx.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // HTTP/1.1: the client's next byte starts the next request head.
            self.ctx.clock.await_head();
        }
        if self.answered {
            self.ctx.completed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cancelled = self.ctx.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limit > 0
            && cancelled >= self.limit
            && cancelled > self.ctx.completed.load(Ordering::Relaxed)
        {
            self.ctx.reset_flood.cancel();
        }
    }
}

/// hyper's executor for the HTTP/2 streams of a connection (each stream's request
/// runs in a task of its own): the shutdown's task tracker, so that shutdown waits
/// for streams cut at the grace deadline to end, and their events to be queued,
/// before it flushes the audit sinks.
#[derive(Clone)]
struct StreamExecutor(tokio_util::task::TaskTracker);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Complete the TLS handshake (if the listener has TLS) and serve HTTP/1.1 or HTTP/2.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    mut conn: ConnInfo,
    rt: Arc<ListenerRuntime>,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    shared: Arc<Shared>,
) {
    // Bytes either way count as activity for the idle timeout; the client's bytes, read
    // in plaintext (above TLS), also start the clock of a request head.
    let clock = Arc::new(Activity::new());
    // HTTP/1.1 unless the first bytes are the HTTP/2 preface (prior knowledge, or after
    // ALPN h2: hyper tells the two apart by those bytes, whatever ALPN said). The first
    // head is timed from now, not from its first byte: a connection that says nothing
    // is closed at the head timeout, not held until the idle timeout.
    clock.head_starts_now();
    let Some(acceptor) = &rt.acceptor else {
        let stream = Tracked::http(stream, clock.clone());
        let ctx = Arc::new(ConnCtx::new(conn, "http", None, runtime, shared, clock));
        serve_http(TokioIo::new(stream), ctx, &rt).await;
        return;
    };
    let Some((tls, cert)) = handshake(acceptor, stream, &mut conn, &rt, &shared).await else {
        return;
    };
    // The handshake was activity too; the first head is timed from its end.
    clock.touch();
    clock.head_starts_now();
    let tls = Tracked::http(tls, clock.clone());
    let ctx = Arc::new(ConnCtx::new(conn, "https", cert, runtime, shared, clock));
    serve_http(TokioIo::new(tls), ctx, &rt).await;
}

/// The TLS handshake with its deadline: timed, counted by outcome, recorded as an
/// event (failures with their reason), and the verified client certificate read.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    conn: &mut ConnInfo,
    rt: &ListenerRuntime,
    shared: &Shared,
) -> Option<(
    tokio_rustls::server::TlsStream<S>,
    Option<Arc<CertIdentity>>,
)> {
    let listener = &rt.listener.name;
    let peer = conn.peer;
    let started = Instant::now();
    let accepted =
        tokio::time::timeout(rt.listener.handshake_timeout, acceptor.accept(stream)).await;
    let took = started.elapsed();
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = HandshakeFailure::classify(&e);
            tracing::info!(%listener, %peer, reason = reason.as_str(), error = %e, "TLS handshake failed");
            handshake_failed(reason, took, conn, rt, shared).await;
            if reason == HandshakeFailure::ClientCertInvalid {
                // A client certificate that does not verify is a failed authentication.
                shared.guard.auth_failure(peer.ip(), reason.as_str()).await;
            }
            return None;
        }
        Err(_) => {
            tracing::info!(%listener, %peer, reason = "timeout", "TLS handshake failed");
            handshake_failed(HandshakeFailure::Timeout, took, conn, rt, shared).await;
            return None;
        }
    };
    let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        None => None,
        Some(der) => match CertIdentity::from_der(der.as_ref()) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                // Verified by rustls but unreadable here: fail closed.
                tracing::info!(%listener, %peer, reason = "client_cert_invalid", error = %e, "client certificate unreadable");
                handshake_failed(HandshakeFailure::ClientCertInvalid, took, conn, rt, shared).await;
                return None;
            }
        },
    };
    shared
        .metrics
        .handshakes
        .get_or_create(&ConnLabels {
            listener: rt.name.clone(),
            outcome: "success",
        })
        .observe(took.as_secs_f64());
    if shared.audit.is_some() {
        let session = tls.get_ref().1;
        let text = |s: Option<&str>| s.map(Text::from);
        conn.tls = Some(TlsFacts {
            sni: text(session.server_name()),
            info: TlsInfo {
                version: session.protocol_version().map(|v| {
                    Text::from(match v {
                        rustls::ProtocolVersion::TLSv1_3 => "1.3",
                        rustls::ProtocolVersion::TLSv1_2 => "1.2",
                        _ => "other",
                    })
                }),
                cipher: session
                    .negotiated_cipher_suite()
                    .and_then(|c| c.suite().as_str())
                    .map(Text::from),
                alpn: session
                    .alpn_protocol()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .map(Text::from),
            },
            handshake: took,
        });
        let mut e = conn.event(Action::TlsHandshake, Outcome::Success);
        if let Some(c) = &cert {
            e.identity = crate::observe::identity(None, None, Some(c));
        }
        shared.emit(e).await;
    }
    Some((tls, cert))
}

/// Count a failed handshake (listener counter, metric) and record its event.
async fn handshake_failed(
    reason: HandshakeFailure,
    took: Duration,
    conn: &ConnInfo,
    rt: &ListenerRuntime,
    shared: &Shared,
) {
    rt.stats.handshake_failed(reason);
    shared
        .metrics
        .handshakes
        .get_or_create(&ConnLabels {
            listener: rt.name.clone(),
            outcome: reason.as_str(),
        })
        .observe(took.as_secs_f64());
    if shared.audit.is_some() {
        let mut e = conn.event(Action::TlsHandshake, Outcome::Failure);
        e.reason = Some(Text::from(reason.as_str()));
        e.durations.handshake = Some(took);
        shared.emit(e).await;
    }
}

async fn serve_http<I>(io: TokioIo<I>, ctx: Arc<ConnCtx>, rt: &ListenerRuntime)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ctx.shared.clone();
    let conn_ctx = ctx.clone();
    let limits = &rt.listener.limits;
    let reset_limit = limits.h2_max_pending_reset_streams;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            if req.version() == Version::HTTP_2 {
                ctx.clock.no_more_heads();
            } else {
                ctx.clock.head_received();
            }
            let mut guard = RequestGuard::new(ctx.clone(), reset_limit);
            let resp = handle(req, &ctx).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                ctx.clock.no_more_heads();
            }
            guard.answered = true;
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(StreamExecutor(shared.tracker.clone()));
    // The request-head timeout is ours (`Activity::head_overdue`): hyper's restarts
    // whenever it waits for a head, so a keep-alive connection quiet between requests
    // would be closed at the head timeout rather than the idle timeout.
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    // Entra tokens with many claims are large: the default 64 KiB header list leaves
    // room for a 16 KiB token in HTTP/2 too. hyper closes a connection whose client
    // resets more than `max_pending_accept_reset_streams` streams before they are
    // served (rapid reset, CVE-2023-44487) with GOAWAY ENHANCE_YOUR_CALM.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_resets);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let clock = &conn_ctx.clock;
    let idle_watch = async {
        loop {
            clock.idle_for(idle).await;
            if conn_ctx.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            // A request is being answered: that is not idleness.
            clock.touch();
        }
    };
    let head_watch = async {
        loop {
            clock.head_overdue(limits.header_read_timeout).await;
            if conn_ctx.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            // A request is being answered: whatever was timed was not a head.
            clock.head_received();
        }
    };
    let send_watch = conn_ctx.sends.overdue(limits.send_timeout);
    let stats = shared.guard.stats().clone();
    let listener = &rt.listener.name;
    let peer = conn_ctx.conn.peer;
    // Why the connection ends, and whether it first winds down: answers in progress
    // are finished (HTTP/1 keep-alive off, HTTP/2 GOAWAY), for at most `wait` (none:
    // until the shutdown's grace period kills it).
    let (reason, wind_down): (&'static str, Option<Option<Duration>>) = tokio::select! {
        r = conn.as_mut() => match r {
            Ok(()) => ("client_closed", None),
            Err(e) => (conn_error(&*e, &stats, listener, peer), None),
        },
        () = conn_ctx.reset_flood.cancelled() => {
            AbuseStats::bump(&stats.h2_reset_floods);
            tracing::warn!(
                event = "limit",
                limit = "h2_reset_flood",
                %listener,
                %peer,
                cancelled = conn_ctx.cancelled.load(Ordering::Relaxed),
                answered = conn_ctx.completed.load(Ordering::Relaxed),
                "connection closed: the client abandons most of its requests (rapid reset)"
            );
            ("h2_reset_flood", None)
        }
        () = head_watch => {
            AbuseStats::bump(&stats.header_timeouts);
            tracing::info!(event = "limit", limit = "header_read_timeout", %listener, %peer, "connection closed: request head not received in time");
            ("header_read_timeout", None)
        }
        () = send_watch => {
            AbuseStats::bump(&stats.send_timeouts);
            tracing::info!(event = "limit", limit = "send_timeout", %listener, %peer, "connection closed: the client did not take its answer in time");
            // Not wound down: what is left to send would wait on the same client.
            ("send_timeout", None)
        }
        () = idle_watch => {
            AbuseStats::bump(&stats.idle_closes);
            tracing::debug!(%listener, %peer, idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX), "idle connection closed");
            ("idle_timeout", Some(Some(Duration::from_secs(5))))
        }
        () = shared.drain.cancelled() => ("shutdown", Some(None)),
        () = conn_ctx.banned.cancelled() => ("banned", Some(Some(Duration::from_secs(5)))),
    };
    if let Some(wait) = wind_down {
        conn.as_mut().graceful_shutdown();
        let limit = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => {}
            () = limit => {}
            () = shared.kill.cancelled() => {}
        }
    }
    if shared.audit.is_some() {
        let ok = reason == "client_closed" || reason == "shutdown";
        let c = &conn_ctx.conn;
        let mut e = c.event(
            Action::ConnectionClosed,
            if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        );
        e.reason = Some(Text::from(reason));
        e.durations.total = Some(c.accepted.elapsed());
        e.message = Some(Text::from(format!(
            "{} requests answered, {} abandoned",
            conn_ctx.completed.load(Ordering::Relaxed),
            conn_ctx.cancelled.load(Ordering::Relaxed)
        )));
        shared.emit(e).await;
    }
}

/// Count and log how a connection ended when it ended on an error, and name it: an
/// HTTP/2 client reset too many streams, or another error.
fn conn_error(
    e: &(dyn std::error::Error + 'static),
    stats: &AbuseStats,
    listener: &str,
    peer: SocketAddr,
) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h2e) = c.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                AbuseStats::bump(&stats.h2_reset_floods);
                tracing::warn!(event = "limit", limit = "h2_reset_flood", %listener, %peer, "HTTP/2 connection closed: too many stream resets (rapid reset)");
                return "h2_reset_flood";
            }
        }
        cur = c.source();
    }
    tracing::debug!(%listener, %peer, error = %e, "connection ended with an error");
    "error"
}

/// Every way a request is refused.
#[derive(Debug)]
enum Reject {
    BadPath(PathError),
    /// `Host` / `:authority` missing, repeated, inconsistent or not `host[:port]`.
    BadHost(String),
    /// CONNECT, TRACE, TRACK: a reverse proxy has no tunnel to open, and a reflected
    /// request would echo the credentials back (cross-site tracing).
    MethodNotAllowed(http::Method),
    /// The client's request body is not valid HTTP (a malformed chunk).
    BadRequest(String),
    NoRoute,
    Token(TokenError),
    Denied(Denial),
    UpstreamUnavailable(String),
    UpstreamTimeout,
    UpstreamError(String),
    UriTooLong(usize),
    HeadersTooLarge(usize),
    BodyTooLarge(u64),
    BodyTimeout,
    RateLimited {
        retry_after: Duration,
        by_identity: bool,
    },
    /// The source holds this many upstream requests already.
    HoldLimited(usize),
    Banned(Duration),
    /// `durability = "sync"` and the request's event could not be written.
    AuditUnavailable,
}

impl Reject {
    fn status(&self) -> StatusCode {
        match self {
            Reject::BadPath(_) | Reject::BadHost(_) | Reject::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Reject::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::Token(_) => StatusCode::UNAUTHORIZED,
            Reject::Denied(d) => {
                StatusCode::from_u16(d.reason.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
            Reject::UpstreamUnavailable(_) | Reject::UpstreamError(_) => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reject::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Reject::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::RateLimited { .. } | Reject::HoldLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Reject::Banned(_) => StatusCode::FORBIDDEN,
            Reject::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Reject::BadPath(_) => "bad_path",
            Reject::BadHost(_) => "bad_host",
            Reject::MethodNotAllowed(_) => "method_not_allowed",
            Reject::BadRequest(_) => "bad_request",
            Reject::NoRoute => "no_route",
            Reject::Token(e) => e.code.as_str(),
            Reject::Denied(d) => d.reason.code(),
            Reject::UpstreamUnavailable(_) => "upstream_unavailable",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::UpstreamError(_) => "upstream_error",
            Reject::UriTooLong(_) => "uri_too_long",
            Reject::HeadersTooLarge(_) => "headers_too_large",
            Reject::BodyTooLarge(_) => "body_too_large",
            Reject::BodyTimeout => "body_timeout",
            Reject::RateLimited {
                by_identity: false, ..
            } => "rate_limited",
            Reject::RateLimited {
                by_identity: true, ..
            } => "identity_rate_limited",
            Reject::HoldLimited(_) => "upstream_requests_limited",
            Reject::Banned(_) => "source_banned",
            Reject::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The RFC 6750 challenge, when a bearer token is what the client needs.
    fn challenge(&self) -> Option<String> {
        match self {
            Reject::Token(e) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                e.code.as_str()
            )),
            // No credentials at all: a plain challenge (RFC 6750 section 3.1).
            Reject::Denied(d) if d.reason == DenyReason::TokenRequired => Some("Bearer".into()),
            Reject::Denied(d) if claims_reason(d.reason) => Some(format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{}\"",
                d.reason.code()
            )),
            _ => None,
        }
    }

    fn detail(&self) -> String {
        match self {
            Reject::BadPath(e) => format!("{} ({})", e, e.code()),
            Reject::BadHost(m) | Reject::BadRequest(m) => m.clone(),
            Reject::MethodNotAllowed(m) => format!("method {m} is not forwarded"),
            Reject::NoRoute => "no route for this host and path".into(),
            Reject::Token(e) => e.message.clone(),
            Reject::Denied(d) => d.detail.clone(),
            Reject::UpstreamUnavailable(m) | Reject::UpstreamError(m) => m.clone(),
            Reject::UpstreamTimeout => "no response head within the response timeout".into(),
            Reject::UriTooLong(max) => format!("the request target is longer than {max} bytes"),
            Reject::HeadersTooLarge(max) => format!("the request head is larger than {max} bytes"),
            Reject::BodyTooLarge(max) => format!("the request body is larger than {max} bytes"),
            Reject::BodyTimeout => "the request body stalled past the body timeout".into(),
            Reject::RateLimited {
                retry_after,
                by_identity,
            } => format!(
                "over the {} request rate; retry after {} ms",
                if *by_identity {
                    "identity's"
                } else {
                    "source's"
                },
                retry_after.as_millis()
            ),
            Reject::HoldLimited(max) => format!(
                "the source has {max} requests with the upstreams already, whose answers are not sent yet"
            ),
            Reject::Banned(left) => {
                format!("the source is banned for {} more seconds", left.as_secs())
            }
            Reject::AuditUnavailable => "the request's audit event could not be written".into(),
        }
    }

    fn into_response(self, request_id: &str) -> Response<Body> {
        let body = format!(
            "{{\"error\":\"{}\",\"request_id\":\"{request_id}\"}}",
            self.code()
        );
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(c) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            h.insert(WWW_AUTHENTICATE, c);
        }
        let wait = match &self {
            Reject::RateLimited { retry_after, .. } => Some(*retry_after),
            Reject::Banned(left) => Some(*left),
            _ => None,
        };
        if let Some(wait) = wait {
            // Whole seconds, rounded up (RFC 9110 section 10.2.3), never 0.
            let secs = wait.as_millis().div_ceil(1000).max(1);
            h.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
            );
        }
        resp
    }
}

/// Denials about the token's claims (a different token could pass), as opposed to
/// the source address or the client certificate.
fn claims_reason(r: DenyReason) -> bool {
    matches!(
        r,
        DenyReason::TenantNotAllowed
            | DenyReason::RoleMissing
            | DenyReason::ScopeMissing
            | DenyReason::GroupMissing
            | DenyReason::GroupsOverage
            | DenyReason::AppNotAllowed
            | DenyReason::VersionNotAllowed
            | DenyReason::IdentityKindNotAllowed
    )
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// A request id unique in this process and unlikely to repeat across restarts: a
/// random per-process prefix and a counter (cheaper than a random UUID per request).
fn request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:012x}", prefix as u32, n)
}

async fn handle(req: Request<Incoming>, ctx: &ConnCtx) -> Response<Body> {
    let rid = request_id();
    let rt = ctx.runtime.load_full();
    let shared = &ctx.shared;
    let started = Instant::now();
    // Kept for the log line and the event; the clones are reference-count bumps.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let version = req.version();
    let mut cut = CutByShutdown {
        ctx,
        rid: &rid,
        method: &method,
        path: uri.path(),
        version,
        started,
        trace: RequestTrace::default(),
        armed: shared.audit.is_some(),
    };
    if shared.audit.is_some() {
        cut.trace.bytes_in = Some(Arc::new(AtomicU64::new(0)));
    }
    let answer = proxy(req, ctx, &rt, &rid, &mut cut.trace).await;
    // Answered (or refused): the event below is the request's.
    cut.armed = false;
    let trace = &cut.trace;
    let (mut resp, code, refusal) = match answer {
        Ok(r) => (r, "forwarded", None),
        Err((route, reject)) => {
            if matches!(reject, Reject::Token(_) | Reject::Denied(_)) {
                rt.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(
                request_id = %rid,
                listener = %rt.listener.name,
                route = route.as_deref().unwrap_or("-"),
                peer = %ctx.conn.peer,
                %method,
                path = uri.path(),
                status = reject.status().as_u16(),
                code = reject.code(),
                detail = %reject.detail(),
                "request refused"
            );
            let code = reject.code();
            let token = matches!(reject, Reject::Token(_));
            (reject.into_response(&rid), code, Some((code, token)))
        }
    };
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            listener: rt.name.clone(),
            route: trace.route.clone().unwrap_or_else(|| Arc::from("-")),
            code,
        })
        .inc();
    if let Some(audit) = &shared.audit {
        let mut event = trace.event(
            &ctx.conn,
            ctx.cert.as_deref(),
            &rid,
            &method,
            uri.path(),
            version,
            resp.status().as_u16(),
            refusal,
        );
        let bytes_in = || trace.bytes_in.as_ref().map(|b| b.load(Ordering::Relaxed));
        if shared.audit_sync {
            // The response waits for its event to be on disk; its size is what it
            // declares (a streamed body has none).
            event.bytes_in = bytes_in();
            event.bytes_out = resp.body().size_hint().exact();
            event.durations.total = Some(started.elapsed());
            if let Err(e) = audit.emit_durable(event).await {
                tracing::error!(request_id = %rid, error = %e, "audit event not durable: refusing the response");
                resp = Reject::AuditUnavailable.into_response(&rid);
            }
        } else if refusal.is_some() || resp.body().is_end_stream() {
            event.bytes_in = bytes_in();
            event.bytes_out = resp.body().size_hint().exact();
            event.durations.total = Some(started.elapsed());
            audit.emit(event).await;
        } else {
            let (parts, body) = resp.into_parts();
            let body = AuditedBody::new(
                body,
                event,
                audit.clone(),
                shared.clone(),
                trace.bytes_in.clone(),
                started,
            );
            resp = Response::from_parts(parts, body.boxed());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    resp
}

/// The event of a request still unanswered when the shutdown's grace period ends:
/// the connection is closed and the request's future dropped, and this guard's
/// `Drop` queues its event (outcome failure, reason `shutdown`, no status: none was
/// sent) before the connection's task ends, so that the audit flush at shutdown has
/// it. A request the client abandons is not recorded here (its connection's
/// `connection-closed` event counts it).
struct CutByShutdown<'a> {
    ctx: &'a ConnCtx,
    rid: &'a str,
    method: &'a http::Method,
    path: &'a str,
    version: Version,
    started: Instant,
    trace: RequestTrace,
    armed: bool,
}

impl Drop for CutByShutdown<'_> {
    fn drop(&mut self) {
        let shared = &self.ctx.shared;
        let Some(audit) = &shared.audit else { return };
        if !self.armed || !shared.kill.is_cancelled() {
            return;
        }
        let mut e = self.trace.event(
            &self.ctx.conn,
            self.ctx.cert.as_deref(),
            self.rid,
            self.method,
            self.path,
            self.version,
            0,
            None,
        );
        if self.trace.rule.is_none() {
            // Cut while still being decided, not forwarded.
            e.action = Action::PolicyDecision;
        }
        e.outcome = Outcome::Failure;
        e.reason = Some(Text::new_static("shutdown"));
        if let Some(h) = e.http.as_mut() {
            h.status = None;
        }
        e.bytes_in = self
            .trace
            .bytes_in
            .as_ref()
            .map(|b| b.load(Ordering::Relaxed));
        e.durations.total = Some(self.started.elapsed());
        audit.emit_detached(e);
    }
}

fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, TokenError> {
    let malformed = |m: &str| TokenError::new(ErrorCode::Malformed, m);
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed("more than one Authorization header"));
    }
    let s = v
        .to_str()
        .map_err(|_| malformed("the Authorization header is not visible ASCII"))?;
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, Negotiate): no bearer token was sent.
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(malformed(
            "expected `Authorization: Bearer <token>` with one token",
        ));
    }
    Ok(Some(token))
}

fn wants_token(r: IdentityRequirement) -> bool {
    matches!(
        r,
        IdentityRequirement::Token
            | IdentityRequirement::TokenOrCert
            | IdentityRequirement::TokenAndCert
    )
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Methods never forwarded: CONNECT (a reverse proxy opens no tunnels; TCP routes
/// are for that), TRACE and IIS's TRACK (they echo the request, credentials
/// included). Compared without case: a server that reads methods so would take
/// `trace` for TRACE.
fn refused_method(m: &http::Method) -> bool {
    let s = m.as_str();
    ["CONNECT", "TRACE", "TRACK"]
        .iter()
        .any(|r| s.eq_ignore_ascii_case(r))
}

/// The host a request names: the request target's authority (absolute-form, or
/// HTTP/2's `:authority`) or its one `Host` header. Refused: no host at all, two
/// `Host` headers, a `Host` that differs from the target's authority, and anything
/// that is not a plain `host[:port]` (userinfo included).
fn request_authority<B>(req: &Request<B>) -> Result<String, String> {
    let mut values = req.headers().get_all(HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err("more than one Host header".into());
    }
    let header = header
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| "the Host header is not visible ASCII".to_string())
        })
        .transpose()?;
    let target = req.uri().authority().map(http::uri::Authority::as_str);
    let host = match (target, header) {
        (Some(t), Some(h)) if !t.eq_ignore_ascii_case(h) => {
            return Err(format!(
                "the Host header `{h}` differs from the request target's authority `{t}`"
            ));
        }
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => return Err("no Host header".into()),
    };
    intraport_policy::check_authority(host).map_err(|e| format!("host `{host}`: {e}"))?;
    Ok(host.to_string())
}

/// Every element of a trusted proxy's `X-Forwarded-Host` is a plain `host[:port]`.
fn forwarded_host_ok(headers: &http::HeaderMap) -> Result<(), String> {
    for v in headers.get_all("x-forwarded-host") {
        let s = v
            .to_str()
            .map_err(|_| "X-Forwarded-Host is not visible ASCII".to_string())?;
        for h in s.split(',').map(str::trim) {
            intraport_policy::check_authority(h)
                .map_err(|e| format!("X-Forwarded-Host `{h}`: {e}"))?;
        }
    }
    Ok(())
}

type Refusal = (Option<String>, Reject);

/// A request counted in `http_requests_in_flight` until it is answered.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> InFlight {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn proxy(
    mut req: Request<Incoming>,
    ctx: &ConnCtx,
    rt: &ListenerRuntime,
    rid: &str,
    trace: &mut RequestTrace,
) -> Result<Response<Body>, Refusal> {
    let metrics = &ctx.shared.metrics;
    let limits = &rt.listener.limits;
    let stats = ctx.shared.guard.stats();
    let listener = rt.listener.name.as_str();
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.max_uri_bytes {
        AbuseStats::bump(&stats.uri_too_long);
        return Err((None, Reject::UriTooLong(limits.max_uri_bytes)));
    }
    // hyper bounds its HTTP/1.1 read buffer, not the head itself: count it here.
    let head: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head > limits.max_header_bytes {
        return Err((None, Reject::HeadersTooLarge(limits.max_header_bytes)));
    }

    // Method, host, path: what the request names, refused unless it is unambiguous.
    if refused_method(req.method()) {
        return Err((None, Reject::MethodNotAllowed(req.method().clone())));
    }
    let host = request_authority(&req).map_err(|e| (None, Reject::BadHost(e)))?;
    let trusted = &rt.listener.trusted_proxies;
    let from_proxy = trusted
        .contains(ctx.conn.peer.ip().to_canonical())
        .is_some();
    if from_proxy {
        // Kept and passed on: it must name hosts, not `user@host` (an upstream that
        // builds links from it would send its users to whatever follows the `@`).
        forwarded_host_ok(req.headers()).map_err(|e| (None, Reject::BadHost(e)))?;
    }
    let path = intraport_policy::normalize_path(req.uri().path())
        .map_err(|e| (None, Reject::BadPath(e)))?;

    // Route.
    let Routes::Http { table, .. } = &rt.listener.routes else {
        return Err((None, Reject::NoRoute));
    };
    let matched = table
        .lookup(Some(&host), &path)
        .ok_or((None, Reject::NoRoute))?;
    let route: Arc<HttpRoute> = matched.value.clone();
    // The path policy judged, spelled as the route's prefix: the one forwarded.
    let path = matched.path.into_owned();
    let refuse = |r: Reject| (Some(route.name.clone()), r);
    let route_rt = rt
        .upstreams
        .get(&route.name)
        .ok_or_else(|| refuse(Reject::UpstreamError("no client for the route".into())))?;
    let route_name = &route_rt.name;
    trace.route = Some(route_name.clone());
    let _in_flight = InFlight::new(metrics.in_flight.get_or_create_owned(&RouteLabels {
        route: route_name.clone(),
    }));
    let decided = |decision: &'static str, rule: &'static str| {
        metrics
            .policy
            .get_or_create(&PolicyLabels {
                route: route_name.clone(),
                decision,
                rule,
            })
            .inc();
    };

    // Source.
    let client = intraport_policy::client_ip(ctx.conn.peer.ip(), req.headers(), trusted);
    trace.client = Some(client.ip);
    if let Err(d) = route.policy.check_source(client.ip) {
        decided("deny", d.reason.code());
        return Err(refuse(Reject::Denied(d)));
    }

    // Limits on the source: a ban (the socket peer was checked at accept; this catches
    // clients behind trusted proxies), its request rate, the declared body size.
    // (Also a connection opened before its source was banned.)
    let guard = &ctx.shared.guard;
    if let Some(left) = guard.banned(client.ip) {
        AbuseStats::bump(&stats.requests_refused_banned);
        ctx.close_if_peer(client.ip);
        return Err(refuse(Reject::Banned(left)));
    }
    let (scope, source_rate) = match route.limits.rate_per_source {
        Some(r) => (route.name.as_str(), r),
        None => (listener, limits.rate_per_source),
    };
    if let Some(rate) = source_rate {
        let key = format!("src:{scope}:{}", intraport_limits::source_key(client.ip));
        if let RateDecision::Limited { retry_after } = guard.check_rate(&key, rate).await {
            AbuseStats::bump(&stats.rate_limited_source);
            tracing::info!(event = "limit", limit = "rate_per_source", %listener, route = %route.name, source = %client.ip, "request rate limit reached");
            return Err(refuse(Reject::RateLimited {
                retry_after,
                by_identity: false,
            }));
        }
    }
    let max_body = route.limits.max_body_bytes.unwrap_or(limits.max_body_bytes);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        AbuseStats::bump(&stats.body_too_large);
        return Err(refuse(Reject::BodyTooLarge(max_body)));
    }
    let auth_failed = |code: ErrorCode| async move {
        // A failure on our side (no key set) is not the client's; nor is a token that
        // only expired (its signature and issuer were checked before its time): a
        // legitimate client retries with one before it refreshes, and behind a NAT
        // its retries would ban everyone there. Forged, foreign and malformed tokens
        // count.
        if code != ErrorCode::JwksUnavailable
            && code != ErrorCode::Expired
            && guard.auth_failure(client.ip, code.as_str()).await.is_some()
        {
            // This failure banned the source.
            ctx.close_if_peer(client.ip);
        }
    };

    // Identity.
    let identity: Option<Arc<Identity>> = if wants_token(route.policy.effective_identity()) {
        let token = match bearer(req.headers()) {
            Ok(t) => t,
            Err(e) => {
                auth_failed(e.code).await;
                return Err(refuse(Reject::Token(e)));
            }
        };
        match token {
            None => None,
            Some(token) => {
                let (provider, provider_name) = route
                    .provider
                    .and_then(|i| Some((rt.providers.get(i)?, rt.provider_names.get(i)?)))
                    .ok_or_else(|| {
                        refuse(Reject::Token(TokenError::new(
                            ErrorCode::JwksUnavailable,
                            "the route names no running provider",
                        )))
                    })?;
                let started = Instant::now();
                let result = provider.validate(token).await.and_then(|i| {
                    if route.allow_acl_tokens {
                        Ok(i)
                    } else {
                        intraport_token::require_scope_or_role(&i).map(|()| i)
                    }
                });
                let took = started.elapsed();
                trace.auth = Some(took);
                metrics
                    .token_validation
                    .get_or_create(&TokenLabels {
                        provider: provider_name.clone(),
                        result: match &result {
                            Ok(_) => "valid",
                            Err(e) => e.code.as_str(),
                        },
                    })
                    .observe(took.as_secs_f64());
                match result {
                    Ok(i) => Some(i),
                    Err(e) => {
                        if ctx.shared.audit.is_some() {
                            trace.refused_kid = crate::observe::unverified_kid(token);
                        }
                        auth_failed(e.code).await;
                        return Err(refuse(Reject::Token(e)));
                    }
                }
            }
        }
    } else {
        None
    };

    // Policy.
    trace.identity = identity.clone();
    let allowed = match route
        .policy
        .authorize(identity.as_deref(), ctx.cert.as_deref())
    {
        Ok(a) => a,
        Err(d) => {
            decided("deny", d.reason.code());
            return Err(refuse(Reject::Denied(d)));
        }
    };
    trace.rule = Some(allowed.by.code());
    decided("allow", allowed.by.code());

    // The identity's request rate.
    let identity_rate = route
        .limits
        .rate_per_identity
        .map_or((listener, limits.rate_per_identity), |r| {
            (route.name.as_str(), r)
        });
    if let (scope, Some(rate)) = identity_rate {
        let who = identity
            .as_deref()
            .and_then(|i| i.object_id.as_deref().or(i.subject.as_deref()))
            .map(|id| format!("oid:{id}"))
            .or_else(|| ctx.cert.as_deref().map(|c| format!("cert:{}", c.subject)));
        if let Some(who) = who {
            let key = format!("id:{scope}:{who}");
            if let RateDecision::Limited { retry_after } = guard.check_rate(&key, rate).await {
                AbuseStats::bump(&stats.rate_limited_identity);
                tracing::info!(event = "limit", limit = "rate_per_identity", %listener, route = %route.name, identity = %who, source = %client.ip, "identity rate limit reached");
                return Err(refuse(Reject::RateLimited {
                    retry_after,
                    by_identity: true,
                }));
            }
        }
    }

    // The source's upstream requests: each holds an upstream connection until its
    // answer is sent, so a client that does not read its answers cannot take them all.
    let cap = limits.max_upstream_requests_per_source;
    let Some(hold) = rt.holds.try_acquire(client.ip, cap) else {
        AbuseStats::bump(&stats.upstream_holds_refused);
        tracing::info!(event = "limit", limit = "max_upstream_requests_per_source", %listener, route = %route.name, source = %client.ip, "upstream request cap reached");
        return Err(refuse(Reject::HoldLimited(cap)));
    };

    // Forward.
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut body = GuardedBody::new(body, max_body, limits.body_timeout, trace.bytes_in.clone())
        .counting_in(stats.clone());
    if !body.is_end_stream() {
        body = body.reporting_to(ctx.clock.clone());
    }
    let upload = body.end();
    let headers = &mut parts.headers;
    forward::strip_hop_by_hop_with(
        headers,
        HopByHop {
            keep_upgrade: upgrade,
            keep_te_trailers: false,
        },
    );
    forward::strip_spoofable(headers, from_proxy);
    if route.strip_authorization {
        headers.remove(AUTHORIZATION);
    }
    for (name, value) in forward::identity_headers(identity.as_deref(), ctx.cert.as_deref()) {
        headers.insert(name, value);
    }
    forward::forwarded_headers(
        headers,
        ctx.conn.peer.ip(),
        ctx.scheme,
        Some(&host),
        from_proxy,
    );
    headers.remove(HOST);
    if let Ok(v) = HeaderValue::from_str(rid) {
        headers.insert(X_REQUEST_ID, v);
    }
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut up = route.upstream.clone().into_parts();
    up.path_and_query = Some(
        pq.parse()
            .map_err(|_| refuse(Reject::BadPath(PathError::NotAbsolute)))?,
    );
    parts.uri = http::Uri::from_parts(up)
        .map_err(|e| refuse(Reject::UpstreamError(format!("upstream URI: {e}"))))?;
    parts.version = Version::HTTP_11;

    tracing::debug!(request_id = %rid, route = %route.name, by = allowed.by.code(), "forwarding");
    let started = Instant::now();
    let sent = tokio::time::timeout(
        route.response_timeout,
        route_rt.client.request(Request::from_parts(parts, body)),
    )
    .await;
    let took = started.elapsed();
    trace.upstream = Some(took);
    let upstream_result = |class: &'static str| {
        metrics
            .upstream_results
            .get_or_create(&UpstreamLabels {
                route: route_name.clone(),
                class,
            })
            .inc();
    };
    let mut resp = match sent {
        // A body still arriving when the response timeout runs out is the client's
        // delay, not the upstream's: 408, counted as a body timeout.
        Err(_) if upload.cut_unfinished(stats) => return Err(refuse(Reject::BodyTimeout)),
        Err(_) => {
            upstream_result("timeout");
            return Err(refuse(Reject::UpstreamTimeout));
        }
        Ok(Err(e)) => {
            upstream_result("error");
            match BodyLimit::find(&e) {
                // Counted by the body where it was cut.
                Some(BodyLimit::TooLarge) => return Err(refuse(Reject::BodyTooLarge(max_body))),
                Some(BodyLimit::Timeout) => return Err(refuse(Reject::BodyTimeout)),
                None => {}
            }
            if let Some(bad) = ClientBodyError::find(&e) {
                return Err(refuse(Reject::BadRequest(bad.to_string())));
            }
            let chain = error_chain(&e);
            let timed_out = source_is_timeout(&e);
            return Err(refuse(if timed_out {
                Reject::UpstreamTimeout
            } else if e.is_connect() {
                Reject::UpstreamUnavailable(chain)
            } else {
                Reject::UpstreamError(chain)
            }));
        }
        Ok(Ok(r)) => r,
    };
    upstream_result(status_class(resp.status().as_u16()));
    metrics
        .upstream_response
        .get_or_create(&RouteLabels {
            route: route_name.clone(),
        })
        .observe(took.as_secs_f64());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let shared = ctx.shared.clone();
            let rid = rid.to_string();
            ctx.shared.tracker.spawn(async move {
                tunnel(client_upgrade, upstream_upgrade, &shared, &rid).await;
            });
        }
        let (mut rparts, rbody) = resp.into_parts();
        forward::strip_hop_by_hop_with(
            &mut rparts.headers,
            HopByHop {
                keep_upgrade: true,
                keep_te_trailers: false,
            },
        );
        return Ok(Response::from_parts(rparts, rbody.boxed()));
    }
    let (mut rparts, rbody) = resp.into_parts();
    forward::strip_hop_by_hop(&mut rparts.headers);
    rparts.version = Version::HTTP_11;
    let body = if rbody.is_end_stream() {
        rbody.boxed()
    } else {
        ctx.sends.track(rbody.boxed(), Some(hold)).boxed()
    };
    Ok(Response::from_parts(rparts, body))
}

async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    shared: &Shared,
    rid: &str,
) {
    let (c, u) = match tokio::try_join!(client, upstream) {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(request_id = %rid, error = %e, "protocol upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(c);
    let mut u = TokioIo::new(u);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
            if let Err(e) = r {
                tracing::debug!(request_id = %rid, error = %e, "upgraded connection ended with an error");
            }
        }
        () = shared.kill.cancelled() => {}
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn source_is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc.def.ghi")));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer   abc"));
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(bearer(&h), Ok(None));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer(&h).is_err_and(|e| e.code == ErrorCode::Malformed));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a b"));
        assert!(bearer(&h).is_err_and(|e| e.code == ErrorCode::Malformed));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(bearer(&h).is_err_and(|e| e.code == ErrorCode::Malformed));
    }

    #[test]
    fn request_ids_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn challenges() {
        let t = Reject::Token(TokenError::new(ErrorCode::Expired, "x"));
        assert_eq!(
            t.challenge().as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"expired\"")
        );
        let none = Reject::Denied(Denial::new(DenyReason::TokenRequired, "x"));
        assert_eq!(none.challenge().as_deref(), Some("Bearer"));
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        let role = Reject::Denied(Denial::new(DenyReason::RoleMissing, "x"));
        assert_eq!(role.status(), StatusCode::FORBIDDEN);
        assert!(
            role.challenge()
                .is_some_and(|c| c.contains("insufficient_scope"))
        );
        let src = Reject::Denied(Denial::new(DenyReason::SourceNotAllowed, "x"));
        assert_eq!(src.challenge(), None);
        assert_eq!(src.status(), StatusCode::FORBIDDEN);
    }
}

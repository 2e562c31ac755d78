//! TCP routes: source policy on the socket peer, the client certificate on `tls`
//! listeners, then bytes copied both ways with half-close passed on and an idle
//! timeout. A `tcp` listener passes TLS through untouched (the upstream terminates it).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use intraport_audit::{Action, Outcome, Text};

use crate::config::Routes;
use crate::gateway::{ListenerRuntime, Shared};
use crate::observe::ConnInfo;

/// Serve one accepted connection of a `tcp` or `tls` listener.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    mut conn: ConnInfo,
    rt: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
) {
    let Routes::Tcp(route) = &rt.listener.routes else {
        return;
    };
    let listener = &rt.listener.name;
    let peer = conn.peer;
    // The source check comes before the TLS handshake: a refused address costs nothing.
    if let Err(d) = route.policy.check_source(peer.ip()) {
        rt.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%listener, route = %route.name, %peer, code = d.reason.code(), detail = %d.detail, "connection refused");
        crate::gateway::refused(&shared, &conn, "refused_source", d.reason.code()).await;
        return;
    }
    crate::gateway::accepted(&shared, &conn).await;
    let (client, cert): (Box<dyn Io>, _) = match &rt.acceptor {
        None => (Box::new(stream), None),
        Some(acceptor) => {
            match crate::http::handshake(acceptor, stream, &mut conn, &rt, &shared).await {
                Some((tls, cert)) => (Box::new(tls), cert),
                None => return,
            }
        }
    };
    let route_name = Text::from(route.name.as_str());
    let event = |action: Action, outcome: Outcome, reason: Option<&str>| {
        let mut e = conn.event(action, outcome);
        e.route = Some(route_name.clone());
        e.reason = reason.map(Text::from);
        e.identity = crate::observe::identity(None, None, cert.as_deref());
        e
    };
    if let Err(d) = route.policy.authorize(None, cert.as_deref()) {
        rt.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%listener, route = %route.name, %peer, code = d.reason.code(), detail = %d.detail, "connection refused");
        if shared.audit.is_some() {
            shared
                .emit(event(
                    Action::PolicyDecision,
                    Outcome::Failure,
                    Some(d.reason.code()),
                ))
                .await;
        }
        return;
    }
    let connect_started = Instant::now();
    let connected = tokio::time::timeout(
        route.connect_timeout,
        TcpStream::connect(route.upstream.as_str()),
    )
    .await;
    let upstream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%listener, route = %route.name, %peer, upstream = %route.upstream, error = %e, "upstream connect failed");
            if shared.audit.is_some() {
                let mut ev = event(
                    Action::UpstreamResult,
                    Outcome::Failure,
                    Some("upstream_unavailable"),
                );
                ev.message = Some(Text::from(e.to_string()));
                shared.emit(ev).await;
            }
            return;
        }
        Err(_) => {
            tracing::warn!(%listener, route = %route.name, %peer, upstream = %route.upstream, "upstream connect timed out");
            if shared.audit.is_some() {
                shared
                    .emit(event(
                        Action::UpstreamResult,
                        Outcome::Failure,
                        Some("upstream_timeout"),
                    ))
                    .await;
            }
            return;
        }
    };
    let connect_took = connect_started.elapsed();
    let upstream_addr = upstream.peer_addr().ok();
    let _ = upstream.set_nodelay(true);
    tracing::debug!(%listener, route = %route.name, %peer, "tcp connection forwarded");
    let clock = Arc::new(Activity::new());
    let mut a = Tracked::new(client, clock.clone());
    let mut b = Tracked::new(upstream, clock.clone());
    let idle = route.idle_timeout;
    let reason = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
            Ok((up, down)) => {
                tracing::debug!(%listener, %peer, bytes_up = up, bytes_down = down, "tcp connection closed");
                None
            }
            Err(e) => {
                tracing::debug!(%listener, %peer, error = %e, "tcp connection ended with an error");
                Some("error")
            }
        },
        () = clock.idle_for(idle) => {
            tracing::info!(%listener, route = %route.name, %peer, idle_seconds = idle.as_secs(), "tcp connection closed: idle timeout");
            Some("idle_timeout")
        }
        () = shared.kill.cancelled() => Some("shutdown"),
    };
    if shared.audit.is_some() {
        let mut ev = event(Action::UpstreamResult, Outcome::Success, reason);
        ev.upstream = upstream_addr;
        ev.bytes_in = Some(a.read);
        ev.bytes_out = Some(b.read);
        ev.durations.upstream = Some(connect_took);
        ev.durations.total = Some(conn.accepted.elapsed());
        shared.emit(ev).await;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a connection's peer did, and when (milliseconds since `start`): the last byte
/// read (the idle timeout), the last byte written, and for HTTP/1.1 when the request
/// head being received started (the header read timeout).
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    wrote_ms: AtomicU64,
    /// The last piece of a request body passed on to an upstream.
    body_ms: AtomicU64,
    /// [`HEAD_IDLE`], [`HEAD_NEXT`], [`HEAD_NEVER`], or when the head in progress
    /// started.
    head_ms: AtomicU64,
    head_started: Notify,
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// No request head is awaited (a request is being answered, or not HTTP/1.1 yet).
const HEAD_IDLE: u64 = u64::MAX;
/// The next byte from the client starts a request head.
const HEAD_NEXT: u64 = u64::MAX - 1;
/// No more request heads: HTTP/2, or a tunnel after an upgrade.
const HEAD_NEVER: u64 = u64::MAX - 2;

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            wrote_ms: AtomicU64::new(0),
            body_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(HEAD_IDLE),
            head_started: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        // A u64 of milliseconds outlasts any connection, far below the sentinels.
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(0)
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The client sent `bytes` of HTTP (plaintext), from byte `offset` of its stream
    /// on; `preface` says whether the stream so far is the start of the HTTP/2 client
    /// preface. Starts the request head's clock if one is awaited. A stream whose first
    /// 24 bytes are that preface (hyper serves HTTP/2 on exactly that) has no request
    /// heads to time; anything short of the whole preface is timed as an HTTP/1 head.
    fn received_http(&self, bytes: &[u8], offset: u64, preface: &mut bool) {
        if *preface {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            let n = bytes.len().min(H2_PREFACE.len().saturating_sub(at));
            if at >= H2_PREFACE.len() || bytes[..n] != H2_PREFACE[at..at + n] {
                *preface = false;
            } else if at + n == H2_PREFACE.len() {
                *preface = false;
                self.no_more_heads();
                return;
            }
        }
        if self.head_ms.load(Ordering::Relaxed) == HEAD_NEXT
            && self
                .head_ms
                .compare_exchange(
                    HEAD_NEXT,
                    self.now_ms(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    fn wrote(&self) {
        self.wrote_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A piece of a request body was passed on to the upstream.
    pub(crate) fn body_progress(&self) {
        self.body_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The next byte from the client starts a request head (HTTP/1.1, between
    /// requests), unless the connection has no more heads.
    pub(crate) fn await_head(&self) {
        let _ = self.head_ms.compare_exchange(
            HEAD_IDLE,
            HEAD_NEXT,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// A request head is timed from now (a connection's first: it must come within
    /// the head timeout of the connection's start, its first byte included).
    pub(crate) fn head_starts_now(&self) {
        let now = self.now_ms();
        if self
            .head_ms
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |h| {
                (h == HEAD_IDLE || h == HEAD_NEXT).then_some(now)
            })
            .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// A request head arrived: its clock stops.
    pub(crate) fn head_received(&self) {
        let _ = self
            .head_ms
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |h| {
                (h != HEAD_NEVER).then_some(HEAD_IDLE)
            });
    }

    /// The connection carries no more request heads (HTTP/2, or an upgrade).
    pub(crate) fn no_more_heads(&self) {
        self.head_ms.store(HEAD_NEVER, Ordering::Release);
    }

    /// Resolves once a request head has been arriving for `limit` without being
    /// complete. Time the gateway spends writing earlier answers, or passing on an
    /// upload that goes on after its early answer, does not count: until that ends,
    /// the client's bytes are not yet the next head. An upload that stalls stops
    /// holding the timeout off.
    pub(crate) async fn head_overdue(&self, limit: Duration) {
        loop {
            let head = self.head_ms.load(Ordering::Acquire);
            if head >= HEAD_NEVER {
                self.head_started.notified().await;
                continue;
            }
            let from = head
                .max(self.wrote_ms.load(Ordering::Relaxed))
                .max(self.body_ms.load(Ordering::Relaxed));
            let deadline = self.start + Duration::from_millis(from) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    /// Resolves once no byte moved either way for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let last_ms = self
                .last_ms
                .load(Ordering::Relaxed)
                .max(self.wrote_ms.load(Ordering::Relaxed));
            let last = self.start + Duration::from_millis(last_ms);
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that records activity: tokio's `copy_bidirectional` has no idle timeout,
/// and timing each read separately would close a connection that is busy one way.
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) clock: Arc<Activity>,
    /// Bytes read from `inner` so far.
    pub(crate) read: u64,
    /// `Some` when `inner` carries the client's HTTP in plaintext (above TLS): its bytes
    /// start request heads' clocks, and the gateway's writes count as activity. The
    /// flag: the bytes so far begin the HTTP/2 preface.
    http_preface: Option<bool>,
}

impl<S> Tracked<S> {
    /// Bytes either way on `inner` are activity on `clock`.
    pub(crate) fn new(inner: S, clock: Arc<Activity>) -> Self {
        Tracked {
            inner,
            clock,
            read: 0,
            http_preface: None,
        }
    }

    /// The same, for the client's HTTP in plaintext: its bytes also time request heads.
    pub(crate) fn http(inner: S, clock: Arc<Activity>) -> Self {
        Tracked {
            http_preface: Some(true),
            ..Tracked::new(inner, clock)
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let filled = buf.filled();
        if matches!(r, Poll::Ready(Ok(()))) && filled.len() > before {
            let this = &mut *self;
            let bytes = &filled[before..];
            this.clock.touch();
            if let Some(preface) = &mut this.http_preface {
                this.clock.received_http(bytes, this.read, preface);
            }
            this.read += bytes.len() as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        // A TCP route's writes mirror its reads on the other side, already counted;
        // an HTTP answer is written whether or not the client sends anything.
        if self.http_preface.is_some() && matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

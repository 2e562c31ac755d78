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
    let mut a = Tracked {
        inner: client,
        clock: clock.clone(),
        read: 0,
    };
    let mut b = Tracked {
        inner: upstream,
        clock: clock.clone(),
        read: 0,
    };
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

/// Last activity on either side, in milliseconds since `start`.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
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
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.clock.touch();
            self.read += n as u64;
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

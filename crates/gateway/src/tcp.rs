//! TCP routes: source policy on the socket peer, the client certificate on `tls`
//! listeners, then bytes copied both ways with half-close passed on and an idle
//! timeout. A `tcp` listener passes TLS through untouched (the upstream terminates it).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Routes;
use crate::gateway::{ListenerRuntime, Shared};

/// Serve one accepted connection of a `tcp` or `tls` listener.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    rt: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
) {
    let Routes::Tcp(route) = &rt.listener.routes else {
        return;
    };
    let listener = &rt.listener.name;
    let refuse = |code: &str, detail: &str| {
        rt.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%listener, route = %route.name, %peer, code, %detail, "connection refused");
    };
    // The source check comes before the TLS handshake: a refused address costs nothing.
    if let Err(d) = route.policy.check_source(peer.ip()) {
        refuse(d.reason.code(), &d.detail);
        return;
    }
    let (client, cert): (Box<dyn Io>, _) = match &rt.acceptor {
        None => (Box::new(stream), None),
        Some(acceptor) => {
            match crate::http::handshake(acceptor, stream, peer, &rt, &shared.guard).await {
                Some((tls, cert)) => (Box::new(tls), cert),
                None => return,
            }
        }
    };
    if let Err(d) = route.policy.authorize(None, cert.as_deref()) {
        refuse(d.reason.code(), &d.detail);
        return;
    }
    let upstream = match tokio::time::timeout(
        route.connect_timeout,
        TcpStream::connect(route.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%listener, route = %route.name, %peer, upstream = %route.upstream, error = %e, "upstream connect failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%listener, route = %route.name, %peer, upstream = %route.upstream, "upstream connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    tracing::debug!(%listener, route = %route.name, %peer, "tcp connection forwarded");
    let clock = Arc::new(Activity::new());
    let mut a = Tracked {
        inner: client,
        clock: clock.clone(),
    };
    let mut b = Tracked {
        inner: upstream,
        clock: clock.clone(),
    };
    let idle = route.idle_timeout;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
            Ok((up, down)) => tracing::debug!(%listener, %peer, bytes_up = up, bytes_down = down, "tcp connection closed"),
            Err(e) => tracing::debug!(%listener, %peer, error = %e, "tcp connection ended with an error"),
        },
        () = clock.idle_for(idle) => {
            tracing::info!(%listener, route = %route.name, %peer, idle_seconds = idle.as_secs(), "tcp connection closed: idle timeout");
        }
        () = shared.kill.cancelled() => {}
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
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
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

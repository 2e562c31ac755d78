//! The syslog sinks: UDP (RFC 5426), and TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425) with a disk spool.
//!
//! A TCP/TLS worker keeps each message it wrote in an in-flight list with the byte
//! offset at which it ends on the connection, and drops it only when the collector's
//! TCP stack has acknowledged that offset ([`crate::tcpq`]). When the collector closes
//! the connection, the kernel's count of unacknowledged bytes is read before anything
//! else is written, so exactly the unacknowledged messages are spooled and sent again
//! first on the next connection. If the connection was reset instead (the kernel no
//! longer lists it), the last sample decides: at-least-once for that interval. While
//! the collector is away every event goes to the spool; after a reconnect the spool is
//! replayed before newer events.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::config::StreamPlan;
use crate::file::{BATCH, next_batch};
use crate::format::{Format, SyslogHeader, write_syslog};
use crate::pipeline::{Counters, Item};
use crate::spool::Spool;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const ACK_INTERVAL: Duration = Duration::from_millis(100);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Unacknowledged messages held before the worker stops taking new ones.
const MAX_INFLIGHT: usize = 65_536;

/// The UDP sink's worker: one datagram per event, best effort; failures counted.
pub(crate) async fn run_udp(
    address: String,
    header: SyslogHeader,
    format: Format,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut socket: Option<(UdpSocket, SocketAddr)> = None;
    let mut items = Vec::with_capacity(BATCH);
    let mut buf = Vec::with_capacity(2048);
    let mut stopping = false;
    while next_batch(&mut rx, &mut items, &mut stop, &mut stopping).await {
        for it in items.drain(..) {
            if socket.is_none() {
                socket = udp_socket(&address).await.ok();
            }
            let Some((s, to)) = &socket else {
                Counters::add(&counters.errors, 1);
                Counters::add(&counters.dropped, 1);
                continue;
            };
            buf.clear();
            write_syslog(&header, format, &it.event, &mut buf);
            match s.send_to(&buf, *to).await {
                Ok(_) => Counters::add(&counters.written, 1),
                Err(_) => {
                    Counters::add(&counters.errors, 1);
                    Counters::add(&counters.dropped, 1);
                    socket = None;
                }
            }
            if let Some(a) = it.ack {
                let _ = a.send(Ok(()));
            }
        }
    }
}

async fn udp_socket(address: &str) -> io::Result<(UdpSocket, SocketAddr)> {
    let to = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    Ok((UdpSocket::bind(bind).await?, to))
}

/// A TCP stream that counts the bytes written to it (the TLS ciphertext offset).
struct Counted {
    inner: TcpStream,
    written: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<Counted>>),
}

/// One message written (or about to be) on the connection.
struct InFlight {
    /// Connection byte offset after the message; `u64::MAX` until known (TLS).
    end: u64,
    msg: Vec<u8>,
    /// Spool offset after the message, if it came from the spool.
    spool_end: Option<u64>,
}

struct Conn {
    io: Io,
    local: SocketAddr,
    peer: SocketAddr,
    written: u64,
    acked: u64,
    inflight: VecDeque<InFlight>,
}

impl Conn {
    async fn connect(plan: &StreamPlan) -> io::Result<Conn> {
        let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(&plan.address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
        let (io, written) = match &plan.tls {
            None => (Io::Tcp(tcp), 0),
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let counted = Counted {
                    inner: tcp,
                    written: 0,
                };
                let tls = timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), counted))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                let w = tls.get_ref().0.written;
                (Io::Tls(Box::new(tls)), w)
            }
        };
        Ok(Conn {
            io,
            local,
            peer,
            written,
            acked: 0,
            inflight: VecDeque::new(),
        })
    }

    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Tcp(t) => t,
            Io::Tls(t) => &t.get_ref().0.inner,
        }
    }

    /// Re-reads the acknowledged offset. `false`: the kernel no longer lists the
    /// connection (it was reset), the last value stands.
    fn refresh_acks(&mut self) -> bool {
        match crate::tcpq::unacked(self.local, self.peer) {
            Some(q) => {
                self.acked = self.acked.max(self.written.saturating_sub(q));
                true
            }
            None => false,
        }
    }

    /// Whether the collector closed (or reset) the connection; discards anything it
    /// sent (syslog collectors send nothing but TLS housekeeping).
    fn peer_closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        for _ in 0..64 {
            match &mut self.io {
                Io::Tcp(t) => match t.try_read(&mut b) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                },
                Io::Tls(t) => {
                    let mut cx = Context::from_waker(std::task::Waker::noop());
                    let mut rb = ReadBuf::new(&mut b);
                    match Pin::new(&mut **t).poll_read(&mut cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => return true,
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return true,
                        Poll::Pending => return false,
                    }
                }
            }
        }
        false
    }

    /// Writes `msgs` (each with its spool offset, if any), octet-counted. Every
    /// message enters the in-flight list first, so on an error the caller requeues
    /// whatever the collector did not acknowledge.
    async fn send(&mut self, msgs: Vec<(Vec<u8>, Option<u64>)>) -> io::Result<()> {
        match &mut self.io {
            Io::Tcp(t) => {
                let mut frame = Vec::new();
                let base = self.written;
                for (msg, spool_end) in msgs {
                    frame.extend_from_slice(msg.len().to_string().as_bytes());
                    frame.push(b' ');
                    frame.extend_from_slice(&msg);
                    self.inflight.push_back(InFlight {
                        end: base + frame.len() as u64,
                        msg,
                        spool_end,
                    });
                }
                let mut off = 0;
                while off < frame.len() {
                    let n = timeout(WRITE_TIMEOUT, t.write(&frame[off..]))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "write timed out")
                        })??;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    off += n;
                    self.written += n as u64;
                }
                Ok(())
            }
            Io::Tls(t) => {
                let first = self.inflight.len();
                for (msg, spool_end) in msgs {
                    self.inflight.push_back(InFlight {
                        end: u64::MAX,
                        msg,
                        spool_end,
                    });
                }
                let mut frame = Vec::new();
                for i in first..self.inflight.len() {
                    frame.clear();
                    let msg = &self.inflight[i].msg;
                    frame.extend_from_slice(msg.len().to_string().as_bytes());
                    frame.push(b' ');
                    frame.extend_from_slice(msg);
                    let r = timeout(WRITE_TIMEOUT, async {
                        t.write_all(&frame).await?;
                        t.flush().await
                    })
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
                    self.written = t.get_ref().0.written;
                    r??;
                    self.inflight[i].end = self.written;
                }
                Ok(())
            }
        }
    }

    async fn close(mut self) {
        let _ = match &mut self.io {
            Io::Tcp(t) => timeout(Duration::from_secs(1), t.shutdown()).await,
            Io::Tls(t) => timeout(Duration::from_secs(1), t.shutdown()).await,
        };
    }
}

/// Drops acknowledged messages from the in-flight list, committing spool offsets.
async fn confirm(c: &mut Conn, spool: &mut Spool, counters: &Counters) {
    while c.inflight.front().is_some_and(|f| f.end <= c.acked) {
        let Some(f) = c.inflight.pop_front() else {
            break;
        };
        Counters::add(&counters.written, 1);
        if let Some(off) = f.spool_end
            && let Err(e) = spool.commit(off).await
        {
            Counters::add(&counters.errors, 1);
            tracing::error!(error = %e, "audit spool commit failed");
        }
    }
    counters
        .spool_pending
        .store(spool.pending(), Ordering::Relaxed);
}

/// Appends messages to the spool, counting what went in and what did not fit.
async fn spool_msgs(spool: &mut Spool, msgs: &[Vec<u8>], counters: &Counters) {
    if msgs.is_empty() {
        return;
    }
    let n = match spool.append(msgs.iter().map(Vec::as_slice)).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "audit spool write failed");
            Counters::add(&counters.errors, 1);
            0
        }
    };
    Counters::add(&counters.spooled, n as u64);
    Counters::add(&counters.dropped, (msgs.len() - n) as u64);
    counters
        .spool_pending
        .store(spool.pending(), Ordering::Relaxed);
}

/// The connection is gone (or going): settle what the collector acknowledged and
/// requeue the rest in order.
async fn disconnect(mut c: Conn, spool: &mut Spool, counters: &Counters) {
    c.refresh_acks();
    confirm(&mut c, spool, counters).await;
    let requeue: Vec<Vec<u8>> = std::mem::take(&mut c.inflight)
        .into_iter()
        .filter(|f| f.spool_end.is_none())
        .map(|f| f.msg)
        .collect();
    spool.rewind();
    spool_msgs(spool, &requeue, counters).await;
    counters.connected.store(false, Ordering::Relaxed);
    c.close().await;
}

enum Wake {
    Stop,
    Items,
    QueueDone,
    PeerReadable,
    Tick,
    Retry,
}

/// The TCP/TLS syslog worker.
pub(crate) async fn run_stream(
    plan: StreamPlan,
    mut spool: Spool,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = MIN_BACKOFF;
    let mut next_attempt = Instant::now();
    let mut items: Vec<Item> = Vec::with_capacity(BATCH);
    let mut stopping = false;
    let mut queue_done = false;
    let mut grace_deadline = Instant::now();
    let mut next_tick: Option<Instant> = None;
    loop {
        if conn.is_none() && Instant::now() >= next_attempt && (!stopping || spool.is_busy()) {
            match Conn::connect(&plan).await {
                Ok(c) => {
                    tracing::info!(collector = %plan.address, "audit syslog connected");
                    conn = Some(c);
                    backoff = MIN_BACKOFF;
                    spool.rewind();
                    counters.connected.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    if backoff == MIN_BACKOFF {
                        tracing::warn!(collector = %plan.address, error = %e, "audit syslog collector unreachable; spooling");
                    }
                    Counters::add(&counters.errors, 1);
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(plan.reconnect_max);
                }
            }
        }
        // Replay the spool before anything newer.
        if let Some(c) = &mut conn
            && spool.has_unsent()
            && c.inflight.len() < MAX_INFLIGHT
        {
            let batch = match spool.read_batch(512, 256 << 10).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "audit spool unreadable");
                    Counters::add(&counters.errors, 1);
                    return;
                }
            };
            let msgs = batch.into_iter().map(|(m, off)| (m, Some(off))).collect();
            if c.send(msgs).await.is_err()
                && let Some(c) = conn.take()
            {
                disconnect(c, &mut spool, &counters).await;
            }
            continue;
        }
        if stopping && queue_done {
            // Disconnected with a spool: keep trying to deliver it until the grace
            // period ends; it stays on disk for the next start otherwise.
            let done = match &conn {
                None => !spool.is_busy(),
                Some(c) => c.inflight.is_empty() && !spool.has_unsent(),
            };
            if done || Instant::now() >= grace_deadline {
                break;
            }
        }

        let full = conn
            .as_ref()
            .is_some_and(|c| c.inflight.len() >= MAX_INFLIGHT);
        let has_inflight = conn.as_ref().is_some_and(|c| !c.inflight.is_empty());
        // One persistent deadline: recomputing it every wake-up would starve it under
        // a steady stream of events.
        let interval = if stopping || full {
            Duration::from_millis(10)
        } else {
            ACK_INTERVAL
        };
        let tick = *next_tick.get_or_insert_with(|| Instant::now() + interval);
        let tick = tick.min(Instant::now() + interval);
        next_tick = Some(tick);
        let wake = tokio::select! {
            biased;
            r = stop.changed(), if !stopping => {
                if r.is_err() || *stop.borrow() { Wake::Stop } else { Wake::Tick }
            }
            _ = async {
                match &conn {
                    Some(c) => { let _ = c.tcp().readable().await; }
                    None => std::future::pending::<()>().await,
                }
            } => Wake::PeerReadable,
            n = rx.recv_many(&mut items, BATCH), if !full && !queue_done => {
                if n == 0 { Wake::QueueDone } else { Wake::Items }
            }
            _ = sleep_until(tick), if has_inflight || (stopping && queue_done) => Wake::Tick,
            _ = sleep_until(next_attempt), if conn.is_none() && (!stopping || spool.is_busy()) => Wake::Retry,
        };
        match wake {
            Wake::Stop => {
                stopping = true;
                grace_deadline = Instant::now() + grace;
                rx.close();
            }
            Wake::QueueDone => queue_done = true,
            Wake::Retry => {}
            Wake::PeerReadable => {
                if let Some(c) = &mut conn
                    && c.peer_closed()
                    && let Some(c) = conn.take()
                {
                    tracing::warn!(collector = %plan.address, "audit syslog collector closed the connection");
                    disconnect(c, &mut spool, &counters).await;
                    next_attempt = Instant::now();
                }
            }
            Wake::Tick => {
                next_tick = None;
                if let Some(c) = &mut conn {
                    if c.refresh_acks() {
                        confirm(c, &mut spool, &counters).await;
                    } else if let Some(c) = conn.take() {
                        disconnect(c, &mut spool, &counters).await;
                        next_attempt = Instant::now();
                    }
                }
            }
            Wake::Items => {
                let mut acks = Vec::new();
                let mut msgs = Vec::with_capacity(items.len());
                for it in items.drain(..) {
                    let mut m = Vec::with_capacity(512);
                    write_syslog(&plan.header, plan.format, &it.event, &mut m);
                    msgs.push(m);
                    acks.extend(it.ack);
                }
                match &mut conn {
                    Some(c) if !spool.has_unsent() => {
                        let batch = msgs.into_iter().map(|m| (m, None)).collect();
                        if c.send(batch).await.is_err()
                            && let Some(c) = conn.take()
                        {
                            disconnect(c, &mut spool, &counters).await;
                            next_attempt = Instant::now();
                        }
                    }
                    _ => spool_msgs(&mut spool, &msgs, &counters).await,
                }
                for a in acks {
                    let _ = a.send(Ok(()));
                }
            }
        }
    }
    if let Some(c) = conn.take() {
        disconnect(c, &mut spool, &counters).await;
    }
    if let Err(e) = spool.compact().await {
        Counters::add(&counters.errors, 1);
        tracing::error!(error = %e, "audit spool compaction failed");
    }
    counters
        .spool_pending
        .store(spool.pending(), Ordering::Relaxed);
}

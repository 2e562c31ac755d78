//! TCP connect with the outcome classified the way a firewall engineer reads it.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How a TCP connection attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum TcpOutcome {
    /// The handshake completed.
    Connected,
    /// A RST answered the SYN: reachable, nothing listening (or a firewall rejecting).
    Refused,
    /// No answer before the deadline: typically a firewall dropping packets.
    Timeout,
    /// The connection was reset during the handshake.
    Reset,
    /// No route, or an ICMP unreachable.
    Unreachable {
        /// The system's message.
        detail: String,
    },
    /// Anything else.
    Error {
        /// The system's message.
        detail: String,
    },
}

impl TcpOutcome {
    /// The outcome in words.
    pub fn describe(&self) -> String {
        match self {
            TcpOutcome::Connected => "connected".into(),
            TcpOutcome::Refused => "refused (RST to SYN)".into(),
            TcpOutcome::Timeout => "no answer to the SYN: filtered".into(),
            TcpOutcome::Reset => "reset during connect".into(),
            TcpOutcome::Unreachable { detail } => format!("unreachable: {detail}"),
            TcpOutcome::Error { detail } => detail.clone(),
        }
    }
}

/// One connection attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpReport {
    /// The address tried.
    pub address: SocketAddr,
    /// What happened.
    #[serde(flatten)]
    pub outcome: TcpOutcome,
    /// Time to the outcome, in milliseconds.
    pub elapsed_ms: f64,
}

/// Connect to `addr` within `timeout`; on success the stream is returned too.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> (TcpReport, Option<TcpStream>) {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (outcome, stream) = match result {
        Err(_) => (TcpOutcome::Timeout, None),
        Ok(Ok(s)) => (TcpOutcome::Connected, Some(s)),
        Ok(Err(e)) => (classify(&e), None),
    };
    (
        TcpReport {
            address: addr,
            outcome,
            elapsed_ms,
        },
        stream,
    )
}

fn classify(e: &std::io::Error) -> TcpOutcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => TcpOutcome::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => TcpOutcome::Reset,
        ErrorKind::TimedOut => TcpOutcome::Timeout,
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::AddrNotAvailable => TcpOutcome::Unreachable {
            detail: e.to_string(),
        },
        _ => TcpOutcome::Error {
            detail: e.to_string(),
        },
    }
}

/// A stream that counts the bytes read from the peer, so a failed handshake can tell
/// "the server said nothing" (a middlebox acting on the ClientHello) from "the server
/// answered and then failed".
pub struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    /// Wrap `inner`; the returned counter stays readable after the stream is gone.
    pub fn new(inner: S) -> (Counted<S>, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        (
            Counted {
                inner,
                read: Arc::clone(&read),
            },
            read,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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

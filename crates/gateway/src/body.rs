//! Request bodies on their way upstream, with a size limit and a stall timeout.
//!
//! Hand-written because `http-body-util`'s `Limited` counts bytes but has no timeout,
//! and a client that sends a body a byte a minute must not hold an upstream request
//! open forever. The errors are typed so that the proxy can answer 413 or 408 instead
//! of a 502 when the upstream request fails because of them, and 400 when the client's
//! own body was not valid HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use intraport_limits::AbuseStats;
use tokio::time::{Instant, Sleep};

use crate::tcp::Activity;

/// Why a request body was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimit {
    /// More bytes than the limit.
    #[error("request body larger than the limit")]
    TooLarge,
    /// No data for longer than the body timeout.
    #[error("request body stalled past the body timeout")]
    Timeout,
}

impl BodyLimit {
    /// The limit that cut a body, if one did, somewhere in an error's chain.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<BodyLimit> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if let Some(l) = c.downcast_ref::<BodyLimit>() {
                return Some(*l);
            }
            cur = c.source();
        }
        None
    }
}

/// The client's body could not be read: not valid HTTP (a malformed chunk), or the
/// connection ended inside it. The client's fault (400), not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

impl ClientBodyError {
    /// The client's body error, if there is one somewhere in an error's chain.
    pub fn find<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ClientBodyError> {
        let mut cur: Option<&'e (dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if let Some(b) = c.downcast_ref::<ClientBodyError>() {
                return Some(b);
            }
            cur = c.source();
        }
        None
    }
}

/// How a body's passage went, shared with the proxy that waits on the upstream.
#[derive(Debug, Default)]
pub(crate) struct BodyEnd {
    /// The whole body was passed on.
    ended: AtomicBool,
    /// The body was cut (and counted).
    cut: AtomicBool,
}

impl BodyEnd {
    /// When the wait for the upstream's answer timed out: whether the body was still
    /// arriving (or cut), which makes the delay the client's. An unfinished body is
    /// cut here, counted once in `body_timeouts`.
    pub(crate) fn cut_unfinished(&self, stats: &AbuseStats) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        if !self.cut.swap(true, Ordering::AcqRel) {
            AbuseStats::bump(&stats.body_timeouts);
        }
        true
    }
}

/// The client's body, limited in size and in time between frames.
pub struct GuardedBody {
    inner: Incoming,
    remaining: u64,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Bytes passed on, for the audit event (when there is one).
    count: Option<Arc<AtomicU64>>,
    /// The connection's activity, told of each piece passed on: an upload that goes
    /// on after an early answer holds off the next request head's timeout.
    progress: Option<Arc<Activity>>,
    /// Where a cut is counted (`body_too_large`, `body_timeouts`): here, because after
    /// an early answer the cut reaches only the upstream client, not the proxy.
    stats: Option<Arc<AbuseStats>>,
    /// Ended or cut already: a body is cut (and counted) once.
    end: Arc<BodyEnd>,
}

impl GuardedBody {
    /// At most `max` bytes, and no wait longer than `timeout` for the next frame;
    /// the bytes passed on are added to `count`.
    pub fn new(
        inner: Incoming,
        max: u64,
        timeout: Duration,
        count: Option<Arc<AtomicU64>>,
    ) -> Self {
        let end = BodyEnd::default();
        end.ended.store(inner.is_end_stream(), Ordering::Relaxed);
        GuardedBody {
            inner,
            remaining: max,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            count,
            progress: None,
            stats: None,
            end: Arc::new(end),
        }
    }

    /// Counts a cut in `stats`.
    pub(crate) fn counting_in(mut self, stats: Arc<AbuseStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Cuts the body for `limit`, counting it once.
    fn cut(&mut self, limit: BodyLimit) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.end.cut.swap(true, Ordering::AcqRel)
            && let Some(s) = &self.stats
        {
            AbuseStats::bump(match limit {
                BodyLimit::TooLarge => &s.body_too_large,
                BodyLimit::Timeout => &s.body_timeouts,
            });
        }
        Poll::Ready(Some(Err(Box::new(limit))))
    }

    /// How the body's passage goes.
    pub(crate) fn end(&self) -> Arc<BodyEnd> {
        self.end.clone()
    }

    /// Tells `clock` of each piece passed on.
    pub(crate) fn reporting_to(mut self, clock: Arc<Activity>) -> Self {
        self.progress = Some(clock);
        self
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if n > this.remaining {
                        return this.cut(BodyLimit::TooLarge);
                    }
                    this.remaining -= n;
                    if let Some(c) = &this.count {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    if let Some(p) = &this.progress {
                        p.body_progress();
                    }
                }
                if this.inner.is_end_stream() {
                    this.end.ended.store(true, Ordering::Release);
                }
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Poll::Ready(None) => {
                this.end.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    return this.cut(BodyLimit::Timeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Answers on their way to the client: the send timeout and the upstream hold.
//!
//! A client that stops reading (an HTTP/1.1 socket it does not drain, an HTTP/2 flow
//! control window it leaves at zero) makes hyper stop asking the upstream's body for
//! more, and the upstream connection stays taken for as long as the client likes.
//! Neither hyper nor h2 has a write timeout, so the gateway times it: each answer's
//! body is wrapped in a [`SentBody`] that notes when it handed hyper a piece (or its
//! head) and hyper has not asked for the next one since. While it is waiting on the
//! upstream instead (hyper asked, the upstream has nothing yet), nothing is timed.
//! A connection's [`SendWatch`] resolves once one of its answers has waited for the
//! client longer than the send timeout; the connection is then closed, which drops
//! its answers and gives their upstream connections back. The answer also carries the
//! source's [`HoldPermit`], so a source's upstream requests count until their
//! answers are sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use intraport_limits::HoldPermit;
use tokio::sync::Notify;

use crate::http::Body;

/// Not waiting for the client: hyper is asking for more, or the answer is over.
const NOT_WAITING: u64 = u64::MAX;

/// The answers of one connection still being sent.
pub(crate) struct SendWatch {
    start: Instant,
    answers: Mutex<Vec<Weak<Waiting>>>,
    added: Notify,
}

/// Since when (milliseconds from [`SendWatch::start`]) an answer waits for the client.
struct Waiting(AtomicU64);

impl SendWatch {
    pub(crate) fn new() -> Arc<SendWatch> {
        Arc::new(SendWatch {
            start: Instant::now(),
            answers: Mutex::new(Vec::new()),
            added: Notify::new(),
        })
    }

    fn now_ms(start: Instant) -> u64 {
        u64::try_from(start.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1)
    }

    /// Time `body` from now on (its head is handed to hyper now), holding `hold`
    /// until it ends or is dropped.
    pub(crate) fn track(&self, body: Body, hold: Option<HoldPermit>) -> SentBody {
        let waiting = Arc::new(Waiting(AtomicU64::new(Self::now_ms(self.start))));
        {
            let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            answers.retain(|w| w.strong_count() > 0);
            answers.push(Arc::downgrade(&waiting));
        }
        self.added.notify_one();
        SentBody {
            inner: body,
            start: self.start,
            waiting,
            hold,
        }
    }

    /// Resolves once an answer has waited for the client to take its next piece for
    /// longer than `limit`.
    pub(crate) async fn overdue(&self, limit: Duration) {
        loop {
            let (any, oldest) = {
                let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
                answers.retain(|w| w.strong_count() > 0);
                let oldest = answers
                    .iter()
                    .filter_map(Weak::upgrade)
                    .map(|w| w.0.load(Ordering::Acquire))
                    .min()
                    .filter(|&ms| ms != NOT_WAITING);
                (!answers.is_empty(), oldest)
            };
            match oldest {
                // No answer: wait for one (a permit is kept if one came meanwhile).
                None if !any => self.added.notified().await,
                // Answers waiting on their upstreams: one that starts waiting for the
                // client after this look is overdue no sooner than `limit` from now.
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(limit) => {}
                        () = self.added.notified() => {}
                    }
                }
                Some(ms) => {
                    let deadline = self.start + Duration::from_millis(ms) + limit;
                    if Instant::now() >= deadline {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline.into()) => {}
                        () = self.added.notified() => {}
                    }
                }
            }
        }
    }
}

/// An answer's body, timed while it waits for the client (see the module).
pub(crate) struct SentBody {
    inner: Body,
    start: Instant,
    waiting: Arc<Waiting>,
    hold: Option<HoldPermit>,
}

impl hyper::body::Body for SentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // hyper asks: the client has taken what it was given.
        this.waiting.0.store(NOT_WAITING, Ordering::Release);
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => {
                this.waiting
                    .0
                    .store(SendWatch::now_ms(this.start), Ordering::Release);
            }
            Poll::Ready(_) => {
                // The upstream's part is over: its connection is free again.
                this.hold = None;
            }
            Poll::Pending => {}
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

//! Request bodies that stop arriving. A client that sends its headers and
//! part of a body, then nothing, would otherwise hold its connection (HTTP)
//! or stream (gRPC) for good: the first-byte timeout covers a silent
//! connection and the request deadline a queued request, but neither a
//! body in progress. Each front end wraps its request bodies here, so the
//! read fails once nothing has come for the body timeout (reset by every
//! piece that arrives, like nginx's `client_body_timeout`), or once the
//! whole body has taken longer than the body deadline (a body trickled a
//! byte at a time, each just inside the idle timeout), counted in
//! `rir_stalled_requests_total{front}`; HTTP answers 408 and closes, gRPC
//! ends the call with DEADLINE_EXCEEDED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use prometheus::IntCounter;
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// Any error a request body may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request body may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTiming {
    /// Longest wait for the next piece (zero: none).
    pub(crate) idle: Duration,
    /// Longest time from the first poll to the last piece (zero: none): a
    /// body that trickles a byte just inside `idle` still ends.
    pub(crate) total: Duration,
}

/// Why a request body failed: nothing arrived for `after`, or all of it
/// had not arrived `after` its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stalled {
    /// Nothing arrived for the idle timeout.
    #[error(
        "the request body stopped arriving: nothing for {} ms (--body-timeout-ms)",
        .0.as_millis()
    )]
    Idle(Duration),
    /// The whole body took longer than its deadline.
    #[error(
        "the request body was still arriving {} ms after it began (--body-deadline-ms)",
        .0.as_millis()
    )]
    Total(Duration),
}

/// `body`, failing once nothing has arrived for `timing.idle` or all of
/// it has not `timing.total` after it was first read (each never when
/// zero) with the error `stalled` makes, counted in `stalls`.
pub(crate) fn guarded<B>(
    body: B,
    timing: BodyTiming,
    stalls: IntCounter,
    stalled: fn(Stalled) -> BoxError,
) -> UnsyncBoxBody<B::Data, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let idle = timing.idle;
    let body = if idle.is_zero() {
        body.map_err(Into::into).boxed_unsync()
    } else {
        let stalls = stalls.clone();
        TimeoutBody::new(idle, body)
            .map_err(move |e| {
                if e.is::<TimeoutError>() {
                    stalls.inc();
                    stalled(Stalled::Idle(idle))
                } else {
                    e
                }
            })
            .boxed_unsync()
    };
    if timing.total.is_zero() {
        return body;
    }
    Deadline {
        inner: body,
        total: timing.total,
        at: None,
        stalls,
        stalled,
    }
    .boxed_unsync()
}

/// A body that fails once its deadline, set when it is first read, passes.
struct Deadline<D> {
    inner: UnsyncBoxBody<D, BoxError>,
    total: Duration,
    at: Option<Pin<Box<tokio::time::Sleep>>>,
    stalls: IntCounter,
    stalled: fn(Stalled) -> BoxError,
}

impl<D: bytes::Buf> Body for Deadline<D> {
    type Data = D;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<D>, BoxError>>> {
        let total = self.total;
        let at = self
            .at
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(total)));
        if at.as_mut().poll(cx).is_ready() {
            self.stalls.inc();
            return Poll::Ready(Some(Err((self.stalled)(Stalled::Total(total)))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The [`Stalled`] that `error` is or wraps, if any.
pub(crate) fn stalled_in(error: &(dyn std::error::Error + 'static)) -> Option<Stalled> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(s) = e.downcast_ref::<Stalled>() {
            return Some(*s);
        }
        next = e.source();
    }
    None
}

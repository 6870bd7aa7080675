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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;

    /// A body that sends its pieces `every` apart, then (`hang`) never
    /// ends, or ends.
    struct Trickle {
        pieces: VecDeque<&'static str>,
        every: Duration,
        next: Option<Pin<Box<tokio::time::Sleep>>>,
        hang: bool,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let every = self.every;
            let wait = self
                .next
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.next = None;
            match self.pieces.pop_front() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(p))))),
                None if self.hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn trickle(pieces: &[&'static str], every_ms: u64, hang: bool) -> Trickle {
        Trickle {
            pieces: pieces.iter().copied().collect(),
            every: Duration::from_millis(every_ms),
            next: None,
            hang,
        }
    }

    fn timing(idle_ms: u64, total_ms: u64) -> BodyTiming {
        BodyTiming {
            idle: Duration::from_millis(idle_ms),
            total: Duration::from_millis(total_ms),
        }
    }

    /// As the REST front end boxes a stall.
    fn boxed(s: Stalled) -> BoxError {
        Box::new(s)
    }

    /// An error that wraps another as its source, as axum's rejections do.
    #[derive(Debug)]
    struct Wrap(BoxError);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading the body failed")
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// The body read to its end: its bytes, or the stall it failed with.
    async fn read(
        body: impl Body<Data = Bytes, Error = BoxError>,
    ) -> Result<Bytes, Option<Stalled>> {
        body.collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| stalled_in(&*e))
    }

    #[tokio::test]
    async fn a_body_that_stops_fails_after_the_idle_timeout_and_is_counted() {
        let stalls = IntCounter::new("stalls", "test").unwrap();
        let body = guarded(
            trickle(&["a", "b"], 10, true),
            timing(80, 0),
            stalls.clone(),
            boxed,
        );
        let t = std::time::Instant::now();
        let got = read(body).await;
        assert_eq!(got, Err(Some(Stalled::Idle(Duration::from_millis(80)))));
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(stalls.get(), 1);
    }

    #[tokio::test]
    async fn a_trickle_inside_the_idle_timeout_ends_at_the_deadline() {
        // A piece every 20 ms, each inside the 100 ms idle timeout, for
        // good: the 150 ms deadline ends it.
        let stalls = IntCounter::new("stalls", "test").unwrap();
        let pieces = ["x"; 1000];
        let body = guarded(
            trickle(&pieces, 20, false),
            timing(100, 150),
            stalls.clone(),
            boxed,
        );
        let got = read(body).await;
        assert_eq!(got, Err(Some(Stalled::Total(Duration::from_millis(150)))));
        assert_eq!(stalls.get(), 1);
        // Zero switches both off: a slow body arrives whole.
        let body = guarded(
            trickle(&["a", "b", "c"], 30, false),
            timing(0, 0),
            stalls.clone(),
            boxed,
        );
        assert_eq!(read(body).await, Ok(Bytes::from("abc")));
        assert_eq!(stalls.get(), 1);
    }

    #[tokio::test]
    async fn a_whole_body_passes_with_its_length_and_end() {
        // Under the deadline alone (tower-http's idle timeout does not pass
        // a body's size hint on).
        let stalls = IntCounter::new("stalls", "test").unwrap();
        let full = |s: &'static str| Full::new(Bytes::from(s)).map_err(|e| match e {});
        let body = guarded(full("hello"), timing(0, 1000), stalls.clone(), boxed);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(read(body).await, Ok(Bytes::from("hello")));
        let empty = guarded(full(""), timing(0, 1000), stalls.clone(), boxed);
        assert!(empty.is_end_stream());
        let body = guarded(full("hello"), timing(100, 1000), stalls.clone(), boxed);
        assert_eq!(read(body).await, Ok(Bytes::from("hello")));
        assert_eq!(stalls.get(), 0);
    }

    #[test]
    fn a_stall_is_found_under_the_errors_that_wrap_it() {
        let stall = Stalled::Idle(Duration::from_secs(1));
        let outer = Wrap(Box::new(Wrap(Box::new(stall))));
        assert_eq!(stalled_in(&outer), Some(stall));
        assert_eq!(stalled_in(&Wrap("no".into())), None);
    }
}

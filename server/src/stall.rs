//! Request bodies that stop arriving. A client that sends its headers and
//! part of a body, then nothing, would otherwise hold its connection (HTTP)
//! or stream (gRPC) for good: the first-byte timeout covers a silent
//! connection and the request deadline a queued request, but neither a
//! body in progress. Each front end wraps its request bodies here, so the
//! read fails once nothing has come for the body timeout (reset by every
//! piece that arrives, like nginx's `client_body_timeout`), counted in
//! `rir_stalled_requests_total{front}`; HTTP answers 408 and closes, gRPC
//! ends the call with DEADLINE_EXCEEDED.

use std::time::Duration;

use http_body::Body;
use http_body_util::BodyExt;
use prometheus::IntCounter;
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// Any error a request body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body failed: nothing arrived for `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request body stopped arriving: nothing for {} ms (--body-timeout-ms)",
    .after.as_millis()
)]
pub struct Stalled {
    /// The body timeout.
    pub after: Duration,
}

/// `body`, failing once nothing has arrived for `after` (never when
/// `after` is zero) with the error `stalled` makes, counted in `stalls`.
pub fn guarded<B>(
    body: B,
    after: Duration,
    stalls: IntCounter,
    stalled: fn(Stalled) -> BoxError,
) -> http_body_util::combinators::UnsyncBoxBody<B::Data, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if after.is_zero() {
        return body.map_err(Into::into).boxed_unsync();
    }
    TimeoutBody::new(after, body)
        .map_err(move |e| {
            if e.is::<TimeoutError>() {
                stalls.inc();
                stalled(Stalled { after })
            } else {
                e
            }
        })
        .boxed_unsync()
}

/// The [`Stalled`] that `error` is or wraps, if any.
pub fn stalled_in(error: &(dyn std::error::Error + 'static)) -> Option<Stalled> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(s) = e.downcast_ref::<Stalled>() {
            return Some(*s);
        }
        next = e.source();
    }
    None
}

//! The memory of requests in flight, bounded for the whole process.
//!
//! Each request holds a share of one budget (`--max-inflight-mb`) for as
//! long as it is in the server: an HTTP body from before it is read until
//! its response, and the decoded tensor of every request, over either
//! protocol, from when it is queued until its outputs come back. Queues
//! are thus bounded in bytes as well as in requests. A request that does
//! not fit is answered at once, RESOURCE_EXHAUSTED (HTTP 503 with
//! Retry-After), and counted in `rir_requests_shed_total{reason="memory"}`,
//! so that many large requests at once slow nobody down and cannot take the
//! machine's memory.

use std::sync::Arc;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServeError;

/// Budget units are KiB, so that a budget of gigabytes fits the
/// semaphore's `u32` requests.
const UNIT: usize = 1 << 10;

/// The process's budget of request bytes in flight.
#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: usize,
    shed: IntCounter,
    held: IntGauge,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({} bytes)", self.total)
    }
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    _permit: OwnedSemaphorePermit,
    held: IntGauge,
    bytes: i64,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.held.sub(self.bytes);
    }
}

impl Budget {
    /// A budget of `bytes`, counting refusals in `shed` and the bytes held
    /// in `held`.
    pub fn new(bytes: usize, shed: IntCounter, held: IntGauge) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Budget {
            units: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
            shed,
            held,
        }
    }

    /// Holds `bytes` of the budget, or refuses at once when they do not
    /// fit beside what requests in flight hold.
    pub(crate) fn take(&self, bytes: usize) -> Result<Share, ServeError> {
        let units = bytes.div_ceil(UNIT).max(1);
        let refused = || {
            self.shed.inc();
            ServeError::Overloaded(format!(
                "the server holds as many request bytes as it may ({} MiB, --max-inflight-mb); \
                 this request needs {} KiB more; retry shortly",
                self.total >> 20,
                units
            ))
        };
        let units = u32::try_from(units).map_err(|_| refused())?;
        let permit = self
            .units
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| refused())?;
        let bytes = i64::from(units) * UNIT as i64;
        self.held.add(bytes);
        Ok(Share {
            _permit: permit,
            held: self.held.clone(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> (Budget, IntCounter, IntGauge) {
        let shed = IntCounter::new("s", "s").unwrap();
        let held = IntGauge::new("h", "h").unwrap();
        (Budget::new(bytes, shed.clone(), held.clone()), shed, held)
    }

    #[test]
    fn shares_fit_until_the_budget_is_spent_and_come_back_when_dropped() {
        let (b, shed, held) = budget(10 << 10);
        assert_eq!(format!("{b:?}"), "Budget(10240 bytes)");
        let a = b.take(6 << 10).unwrap();
        assert_eq!(held.get(), 6 << 10);
        // 5 KiB more does not fit beside 6 of 10.
        let e = b.take(5 << 10).unwrap_err();
        assert!(matches!(e, ServeError::Overloaded(_)), "{e}");
        assert_eq!(shed.get(), 1);
        // A part of a KiB counts as one.
        let c = b.take(3 * 1024 + 1).unwrap();
        assert_eq!(held.get(), 10 << 10);
        drop((a, c));
        assert_eq!(held.get(), 0);
        assert!(b.take(10 << 10).is_ok());
        // More than the whole budget never fits.
        assert!(b.take(usize::MAX).is_err());
        assert_eq!(shed.get(), 2);
    }
}

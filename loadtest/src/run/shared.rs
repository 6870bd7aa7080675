//! The state a run's requests, drivers and controller share: which phase
//! (warm-up or measurement window k) a request sent now belongs to, whether
//! to send more, the records by phase, and the counters that stop a run
//! whose requests all fail.
//!
//! Every request is tagged at issue time with its phase, so requests that
//! complete after a boundary still count where they were sent.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rir_client::error::code_name;

use crate::LoadError;
use crate::recorder::Recorder;
use crate::workload::Sent;

/// Requests that all fail, with none succeeding, before the run gives up.
const FAIL_FAST_AFTER: u64 = 50;

/// State shared by the driver, the requests and the controller.
pub(crate) struct Shared {
    /// 0: warm-up; k >= 1: measurement window k.
    pub(crate) phase: AtomicUsize,
    /// Set when no more requests are to be sent.
    pub(crate) stop: AtomicBool,
    /// Records by phase.
    pub(crate) windows: Mutex<Vec<Recorder>>,
    /// Measured requests issued (for a request-count stop).
    pub(crate) issued: AtomicU64,
    /// The request count that ends the measurement, if that is how it ends.
    limit: Option<u64>,
    /// The index of the next request (0 was the probe).
    pub(crate) next_index: AtomicU64,
    /// Requests answered OK, all phases.
    pub(crate) ok: AtomicU64,
    /// Requests failed, all phases.
    pub(crate) failed: AtomicU64,
    /// The last failure, for the fail-fast message.
    last_error: Mutex<Option<tonic::Status>>,
    /// When the measurement started (unset in warm-up): the open loop's
    /// schedule counts from it.
    pub(crate) measure_start: OnceLock<Instant>,
    /// When the controller stopped the run: the open loop counts the sends
    /// due before it that it never made.
    pub(crate) stopped_at: OnceLock<Instant>,
}

impl Shared {
    /// The state at the start of a run: in warm-up, or measuring at once
    /// when there is no warm-up; `limit` ends it after that many requests.
    pub(crate) fn new(measuring: bool, limit: Option<u64>) -> Self {
        Shared {
            phase: AtomicUsize::new(usize::from(measuring)),
            stop: AtomicBool::new(false),
            windows: Mutex::new(vec![Recorder::new(); 1 + usize::from(measuring)]),
            issued: AtomicU64::new(0),
            limit,
            // Request 0 was the probe.
            next_index: AtomicU64::new(1),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            measure_start: OnceLock::new(),
            stopped_at: OnceLock::new(),
        }
    }

    /// The phase tag for a request about to be sent, or `None` when no more
    /// are to be sent.
    pub(crate) fn begin(&self) -> Option<usize> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        let phase = self.phase.load(Ordering::Acquire);
        if phase > 0
            && let Some(n) = self.limit
            && self.issued.fetch_add(1, Ordering::AcqRel) >= n
        {
            return None;
        }
        Some(phase)
    }

    pub(crate) fn finish(&self, phase: usize, latency: Duration, sent: Sent) {
        match &sent.routed.result {
            _ if sent.hostile.is_some() => 0,
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(s) => {
                *lock(&self.last_error) = Some(s.clone());
                let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                // Stop sending at once; the controller reports why.
                if failed >= FAIL_FAST_AFTER && self.ok.load(Ordering::Relaxed) == 0 {
                    self.stop.store(true, Ordering::Release);
                }
                failed
            }
        };
        let mut w = lock(&self.windows);
        if let Some(r) = w.get_mut(phase) {
            r.record(latency, &sent);
        }
    }

    /// Counts, in window `phase`, `late` sends that left more than 1 ms
    /// after their intended time and `not_sent` that never went.
    pub(crate) fn missed_sends(&self, phase: usize, late: u64, not_sent: u64) {
        if let Some(r) = lock(&self.windows).get_mut(phase) {
            r.late += late;
            r.not_sent += not_sent;
        }
    }

    /// Stops the run: no more sends after now.
    pub(crate) fn stop_now(&self) {
        let _ = self.stopped_at.set(Instant::now());
        self.stop.store(true, Ordering::Release);
    }

    /// Opens the next measurement window: requests sent from now on count
    /// there. Returns its phase number.
    pub(crate) fn next_window(&self) -> usize {
        let n = {
            let mut w = lock(&self.windows);
            w.push(Recorder::new());
            w.len() - 1
        };
        self.phase.store(n, Ordering::Release);
        n
    }

    pub(crate) fn fail_fast(&self) -> Option<LoadError> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed < FAIL_FAST_AFTER || self.ok.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = lock(&self.last_error).clone();
        Some(LoadError::AllFailing {
            count: failed,
            code: last.as_ref().map_or("?", |s| code_name(s.code())).into(),
            message: last.map(|s| s.message().to_string()).unwrap_or_default(),
        })
    }
}

/// The value behind `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

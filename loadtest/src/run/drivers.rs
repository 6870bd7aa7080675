//! The two drivers: the closed loop (N workers, each sending its next
//! request when the last one answered) and the open loop (requests at
//! scheduled times whatever the server does). Each returns a receiver that
//! fires when it has stopped sending and every request it sent is answered.
//!
//! In open loop the latency runs from the request's *intended* send time: a
//! request the generator could only send late (because the in-flight limit
//! was reached) carries that delay, and a stalled server delays every
//! request scheduled during the stall, all of which is recorded (no
//! coordinated omission).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use super::shared::Shared;
use crate::LoadError;
use crate::load::Arrivals;
use crate::workload::Workload;

/// `concurrency` workers, each sending its next request when its last one
/// is answered.
pub(crate) fn closed(
    w: Arc<Workload>,
    sh: Arc<Shared>,
    concurrency: usize,
) -> oneshot::Receiver<()> {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (w, sh) = (w.clone(), sh.clone());
            tokio::spawn(async move {
                while let Some(phase) = sh.begin() {
                    let i = sh.next_index.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = w.send(i).await;
                    sh.finish(phase, t.elapsed(), r);
                }
            })
        })
        .collect();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        for h in workers {
            let _ = h.await;
        }
        let _ = tx.send(());
    });
    rx
}

/// Requests at `rate(t)` per second (`t` into the measurement, zero in
/// warm-up) with `arrivals` spacing, at most `max_in_flight` outstanding.
/// Sends that leave late and those due before the stop that never went
/// are counted in their window. The open-loop generator runs on its own OS
/// thread: `thread::sleep` wakes within tens of microseconds, where the
/// async timer rounds to whole milliseconds, which would add up to 1 ms to
/// every measured latency.
pub(crate) fn open(
    w: Arc<Workload>,
    sh: Arc<Shared>,
    rate: impl Fn(Duration) -> f64 + Send + 'static,
    arrivals: Arrivals,
    max_in_flight: usize,
    seed: u64,
) -> Result<oneshot::Receiver<()>, LoadError> {
    let handle = tokio::runtime::Handle::current();
    let sem = Arc::new(Semaphore::new(max_in_flight));
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("open-loop".into())
        .spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            // The gap after a send intended at `at`.
            let mut gap = |at: Instant| {
                let since = sh
                    .measure_start
                    .get()
                    .map_or(Duration::ZERO, |t0| at.saturating_duration_since(*t0));
                let r = rate(since);
                Duration::from_secs_f64(match arrivals {
                    Arrivals::Constant => 1.0 / r,
                    Arrivals::Poisson => -(1.0 - rng.f64()).ln() / r,
                })
            };
            let mut next = Instant::now();
            loop {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                let Some(phase) = sh.begin() else { break };
                let permit = match sem.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => match handle.block_on(sem.clone().acquire_owned()) {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let intended = next;
                if phase > 0 && intended.elapsed() > Duration::from_millis(1) {
                    sh.missed_sends(phase, 1, 0);
                }
                let i = sh.next_index.fetch_add(1, Ordering::Relaxed);
                let (w, sh) = (w.clone(), sh.clone());
                handle.spawn(async move {
                    let r = w.send(i).await;
                    sh.finish(phase, intended.elapsed(), r);
                    drop(permit);
                });
                next += gap(next);
            }
            // The sends due before the stop that never went.
            if let Some(&stop) = sh.stopped_at.get() {
                let mut not_sent = 0;
                while next < stop {
                    not_sent += 1;
                    next += gap(next);
                }
                let phase = sh.phase.load(Ordering::Acquire);
                if phase > 0 && not_sent > 0 {
                    sh.missed_sends(phase, 0, not_sent);
                }
            }
            // Wait for the requests in flight.
            let _ = handle.block_on(sem.acquire_many(max_in_flight as u32));
            let _ = tx.send(());
        })
        .map_err(|e| LoadError::Run(crate::error::RunError::Thread(e)))?;
    Ok(rx)
}

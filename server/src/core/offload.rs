//! CPU work of a request that must not run on the async workers (decoding
//! an image, inflating and parsing a large REST body): at most `running`
//! at once on blocking threads, at most `waiting` more queued for one, and
//! none waiting past its request's deadline.
//!
//! The async workers also accept connections and serve every other call,
//! so seconds of parsing there would stall them all; and waiters without a
//! bound or a deadline would pile up, each holding its request's bytes.

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;
use tokio::sync::Semaphore;

use crate::error::ServeError;

/// The bounded pool of blocking work.
#[derive(Debug)]
pub struct Offload {
    running: Arc<Semaphore>,
    waiting: Semaphore,
    /// How many may wait, for the message.
    max_waiting: usize,
    shed: IntCounter,
}

impl Offload {
    /// At most `running` jobs at once (0: one per CPU) and `waiting` more
    /// in line; refusals are counted in `shed`.
    pub fn new(running: usize, waiting: usize, shed: IntCounter) -> Self {
        let running = match running {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Offload {
            running: Arc::new(Semaphore::new(running)),
            waiting: Semaphore::new(waiting.max(1)),
            max_waiting: waiting.max(1),
            shed,
        }
    }

    /// Runs `job` on a blocking thread once one of the places is free,
    /// giving up at `deadline`; refused at once when the line is full.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServeError> {
        let Ok(_in_line) = self.waiting.try_acquire() else {
            self.shed.inc();
            return Err(ServeError::Overloaded(format!(
                "{} requests already wait for a decoding thread; retry shortly",
                self.max_waiting
            )));
        };
        let acquire = self.running.clone().acquire_owned();
        let permit = match deadline {
            None => acquire.await,
            Some(at) => tokio::time::timeout_at(at.into(), acquire)
                .await
                .map_err(|_| {
                    ServeError::DeadlineExceeded(
                        "the deadline passed while the request waited for a decoding thread".into(),
                    )
                })?,
        }
        .map_err(|_| ServeError::Unavailable("the server is shutting down".into()))?;
        drop(_in_line);
        tokio::task::spawn_blocking(move || {
            let _running = permit;
            job()
        })
        .await
        .map_err(|e| ServeError::Internal(format!("a decoding thread failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_line_is_bounded_and_waiters_leave_at_their_deadline() {
        let shed = IntCounter::new("s", "s").unwrap();
        let pool = Arc::new(Offload::new(1, 1, shed.clone()));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        // One job runs (blocked until released) ...
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(None, move || hold.recv().is_ok()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ... one waits for it with a deadline, and a third finds the line full.
        let soon = Instant::now() + Duration::from_millis(200);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(Some(soon), || 1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let full = pool.run(None, || 2).await.unwrap_err();
        assert!(matches!(full, ServeError::Overloaded(_)), "{full}");
        assert_eq!(shed.get(), 1);
        let late = waiter.await.unwrap().unwrap_err();
        assert!(matches!(late, ServeError::DeadlineExceeded(_)), "{late}");
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(true));
        // Free again: a job runs and returns its value.
        assert_eq!(pool.run(None, || 3).await, Ok(3));
    }
}

//! The controller of one run: warm-up, then the measurement (a duration,
//! a request count, or stability windows, optionally split into intervals),
//! then the answers still in flight; it watches for a run whose requests
//! all fail, feeds the progress bar, and says what was measured. At every
//! boundary of the measurement it reads the server's counters, so that each
//! measured span has the server's own account beside the client's.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::progress::Progress;
use super::shared::{Shared, lock};
use crate::LoadError;
use crate::load::{RunOptions, Stability, Stop};
use crate::recorder::Recorder;
use rir_client::server_counters::{Counters, Probe};
use std::sync::atomic::Ordering;

/// How often the controller looks at the run.
const TICK: Duration = Duration::from_millis(100);

/// What the controller measured.
pub(crate) struct Measured {
    /// Every measured request.
    pub(crate) record: Recorder,
    /// The measurement's length.
    pub(crate) seconds: f64,
    /// With stability windows: whether the last three agreed.
    pub(crate) stable: Option<bool>,
    /// Windows measured (1 without stability windows).
    pub(crate) windows: usize,
    /// The server's counters over the measurement, when it gives them.
    pub(crate) server: Option<Counters>,
    /// With `interval`: each interval.
    pub(crate) intervals: Vec<Interval>,
}

/// One interval of a measurement.
pub(crate) struct Interval {
    /// Its requests.
    pub(crate) record: Recorder,
    /// Its start, seconds from the start of the measurement.
    pub(crate) start: f64,
    /// Its length, seconds.
    pub(crate) seconds: f64,
    /// The server's counters over it.
    pub(crate) server: Option<Counters>,
}

/// Runs the phases of a run whose driver signals `done` when it has
/// stopped and every request is answered; `probe` reads the server's
/// counters, and `before` holds them as read before the driver started,
/// when the measurement starts with it (no warm-up).
pub(crate) async fn control(
    sh: &Shared,
    o: &RunOptions,
    done: oneshot::Receiver<()>,
    progress: &Progress,
    probe: Option<&Probe>,
    before: Option<Counters>,
) -> Result<Measured, LoadError> {
    let mut c = Controller {
        sh,
        o,
        done,
        finished: false,
        progress,
        probe,
        marks: vec![],
    };
    c.sleep_until(Instant::now() + o.warmup).await?;
    match o.warmup.is_zero() {
        true => c.marks.push(before),
        false => c.mark().await,
    }
    let mut starts = vec![Instant::now()];
    let _ = sh.measure_start.set(starts[0]);
    if sh.phase.load(Ordering::Acquire) == 0 {
        sh.next_window();
    }
    let stable = match o.stability {
        Some(s) => Some(c.until_stable(s, &mut starts).await?),
        None => {
            c.measure(&mut starts).await?;
            None
        }
    };
    sh.stop_now();
    c.drain().await?;
    let end = Instant::now();
    c.mark().await;
    let windows = lock(&sh.windows);
    Ok(match stable {
        Some(ok) => stable_measurement(&windows, &starts, &c.marks, ok),
        None => fixed_measurement(&windows, starts, end, &c.marks, o.split().is_some()),
    })
}

/// The server's counters between marks `a` and `b`, when both were read.
fn between(marks: &[Option<Counters>], a: usize, b: usize) -> Option<Counters> {
    match (marks.get(a), marks.get(b)) {
        (Some(Some(a)), Some(Some(b))) => Some(b.since(a)),
        _ => None,
    }
}

/// One run's controller and what it has seen.
struct Controller<'a> {
    sh: &'a Shared,
    o: &'a RunOptions,
    /// Fires when the driver has stopped and every request is answered.
    done: oneshot::Receiver<()>,
    /// Whether `done` has fired.
    finished: bool,
    progress: &'a Progress,
    /// Reads the server's counters.
    probe: Option<&'a Probe>,
    /// The counters at each boundary of the measurement (its start, each
    /// window's or interval's end, and its end), as `starts` holds them.
    marks: Vec<Option<Counters>>,
}

impl Controller<'_> {
    /// Reads the server's counters at a boundary.
    async fn mark(&mut self) {
        let now = match self.probe {
            Some(p) => p.read().await,
            None => None,
        };
        self.marks.push(now);
    }

    /// Looks at the run: stops it when every request so far failed, shows
    /// progress, and notes when the driver has finished.
    fn tick(&mut self) -> Result<(), LoadError> {
        let sh = self.sh;
        if let Some(e) = sh.fail_fast() {
            sh.stop.store(true, Ordering::Release);
            return Err(e);
        }
        self.progress.show(
            sh.ok.load(Ordering::Relaxed),
            sh.failed.load(Ordering::Relaxed),
            sh.issued.load(Ordering::Relaxed),
        );
        if !self.finished && self.done.try_recv().is_ok() {
            self.finished = true;
        }
        Ok(())
    }

    /// Ticks until `end` or until the driver has finished.
    async fn sleep_until(&mut self, end: Instant) -> Result<(), LoadError> {
        while Instant::now() < end && !self.finished {
            tokio::time::sleep(TICK.min(end.saturating_duration_since(Instant::now()))).await;
            self.tick()?;
        }
        Ok(())
    }

    /// Measures window after window until the last three agree, the most
    /// windows are measured or the driver has finished; whether they agreed.
    async fn until_stable(
        &mut self,
        s: Stability,
        starts: &mut Vec<Instant>,
    ) -> Result<bool, LoadError> {
        loop {
            let end = *starts.last().expect("the measurement's start") + s.window;
            self.sleep_until(end).await?;
            starts.push(Instant::now());
            let complete = self.sh.next_window() - 1;
            self.mark().await;
            self.progress.window(complete);
            if complete >= 3 {
                let ok = is_stable(
                    &lock(&self.sh.windows)[complete - 2..=complete],
                    &starts[complete - 3..],
                    s.tolerance,
                );
                if ok || complete >= s.max_windows || self.finished {
                    return Ok(ok);
                }
            } else if self.finished {
                return Ok(false);
            }
        }
    }

    /// Measures for the duration, or (a request count) until the driver has
    /// sent them all and they are answered; with intervals, window k is the
    /// k-th interval.
    async fn measure(&mut self, starts: &mut Vec<Instant>) -> Result<(), LoadError> {
        let end = match self.o.stop {
            Stop::Duration(d) => Some(starts[0] + d),
            Stop::Requests(_) => None,
        };
        let mut next_split = self.o.split().map(|d| starts[0] + d);
        while end.is_none_or(|end| Instant::now() < end) && !self.finished {
            let left = end.map_or(TICK, |end| end.saturating_duration_since(Instant::now()));
            let left = next_split.map_or(left, |t| {
                left.min(t.saturating_duration_since(Instant::now()))
            });
            tokio::time::sleep(TICK.min(left)).await;
            self.tick()?;
            if let (Some(t), Some(d)) = (next_split, self.o.split())
                && Instant::now() >= t
                && end.is_none_or(|end| t < end)
            {
                starts.push(Instant::now());
                self.sh.next_window();
                self.mark().await;
                next_split = Some(t + d);
            }
        }
        Ok(())
    }

    /// Waits for the answers still in flight.
    async fn drain(&mut self) -> Result<(), LoadError> {
        while !self.finished {
            tokio::time::sleep(TICK).await;
            self.tick()?;
        }
        Ok(())
    }
}

/// The last three windows of a stability run (window 0 is the warm-up; the
/// last one, opened when the run stopped, is not measured).
fn stable_measurement(
    windows: &[Recorder],
    starts: &[Instant],
    marks: &[Option<Counters>],
    stable: bool,
) -> Measured {
    let k = windows.len() - 2;
    let first = k.saturating_sub(2).max(1);
    let mut record = Recorder::new();
    for w in &windows[first..=k] {
        record.merge(w);
    }
    Measured {
        record,
        seconds: (starts[k] - starts[first - 1]).as_secs_f64(),
        stable: Some(stable),
        windows: k,
        server: between(marks, first - 1, k),
        intervals: vec![],
    }
}

/// Every measured window of a duration or count run, and each as an
/// interval when `intervals`: interval k ran from `starts[k - 1]` to
/// `starts[k]` (the last to `end`, answers in flight included).
fn fixed_measurement(
    windows: &[Recorder],
    mut starts: Vec<Instant>,
    end: Instant,
    marks: &[Option<Counters>],
    intervals: bool,
) -> Measured {
    let mut record = Recorder::new();
    for w in &windows[1..] {
        record.merge(w);
    }
    starts.push(end);
    let intervals = match intervals {
        false => vec![],
        true => windows[1..]
            .iter()
            .zip(starts.windows(2))
            .enumerate()
            .map(|(k, (w, b))| Interval {
                record: w.clone(),
                start: (b[0] - starts[0]).as_secs_f64(),
                seconds: (b[1] - b[0]).as_secs_f64(),
                server: between(marks, k, k + 1),
            })
            .collect(),
    };
    Measured {
        record,
        seconds: (end - starts[0]).as_secs_f64(),
        stable: None,
        windows: 1,
        server: between(marks, 0, starts.len() - 1),
        intervals,
    }
}

/// Whether three consecutive windows agree: each one's throughput and
/// average latency within `tolerance` of the three's mean. `starts` holds
/// the four boundaries of the three windows.
fn is_stable(windows: &[Recorder], starts: &[Instant], tolerance: f64) -> bool {
    let rates: Vec<f64> = windows
        .iter()
        .zip(starts.windows(2))
        .map(|(w, b)| w.ok() as f64 / (b[1] - b[0]).as_secs_f64().max(1e-9))
        .collect();
    let means: Vec<f64> = windows.iter().map(|w| w.latency.mean()).collect();
    let close = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        m > 0.0 && v.iter().all(|x| ((x - m) / m).abs() <= tolerance)
    };
    windows.iter().all(|w| w.ok() > 0) && close(&rates) && close(&means)
}

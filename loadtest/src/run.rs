//! Applying load: the closed-loop driver (N workers, each sending its next
//! request when the last one answered), the open-loop driver (requests at
//! scheduled times whatever the server does), and the controller that runs
//! warm-up, the measurement (a duration, a request count, or stability
//! windows) and the progress bar.
//!
//! Every request is tagged at issue time with the phase it belongs to
//! (warm-up or measurement window k), so requests that complete after a
//! boundary still count where they were sent. In open loop the latency runs
//! from the request's *intended* send time: a request the generator could
//! only send late (because the in-flight limit was reached) carries that
//! delay, and a stalled server delays every request scheduled during the
//! stall, all of which is recorded (no coordinated omission).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, oneshot};

use crate::LoadError;
use crate::error::code_name;
use crate::recorder::Recorder;
use crate::report::Report;
use crate::workload::{Sent, Workload};

/// Arrival process of the open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced, 1/rate apart.
    Constant,
    /// Exponential gaps of mean 1/rate (independent arrivals, as from many users).
    Poisson,
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` requests always in flight.
    Closed {
        /// Outstanding requests.
        concurrency: usize,
    },
    /// Requests sent at a fixed rate regardless of answers.
    Open {
        /// Requests per second.
        rate: f64,
        /// Spacing of the sends.
        arrivals: Arrivals,
    },
}

impl Load {
    /// Short label, e.g. `concurrency 8` or `rate 200/s poisson`.
    pub fn label(&self) -> String {
        match self {
            Load::Closed { concurrency } => format!("concurrency {concurrency}"),
            Load::Open { rate, arrivals } => format!(
                "rate {}/s {}",
                if rate.fract() == 0.0 {
                    format!("{rate:.0}")
                } else {
                    format!("{rate:.2}")
                },
                match arrivals {
                    Arrivals::Constant => "constant",
                    Arrivals::Poisson => "poisson",
                }
            ),
        }
    }
}

/// When the measurement ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many requests (all of them answered).
    Requests(u64),
}

/// Measure in windows until the last three agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stability {
    /// Length of one window.
    pub window: Duration,
    /// Largest relative deviation from their mean, of the last three windows'
    /// throughput and average latency (0.1 = 10 %).
    pub tolerance: f64,
    /// Give up (and report the last three, marked unstable) after this many.
    pub max_windows: usize,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Load before measuring, not recorded.
    pub warmup: Duration,
    /// End of the measurement (ignored when `stability` is set).
    pub stop: Stop,
    /// Optional stability windows.
    pub stability: Option<Stability>,
    /// Without stability windows: also report each interval of this length
    /// (a soak's figures over time).
    pub interval: Option<Duration>,
    /// Open loop: most requests in flight; when reached, sends wait (and
    /// their latency still counts from the intended time).
    pub max_in_flight: usize,
    /// Seed of Poisson arrivals.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Requests that all fail, with none succeeding, before the run gives up.
const FAIL_FAST_AFTER: u64 = 50;

/// How often the controller looks at the run.
const TICK: Duration = Duration::from_millis(100);

/// State shared by the driver, the requests and the controller.
struct Shared {
    /// 0: warm-up; k >= 1: measurement window k.
    phase: AtomicUsize,
    stop: AtomicBool,
    /// Records by phase.
    windows: Mutex<Vec<Recorder>>,
    /// Measured requests issued (for a request-count stop).
    issued: AtomicU64,
    limit: Option<u64>,
    next_index: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<tonic::Status>>,
    late: AtomicU64,
}

impl Shared {
    /// The phase tag for a request about to be sent, or `None` when no more
    /// are to be sent.
    fn begin(&self) -> Option<usize> {
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

    fn finish(&self, phase: usize, latency: Duration, sent: Sent) {
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

    /// Opens the next measurement window: requests sent from now on count
    /// there. Returns its phase number.
    fn next_window(&self) -> usize {
        let n = {
            let mut w = lock(&self.windows);
            w.push(Recorder::new());
            w.len() - 1
        };
        self.phase.store(n, Ordering::Release);
        n
    }

    fn fail_fast(&self) -> Option<LoadError> {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The result of one run.
pub struct Outcome {
    /// The figures (with one report per interval when asked for).
    pub report: Report,
    /// The measured record (histogram and errors).
    pub record: Recorder,
}

/// What the controller measured.
struct Measured {
    record: Recorder,
    seconds: f64,
    stable: Option<bool>,
    windows: usize,
    /// With `interval`: each interval's record, its start (seconds from the
    /// start of the measurement) and its length.
    intervals: Vec<(Recorder, f64, f64)>,
}

/// Applies `load` with `workload` under `o`, and reports what it measured.
pub async fn run(
    workload: Arc<Workload>,
    load: Load,
    o: &RunOptions,
) -> Result<Outcome, LoadError> {
    if let Load::Closed { concurrency: 0 } = load {
        return Err(LoadError::Setup("concurrency must be at least 1".into()));
    }
    if let Load::Open { rate, .. } = load
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(LoadError::Setup(format!(
            "the rate must be a positive number, not {rate}"
        )));
    }
    let limit = match (o.stability, o.stop) {
        (None, Stop::Requests(n)) => Some(n),
        _ => None,
    };
    // Without warm-up the first request already belongs to the measurement.
    let measuring = o.warmup.is_zero();
    let shared = Arc::new(Shared {
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
        late: AtomicU64::new(0),
    });
    let done = match load {
        Load::Closed { concurrency } => closed(workload.clone(), shared.clone(), concurrency),
        Load::Open { rate, arrivals } => open(
            workload.clone(),
            shared.clone(),
            rate,
            arrivals,
            o.max_in_flight.max(1),
            o.seed,
        )?,
    };
    let bar = progress_bar(o, &load);
    let measured = control(&shared, o, done, &bar).await;
    bar.finish_and_clear();
    let m = measured?;
    let replicas = workload.replicas();
    let mut report = Report::new(
        &load,
        workload.batch,
        m.seconds,
        &m.record,
        shared.late.load(Ordering::Relaxed),
        m.stable,
        m.windows,
    )
    .with_replicas(&m.record, &replicas);
    report.intervals = m
        .intervals
        .iter()
        .map(|(rec, start, secs)| {
            let mut r = Report::new(&load, workload.batch, *secs, rec, 0, None, 1);
            // One precision for every row: the nominal interval's.
            r.load = if o.interval.is_some_and(|d| d.as_secs_f64() < 10.0) {
                format!("{:.1}-{:.1} s", start, start + secs)
            } else {
                format!("{:.0}-{:.0} s", start, start + secs)
            };
            r.start_s = Some(*start);
            r
        })
        .collect();
    Ok(Outcome {
        report,
        record: m.record,
    })
}

fn closed(w: Arc<Workload>, sh: Arc<Shared>, concurrency: usize) -> oneshot::Receiver<()> {
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

/// The open-loop generator runs on its own OS thread: `thread::sleep` wakes
/// within tens of microseconds, where the async timer rounds to whole
/// milliseconds, which would add up to 1 ms to every measured latency.
fn open(
    w: Arc<Workload>,
    sh: Arc<Shared>,
    rate: f64,
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
            let gap = |rng: &mut fastrand::Rng| match arrivals {
                Arrivals::Constant => 1.0 / rate,
                Arrivals::Poisson => -(1.0 - rng.f64()).ln() / rate,
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
                    sh.late.fetch_add(1, Ordering::Relaxed);
                }
                let i = sh.next_index.fetch_add(1, Ordering::Relaxed);
                let (w, sh) = (w.clone(), sh.clone());
                handle.spawn(async move {
                    let r = w.send(i).await;
                    sh.finish(phase, intended.elapsed(), r);
                    drop(permit);
                });
                next += Duration::from_secs_f64(gap(&mut rng));
            }
            // Wait for the requests in flight.
            let _ = handle.block_on(sem.acquire_many(max_in_flight as u32));
            let _ = tx.send(());
        })
        .map_err(|e| LoadError::Setup(format!("starting the open-loop thread: {e}")))?;
    Ok(rx)
}

fn progress_bar(o: &RunOptions, load: &Load) -> ProgressBar {
    if !o.progress {
        return ProgressBar::hidden();
    }
    let (len, template) = match (o.stability, o.stop) {
        (Some(_), _) => (None, "{spinner} {prefix} {elapsed} {msg}"),
        (None, Stop::Duration(d)) => (
            Some((o.warmup + d).as_millis() as u64),
            "{prefix} [{bar:30}] {elapsed}/{duration} {msg}",
        ),
        (None, Stop::Requests(n)) => (Some(n), "{prefix} [{bar:30}] {pos}/{len} {msg}"),
    };
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(load.label());
    bar
}

async fn control(
    sh: &Shared,
    o: &RunOptions,
    mut done: oneshot::Receiver<()>,
    bar: &ProgressBar,
) -> Result<Measured, LoadError> {
    let started = Instant::now();
    let mut finished = false;
    // Warm-up, then the measurement; `tick` watches for failures and early
    // completion and draws progress.
    let tick = |finished: &mut bool, done: &mut oneshot::Receiver<()>| {
        let r = sh.fail_fast();
        if r.is_some() {
            sh.stop.store(true, Ordering::Release);
        }
        let ok = sh.ok.load(Ordering::Relaxed);
        let failed = sh.failed.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{ok} ok, {failed} failed, {:.0} req/s",
            ok as f64 / secs
        ));
        match o.stop {
            Stop::Requests(n) if o.stability.is_none() => {
                // Workers that find the count reached still bump it once.
                bar.set_position(sh.issued.load(Ordering::Relaxed).min(n));
            }
            _ => bar.set_position(started.elapsed().as_millis() as u64),
        }
        if !*finished && done.try_recv().is_ok() {
            *finished = true;
        }
        r
    };
    while started.elapsed() < o.warmup && !finished {
        tokio::time::sleep(TICK.min(o.warmup.saturating_sub(started.elapsed()))).await;
        if let Some(e) = tick(&mut finished, &mut done) {
            return Err(e);
        }
    }
    let mut starts = vec![Instant::now()];
    if sh.phase.load(Ordering::Acquire) == 0 {
        sh.next_window();
    }

    let mut stable = None;
    match o.stability {
        Some(s) => loop {
            let end = *starts.last().unwrap_or(&started) + s.window;
            while Instant::now() < end && !finished {
                tokio::time::sleep(TICK.min(end.saturating_duration_since(Instant::now()))).await;
                if let Some(e) = tick(&mut finished, &mut done) {
                    return Err(e);
                }
            }
            starts.push(Instant::now());
            let n = sh.next_window();
            let complete = n - 1;
            bar.set_prefix(format!("window {complete}"));
            if complete >= 3 {
                let ok = is_stable(
                    &lock(&sh.windows)[complete - 2..=complete],
                    &starts[complete - 3..],
                    s.tolerance,
                );
                if ok || complete >= s.max_windows || finished {
                    stable = Some(ok);
                    break;
                }
            } else if finished {
                stable = Some(false);
                break;
            }
        },
        None => {
            // A duration ends here; a request count ends when the driver has
            // sent them all and they are answered.
            let end = match o.stop {
                Stop::Duration(d) => Some(starts[0] + d),
                Stop::Requests(_) => None,
            };
            // With intervals, window k is the k-th interval.
            let mut next_split = o.interval.map(|d| starts[0] + d);
            while end.is_none_or(|end| Instant::now() < end) && !finished {
                let left = end.map_or(TICK, |end| end.saturating_duration_since(Instant::now()));
                let left = next_split.map_or(left, |t| {
                    left.min(t.saturating_duration_since(Instant::now()))
                });
                tokio::time::sleep(TICK.min(left)).await;
                if let Some(e) = tick(&mut finished, &mut done) {
                    return Err(e);
                }
                if let (Some(t), Some(d)) = (next_split, o.interval)
                    && Instant::now() >= t
                    && end.is_none_or(|end| t < end)
                {
                    starts.push(Instant::now());
                    sh.next_window();
                    next_split = Some(t + d);
                }
            }
        }
    }
    sh.stop.store(true, Ordering::Release);
    while !finished {
        tokio::time::sleep(TICK).await;
        if let Some(e) = tick(&mut finished, &mut done) {
            return Err(e);
        }
    }
    let end = Instant::now();
    let windows = lock(&sh.windows);
    match stable {
        Some(_) => {
            let k = windows.len() - 2;
            let first = k.saturating_sub(2).max(1);
            let mut rec = Recorder::new();
            for w in &windows[first..=k] {
                rec.merge(w);
            }
            let secs = (starts[k] - starts[first - 1]).as_secs_f64();
            Ok(Measured {
                record: rec,
                seconds: secs,
                stable,
                windows: k,
                intervals: vec![],
            })
        }
        None => {
            let mut record = Recorder::new();
            for w in &windows[1..] {
                record.merge(w);
            }
            // Interval k ran from starts[k - 1] to starts[k] (the last to
            // the end, answers in flight included).
            starts.push(end);
            let intervals = if o.interval.is_some() {
                windows[1..]
                    .iter()
                    .zip(starts.windows(2))
                    .map(|(w, b)| {
                        (
                            w.clone(),
                            (b[0] - starts[0]).as_secs_f64(),
                            (b[1] - b[0]).as_secs_f64(),
                        )
                    })
                    .collect()
            } else {
                vec![]
            };
            Ok(Measured {
                record,
                seconds: (end - starts[0]).as_secs_f64(),
                stable: None,
                windows: 1,
                intervals,
            })
        }
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

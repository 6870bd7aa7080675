//! The live view behind the web page's charts: while someone watches, a
//! task samples the server's own statistics every second and keeps five
//! minutes of [`Window`]s; `GET /v2/rir/live` hands them out with each
//! model's state. Nobody watching costs nothing: the sampler starts on the
//! first call, stops a minute after the last one and forgets its history.

mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use window::Window;
pub(crate) use window::{Counters, Sample};

/// How often the sampler reads the statistics.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// How long the sampler keeps going after the last call.
const WATCHED_FOR: Duration = Duration::from_secs(60);

/// How many windows are kept: five minutes.
const KEPT: usize = 300;

/// One model version as the page's table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it does not serve, when it does not.
    pub reason: Option<String>,
    /// Requests answered successfully since it loaded.
    pub ok: u64,
    /// Requests answered with an error since it loaded.
    pub failed: u64,
    /// Images inferred since it loaded.
    pub images: u64,
}

/// The answer of `GET /v2/rir/live`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveReport {
    /// Seconds since the server started (the time axis of `windows`).
    pub uptime_s: f64,
    /// Seconds between two samples.
    pub every_s: f64,
    /// Every model version served.
    pub models: Vec<ModelRow>,
    /// The windows that ended after the call's `since`, oldest first.
    pub windows: Vec<Window>,
}

/// What the sampler keeps.
#[derive(Default)]
struct History {
    /// The last sample, which the next window starts from.
    last: Option<Sample>,
    /// The windows, oldest first.
    windows: VecDeque<Window>,
    /// Until when someone is taken to watch.
    watched_until: Option<Instant>,
    /// Whether a sampler task runs: set with the watch, cleared with the
    /// history, under the same lock, so a call never finds a sampler that
    /// is about to stop.
    sampling: bool,
}

/// The live view's state: the sampler's history and whether it runs.
pub(crate) struct LiveView {
    /// When the server started: time 0 of every window.
    started: Instant,
    history: Mutex<History>,
}

/// Where the sampler reads the statistics: the server's core, held weakly
/// so that a sampler never keeps a stopped server alive.
pub(crate) trait Source: Send + Sync + 'static {
    /// The live view to fill.
    fn live(&self) -> &LiveView;
    /// Every counter, now.
    fn sample(&self) -> Sample;
}

impl LiveView {
    pub(crate) fn new() -> Self {
        LiveView {
            started: Instant::now(),
            history: Mutex::new(History::default()),
        }
    }

    /// Seconds since the server started.
    pub(crate) fn uptime_s(&self) -> f64 {
        seconds(self.started.elapsed())
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The windows that ended after `since` (seconds since start); starts
    /// the sampler of `source` when none runs, and keeps it running for a
    /// minute from now.
    pub(crate) fn windows_since<S: Source>(source: &Arc<S>, since: f64) -> Vec<Window> {
        let mut h = source.live().history();
        h.watched_until = Some(Instant::now() + WATCHED_FOR);
        let starts = !h.sampling;
        if starts {
            // The first window starts at this call, not whenever the
            // sampler task first runs: what is answered after it falls in
            // a window.
            h.sampling = true;
            h.last = Some(source.sample());
        }
        let first = h.windows.partition_point(|w| w.t <= since);
        let windows = h.windows.range(first..).cloned().collect();
        drop(h);
        if starts {
            tokio::spawn(sample_while_watched(Arc::downgrade(source)));
        }
        windows
    }

    /// Adds `sample`: the window from the last one to it. False once
    /// nobody has watched for a minute (the history is then dropped, the
    /// sampler marked stopped).
    fn push(&self, sample: Sample) -> bool {
        let mut h = self.history();
        if h.watched_until.is_none_or(|until| Instant::now() > until) {
            *h = History::default();
            return false;
        }
        if let Some(last) = &h.last {
            let w = Window::between(last, &sample);
            if h.windows.len() == KEPT {
                h.windows.pop_front();
            }
            h.windows.push_back(w);
        }
        h.last = Some(sample);
        true
    }
}

/// `d` in seconds, to the microsecond. A window's end comes back as a
/// caller's `since`, compared exactly; in whole microseconds it is a short
/// decimal that every JSON reader reads back to the same float, where
/// `as_secs_f64`'s 17-digit values are read one step off by some (serde_json
/// without `float_roundtrip`: 396 of 200,000), which would return a window
/// the caller has already seen.
fn seconds(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e6
}

/// The sampler: a sample every [`EVERY`] while someone watches.
async fn sample_while_watched<S: Source>(source: Weak<S>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(source) = source.upgrade() else {
            return;
        };
        if !source.live().push(source.sample()) {
            tracing::debug!("nobody watches the live view: its sampler stops");
            return;
        }
    }
}

/// Requests refused by the front ends, by kind, from the labelled
/// counters `(prefix, vec)`: `shed: memory`, `stalled: http`, ...
pub(crate) fn refusals(counters: &[(&str, &prometheus::IntCounterVec)]) -> BTreeMap<String, u64> {
    use prometheus::core::Collector;
    let mut out = BTreeMap::new();
    for (prefix, vec) in counters {
        for family in vec.collect() {
            for m in family.get_metric() {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                let n = m.get_counter().value() as u64;
                if n > 0 {
                    out.insert(format!("{prefix}: {}", labels.join(" ")), n);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ends_read_back_exactly_through_json() {
        // The instant a test caught read back one step below itself.
        let caught = Duration::from_nanos(2_502_329_448);
        let back =
            |v: f64| serde_json::from_str::<f64>(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_ne!(back(caught.as_secs_f64()), caught.as_secs_f64());
        assert_eq!(seconds(caught), 2.502329);
        // 75,767 instants over ten minutes, a prime number of nanoseconds
        // apart.
        for ns in (0..600_000_000_000u64).step_by(7_919_113) {
            let t = seconds(Duration::from_nanos(ns));
            assert_eq!(back(t), t, "{ns} ns");
            assert!((t - ns as f64 / 1e9).abs() < 1e-6);
        }
    }

    fn sample(at_s: f64) -> Sample {
        Sample {
            at_s,
            ..Sample::default()
        }
    }

    #[test]
    fn windows_are_kept_while_watched_and_dropped_once_the_watch_lapses() {
        let view = LiveView::new();
        assert!(!view.push(sample(0.0)), "nobody has watched yet");
        view.history().watched_until = Some(Instant::now() + WATCHED_FOR);
        for i in 0..=(KEPT + 5) {
            assert!(view.push(sample(i as f64)));
        }
        {
            let h = view.history();
            assert_eq!(h.windows.len(), KEPT, "five minutes at most");
            assert_eq!(h.windows.front().map(|w| w.t), Some(6.0));
            assert_eq!(h.windows.back().map(|w| w.t), Some((KEPT + 5) as f64));
        }
        view.history().watched_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(!view.push(sample(1000.0)), "the watch lapsed: stop");
        let h = view.history();
        assert!(h.windows.is_empty() && h.last.is_none(), "its history goes");
    }
}

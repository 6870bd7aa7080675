//! The progress bar of a run on stderr: the load's label (or the stability
//! window being measured), elapsed time or requests sent against the
//! total, and the answers so far. The controller feeds it; it decides
//! nothing.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::load::{Load, RunOptions, Stop};

/// What a run shows while it runs (nothing when progress is off).
pub(crate) struct Progress {
    bar: ProgressBar,
    /// The request count that ends the measurement, when one does (the bar
    /// then counts requests, else milliseconds).
    count: Option<u64>,
    started: Instant,
}

impl Progress {
    /// A bar for `load` run under `o`: a spinner for stability windows, a
    /// bar of the warm-up and the duration, or of the request count.
    pub(crate) fn new(o: &RunOptions, load: &Load) -> Self {
        let count = match (o.stability, o.stop) {
            (None, Stop::Requests(n)) => Some(n),
            _ => None,
        };
        let progress = |bar| Progress {
            bar,
            count,
            started: Instant::now(),
        };
        if !o.progress {
            return progress(ProgressBar::hidden());
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
        progress(bar)
    }

    /// Shows the answers so far and how far the run is: `issued` measured
    /// requests, or the time since the start.
    pub(crate) fn show(&self, ok: u64, failed: u64, issued: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{ok} ok, {failed} failed, {:.0} req/s",
            ok as f64 / secs
        ));
        match self.count {
            // Workers that find the count reached still bump it once.
            Some(n) => self.bar.set_position(issued.min(n)),
            None => self
                .bar
                .set_position(self.started.elapsed().as_millis() as u64),
        }
    }

    /// Stability window `k` has been measured.
    pub(crate) fn window(&self, k: usize) {
        self.bar.set_prefix(format!("window {k}"));
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

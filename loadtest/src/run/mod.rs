//! One run: the driver of its load ([`drivers`]) and its controller
//! ([`control`]) started on shared state ([`shared`]), then the
//! report of what was measured, with a row per interval when asked for and
//! the server's breakdown of each ([`crate::breakdown`]).

mod control;
mod drivers;
mod progress;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use crate::LoadError;
use crate::breakdown::Breakdown;
use control::{Measured, control};

use crate::error::RunError;
use crate::load::{Load, RunOptions, Schedule, Stop};
use crate::recorder::Recorder;
use crate::report::Report;
use crate::workload::Workload;
use progress::Progress;
use rir_client::server_counters::Counters;
use shared::Shared;

/// The result of one run.
pub struct Outcome {
    /// The figures (with one report per interval when asked for).
    pub report: Report,
    /// The measured record (histogram and errors).
    pub record: Recorder,
}

/// Applies `load` with `workload` under `o`, and reports what it measured.
pub async fn run(
    workload: Arc<Workload>,
    load: Load,
    o: &RunOptions,
) -> Result<Outcome, LoadError> {
    if let Load::Closed { concurrency: 0 } = load {
        return Err(RunError::NoConcurrency.into());
    }
    if let Some(rate) = load.rate_at(Duration::ZERO)
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(RunError::BadRate(rate).into());
    }
    let scheduled;
    let o = match &load {
        Load::Scheduled { schedule, .. } => {
            scheduled = scheduled_options(o, schedule)?;
            &scheduled
        }
        _ => o,
    };
    let limit = match (o.stability, o.stop) {
        (None, Stop::Requests(n)) => Some(n),
        _ => None,
    };
    // Without warm-up the first request already belongs to the measurement,
    // so the server's counters are read before it goes.
    let before = match (o.warmup.is_zero(), &workload.probe) {
        (true, Some(p)) => p.read().await,
        _ => None,
    };
    let shared = Arc::new(Shared::new(o.warmup.is_zero(), limit));
    let done = match load {
        Load::Closed { concurrency } => {
            drivers::closed(workload.clone(), shared.clone(), concurrency)
        }
        Load::Open { rate, arrivals } => drivers::open(
            workload.clone(),
            shared.clone(),
            move |_| rate,
            arrivals,
            o.max_in_flight.max(1),
            o.seed,
        )?,
        Load::Scheduled {
            ref schedule,
            arrivals,
        } => {
            let schedule = schedule.clone();
            drivers::open(
                workload.clone(),
                shared.clone(),
                move |t| schedule.rate_at(t),
                arrivals,
                o.max_in_flight.max(1),
                o.seed,
            )?
        }
    };
    let progress = Progress::new(o, &load);
    let measured = control(&shared, o, done, &progress, workload.probe.as_ref(), before).await;
    progress.finish();
    Ok(outcome(&workload, &load, o, measured?))
}

/// The options of a run on `schedule`: it measures the schedule's length,
/// with a row per step (or per tenth of a ramp, or per `--interval`).
fn scheduled_options(o: &RunOptions, schedule: &Schedule) -> Result<RunOptions, LoadError> {
    if o.stability.is_some() {
        return Err(RunError::ScheduleStability.into());
    }
    if let Stop::Requests(_) = o.stop {
        return Err(RunError::ScheduleRequests.into());
    }
    Ok(RunOptions {
        stop: Stop::Duration(schedule.length()),
        interval: Some(o.interval.unwrap_or_else(|| schedule.row())),
        timeline: None,
        ..o.clone()
    })
}

/// The report of what `m` measured of `load`, with a row per interval.
fn outcome(workload: &Workload, load: &Load, o: &RunOptions, m: Measured) -> Outcome {
    let replicas = workload.replicas();
    let mut report = Report::new(
        load,
        workload.batch,
        m.seconds,
        &m.record,
        m.stable,
        m.windows,
    )
    .with_replicas(&m.record, &replicas);
    let source = workload.probe.as_ref().map(|p| p.source);
    let breakdown = |counters: &Option<Counters>, r: &Report| {
        Option::zip(counters.as_ref(), source)
            .and_then(|(c, s)| Breakdown::of(c, s, r.latency_ms.avg))
    };
    report.server = breakdown(&m.server, &report);
    let splits: Vec<Report> = m
        .intervals
        .iter()
        .map(|i| {
            let (start, secs) = (i.start, i.seconds);
            let mut r = Report::new(load, workload.batch, secs, &i.record, None, 1);
            r.server = breakdown(&i.server, &r);
            // One precision for every row: the nominal interval's.
            let span = if o.split().is_some_and(|d| d.as_secs_f64() < 10.0) {
                format!("{:.1}-{:.1} s", start, start + secs)
            } else {
                format!("{:.0}-{:.0} s", start, start + secs)
            };
            r.span = Some(match load {
                Load::Scheduled { schedule, .. } => {
                    // The last interval runs on while the answers come in.
                    let end = (start + secs).min(schedule.length().as_secs_f64());
                    r.rate = Some(schedule.mean_rate(start, end));
                    format!("{}, {span}", schedule.span_label(start, end))
                }
                _ => span,
            });
            r.start_s = Some(start);
            r
        })
        .collect();
    // Rows with --interval (or a schedule's); else only the timeline.
    match o.interval {
        Some(_) => report.intervals = splits,
        None => report.timeline = splits,
    }
    Outcome {
        report,
        record: m.record,
    }
}

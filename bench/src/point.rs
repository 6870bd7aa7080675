//! What every benchmark measures with: random batch-1 ModelInfer requests
//! against a server, and one closed-loop point of them.

use std::sync::Arc;
use std::time::Duration;

use rir_client::connect::{ConnectOptions, connect};
use rir_loadtest::load::{Load, RunOptions, Stop};
use rir_loadtest::report::Report;
use rir_loadtest::run::run;
use rir_loadtest::workload::{Api, InputData, Workload, WorkloadOptions};

use crate::BenchError;

/// Common settings of the benchmarks.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Warm-up before each measurement.
    pub warmup: Duration,
    /// Length of each measurement.
    pub duration: Duration,
    /// Closed-loop concurrencies to measure.
    pub concurrency: Vec<usize>,
    /// Progress bars.
    pub progress: bool,
}

/// Random batch-1 ModelInfer requests of `model` at `url`, over one connection.
pub async fn workload(url: &str, model: &str) -> Result<Workload, BenchError> {
    let chans = connect(&ConnectOptions {
        url: url.into(),
        ..Default::default()
    })
    .await?;
    let options = WorkloadOptions {
        api: Api::Infer,
        model: model.into(),
        version: String::new(),
        batch: 1,
        input: InputData::Random,
        seed: 0,
        top_k: 0,
        timeout: None,
        shapes: vec![],
        json_tensors: false,
    };
    Ok(Workload::prepare(chans, &options).await?)
}

/// One closed-loop point at `concurrency`, with `o`'s warm-up and duration.
pub async fn closed(
    w: &Arc<Workload>,
    concurrency: usize,
    o: &BenchOptions,
) -> Result<Report, BenchError> {
    let options = RunOptions {
        warmup: o.warmup,
        stop: Stop::Duration(o.duration),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 1,
        seed: 0,
        progress: o.progress,
    };
    Ok(run(w.clone(), Load::Closed { concurrency }, &options)
        .await?
        .report)
}

/// The CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Requests/s of `model` at `url` in closed loop at `concurrency`, after
/// `warmup`, over `duration`: the capacity the soak and the hostile
/// benchmark offer a share of.
pub async fn capacity(
    url: &str,
    model: &str,
    concurrency: usize,
    (warmup, duration): (Duration, Duration),
    progress: bool,
) -> Result<f64, BenchError> {
    let w = Arc::new(workload(url, model).await?);
    let load = Load::Closed {
        concurrency: concurrency.max(1),
    };
    let options = RunOptions {
        warmup,
        stop: Stop::Duration(duration),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 1,
        seed: 0,
        progress,
    };
    Ok(run(w, load, &options).await?.report.requests_per_s)
}

/// `w` in open loop, Poisson arrivals at `rate` per second, after `warmup`,
/// over `duration`, with a row per `interval` when given: the good
/// traffic of the soak and the hostile benchmark.
pub async fn poisson(
    w: Arc<Workload>,
    rate: f64,
    (warmup, duration): (Duration, Duration),
    interval: Option<Duration>,
    progress: bool,
) -> Result<rir_loadtest::run::Outcome, rir_loadtest::LoadError> {
    let options = RunOptions {
        warmup,
        stop: Stop::Duration(duration),
        stability: None,
        interval,
        timeline: None,
        max_in_flight: 10_000,
        seed: 1,
        progress,
    };
    let load = Load::Open {
        rate,
        arrivals: rir_loadtest::load::Arrivals::Poisson,
    };
    run(w, load, &options).await
}

//! rir-serve against the same model run in-process on ONNX Runtime, on
//! this machine, in alternating rounds: the default (batching on) against
//! batching off at each concurrency, the latency the server adds at
//! concurrency 1, the throughput it reaches against in-process batches,
//! the server's own CPU per request beyond the engine's run, and its memory
//! under sustained load.
//!
//! Pinned mode puts this process (the load generator) on core 0 and the
//! server and the in-process reference on core 1, so the server's figures
//! are not mixed with the client's cost; the shared mode lets all of them
//! use every core, as a user's first test on one machine does.

mod cost;
mod local;
mod render;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rir_figures::median;
use rir_loadtest::report::Report;
use rir_loadtest::workload::Workload;
use rir_testkit::process::{ServerProcess, spawn};

pub use cost::Cost;
use cost::Meter;
use local::{blocking, blocking_load};

use crate::BenchError;
use crate::point::{BenchOptions, closed, cores, workload};
use crate::served::Served;

/// Settings of the server benchmark.
#[derive(Debug, Clone)]
pub struct ServerBenchOptions {
    /// Server and model.
    pub served: Served,
    /// ONNX Runtime intra-op threads, in-process and in the server (0: its
    /// default, or 1 when pinned: the server has one core).
    pub threads: usize,
    /// Largest batch when batching is on.
    pub max_batch: usize,
    /// Sustained load at the highest concurrency for the memory figure.
    pub soak: Duration,
    /// More rir-serve arguments (for example `--ort-spin false`), given to
    /// both configurations.
    pub server_args: Vec<String>,
    /// The client on core 0, the server and the in-process engine on core 1.
    pub pin: bool,
    /// Alternating rounds per comparison.
    pub rounds: usize,
    /// Shared settings.
    pub common: BenchOptions,
}

/// The cores of the pinned mode.
const CLIENT_CORE: usize = 0;
const SERVER_CORE: usize = 1;

/// One measurement of one configuration: the load tester's report and the
/// server's CPU over it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the client measured.
    pub report: Report,
    /// What the server spent.
    pub cost: Cost,
}

/// Batching off and the default at one concurrency, round by round.
#[derive(Debug, Clone)]
pub struct Point {
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// `--max-batch 1`, one sample per round.
    pub off: Vec<Sample>,
    /// The default (batching on), one sample per round, each right after
    /// the round's `off`.
    pub on: Vec<Sample>,
}

impl Point {
    /// The median over rounds of `f` of the samples.
    pub fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
        median(samples.iter().map(f).collect())
    }

    /// The lowest and highest over rounds of `f`.
    pub fn spread(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
        samples
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// The default's images/s over batching off's in the same round,
    /// median over rounds.
    pub fn ratio(&self) -> f64 {
        median(
            self.on
                .iter()
                .zip(&self.off)
                .map(|(a, b)| a.report.inferences_per_s / b.report.inferences_per_s)
                .collect(),
        )
    }

    /// Whether the default is at least as fast as batching off within the
    /// rounds' spread: it is slower only when it lost every round to the
    /// batching-off run just before it (with 5 rounds, a chance of 1 in 32
    /// when the two are equally fast), not when one noisy round went
    /// either way.
    pub fn default_not_slower(&self) -> bool {
        self.on
            .iter()
            .zip(&self.off)
            .any(|(a, b)| a.report.inferences_per_s >= b.report.inferences_per_s)
    }
}

/// In-process and server figures of alternating rounds.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    /// In-process, one per round.
    pub local: Vec<f64>,
    /// The server's, each right after the round's in-process figure.
    pub server: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, local: f64, server: f64) {
        self.local.push(local);
        self.server.push(server);
    }

    /// Medians of the in-process figures, the server figures, and the
    /// per-round differences (server minus in-process) and ratios.
    pub fn medians(&self) -> (f64, f64, f64, f64) {
        let pairs = || self.local.iter().zip(&self.server);
        (
            median(self.local.clone()),
            median(self.server.clone()),
            median(pairs().map(|(l, s)| s - l).collect()),
            median(pairs().map(|(l, s)| s / l).collect()),
        )
    }
}

/// The memory figure: RSS before and after the sustained load.
#[derive(Debug, Clone)]
pub struct Soak {
    /// RSS after warm-up, MiB.
    pub rss_before: f64,
    /// RSS after the load, MiB.
    pub rss_after: f64,
    /// The sustained load's report.
    pub report: Report,
}

/// What the server benchmark measured.
#[derive(Debug, Clone)]
pub struct ServerFigures {
    /// The model's name and file.
    pub model: (String, PathBuf),
    /// CPUs of this process at start.
    pub cores: usize,
    /// Intra-op threads used (0: ONNX Runtime's default).
    pub threads: usize,
    /// Whether client and server had a core each.
    pub pinned: bool,
    /// Length of one round's measurement.
    pub slice: Duration,
    /// The largest batch (in-process, and the server's with batching on).
    pub max_batch: usize,
    /// More rir-serve arguments given.
    pub server_args: Vec<String>,
    /// Batching off against the default, per concurrency.
    pub points: Vec<Point>,
    /// Batch-1 p50, ms: in-process against the default server at
    /// concurrency 1.
    pub latency: Rounds,
    /// Images/s: in-process at the largest batch against the default
    /// server at the highest concurrency.
    pub throughput: Rounds,
    /// The memory figure, when asked for.
    pub soak: Option<Soak>,
}

impl ServerFigures {
    /// Latency the default server adds at concurrency 1, µs (median of the
    /// per-round differences).
    pub fn added_us(&self) -> f64 {
        self.latency.medians().2 * 1e3
    }

    /// The default server's images/s over in-process at the largest batch
    /// (median of the per-round ratios).
    pub fn throughput_ratio(&self) -> f64 {
        self.throughput.medians().3
    }

    /// The highest concurrency measured.
    pub fn top(&self) -> usize {
        self.points.iter().map(|p| p.concurrency).max().unwrap_or(1)
    }
}

/// A rir-serve the benchmark started, the requests it is sent and its meter.
struct Running {
    process: ServerProcess,
    workload: Arc<Workload>,
    meter: Meter,
}

impl Running {
    async fn start(
        o: &ServerBenchOptions,
        max_batch: usize,
        threads: usize,
    ) -> Result<Running, BenchError> {
        let Served {
            models,
            model,
            serve_bin,
        } = &o.served;
        let args: Vec<String> = [
            "--max-batch",
            &max_batch.to_string(),
            "--threads",
            &threads.to_string(),
            "--instances",
            "1",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .into_iter()
        .chain(o.server_args.iter().cloned())
        .collect();
        let process = spawn(serve_bin, models, &args).await?;
        if o.pin {
            let pid = process.pid().to_string();
            rir_process::cpu::pin_process(&pid, &[SERVER_CORE]).map_err(|e| {
                BenchError::io(format!("holding rir-serve {pid} to core {SERVER_CORE}"), e)
            })?;
        }
        let workload = Arc::new(workload(&process.url, model).await?);
        let chan = rir_client::connect::connect(&rir_client::connect::ConnectOptions {
            url: process.url.clone(),
            ..Default::default()
        })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::Server(format!("no channel to {}", process.url)))?;
        let meter = Meter::new(process.pid(), model, chan);
        Ok(Running {
            process,
            workload,
            meter,
        })
    }

    /// One closed-loop point at `concurrency` with the server's cost.
    async fn sample(&mut self, concurrency: usize, o: &BenchOptions) -> Result<Sample, BenchError> {
        self.meter.start().await?;
        let report = closed(&self.workload, concurrency, o).await?;
        let cost = self.meter.stop().await?;
        Ok(Sample { report, cost })
    }
}

/// rir-serve next to in-process ONNX Runtime on the same model.
pub async fn server(o: &ServerBenchOptions) -> Result<ServerFigures, BenchError> {
    let cores = cores();
    if o.pin && cores < 2 {
        return Err(BenchError::Setup(format!(
            "--pin needs two cores, this process has {cores}"
        )));
    }
    let (client_core, server_core) = match o.pin {
        true => (Some(CLIENT_CORE), Some(SERVER_CORE)),
        false => (None, None),
    };
    if let Some(c) = client_core {
        rir_process::cpu::pin_process("self", &[c])
            .map_err(|e| BenchError::io(format!("holding the client to core {c}"), e))?;
    }
    let threads = match (o.pin, o.threads) {
        (true, 0) => 1,
        (_, n) => n,
    };
    let path = o.served.latest_model()?;
    let rounds = o.rounds.max(1);
    let slice = (o.common.duration / rounds as u32).max(Duration::from_millis(500));
    let big = o.max_batch;
    let mut local = blocking_load(path.clone(), threads, big, (server_core, client_core)).await?;
    let mut off = Running::start(o, 1, threads).await?;
    let mut on = Running::start(o, big, threads).await?;
    let round = BenchOptions {
        warmup: Duration::from_millis(300),
        duration: slice,
        ..o.common.clone()
    };
    let mut f = ServerFigures {
        model: (o.served.model.clone(), path),
        cores,
        threads,
        pinned: o.pin,
        slice,
        max_batch: big,
        server_args: o.server_args.clone(),
        points: vec![],
        latency: Rounds::default(),
        throughput: Rounds::default(),
        soak: None,
    };
    for &c in &o.common.concurrency {
        let mut p = Point {
            concurrency: c,
            off: vec![],
            on: vec![],
        };
        for _ in 0..rounds {
            p.off.push(off.sample(c, &round).await?);
            p.on.push(on.sample(c, &round).await?);
        }
        f.points.push(p);
    }
    let top = f.top();
    for _ in 0..rounds {
        let (l, p50) = blocking(local, client_core, move |l| l.p50(slice)).await?;
        let server = closed(&on.workload, 1, &round).await?;
        f.latency.push(p50, server.latency_ms.p50);
        let (l, ips) = blocking(l, client_core, move |l| l.throughput(big, slice)).await?;
        local = l;
        let server = closed(&on.workload, top, &round).await?;
        f.throughput.push(ips, server.inferences_per_s);
    }
    drop(off);
    if !o.soak.is_zero() {
        let rss_before = on.process.rss_mib()?;
        let soak = BenchOptions {
            warmup: Duration::ZERO,
            duration: o.soak,
            ..o.common.clone()
        };
        let report = closed(&on.workload, top, &soak).await?;
        f.soak = Some(Soak {
            rss_before,
            rss_after: on.process.rss_mib()?,
            report,
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ips: f64) -> Sample {
        Sample {
            report: Report {
                inferences_per_s: ips,
                ..Default::default()
            },
            cost: Cost::default(),
        }
    }

    fn point(off: &[f64], on: &[f64]) -> Point {
        Point {
            concurrency: 1,
            off: off.iter().copied().map(at).collect(),
            on: on.iter().copied().map(at).collect(),
        }
    }

    #[test]
    fn the_default_is_slower_only_when_it_loses_every_round() {
        // Per-round ratios 1.1, 0.9, 1.0: median 1.0; it won one round.
        let p = point(&[100.0, 100.0, 120.0], &[110.0, 90.0, 120.0]);
        assert!((p.ratio() - 1.0).abs() < 1e-12);
        assert!(p.default_not_slower());
        assert_eq!(
            Point::spread(&p.on, |s| s.report.inferences_per_s),
            (90.0, 120.0)
        );
        // 1 % behind in each of three rounds: slower.
        let p = point(&[100.0, 200.0, 150.0], &[99.0, 198.0, 148.5]);
        assert!(!p.default_not_slower());
        assert!((p.ratio() - 0.99).abs() < 1e-12);
    }

    #[test]
    fn rounds_give_the_median_difference_and_ratio() {
        let r = Rounds {
            local: vec![0.5, 0.4, 0.6],
            server: vec![0.7, 0.7, 0.75],
        };
        // Differences 0.2, 0.3, 0.15; ratios 1.4, 1.75, 1.25.
        let (l, s, d, q) = r.medians();
        assert_eq!((l, s), (0.5, 0.7));
        assert!((d - 0.2).abs() < 1e-12 && (q - 1.4).abs() < 1e-12);
    }
}

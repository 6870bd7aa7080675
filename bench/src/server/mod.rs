//! rir-serve against the same model run in-process on ONNX Runtime, on
//! this machine, in alternating rounds: the latency the server adds at
//! concurrency 1 with batching off, the throughput it reaches with batching
//! on against in-process batches, and its memory under sustained load.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rir_contract::ModelInfo;
use rir_figures::median;
use rir_infer::{Engine, OrtEngine, OrtOptions};
use rir_loadtest::report::Report;

use crate::BenchError;
use crate::point::{BenchOptions, closed, cores, workload};
use crate::served::Served;
use rir_testkit::process::spawn;

/// Settings of the server benchmark.
#[derive(Debug, Clone)]
pub struct ServerBenchOptions {
    /// Server and model.
    pub served: Served,
    /// ONNX Runtime intra-op threads, in-process and in the server (0: its default).
    pub threads: usize,
    /// Largest batch when batching is on.
    pub max_batch: usize,
    /// Sustained load at the highest concurrency for the memory figure.
    pub soak: Duration,
    /// More rir-serve arguments (for example `--ort-spin false`).
    pub server_args: Vec<String>,
    /// Shared settings.
    pub common: BenchOptions,
}

/// The model run in this process: the reference the server is measured
/// against.
struct Local {
    engine: OrtEngine,
    /// Random input for the largest batch.
    data: Vec<f32>,
    /// Item dimensions (C, H, W).
    dims: Vec<usize>,
}

impl Local {
    fn load(path: &Path, threads: usize, big: usize) -> Result<Local, BenchError> {
        let info = ModelInfo::read(path)?;
        let dims: Vec<usize> = info
            .inputs
            .first()
            .ok_or_else(|| BenchError::Setup(format!("{} has no input", path.display())))?
            .dims
            .iter()
            .skip(1)
            .map(|d| d.unwrap_or(1))
            .collect();
        let item: usize = dims.iter().product();
        let mut rng = fastrand::Rng::with_seed(0);
        let data: Vec<f32> = (0..item * big).map(|_| rng.f32()).collect();
        let engine = OrtEngine::load(
            path,
            &OrtOptions {
                threads,
                ..Default::default()
            },
        )?;
        let mut local = Local { engine, data, dims };
        for _ in 0..20 {
            local.run(1)?;
        }
        for _ in 0..3 {
            local.run(big)?;
        }
        Ok(local)
    }

    fn run(&mut self, n: usize) -> Result<(), BenchError> {
        let item: usize = self.dims.iter().product();
        let shape = [vec![n], self.dims.clone()].concat();
        self.engine.run(&self.data[..n * item], &shape)?;
        Ok(())
    }

    /// Median latency of batch-1 runs for `duration`, ms.
    fn p50(&mut self, duration: Duration) -> Result<f64, BenchError> {
        let mut lat = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < duration || lat.len() < 100 {
            let t = Instant::now();
            self.run(1)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(lat))
    }

    /// Images per second at batch `n` for `duration`.
    fn throughput(&mut self, n: usize, duration: Duration) -> Result<f64, BenchError> {
        let (t0, mut runs) = (Instant::now(), 0usize);
        while t0.elapsed() < duration || runs < 10 {
            self.run(n)?;
            runs += 1;
        }
        Ok((runs * n) as f64 / t0.elapsed().as_secs_f64())
    }
}

/// Runs `f` on `local` off the async threads and hands `local` back.
async fn blocking<T: Send + 'static>(
    mut local: Local,
    f: impl FnOnce(&mut Local) -> Result<T, BenchError> + Send + 'static,
) -> Result<(Local, T), BenchError> {
    tokio::task::spawn_blocking(move || {
        let r = f(&mut local)?;
        Ok((local, r))
    })
    .await?
}

/// In-process and server figures of the alternating rounds.
#[derive(Default)]
struct Rounds {
    local: Vec<f64>,
    server: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, local: f64, server: f64) {
        self.local.push(local);
        self.server.push(server);
    }

    /// Medians of the in-process figures, the server figures, and the
    /// per-round differences (server minus in-process) and ratios.
    fn medians(&self) -> (f64, f64, f64, f64) {
        let pairs = || self.local.iter().zip(&self.server);
        (
            median(self.local.clone()),
            median(self.server.clone()),
            median(pairs().map(|(l, s)| s - l).collect()),
            median(pairs().map(|(l, s)| s / l).collect()),
        )
    }
}

/// Alternating rounds per comparison: the machine's speed drifts by more
/// than the differences measured, so each server figure is set against an
/// in-process figure taken just before it.
const ROUNDS: usize = 5;

/// What the benchmark measured, for its table.
#[derive(Default)]
struct Figures {
    /// Each configuration's closed-loop points, labelled.
    rows: Vec<(String, Report)>,
    /// Batch-1 p50, ms: in-process and the server with batching off.
    latency: Rounds,
    /// Images/s: in-process at the largest batch and the server with batching on.
    throughput: Rounds,
    /// The server's RSS after warm-up and after the sustained load, MiB.
    rss: (f64, f64),
    /// The sustained load's report.
    soak: Option<Report>,
}

/// rir-serve next to in-process ONNX Runtime on the same model.
pub async fn server(o: &ServerBenchOptions) -> Result<String, BenchError> {
    let path = o.served.latest_model()?;
    let slice = (o.common.duration / ROUNDS as u32).max(Duration::from_millis(500));
    let (threads, big) = (o.threads, o.max_batch);
    let mut local = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Local::load(&path, threads, big)).await??
    };
    let mut figures = Figures::default();
    for (batching, max_batch) in [("off", 1), ("on", big)] {
        local = measure(o, batching, max_batch, slice, local, &mut figures).await?;
    }
    Ok(render(o, &path, slice, &figures))
}

/// Starts rir-serve with `max_batch` and measures it: its closed-loop
/// points, the alternating rounds against `local`, and with batching on the
/// sustained load; gives `local` back.
async fn measure(
    o: &ServerBenchOptions,
    batching: &str,
    max_batch: usize,
    slice: Duration,
    mut local: Local,
    f: &mut Figures,
) -> Result<Local, BenchError> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let (big, top) = (o.max_batch, top(o));
    let args: Vec<String> = [
        "--max-batch",
        &max_batch.to_string(),
        "--threads",
        &o.threads.to_string(),
        "--instances",
        "1",
        "--device",
        "cpu",
    ]
    .map(String::from)
    .into_iter()
    .chain(o.server_args.iter().cloned())
    .collect();
    let srv = spawn(serve_bin, models, &args).await?;
    let w = std::sync::Arc::new(workload(&srv.url, model).await?);
    for &c in &o.common.concurrency {
        let label = format!("batching {batching}");
        f.rows.push((label, closed(&w, c, &o.common).await?));
    }
    let round = BenchOptions {
        warmup: Duration::from_millis(300),
        duration: slice,
        ..o.common.clone()
    };
    for _ in 0..ROUNDS {
        if max_batch == 1 {
            let (l, p50) = blocking(local, move |l| l.p50(slice)).await?;
            local = l;
            f.latency
                .push(p50, closed(&w, 1, &round).await?.latency_ms.p50);
        } else {
            let (l, ips) = blocking(local, move |l| l.throughput(big, slice)).await?;
            local = l;
            f.throughput
                .push(ips, closed(&w, top, &round).await?.inferences_per_s);
        }
    }
    if max_batch > 1 && !o.soak.is_zero() {
        let warm = srv.rss_mib()?;
        let soak = BenchOptions {
            warmup: Duration::ZERO,
            duration: o.soak,
            ..o.common.clone()
        };
        f.soak = Some(closed(&w, top, &soak).await?);
        f.rss = (warm, srv.rss_mib()?);
    }
    Ok(local)
}

/// The highest concurrency measured: where throughput and memory are read.
fn top(o: &ServerBenchOptions) -> usize {
    o.common.concurrency.iter().copied().max().unwrap_or(64)
}

/// The benchmark's table and summary.
fn render(o: &ServerBenchOptions, path: &Path, slice: Duration, f: &Figures) -> String {
    let (big, top) = (o.max_batch, top(o));
    let mut out = String::new();
    let threads = match o.threads {
        0 => "default".to_string(),
        n => n.to_string(),
    };
    let extra = match o.server_args.is_empty() {
        true => String::new(),
        false => format!(", rir-serve {}", o.server_args.join(" ")),
    };
    let _ = writeln!(
        out,
        "rir-serve vs in-process ONNX Runtime: {} ({}), {} cores, ORT threads {threads}, {} s per point{extra}\n",
        o.served.model,
        path.display(),
        cores(),
        o.common.duration.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "{:<40} {:>10} {:>12} {:>10} {:>10}",
        "", "p50 ms", "images/s", "p99 ms", "errors"
    );
    for (label, r) in &f.rows {
        let _ = writeln!(
            out,
            "{:<40} {:>10.3} {:>12.1} {:>10.3} {:>10}",
            format!("server, {}, {label}", r.load),
            r.latency_ms.p50,
            r.inferences_per_s,
            r.latency_ms.p99,
            r.failed()
        );
    }
    let (lat_local, lat_server, added, _) = f.latency.medians();
    let (ips_local, ips_server, _, ratio) = f.throughput.medians();
    let _ = writeln!(
        out,
        "\n{ROUNDS} alternating rounds of {:.1} s (in-process, then server), medians:\n\
         batch-1 p50: in-process {lat_local:.3} ms, server at concurrency 1 with batching off {lat_server:.3} ms\n\
         latency added (median of the per-round differences): {:.0} us (goal <= 100 us)\n\
         throughput: in-process batch {big} {ips_local:.1} images/s, server at concurrency {top} with batching {ips_server:.1} images/s\n\
         ratio (median of the per-round ratios): {ratio:.2}x (goal >= 0.8x)",
        slice.as_secs_f64(),
        added * 1e3
    );
    if let Some(r) = &f.soak {
        let _ = writeln!(
            out,
            "RSS after warm-up {:.1} MiB, after {:.0} s at concurrency {top}: {:.1} MiB ({:+.1} %, goal < 10 %); {:.1} images/s, p99 {:.3} ms, {} errors during it",
            f.rss.0,
            o.soak.as_secs_f64(),
            f.rss.1,
            100.0 * (f.rss.1 / f.rss.0 - 1.0),
            r.inferences_per_s,
            r.latency_ms.p99,
            r.failed()
        );
    }
    out
}

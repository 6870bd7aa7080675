//! The benchmarks, as commands that print tables (figures drift on shared
//! machines, so each compares things measured side by side in one run):
//! - [`ceiling`]: requests per second the tool sustains against a server
//!   that does no work (the [`crate::stub`]);
//! - [`compare`]: its figures next to NVIDIA's perf_analyzer on the same
//!   rir-serve, model and load;
//! - [`server`]: rir-serve against the same model run in-process on ONNX
//!   Runtime: latency added, throughput with batching off and on, memory
//!   growth under sustained load.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rir_infer::{Engine, ModelInfo, OrtEngine, OrtOptions};
use rir_proto::inference::ServerReadyRequest;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::connect::{ConnectOptions, connect};
use crate::report::{Report, table};
use crate::run::{Load, RunOptions, Stability, Stop, run};
use crate::stub::{Script, StubServer};
use crate::workload::{Api, InputData, Workload, WorkloadOptions};

/// Common settings of the benchmarks.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds of warm-up before each measurement.
    pub warmup: Duration,
    /// Length of each measurement.
    pub duration: Duration,
    /// Closed-loop concurrencies to measure.
    pub concurrency: Vec<usize>,
    /// Progress bars.
    pub progress: bool,
}

fn workload_options(model: &str) -> WorkloadOptions {
    WorkloadOptions {
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
    }
}

async fn prepare(url: &str, model: &str) -> Result<Arc<Workload>> {
    Ok(Arc::new(prepare_workload(url, model).await?))
}

/// Random batch-1 ModelInfer requests of `model` at `url`, over one connection.
pub(crate) async fn prepare_workload(url: &str, model: &str) -> Result<Workload> {
    let chans = connect(&ConnectOptions {
        url: url.into(),
        ..Default::default()
    })
    .await?;
    Ok(Workload::prepare(chans, &workload_options(model)).await?)
}

async fn closed(w: &Arc<Workload>, concurrency: usize, o: &BenchOptions) -> Result<Report> {
    let r = run(
        w.clone(),
        Load::Closed { concurrency },
        &RunOptions {
            warmup: o.warmup,
            stop: Stop::Duration(o.duration),
            stability: None,
            interval: None,
            max_in_flight: 1,
            seed: 0,
            progress: o.progress,
        },
    )
    .await?;
    Ok(r.report)
}

/// The tool's ceiling: closed loop at each concurrency against the stub
/// answering at once, in this process.
pub async fn ceiling(o: &BenchOptions) -> Result<String> {
    let stub = StubServer::start(Script::instant("trivial")).await?;
    let w = prepare(&stub.url, "trivial").await?;
    let mut reports = Vec::new();
    for &c in &o.concurrency {
        reports.push(closed(&w, c, o).await?);
    }
    stub.shutdown().await;
    let mut out = format!(
        "rir-loadtest ceiling: ModelInfer batch 1 (16 bytes) against a server that does no work, \
         both in this process on {} cores\n\n",
        cores()
    );
    out.push_str(&table(&reports));
    Ok(out)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A rir-serve child process on free loopback ports.
pub struct Spawned {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its Prometheus endpoint, `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
}

impl Spawned {
    /// Process id, for its memory figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server at once (SIGKILL: no drain, connections cut), as a
    /// crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Sends SIGTERM (a graceful stop, as Kubernetes does).
    pub fn terminate(&self) {
        // SAFETY: signalling our own child, not yet reaped, by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// How the server ended, if it has (reaping it); `None` while it runs.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the server to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Only a child still running: a reaped one's pid may be reused.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child, not yet reaped, by its pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `rir-serve` beside this executable (as cargo builds them), unless given.
pub fn serve_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let p = me.with_file_name("rir-serve");
    if !p.exists() {
        bail!(
            "{} not found: build it (cargo build --bin rir-serve) or pass --serve-bin",
            p.display()
        );
    }
    Ok(p)
}

/// Starts `bin` on `models` with `args` and waits until it is ready.
pub async fn spawn_server(bin: &Path, models: &Path, args: &[String]) -> Result<Spawned> {
    spawn_server_on(bin, models, free_port()?, args).await
}

/// The same on gRPC port `grpc` (to restart a server where it was).
pub async fn spawn_server_on(
    bin: &Path,
    models: &Path,
    grpc: u16,
    args: &[String],
) -> Result<Spawned> {
    let metrics = free_port()?;
    let child = Command::new(bin)
        .arg("--models")
        .arg(models)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--http-addr", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut s = Spawned {
        child,
        url: format!("http://127.0.0.1:{grpc}"),
        metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            bail!(
                "{} exited ({status}) before it was ready; run it by hand to see why",
                bin.display()
            );
        }
        if let Ok(mut c) = GrpcInferenceServiceClient::connect(s.url.clone()).await
            && c.server_ready(ServerReadyRequest {})
                .await
                .is_ok_and(|r| r.get_ref().ready)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{} did not become ready within 60 s", bin.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of a process, MiB (Linux).
pub fn rss_mib(pid: u32) -> Result<f64> {
    Ok(rir_cli::resident_kib(&pid.to_string())? as f64 / 1024.0)
}

/// `<models>/<name>/<highest numeric version>/model.onnx`.
pub fn latest_model(models: &Path, name: &str) -> Result<PathBuf> {
    let dir = models.join(name);
    let best = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .with_context(|| format!("{} has no numeric version folders", dir.display()))?;
    Ok(dir.join(best.to_string()).join("model.onnx"))
}

/// The rir-serve a benchmark starts, and the model it loads.
#[derive(Debug, Clone)]
pub struct Served {
    /// Model repository.
    pub models: PathBuf,
    /// Model name.
    pub model: String,
    /// The rir-serve binary.
    pub serve_bin: PathBuf,
}

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
    fn load(path: &Path, threads: usize, big: usize) -> Result<Local> {
        let info = ModelInfo::read(path)?;
        let dims: Vec<usize> = info
            .inputs
            .first()
            .context("model has no input")?
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

    fn run(&mut self, n: usize) -> Result<()> {
        let item: usize = self.dims.iter().product();
        let shape = [vec![n], self.dims.clone()].concat();
        self.engine.run(&self.data[..n * item], &shape)?;
        Ok(())
    }

    /// Median latency of batch-1 runs for `duration`, ms.
    fn p50(&mut self, duration: Duration) -> Result<f64> {
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
    fn throughput(&mut self, n: usize, duration: Duration) -> Result<f64> {
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
    f: impl FnOnce(&mut Local) -> Result<T> + Send + 'static,
) -> Result<(Local, T)> {
    tokio::task::spawn_blocking(move || {
        let r = f(&mut local)?;
        Ok((local, r))
    })
    .await?
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
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

/// rir-serve next to in-process ONNX Runtime on the same model.
pub async fn server(o: &ServerBenchOptions) -> Result<String> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let path = latest_model(models, model)?;
    let d = o.common.duration;
    let slice = (d / ROUNDS as u32).max(Duration::from_millis(500));
    let big = o.max_batch;
    let top = o.common.concurrency.iter().copied().max().unwrap_or(64);
    let mut local = {
        let (path, threads) = (path.clone(), o.threads);
        tokio::task::spawn_blocking(move || Local::load(&path, threads, big)).await??
    };
    let threads = o.threads.to_string();
    let mut rows: Vec<(String, Report)> = Vec::new();
    let (mut latency, mut throughput) = (Rounds::default(), Rounds::default());
    let mut rss = (0.0, 0.0);
    let mut soak_report = None;
    let round = BenchOptions {
        warmup: Duration::from_millis(300),
        duration: slice,
        ..o.common.clone()
    };
    for (batching, max_batch) in [("off", 1), ("on", big)] {
        let args: Vec<String> = [
            "--max-batch",
            &max_batch.to_string(),
            "--threads",
            &threads,
            "--instances",
            "1",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .into_iter()
        .chain(o.server_args.iter().cloned())
        .collect();
        let srv = spawn_server(serve_bin, models, &args).await?;
        let w = prepare(&srv.url, model).await?;
        for &c in &o.common.concurrency {
            rows.push((
                format!("batching {batching}"),
                closed(&w, c, &o.common).await?,
            ));
        }
        for _ in 0..ROUNDS {
            if max_batch == 1 {
                let (l, p50) = blocking(local, move |l| l.p50(slice)).await?;
                local = l;
                latency.push(p50, closed(&w, 1, &round).await?.latency_ms.p50);
            } else {
                let (l, ips) = blocking(local, move |l| l.throughput(big, slice)).await?;
                local = l;
                throughput.push(ips, closed(&w, top, &round).await?.inferences_per_s);
            }
        }
        if max_batch > 1 && !o.soak.is_zero() {
            let warm = rss_mib(srv.pid())?;
            let soak = BenchOptions {
                warmup: Duration::ZERO,
                duration: o.soak,
                ..o.common.clone()
            };
            soak_report = Some(closed(&w, top, &soak).await?);
            rss = (warm, rss_mib(srv.pid())?);
        }
    }
    let (lat_local, lat_server, added, _) = latency.medians();
    let (ips_local, ips_server, _, ratio) = throughput.medians();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rir-serve vs in-process ONNX Runtime: {} ({}), {} cores, ORT threads {}, {} s per point{}\n",
        model,
        path.display(),
        cores(),
        if o.threads == 0 {
            "default".into()
        } else {
            o.threads.to_string()
        },
        d.as_secs_f64(),
        if o.server_args.is_empty() {
            String::new()
        } else {
            format!(", rir-serve {}", o.server_args.join(" "))
        }
    );
    let _ = writeln!(
        out,
        "{:<40} {:>10} {:>12} {:>10} {:>10}",
        "", "p50 ms", "images/s", "p99 ms", "errors"
    );
    for (label, r) in &rows {
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
    if let Some(r) = soak_report {
        let _ = writeln!(
            out,
            "RSS after warm-up {:.1} MiB, after {:.0} s at concurrency {top}: {:.1} MiB ({:+.1} %, goal < 10 %); {:.1} images/s, p99 {:.3} ms, {} errors during it",
            rss.0,
            o.soak.as_secs_f64(),
            rss.1,
            100.0 * (rss.1 / rss.0 - 1.0),
            r.inferences_per_s,
            r.latency_ms.p99,
            r.failed()
        );
    }
    Ok(out)
}

/// Figures of perf_analyzer for one concurrency, from its CSV (µs to ms).
#[derive(Debug, Clone, Copy)]
pub struct PerfAnalyzer {
    /// Inferences per second.
    pub ips: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub avg: f64,
}

/// Parses the first data row of perf_analyzer's `-f` CSV.
pub fn parse_perf_csv(text: &str) -> Result<PerfAnalyzer> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let row: Vec<&str> = lines
        .next()
        .context("CSV without a data row")?
        .split(',')
        .collect();
    let col = |name: &str| -> Result<f64> {
        let i = header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("column `{name}` missing"))?;
        row.get(i)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("column `{name}` is not a number"))
    };
    Ok(PerfAnalyzer {
        ips: col("Inferences/Second")?,
        p50: col("p50 latency")? / 1e3,
        p90: col("p90 latency")? / 1e3,
        p95: col("p95 latency")? / 1e3,
        p99: col("p99 latency")? / 1e3,
        // perf_analyzer's CSV has no average column; its average latency is
        // the sum of these components (as its own summary prints it).
        avg: [
            "Client Send",
            "Network+Server Send/Recv",
            "Server Queue",
            "Server Compute Input",
            "Server Compute Infer",
            "Server Compute Output",
            "Client Recv",
        ]
        .iter()
        .map(|c| col(c))
        .sum::<Result<f64>>()?
            / 1e3,
    })
}

/// Settings of the comparison with perf_analyzer.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Server and model.
    pub served: Served,
    /// The perf_analyzer command (a binary or a wrapper script).
    pub perf_analyzer: PathBuf,
    /// Measurement window; both tools measure windows of this length until
    /// three agree within 10 % (perf_analyzer's method), at most 10.
    pub window: Duration,
    /// Concurrencies.
    pub concurrency: Vec<usize>,
    /// Progress bars.
    pub progress: bool,
}

/// rir-loadtest and perf_analyzer in turn on one rir-serve, same model,
/// batch 1, same closed-loop concurrency and the same stability rule.
pub async fn compare(o: &CompareOptions) -> Result<String> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let srv = spawn_server(serve_bin, models, &["--device".into(), "cpu".into()]).await?;
    let w = prepare(&srv.url, model).await?;
    let host = srv.url.trim_start_matches("http://").to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rir-loadtest vs perf_analyzer on one rir-serve ({}), batch 1, windows of {} ms until 3 agree within 10 %\n",
        model,
        o.window.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "concurrency", "tool", "infer/s", "avg ms", "p50", "p90", "p95", "p99"
    );
    for &c in &o.concurrency {
        let ours = run(
            w.clone(),
            Load::Closed { concurrency: c },
            &RunOptions {
                warmup: Duration::from_secs(1),
                stop: Stop::Duration(o.window),
                stability: Some(Stability {
                    window: o.window,
                    tolerance: 0.1,
                    max_windows: 10,
                }),
                interval: None,
                max_in_flight: 1,
                seed: 0,
                progress: o.progress,
            },
        )
        .await?
        .report;
        let csv = tempfile_path("perf-analyzer", "csv");
        let status = Command::new(&o.perf_analyzer)
            .args(["-m", model, "-u", &host, "-i", "grpc"])
            .args(["--concurrency-range", &c.to_string()])
            .args(["--measurement-interval", &o.window.as_millis().to_string()])
            .args(["--input-data", "zero", "-f"])
            .arg(&csv)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .with_context(|| format!("running {}", o.perf_analyzer.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", o.perf_analyzer.display());
        }
        let text =
            std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
        let _ = std::fs::remove_file(&csv);
        let pa = parse_perf_csv(&text)?;
        let l = &ours.latency_ms;
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}{}",
            c,
            "rir-loadtest",
            ours.inferences_per_s,
            l.avg,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            if ours.stable == Some(false) {
                "  (not stable)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            "", "perf_analyzer", pa.ips, pa.avg, pa.p50, pa.p90, pa.p95, pa.p99
        );
    }
    Ok(out)
}

fn tempfile_path(stem: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rir-{stem}-{}.{ext}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_analyzer_csv() {
        // The header and row perf_analyzer 2.41 writes with -f.
        let csv = "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
                   Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,\
                   p50 latency,p90 latency,p95 latency,p99 latency\n\
                   1,1342.29,0,331,109,1,300,0,0,381,647,3140,8369\n";
        let p = parse_perf_csv(csv).unwrap();
        assert_eq!(p.ips, 1342.29);
        assert_eq!((p.p50, p.p99), (0.381, 8.369));
        assert!((p.avg - 0.741).abs() < 1e-12);
        assert!(parse_perf_csv("Concurrency\n1\n").is_err());
    }
}

//! `rir-loadtest`: measure a KServe v2 / Triton server's latency and
//! throughput. The benchmarks live in `rir-bench`; `rir-loadtest bench`
//! runs it, so scripts written for the one binary keep working.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_client::balance::Replicas;
use rir_client::connect::{ClientAuthArgs, ConnectOptions, Target, connect_replicas, resolve};
use rir_client::http::HttpClient;
use rir_loadtest::breakdown::Probe;
use rir_loadtest::load::{
    Arrivals, Load, RateSpec, RunOptions, Schedule, Stability, Stop, concurrencies, seconds,
};
use rir_loadtest::report::{Report, csv, table};
use rir_loadtest::run::run;
use rir_loadtest::search::{Goal, Search};
use rir_loadtest::thresholds::{Percentile, Thresholds};
use rir_loadtest::workload::{Api, InputData, InputShape, Workload, WorkloadOptions};

/// How rir-loadtest reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    /// KServe v2 gRPC (and rir's Classify).
    Grpc,
    /// KServe v2 REST (and POST .../classify).
    Http,
}

#[derive(Parser)]
#[command(
    name = "rir-loadtest",
    version,
    about = "Load-test a KServe v2 / Triton gRPC inference server (rir-serve, Triton, MLServer) or rir's Classify call.",
    long_about = "Load-test a KServe v2 / Triton gRPC inference server (rir-serve, Triton, MLServer) \
        or rir's Classify call, and report throughput and latency (avg, stddev, p50, p90, p95, p99, \
        p99.9, max from HDR histograms) and errors by gRPC status, as a table, JSON and CSV.\n\n\
        Closed loop: --concurrency N keeps N requests in flight; a list (1,2,4) or a range (1..64, \
        doubling) runs a sweep and can draw latency against throughput (--plot).\n\
        Open loop: --rate R sends R requests per second whatever the server does (constant or \
        Poisson arrivals); latency counts from each request's intended send time, so a server \
        that stalls shows it in the high percentiles (no coordinated omission). A list of rates \
        with --step-seconds, or a range A..B with --ramp, is one run on that schedule.\n\
        Each report splits the average latency into the server's queue, its compute and the \
        rest, from the server's statistics (or --metrics-url).\n\n\
        Examples:\n  rir-loadtest -m rir-fashion-mnist -c 1..64 --plot sweep.png\n  \
        rir-loadtest -m rir-fashion-mnist --rate 500 --arrivals poisson -d 30\n  \
        rir-loadtest -m rir-fashion-mnist --rate 200..3000 --ramp 60\n  \
        rir-loadtest --api classify --input-data images/ -b 8 -c 4\n\n\
        The benchmarks (the tool's ceiling, a comparison with perf_analyzer, rir-serve against \
        in-process ONNX Runtime, the soak) are `rir-bench`; `rir-loadtest bench ARGS` runs it.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    bench: Option<Command>,
    #[command(flatten)]
    test: TestArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The benchmarks: runs `rir-bench` (installed beside rir-loadtest) with
    /// the arguments that follow (`rir-loadtest bench --help` shows its help).
    #[command(disable_help_flag = true)]
    Bench {
        /// rir-bench's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Merge the --json reports of runs made at the same time from several
    /// hosts into one report: latency histograms are added (not percentiles
    /// averaged), counts and throughputs summed; the thresholds apply to it.
    Merge(MergeArgs),
}

#[derive(Args)]
struct MergeArgs {
    /// The --json files of the runs, one per generator (at least two).
    #[arg(required = true, num_args = 2..)]
    reports: Vec<PathBuf>,
    /// Write the merged reports as JSON (which merges again).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the merged reports as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[command(flatten)]
    bounds: BoundArgs,
}

#[derive(Args)]
struct TestArgs {
    /// Server address: host:port, http://host:port or https://host:port
    /// (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP). Several
    /// (comma-separated or repeated) are replicas of one server: requests go
    /// round-robin, one that a replica does not answer (connection lost,
    /// UNAVAILABLE) is sent to the next, and the report counts per replica.
    /// dns:///NAME:PORT stands for every address NAME resolves to (e.g. a
    /// Kubernetes headless Service).
    #[arg(short = 'u', long, value_delimiter = ',')]
    url: Vec<String>,
    /// Protocol: KServe v2 over gRPC, or over HTTP/REST (binary tensor
    /// data, as tritonclient.http and perf_analyzer -i http send it).
    #[arg(short = 'i', long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// An input's item shape, NAME:DIMS[:DATATYPE] (batch excluded; e.g.
    /// image:1,28,28), for servers whose metadata lists no inputs or leaves
    /// dimensions open (repeatable; datatype default FP32).
    #[arg(long)]
    shape: Vec<InputShape>,
    /// With -i http: send tensors as JSON values instead of binary data
    /// (for servers without Triton's binary tensor extension, e.g. MLServer).
    #[arg(long)]
    json_tensors: bool,
    /// Model (for Classify, empty means the server's default model).
    #[arg(short = 'm', long, default_value = "rir-fashion-mnist")]
    model: String,
    /// Model version (default: the server's latest).
    #[arg(long, default_value = "")]
    model_version: String,
    /// RPC to drive.
    #[arg(long, value_enum, default_value_t = Api::Infer)]
    api: Api,
    /// Items (images) per request.
    #[arg(short = 'b', long, default_value_t = 1)]
    batch: usize,
    /// `random` (tensors of the model's input shape), or a directory of raw
    /// tensor files (.bin/.raw, one item or one batch each) or of PNG/JPEG images (for --api classify).
    #[arg(long, default_value = "random")]
    input_data: String,
    /// Closed loop: requests in flight. A list (1,4,16) or a doubling range (1..64) runs a sweep.
    #[arg(short = 'c', long, default_value = "1", conflicts_with = "rate")]
    concurrency: String,
    /// Open loop: requests per second. One rate (200); a list (100,200,400):
    /// one run each, or with --step-seconds one run stepping through them;
    /// a range with --ramp (100..400): one run rising linearly. With
    /// --latency-threshold, one rate: the search's step (it tries multiples
    /// of it).
    #[arg(short = 'r', long, value_name = "RATE|LIST|A..B")]
    rate: Option<RateSpec>,
    /// With a --rate list: one run that holds each rate this many seconds
    /// in turn (a row per step; the run measures steps x seconds).
    #[arg(long, value_name = "SECONDS", requires = "rate", conflicts_with_all = ["ramp", "stability", "requests"])]
    step_seconds: Option<f64>,
    /// With a --rate range A..B: one run whose rate rises (or falls)
    /// linearly from A to B over this many seconds (a row per tenth, or
    /// per --interval).
    #[arg(long, value_name = "SECONDS", requires = "rate", conflicts_with_all = ["stability", "requests"])]
    ramp: Option<f64>,
    /// Search for the highest load whose --percentile latency stays at most
    /// this many milliseconds with no request failing: concurrency (or
    /// multiples of --rate) doubles from one step until a level misses,
    /// then the gap is halved down to one step. Prints every level tried
    /// and the answer; exits 3 when not even the first level meets it.
    #[arg(long, value_name = "MS", conflicts_with = "concurrency")]
    latency_threshold: Option<f64>,
    /// The percentile --latency-threshold bounds.
    #[arg(long, value_enum, default_value_t = Percentile::P99, requires = "latency_threshold")]
    percentile: Percentile,
    /// The highest level the search tries (concurrency, or multiples of --rate).
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = 256,
        requires = "latency_threshold"
    )]
    search_max: u64,
    /// Open loop: spacing of the requests.
    #[arg(long, value_enum, default_value_t = Arrivals::Constant, requires = "rate")]
    arrivals: Arrivals,
    /// Open loop: most requests in flight (sends beyond it wait; their latency still counts from the intended time).
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Seconds of load before measuring (not recorded).
    #[arg(short = 'w', long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to measure.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Measure this many requests instead of a duration.
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Stability mode: measure in windows until the last three agree within this percentage
    /// (throughput and average latency), like perf_analyzer.
    #[arg(long)]
    stability: Option<f64>,
    /// Stability mode: seconds per window.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Stability mode: most windows before reporting as unstable.
    #[arg(long, default_value_t = 10)]
    max_windows: usize,
    /// Also report every this many seconds (one row per interval: a soak's
    /// figures over time).
    #[arg(long, conflicts_with = "stability")]
    interval: Option<f64>,
    /// Share of bad requests to mix in (0 to 1, e.g. 0.05): wrong shapes,
    /// short data, BYTES, 2^62-item batches, negative dimensions, unknown
    /// inputs, models and versions, `../` names, and through Classify
    /// garbage, truncated and decompression-bomb images. Each class is
    /// counted against the status a KServe v2 server owes it, apart from
    /// the figures; rir-loadtest exits 1 when any got another. gRPC only.
    #[arg(long, default_value_t = 0.0)]
    bad_fraction: f64,
    /// Read the server breakdown (queue and compute per request) from the
    /// Triton-named `nv_inference_*` counters of this Prometheus metrics
    /// page (e.g. http://127.0.0.1:8002/metrics) instead of the server's
    /// KServe v2 statistics; several (repeated or comma-separated) are
    /// added, one per replica.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    metrics_url: Vec<String>,
    /// Leave the server breakdown out (by default each measurement reads
    /// the model's statistics before and after; a server without them is
    /// noted once and the run goes on).
    #[arg(long, conflicts_with = "metrics_url")]
    no_server_stats: bool,
    /// HTTP/2 connections to spread requests over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Per-request deadline in seconds, sent to the server (0: none).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Use TLS (implied by https:// or --ca-cert).
    #[arg(long)]
    tls: bool,
    /// Name to check in the server's certificate (default: the URL's host).
    #[arg(long)]
    tls_domain: Option<String>,
    #[command(flatten)]
    auth: ClientAuthArgs,
    /// Classify: labels per image.
    #[arg(long, default_value_t = 1)]
    top_k: u32,
    /// Seed of random tensors and Poisson arrivals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the reports as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the reports as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Sweep: draw latency against throughput (.png or .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(flatten)]
    bounds: BoundArgs,
}

/// Bounds for CI: a run (every load of a sweep) that misses one exits with
/// status 3, naming each bound missed.
#[derive(Args)]
struct BoundArgs {
    /// Fail (exit 3) when the median latency exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p50_ms: Option<f64>,
    /// Fail (exit 3) when the 90th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p90_ms: Option<f64>,
    /// Fail (exit 3) when the 95th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p95_ms: Option<f64>,
    /// Fail (exit 3) when the 99th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p99_ms: Option<f64>,
    /// Fail (exit 3) when the 99.9th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p999_ms: Option<f64>,
    /// Fail (exit 3) when more than this share of requests fail (0 to 1).
    #[arg(long, value_name = "SHARE")]
    max_error_rate: Option<f64>,
    /// Fail (exit 3) when fewer successful requests per second are measured.
    #[arg(long, value_name = "REQ_PER_S")]
    min_throughput: Option<f64>,
}

impl BoundArgs {
    /// The bounds, each checked to be a number that can be met.
    fn thresholds(&self) -> Result<Thresholds> {
        let mut max_latency_ms = vec![];
        for (value, p, flag) in [
            (self.max_p50_ms, Percentile::P50, "--max-p50-ms"),
            (self.max_p90_ms, Percentile::P90, "--max-p90-ms"),
            (self.max_p95_ms, Percentile::P95, "--max-p95-ms"),
            (self.max_p99_ms, Percentile::P99, "--max-p99-ms"),
            (self.max_p999_ms, Percentile::P999, "--max-p999-ms"),
        ] {
            if let Some(v) = value {
                max_latency_ms.push((p, positive(v, flag)?));
            }
        }
        let max_error_rate = match self.max_error_rate {
            Some(v) if !(0.0..=1.0).contains(&v) => {
                bail!("--max-error-rate is a share between 0 and 1, not {v}")
            }
            v => v,
        };
        Ok(Thresholds {
            max_latency_ms,
            max_error_rate,
            min_throughput: self
                .min_throughput
                .map(|v| positive(v, "--min-throughput"))
                .transpose()?,
        })
    }
}

/// `v` when it is a finite number at least 0, else the error naming `flag`.
fn positive(v: f64, flag: &str) -> Result<f64> {
    match v.is_finite() && v >= 0.0 {
        true => Ok(v),
        false => bail!("{flag} must be a non-negative number, not {v}"),
    }
}

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || {
        let cli = Cli::parse();
        match cli.bench {
            Some(Command::Bench { args }) => bench(&args),
            Some(Command::Merge(args)) => merge(&args),
            None => rir_process::block_on(load_test(cli.test))?,
        }
    })
}

/// `rir-loadtest merge`: reads each run's reports, merges them level by
/// level, prints and writes the result and judges it.
fn merge(a: &MergeArgs) -> Result<ExitCode> {
    let thresholds = a.bounds.thresholds()?;
    let runs = a
        .reports
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str::<Vec<Report>>(&text).with_context(|| {
                format!(
                    "{}: not the JSON reports of rir-loadtest --json",
                    p.display()
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let merged = rir_loadtest::merge::merge(&runs)?;
    println!("{} generators merged\n", runs.len());
    print!("{}", table(&merged));
    write_outputs(a.json.as_deref(), a.csv.as_deref(), &merged)?;
    Ok(judge(&thresholds, &merged))
}

/// Prints each bound `reports` missed and returns the exit status: 3 when
/// any was missed, else 0 (with `all thresholds met` when there were some).
fn judge(thresholds: &Thresholds, reports: &[Report]) -> ExitCode {
    let missed: Vec<_> = reports.iter().flat_map(|r| thresholds.missed(r)).collect();
    for m in &missed {
        eprintln!("threshold missed: {m}");
    }
    if !missed.is_empty() {
        return ExitCode::from(rir_loadtest::thresholds::MISSED);
    }
    if !thresholds.is_empty() {
        println!("\nall thresholds met");
    }
    ExitCode::SUCCESS
}

/// Runs `rir-bench` beside this executable (else on PATH) with `args`, and
/// exits as it does.
fn bench(args: &[String]) -> Result<ExitCode> {
    let beside = std::env::current_exe()
        .ok()
        .map(|me| me.with_file_name("rir-bench"))
        .filter(|p| p.exists());
    let bin = beside.unwrap_or_else(|| PathBuf::from("rir-bench"));
    let status = std::process::Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| {
            format!(
                "running {}: build it beside rir-loadtest (cargo build -p rir-bench)",
                bin.display()
            )
        })?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// The loads to run: the open-loop rates or schedule, or the closed-loop
/// concurrencies.
fn loads(a: &TestArgs) -> Result<Vec<Load>> {
    let arrivals = a.arrivals;
    let scheduled = |schedule| vec![Load::Scheduled { schedule, arrivals }];
    Ok(match (&a.rate, a.step_seconds, a.ramp) {
        (None, ..) => concurrencies(&a.concurrency)?
            .into_iter()
            .map(|concurrency| Load::Closed { concurrency })
            .collect(),
        (Some(RateSpec::List(rates)), None, None) => rates
            .iter()
            .map(|&rate| Load::Open { rate, arrivals })
            .collect(),
        (Some(RateSpec::List(rates)), Some(s), None) => scheduled(Schedule::Steps {
            rates: rates.as_slice().into(),
            step: positive_seconds(s, "--step-seconds")?,
        }),
        (Some(RateSpec::Range(from, to)), None, Some(s)) => scheduled(Schedule::Ramp {
            from: *from,
            to: *to,
            over: positive_seconds(s, "--ramp")?,
        }),
        (Some(RateSpec::Range(..)), _, None) => {
            bail!("--rate A..B is a ramp: give its length with --ramp SECONDS")
        }
        (Some(RateSpec::List(_)), None, Some(_)) => {
            bail!("--ramp needs a --rate range A..B (a list steps with --step-seconds)")
        }
        (Some(RateSpec::Range(..)), Some(_), _) => {
            bail!("--step-seconds needs a --rate list (a range ramps with --ramp)")
        }
        (Some(_), Some(_), Some(_)) => bail!("--step-seconds and --ramp cannot be combined"),
    })
}

/// `v` seconds of `flag`, which must be more than zero.
fn positive_seconds(v: f64, flag: &'static str) -> Result<Duration> {
    match seconds(v, flag)? {
        d if d.is_zero() => bail!("{flag} must be a positive number of seconds"),
        d => Ok(d),
    }
}

/// How each run goes: warm-up, the stop, stability windows, intervals.
fn run_options(a: &TestArgs) -> Result<RunOptions> {
    let stop = match a.requests {
        Some(0) => bail!("--requests must be at least 1"),
        Some(n) => Stop::Requests(n),
        None => Stop::Duration(seconds(a.duration, "--duration")?),
    };
    let stability = match a.stability {
        Some(p) if !(p > 0.0 && p.is_finite()) => {
            bail!("--stability is a positive percentage, not {p}")
        }
        Some(p) => Some(Stability {
            window: seconds(a.window, "--window")?,
            tolerance: p / 100.0,
            max_windows: a.max_windows.max(3),
        }),
        None => None,
    };
    let interval = match a.interval {
        Some(v) if v <= 0.0 => bail!("--interval must be a positive number of seconds"),
        Some(v) => Some(seconds(v, "--interval")?),
        None => None,
    };
    Ok(RunOptions {
        warmup: seconds(a.warmup, "--warmup")?,
        stop,
        stability,
        interval,
        max_in_flight: a.max_in_flight,
        seed: a.seed,
        progress: !a.quiet,
    })
}

/// What every request sends.
fn workload_options(a: &TestArgs) -> Result<WorkloadOptions> {
    let timeout = seconds(a.timeout, "--timeout")?;
    Ok(WorkloadOptions {
        api: a.api,
        model: a.model.clone(),
        version: a.model_version.clone(),
        batch: a.batch,
        input: match a.input_data.as_str() {
            "random" => InputData::Random,
            dir => InputData::Dir(PathBuf::from(dir)),
        },
        seed: a.seed,
        top_k: a.top_k,
        timeout: (!timeout.is_zero()).then_some(timeout),
        shapes: a.shape.clone(),
        json_tensors: a.json_tensors,
    })
}

/// The workload over every replica, by the protocol asked for, with the
/// bad requests mixed in.
async fn workload(a: &TestArgs, targets: &[Target]) -> Result<Workload> {
    let options = workload_options(a)?;
    let workload = match a.protocol {
        Protocol::Grpc => {
            let connect = a.auth.apply(ConnectOptions {
                url: String::new(),
                tls: a.tls,
                tls_domain: a.tls_domain.clone(),
                connections: a.connections,
                connect_timeout: Duration::from_secs(5),
                ..Default::default()
            });
            let replicas = connect_replicas(&connect, targets).await?;
            Workload::prepare_replicas(replicas, &options).await?
        }
        Protocol::Http => {
            let members = targets
                .iter()
                .map(|t| {
                    HttpClient::new(&t.url, a.auth.token.clone(), Duration::from_secs(5))
                        .map(|c| (t.url.clone(), c))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Workload::prepare_http_replicas(Replicas::new(members), &options).await?
        }
    };
    let workload = match (a.no_server_stats, a.metrics_url.is_empty()) {
        (true, _) => workload.with_server_counters(None),
        (false, false) => workload.with_server_counters(Some(
            Probe::metrics(&a.metrics_url, &a.model, &a.model_version)
                .map_err(anyhow::Error::msg)?,
        )),
        (false, true) => workload,
    };
    Ok(match a.bad_fraction {
        f if f > 0.0 => workload.with_bad_fraction(f, a.seed).await?,
        _ => workload,
    })
}

/// Writes the reports where `--json` and `--csv` ask.
fn write_outputs(json: Option<&Path>, csv_path: Option<&Path>, reports: &[Report]) -> Result<()> {
    let write = |p: &Path, text: String| {
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
    };
    if let Some(p) = json {
        write(p, serde_json::to_string_pretty(reports)?)?;
    }
    if let Some(p) = csv_path {
        write(p, csv(reports))?;
    }
    Ok(())
}

async fn load_test(a: TestArgs) -> Result<ExitCode> {
    let thresholds = a.bounds.thresholds()?;
    let loads = loads(&a)?;
    let options = run_options(&a)?;
    let default_url = match a.protocol {
        Protocol::Grpc => "127.0.0.1:8001",
        Protocol::Http => "127.0.0.1:8000",
    };
    let urls = match a.url.is_empty() {
        true => vec![default_url.to_string()],
        false => a.url.clone(),
    };
    let targets = resolve(&urls).await?;
    let workload = Arc::new(workload(&a, &targets).await?);
    if targets.len() > 1 {
        let names = workload.replicas().join(", ");
        tracing::info!("{} replicas: {names}", targets.len());
    }
    let (reports, knee) = match a.latency_threshold {
        Some(bound_ms) => {
            let goal = Goal {
                percentile: a.percentile,
                bound_ms: positive(bound_ms, "--latency-threshold")?,
                max_level: a.search_max,
            };
            let (reports, knee) = search(&a, &workload, &options, goal).await?;
            (reports, Some((goal, knee)))
        }
        None => {
            let mut reports: Vec<Report> = Vec::new();
            for load in loads {
                reports.push(run(workload.clone(), load, &options).await?.report);
            }
            (reports, None)
        }
    };
    println!("{}\n", workload.description);
    print!("{}", table(&reports));
    write_outputs(a.json.as_deref(), a.csv.as_deref(), &reports)?;
    if let Some(p) = &a.plot {
        rir_loadtest::plot::sweep(p, &workload.description, &reports)?;
    }
    let mismatched: u64 = reports.iter().map(Report::bad_mismatched).sum();
    if mismatched > 0 {
        eprintln!(
            "error: {mismatched} bad requests were answered with another status than the one they are owed"
        );
        return Ok(ExitCode::FAILURE);
    }
    match &knee {
        None => Ok(judge(&thresholds, &reports)),
        Some((goal, Some(i))) => {
            let r = &reports[*i];
            println!(
                "\nhighest load with {p} at most {} ms: {} ({:.1} req/s, {p} {:.3} ms)",
                goal.bound_ms,
                r.load,
                r.requests_per_s,
                goal.percentile.of(&r.latency_ms),
                p = goal.percentile.name(),
            );
            // The thresholds judge the answer, not the levels that missed.
            Ok(judge(&thresholds, std::slice::from_ref(r)))
        }
        Some((goal, None)) => {
            let r = &reports[0];
            eprintln!(
                "error: no load met {p} at most {} ms: {} had {p} {:.3} ms and {} failed",
                goal.bound_ms,
                r.load,
                goal.percentile.of(&r.latency_ms),
                r.failed(),
                p = goal.percentile.name(),
            );
            Ok(ExitCode::from(rir_loadtest::thresholds::MISSED))
        }
    }
}

/// The load at search level `level`: that concurrency, or that multiple of
/// the open loop's rate `step`.
fn level_load(a: &TestArgs, step: Option<f64>, level: u64) -> Load {
    match step {
        Some(step) => Load::Open {
            rate: step * level as f64,
            arrivals: a.arrivals,
        },
        None => Load::Closed {
            concurrency: level as usize,
        },
    }
}

/// Runs the search for `goal`: the reports of the levels tried, lowest
/// load first, and the index of the answer among them.
async fn search(
    a: &TestArgs,
    workload: &Arc<Workload>,
    options: &RunOptions,
    goal: Goal,
) -> Result<(Vec<Report>, Option<usize>)> {
    let step = match &a.rate {
        None => None,
        Some(RateSpec::List(r)) if r.len() == 1 => Some(r[0]),
        Some(_) => bail!("--latency-threshold steps by one --rate, not a list or a range"),
    };
    let mut state = Search::default();
    let mut tried: Vec<(u64, Report)> = Vec::new();
    while let Some(level) = state.next(goal.max_level) {
        let report = run(workload.clone(), level_load(a, step, level), options)
            .await?
            .report;
        let met = goal.met(&report);
        tracing::info!(
            "search: {}: {} {:.3} ms, {} failed: {}",
            report.load,
            goal.percentile.name(),
            goal.percentile.of(&report.latency_ms),
            report.failed(),
            if met { "met" } else { "missed" }
        );
        state.record(level, met);
        tried.push((level, report));
    }
    tried.sort_by_key(|(level, _)| *level);
    let knee = state
        .best()
        .and_then(|best| tried.iter().position(|(level, _)| *level == best));
    Ok((tried.into_iter().map(|(_, r)| r).collect(), knee))
}

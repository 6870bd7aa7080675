//! `rir-loadtest`: measure a KServe v2 / Triton gRPC server's latency and
//! throughput, or run the benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_loadtest::balance::Replicas;
use rir_loadtest::bench::{self, BenchOptions, CompareOptions, ServerBenchOptions};
use rir_loadtest::connect::{ClientAuthArgs, ConnectOptions, connect_replicas, resolve};
use rir_loadtest::http::HttpClient;
use rir_loadtest::report::{Report, csv, table};
use rir_loadtest::run::{Arrivals, Load, RunOptions, Stability, Stop, run};
use rir_loadtest::soak::{Bounds, SoakOptions, soak};
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
        that stalls shows it in the high percentiles (no coordinated omission).\n\n\
        Examples:\n  rir-loadtest -m rir-fashion-mnist -c 1..64 --plot sweep.png\n  \
        rir-loadtest -m rir-fashion-mnist --rate 500 --arrivals poisson -d 30\n  \
        rir-loadtest --api classify --input-data images/ -b 8 -c 4",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    bench: Option<Command>,
    #[command(flatten)]
    test: TestArgs,
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
    /// Open loop: requests per second.
    #[arg(short = 'r', long)]
    rate: Option<f64>,
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
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks: the tool's ceiling, a comparison with perf_analyzer, rir-serve against in-process ONNX Runtime, the soak.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args, Clone)]
struct BenchCommon {
    /// Seconds of warm-up per point.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured per point.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrencies (list or doubling range).
    #[arg(short = 'c', long, default_value = "1,8,64")]
    concurrency: String,
    /// No progress bars.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Model repository the spawned rir-serve serves.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Model to load-test.
    #[arg(short = 'm', long, default_value = "rir-fashion-mnist")]
    model: String,
    /// rir-serve binary (default: beside this one).
    #[arg(long)]
    serve_bin: Option<PathBuf>,
}

impl ServeArgs {
    fn served(self) -> Result<bench::Served> {
        Ok(bench::Served {
            serve_bin: bench::serve_binary(self.serve_bin.as_deref())?,
            models: self.models,
            model: self.model,
        })
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Requests/s the tool sustains against a server that does no work (in this process).
    Ceiling(BenchCommon),
    /// rir-loadtest and perf_analyzer in turn on the same rir-serve, model and load.
    Compare {
        #[command(flatten)]
        serve: ServeArgs,
        /// perf_analyzer (binary or wrapper; scripts/perf-analyzer.sh installs one from PyPI).
        #[arg(long, default_value = "scripts/perf-analyzer.sh")]
        perf_analyzer: PathBuf,
        /// Milliseconds per measurement window (both tools).
        #[arg(long, default_value_t = 5000)]
        window_ms: u64,
        /// Concurrencies.
        #[arg(short = 'c', long, default_value = "1,8")]
        concurrency: String,
        /// No progress bars.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// rir-serve against in-process ONNX Runtime: latency added, throughput with batching off/on, RSS under load.
    Server {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        common: BenchCommon,
        /// ONNX Runtime intra-op threads in-process and in the server (0: its default).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Largest batch with batching on (and the in-process batch).
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
        /// Seconds of sustained load at the highest concurrency for the memory figure (0: skip).
        #[arg(long, default_value_t = 300.0)]
        soak: f64,
        /// More rir-serve arguments, space-separated (e.g. "--ort-spin false --instances 2").
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        server_args: String,
    },
    /// A long open-loop run at a share of the measured capacity with bad
    /// requests mixed in, judged on crashes, RSS growth, p99 from interval
    /// to interval and the bad requests' statuses (exit 1 when a bound fails).
    #[command(
        long_about = "Starts rir-serve, measures its capacity in closed loop, then offers a share of it \
        in open loop (Poisson arrivals) for --duration with --bad-fraction of the requests bad (every \
        class of rir-loadtest --bad-fraction). Prints one row per interval (req/s, p50, p99 and its \
        change from the interval before, the bad requests, the server's RSS) and a verdict: the \
        server stayed up and no good request failed, RSS grew less than --max-rss-growth % from the \
        end of the first interval to the end, p99 changed by at most --max-p99-change % between \
        consecutive intervals, and every bad request got the status it is owed. Exits 1 when any \
        bound fails.\n\nThe issue's soak: rir-loadtest bench soak (30 minutes, 80 %, 5 % bad)."
    )]
    Soak {
        #[command(flatten)]
        serve: ServeArgs,
        /// Seconds of the soak.
        #[arg(short = 'd', long, default_value_t = 1800.0)]
        duration: f64,
        /// Seconds per interval.
        #[arg(long, default_value_t = 60.0)]
        interval: f64,
        /// Seconds of load before the first interval (not measured).
        #[arg(short = 'w', long, default_value_t = 10.0)]
        warmup: f64,
        /// Share of the measured capacity to offer.
        #[arg(long, default_value_t = 0.8)]
        load: f64,
        /// Share of bad requests.
        #[arg(long, default_value_t = 0.05)]
        bad_fraction: f64,
        /// Closed-loop concurrency of the capacity measurement.
        #[arg(long, default_value_t = 8)]
        capacity_concurrency: usize,
        /// Seconds of the capacity measurement.
        #[arg(long, default_value_t = 20.0)]
        capacity_duration: f64,
        /// Bound on RSS growth, %.
        #[arg(long, default_value_t = 5.0)]
        max_rss_growth: f64,
        /// Bound on the change of p99 between consecutive intervals, %.
        #[arg(long, default_value_t = 20.0)]
        max_p99_change: f64,
        /// More rir-serve arguments, space-separated.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        server_args: String,
        /// Pin rir-serve to these CPUs (taskset list, e.g. 1 or 4-7), so that
        /// the load generator does not take its cores.
        #[arg(long)]
        server_cpus: Option<String>,
        /// Pin this process, the load generator, to these CPUs.
        #[arg(long)]
        client_cpus: Option<String>,
        /// Write the figures and verdict as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress bars.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

/// `1,2,4` or `1..64` (powers of two from the first to the last).
fn parse_concurrency(s: &str) -> Result<Vec<usize>> {
    let list: Vec<usize> = if let Some((a, b)) = s.split_once("..") {
        let (a, b): (usize, usize) = (
            a.trim()
                .parse()
                .with_context(|| format!("bad range start in {s:?}"))?,
            b.trim()
                .parse()
                .with_context(|| format!("bad range end in {s:?}"))?,
        );
        if a == 0 || b < a {
            bail!("the range {s:?} must go up from at least 1");
        }
        std::iter::successors(Some(a), |x| Some(x * 2))
            .take_while(|x| *x <= b)
            .collect()
    } else {
        s.split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .with_context(|| format!("bad concurrency {v:?} in {s:?}"))
            })
            .collect::<Result<_>>()?
    };
    if list.is_empty() || list.contains(&0) {
        bail!("concurrency values must be at least 1: {s:?}");
    }
    Ok(list)
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds, not {v}"))
}

fn main() -> ExitCode {
    rir_cli::main("info,ort=warn", || {
        let cli = Cli::parse();
        rir_cli::block_on(async move {
            match cli.bench {
                Some(Command::Bench(b)) => run_bench(b).await,
                None => load_test(cli.test).await,
            }
        })?
    })
}

fn bench_options(c: &BenchCommon) -> Result<BenchOptions> {
    Ok(BenchOptions {
        warmup: secs(c.warmup, "--warmup")?,
        duration: secs(c.duration, "--duration")?,
        concurrency: parse_concurrency(&c.concurrency)?,
        progress: !c.quiet,
    })
}

async fn run_bench(b: BenchCommand) -> Result<ExitCode> {
    let text = match b {
        BenchCommand::Soak {
            serve,
            duration,
            interval,
            warmup,
            load,
            bad_fraction,
            capacity_concurrency,
            capacity_duration,
            max_rss_growth,
            max_p99_change,
            server_args,
            server_cpus,
            client_cpus,
            json,
            quiet,
        } => {
            if !(load > 0.0 && load.is_finite()) {
                bail!("--load is a positive share of the capacity, not {load}");
            }
            if interval <= 0.0 || duration < 2.0 * interval {
                bail!("--duration must hold at least two --interval (positive) to compare");
            }
            let o = SoakOptions {
                served: serve.served()?,
                server_args: server_args.split_whitespace().map(String::from).collect(),
                server_cpus,
                client_cpus,
                capacity_concurrency,
                capacity_duration: secs(capacity_duration, "--capacity-duration")?,
                load,
                bad_fraction,
                duration: secs(duration, "--duration")?,
                interval: secs(interval, "--interval")?,
                warmup: secs(warmup, "--warmup")?,
                bounds: Bounds {
                    rss_growth_pct: max_rss_growth,
                    p99_change_pct: max_p99_change,
                },
                progress: !quiet,
            };
            let s = soak(&o).await?;
            print!("{}", s.render(&o));
            if let Some(p) = &json {
                std::fs::write(p, serde_json::to_string_pretty(&s)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            return Ok(if s.verdict.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        BenchCommand::Ceiling(c) => bench::ceiling(&bench_options(&c)?).await?,
        BenchCommand::Compare {
            serve,
            perf_analyzer,
            window_ms,
            concurrency,
            quiet,
        } => {
            bench::compare(&CompareOptions {
                served: serve.served()?,
                perf_analyzer,
                window: Duration::from_millis(window_ms),
                concurrency: parse_concurrency(&concurrency)?,
                progress: !quiet,
            })
            .await?
        }
        BenchCommand::Server {
            serve,
            common,
            threads,
            max_batch,
            soak,
            server_args,
        } => {
            bench::server(&ServerBenchOptions {
                served: serve.served()?,
                threads,
                max_batch,
                soak: secs(soak, "--soak")?,
                server_args: server_args.split_whitespace().map(String::from).collect(),
                common: bench_options(&common)?,
            })
            .await?
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn load_test(a: TestArgs) -> Result<ExitCode> {
    let loads: Vec<Load> = match a.rate {
        Some(rate) => vec![Load::Open {
            rate,
            arrivals: a.arrivals,
        }],
        None => parse_concurrency(&a.concurrency)?
            .into_iter()
            .map(|concurrency| Load::Closed { concurrency })
            .collect(),
    };
    let stop = match a.requests {
        Some(0) => bail!("--requests must be at least 1"),
        Some(n) => Stop::Requests(n),
        None => Stop::Duration(secs(a.duration, "--duration")?),
    };
    let stability = match a.stability {
        Some(p) if !(p > 0.0 && p.is_finite()) => {
            bail!("--stability is a positive percentage, not {p}")
        }
        Some(p) => Some(Stability {
            window: secs(a.window, "--window")?,
            tolerance: p / 100.0,
            max_windows: a.max_windows.max(3),
        }),
        None => None,
    };
    let input = if a.input_data == "random" {
        InputData::Random
    } else {
        InputData::Dir(PathBuf::from(&a.input_data))
    };
    let timeout = secs(a.timeout, "--timeout")?;
    let options = WorkloadOptions {
        api: a.api,
        model: a.model.clone(),
        version: a.model_version.clone(),
        batch: a.batch,
        input,
        seed: a.seed,
        top_k: a.top_k,
        timeout: (!timeout.is_zero()).then_some(timeout),
        shapes: a.shape.clone(),
        json_tensors: a.json_tensors,
    };
    let default_url = match a.protocol {
        Protocol::Grpc => "127.0.0.1:8001",
        Protocol::Http => "127.0.0.1:8000",
    };
    let urls = if a.url.is_empty() {
        vec![default_url.to_string()]
    } else {
        a.url.clone()
    };
    let targets = resolve(&urls).await?;
    let workload = match a.protocol {
        Protocol::Grpc => {
            let replicas = connect_replicas(
                &a.auth.apply(ConnectOptions {
                    url: String::new(),
                    tls: a.tls,
                    tls_domain: a.tls_domain.clone(),
                    connections: a.connections,
                    connect_timeout: Duration::from_secs(5),
                    ..Default::default()
                }),
                &targets,
            )
            .await?;
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
    if targets.len() > 1 {
        tracing::info!(
            "{} replicas: {}",
            targets.len(),
            workload.replicas().join(", ")
        );
    }
    let workload = if a.bad_fraction > 0.0 {
        workload.with_bad_fraction(a.bad_fraction, a.seed).await?
    } else {
        workload
    };
    let workload = Arc::new(workload);
    let interval = match a.interval {
        Some(v) if v <= 0.0 => bail!("--interval must be a positive number of seconds"),
        Some(v) => Some(secs(v, "--interval")?),
        None => None,
    };
    let options = RunOptions {
        warmup: secs(a.warmup, "--warmup")?,
        stop,
        stability,
        interval,
        max_in_flight: a.max_in_flight,
        seed: a.seed,
        progress: !a.quiet,
    };
    let mut reports: Vec<Report> = Vec::new();
    for load in loads {
        reports.push(run(workload.clone(), load, &options).await?.report);
    }
    println!("{}\n", workload.description);
    print!("{}", table(&reports));
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&reports)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.csv {
        std::fs::write(p, csv(&reports)).with_context(|| format!("writing {}", p.display()))?;
    }
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
    Ok(ExitCode::SUCCESS)
}

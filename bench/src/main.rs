//! `rir-bench`: the benchmarks of rir's serving side, each printing a table
//! (`rir-loadtest bench ...` runs the same binary).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_bench::ceiling::ceiling;
use rir_bench::hostile::{HostileOptions, hostile, table as hostile_table};
use rir_bench::perf_analyzer::{CompareOptions, compare};
use rir_bench::point::BenchOptions;
use rir_bench::served::Served;
use rir_bench::server::{ServerBenchOptions, server};
use rir_bench::soak::{Bounds, SoakOptions, soak};
use rir_bench::tracing_cost::{TracingBenchOptions, tracing_cost};
use rir_contract::repository::DEFAULT_MAX_BATCH;
use rir_loadtest::load::{concurrencies, seconds};
use rir_testkit::process::serve_binary;

#[derive(Parser)]
#[command(
    name = "rir-bench",
    version,
    about = "Benchmarks of rir's serving side: the load generator's ceiling, rir-loadtest beside \
        perf_analyzer, rir-serve beside in-process ONNX Runtime, and the soak. Each prints a \
        table of figures measured side by side in one run."
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
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
    fn served(self) -> Result<Served> {
        Ok(Served {
            serve_bin: serve_binary(self.serve_bin.as_deref())?,
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
    Compare(CompareArgs),
    /// rir-serve against in-process ONNX Runtime: latency added, throughput with batching off/on, RSS under load.
    Server(ServerArgs),
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
        bound fails.\n\nThe issue's soak: rir-bench soak (30 minutes, 80 %, 5 % bad)."
    )]
    Soak(SoakArgs),
    /// Every hostile request class at once (bombs that decode far larger
    /// than they travel, heads and bodies that never finish) beside good
    /// traffic at half capacity, against rir-serve with its default flags;
    /// exit 1 when the server died, a good request failed, or its memory
    /// passed --max-rss-mb.
    Hostile(HostileArgs),
    /// What OpenTelemetry tracing costs: rir-serve with traces off and on
    /// (every request sampled, exported over OTLP/gRPC to a receiver in
    /// this process), in alternating rounds at each concurrency.
    Tracing(TracingArgs),
}

#[derive(Args)]
struct HostileArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Seconds of each phase (good traffic alone, then attacked).
    #[arg(short = 'd', long, default_value_t = 120.0)]
    duration: f64,
    /// Share of the measured capacity the good traffic offers.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Copies of each attack running at once.
    #[arg(long, default_value_t = 2)]
    per_attack: usize,
    /// Seconds each copy pauses between two sends (0: none, as fast as
    /// the server answers: then the bombs' CPU cost, not their memory,
    /// sets the good traffic's latency on a small machine).
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// The server's peak memory may not pass this, MiB.
    #[arg(long, default_value_t = 1024.0)]
    max_rss_mb: f64,
    /// More rir-serve arguments, space-separated (none: its defaults).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    server_args: String,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args)]
struct TracingArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    common: BenchCommon,
    /// Alternating off/on rounds per concurrency.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// More rir-serve arguments for both servers, space-separated.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    server_args: String,
}

impl TracingArgs {
    fn options(self) -> Result<TracingBenchOptions> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        Ok(TracingBenchOptions {
            served: self.serve.served()?,
            rounds: self.rounds,
            server_args: words(&self.server_args),
            common: bench_options(&self.common)?,
        })
    }
}

#[derive(Args)]
struct CompareArgs {
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
}

#[derive(Args)]
struct ServerArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    common: BenchCommon,
    /// ONNX Runtime intra-op threads in-process and in the server (0: its default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Largest batch with batching on (and the in-process batch).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Seconds of sustained load at the highest concurrency for the memory figure (0: skip).
    #[arg(long, default_value_t = 300.0)]
    soak: f64,
    /// More rir-serve arguments, space-separated (e.g. "--ort-spin false --instances 2").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    server_args: String,
    /// Pinned mode: this process (the load generator) on core 0, rir-serve
    /// and the in-process engine on core 1 (ORT threads 1 unless
    /// --threads says otherwise), so the server's figures hold its own
    /// cost only. Without it all share every core.
    #[arg(long)]
    pin: bool,
    /// Alternating rounds per comparison; -d is split among them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

#[derive(Args)]
struct SoakArgs {
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
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn bench_options(c: &BenchCommon) -> Result<BenchOptions> {
    Ok(BenchOptions {
        warmup: seconds(c.warmup, "--warmup")?,
        duration: seconds(c.duration, "--duration")?,
        concurrency: concurrencies(&c.concurrency)?,
        progress: !c.quiet,
    })
}

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || {
        let cli = Cli::parse();
        rir_process::block_on(async move {
            let text = match cli.command {
                BenchCommand::Ceiling(c) => ceiling(&bench_options(&c)?).await?,
                BenchCommand::Compare(a) => compare(&a.options()?).await?,
                BenchCommand::Server(a) => server(&a.options()?).await?.table(),
                BenchCommand::Soak(a) => return run_soak(a).await,
                BenchCommand::Hostile(a) => return run_hostile(a).await,
                BenchCommand::Tracing(a) => tracing_cost(&a.options()?).await?,
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        })?
    })
}

impl CompareArgs {
    fn options(self) -> Result<CompareOptions> {
        Ok(CompareOptions {
            served: self.serve.served()?,
            perf_analyzer: self.perf_analyzer,
            window: Duration::from_millis(self.window_ms),
            concurrency: concurrencies(&self.concurrency)?,
            progress: !self.quiet,
        })
    }
}

impl ServerArgs {
    fn options(self) -> Result<ServerBenchOptions> {
        Ok(ServerBenchOptions {
            served: self.serve.served()?,
            threads: self.threads,
            max_batch: self.max_batch,
            soak: seconds(self.soak, "--soak")?,
            server_args: words(&self.server_args),
            pin: self.pin,
            rounds: self.rounds as usize,
            common: bench_options(&self.common)?,
        })
    }
}

impl SoakArgs {
    fn options(self) -> Result<SoakOptions> {
        if !(self.load > 0.0 && self.load.is_finite()) {
            bail!(
                "--load is a positive share of the capacity, not {}",
                self.load
            );
        }
        if self.interval <= 0.0 || self.duration < 2.0 * self.interval {
            bail!("--duration must hold at least two --interval (positive) to compare");
        }
        Ok(SoakOptions {
            served: self.serve.served()?,
            server_args: words(&self.server_args),
            server_cpus: self.server_cpus,
            client_cpus: self.client_cpus,
            capacity_concurrency: self.capacity_concurrency,
            capacity_duration: seconds(self.capacity_duration, "--capacity-duration")?,
            load: self.load,
            bad_fraction: self.bad_fraction,
            duration: seconds(self.duration, "--duration")?,
            interval: seconds(self.interval, "--interval")?,
            warmup: seconds(self.warmup, "--warmup")?,
            bounds: Bounds {
                rss_growth_pct: self.max_rss_growth,
                p99_change_pct: self.max_p99_change,
            },
            progress: !self.quiet,
        })
    }
}

/// The hostile benchmark, its tables, its JSON, and exit 1 when the server
/// died, a good request failed or the memory bound was passed.
async fn run_hostile(a: HostileArgs) -> Result<ExitCode> {
    let o = HostileOptions {
        served: a.serve.served()?,
        server_args: words(&a.server_args),
        duration: seconds(a.duration, "--duration")?,
        load: a.load,
        per_attack: a.per_attack,
        pause: Duration::from_secs_f64(a.pause.max(0.0)),
        progress: !a.quiet,
    };
    let h = hostile(&o).await?;
    print!("{}", hostile_table(&h));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&h)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let passed = h.server_exit.is_none()
        && h.attacked.report.failed() == 0
        && h.attacked.peak_rss_mib <= a.max_rss_mb;
    Ok(match passed {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// The soak, its table, its JSON, and exit 1 when a bound failed.
async fn run_soak(a: SoakArgs) -> Result<ExitCode> {
    let json = a.json.clone();
    let o = a.options()?;
    let s = soak(&o).await?;
    print!("{}", s.render(&o));
    if let Some(p) = &json {
        std::fs::write(p, serde_json::to_string_pretty(&s)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(match s.verdict.passed {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

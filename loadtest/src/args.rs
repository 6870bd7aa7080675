//! The command line of `rir-loadtest`, in the library as rir-serve's is,
//! so that tests build a run from the same flags the binary takes. The
//! flags become a typed [`crate::plan::TestPlan`] in [`crate::plan`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rir_client::connect::ClientAuthArgs;

use crate::load::{Arrivals, RateSpec};
use crate::thresholds::Percentile;
use crate::workload::{Api, InputShape};

/// How rir-loadtest reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
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
pub struct Cli {
    #[command(subcommand)]
    pub bench: Option<Command>,
    #[command(flatten)]
    pub test: TestArgs,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct MergeArgs {
    /// The --json files of the runs, one per generator (at least two).
    #[arg(required = true, num_args = 2..)]
    pub reports: Vec<PathBuf>,
    /// Write the merged reports as JSON (which merges again).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged reports as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the merged reports as one self-contained HTML report (as
    /// `--html` of a run; intervals are merged by position).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub bounds: BoundArgs,
}

#[derive(Args)]
pub struct TestArgs {
    /// Server address: host:port, http://host:port or https://host:port
    /// (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP). Several
    /// (comma-separated or repeated) are replicas of one server: requests go
    /// round-robin, one that a replica does not answer (connection lost,
    /// UNAVAILABLE) is sent to the next, and the report counts per replica.
    /// dns:///NAME:PORT stands for every address NAME resolves to (e.g. a
    /// Kubernetes headless Service).
    #[arg(short = 'u', long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Protocol: KServe v2 over gRPC, or over HTTP/REST (binary tensor
    /// data, as tritonclient.http and perf_analyzer -i http send it).
    #[arg(short = 'i', long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// An input's item shape, NAME:DIMS[:DATATYPE] (batch excluded; e.g.
    /// image:1,28,28), for servers whose metadata lists no inputs or leaves
    /// dimensions open (repeatable; datatype default FP32).
    #[arg(long)]
    pub shape: Vec<InputShape>,
    /// With -i http: send tensors as JSON values instead of binary data
    /// (for servers without Triton's binary tensor extension, e.g. MLServer).
    #[arg(long)]
    pub json_tensors: bool,
    /// Model (for Classify, empty means the server's default model).
    #[arg(short = 'm', long, default_value = "rir-fashion-mnist")]
    pub model: String,
    /// Model version (default: the server's latest).
    #[arg(long, default_value = "")]
    pub model_version: String,
    /// RPC to drive.
    #[arg(long, value_enum, default_value_t = Api::Infer)]
    pub api: Api,
    /// Items (images) per request.
    #[arg(short = 'b', long, default_value_t = 1)]
    pub batch: usize,
    /// `random` (tensors of the model's input shape), or a directory of raw
    /// tensor files (.bin/.raw, one item or one batch each) or of PNG/JPEG images (for --api classify).
    #[arg(long, default_value = "random")]
    pub input_data: String,
    /// Closed loop: requests in flight. A list (1,4,16) or a doubling range (1..64) runs a sweep.
    #[arg(short = 'c', long, default_value = "1", conflicts_with = "rate")]
    pub concurrency: String,
    /// Open loop: requests per second. One rate (200); a list (100,200,400):
    /// one run each, or with --step-seconds one run stepping through them;
    /// a range with --ramp (100..400): one run rising linearly. With
    /// --latency-threshold, one rate: the search's step (it tries multiples
    /// of it).
    #[arg(short = 'r', long, value_name = "RATE|LIST|A..B")]
    pub rate: Option<RateSpec>,
    /// With a --rate list: one run that holds each rate this many seconds
    /// in turn (a row per step; the run measures steps x seconds).
    #[arg(long, value_name = "SECONDS", requires = "rate", conflicts_with_all = ["ramp", "stability", "requests"])]
    pub step_seconds: Option<f64>,
    /// With a --rate range A..B: one run whose rate rises (or falls)
    /// linearly from A to B over this many seconds (a row per tenth, or
    /// per --interval).
    #[arg(long, value_name = "SECONDS", requires = "rate", conflicts_with_all = ["stability", "requests"])]
    pub ramp: Option<f64>,
    /// Search for the highest load whose --percentile latency stays at most
    /// this many milliseconds with no request failing: concurrency (or
    /// multiples of --rate) doubles from one step until a level misses,
    /// then the gap is halved down to one step. Prints every level tried
    /// and the answer; exits 3 when not even the first level meets it.
    #[arg(long, value_name = "MS", conflicts_with = "concurrency")]
    pub latency_threshold: Option<f64>,
    /// The percentile --latency-threshold bounds.
    #[arg(long, value_enum, default_value_t = Percentile::P99, requires = "latency_threshold")]
    pub percentile: Percentile,
    /// The highest level the search tries (concurrency, or multiples of --rate).
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = 256,
        requires = "latency_threshold"
    )]
    pub search_max: u64,
    /// Open loop: spacing of the requests.
    #[arg(long, value_enum, default_value_t = Arrivals::Constant, requires = "rate")]
    pub arrivals: Arrivals,
    /// Open loop: most requests in flight (sends beyond it wait; their latency still counts from the intended time).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Seconds of load before measuring (not recorded).
    #[arg(short = 'w', long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to measure.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Measure this many requests instead of a duration.
    #[arg(short = 'n', long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Stability mode: measure in windows until the last three agree within this percentage
    /// (throughput and average latency), like perf_analyzer.
    #[arg(long)]
    pub stability: Option<f64>,
    /// Stability mode: seconds per window.
    #[arg(long, default_value_t = 5.0)]
    pub window: f64,
    /// Stability mode: most windows before reporting as unstable.
    #[arg(long, default_value_t = 10)]
    pub max_windows: usize,
    /// Also report every this many seconds (one row per interval: a soak's
    /// figures over time).
    #[arg(long, conflicts_with = "stability")]
    pub interval: Option<f64>,
    /// Share of bad requests to mix in (0 to 1, e.g. 0.05): wrong shapes,
    /// short data, BYTES, 2^62-item batches, negative dimensions, unknown
    /// inputs, models and versions, `../` names, and through Classify
    /// garbage, truncated and decompression-bomb images. Each class is
    /// counted against the status a KServe v2 server owes it, apart from
    /// the figures; rir-loadtest exits 1 when any got another. gRPC only.
    #[arg(long, default_value_t = 0.0)]
    pub bad_fraction: f64,
    /// Read the server breakdown (queue and compute per request) from the
    /// Triton-named `nv_inference_*` counters of this Prometheus metrics
    /// page (e.g. http://127.0.0.1:8002/metrics) instead of the server's
    /// KServe v2 statistics; several (repeated or comma-separated) are
    /// added, one per replica.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub metrics_url: Vec<String>,
    /// Leave the server breakdown out (by default each measurement reads
    /// the model's statistics before and after; a server without them is
    /// noted once and the run goes on).
    #[arg(long, conflicts_with = "metrics_url")]
    pub no_server_stats: bool,
    /// HTTP/2 connections to spread requests over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Per-request deadline in seconds, sent to the server (0: none).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Use TLS (implied by https:// or --ca-cert).
    #[arg(long)]
    pub tls: bool,
    /// Name to check in the server's certificate (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
    /// Classify: labels per image.
    #[arg(long, default_value_t = 1)]
    pub top_k: u32,
    /// Seed of random tensors and Poisson arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the reports as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the reports as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Sweep: draw latency against throughput (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write one self-contained HTML report, readable offline: the command
    /// and settings, the table, latency against throughput, throughput and
    /// p50/p99 over time (a schedule's steps and ramps marked; without
    /// --interval the run is split about 120 times for it), the latency
    /// spectrum, the server's breakdown, errors by kind, a search's answer.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub bounds: BoundArgs,
}

/// Bounds for CI: a run (every load of a sweep) that misses one exits with
/// status 3, naming each bound missed.
#[derive(Args)]
pub struct BoundArgs {
    /// Fail (exit 3) when the median latency exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p50_ms: Option<f64>,
    /// Fail (exit 3) when the 90th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p90_ms: Option<f64>,
    /// Fail (exit 3) when the 95th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p95_ms: Option<f64>,
    /// Fail (exit 3) when the 99th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,
    /// Fail (exit 3) when the 99.9th percentile exceeds this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p999_ms: Option<f64>,
    /// Fail (exit 3) when more than this share of requests fail (0 to 1).
    #[arg(long, value_name = "SHARE")]
    pub max_error_rate: Option<f64>,
    /// Fail (exit 3) when fewer successful requests per second are measured.
    #[arg(long, value_name = "REQ_PER_S")]
    pub min_throughput: Option<f64>,
}

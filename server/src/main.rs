//! `rir-serve`: serve a model repository over gRPC and HTTP.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rir_infer::{Backend, Buckets, ConvSearch, CudaOptions, Device, EngineOptions, OrtOptions};
use rir_server::batcher::BatchConfig;
use rir_server::conn::{ConnLimits, Gate};
use rir_server::control::{ControlMode, Repository};
use rir_server::core::{Core, Settings};
use rir_server::http::{HttpConfig, serve_http};
use rir_server::models::{Loader, ServingEngines};
use rir_server::server::{Http2Settings, Stop, TransportConfig, local, serve, serve_metrics};
use rir_server::stats::Metrics;
use rir_server::tensors::ImageLimits;

#[derive(Parser)]
#[command(
    name = "rir-serve",
    version,
    about = "Serve exported RiR models over gRPC and HTTP (KServe v2 / Triton protocol + image classification).",
    long_about = "Serve every model in a repository (<root>/<name>/<version>/model.onnx; the highest \
        version is the default) over gRPC: KServe v2 / Triton `inference.GRPCInferenceService` \
        (ServerLive/Ready, ModelReady, Server/ModelMetadata, ModelInfer, ModelConfig, \
        ModelStatistics, the classification extension) and `rir.v1.ImageClassifier/Classify` \
        (PNG/JPEG in, top-k labels out), plus grpc.health.v1 and server reflection; \
        and the same over HTTP on --http-addr: KServe v2 REST with JSON or binary tensors \
        (/v2/health/{live,ready}, /v2, /v2/models/NAME[/versions/V]/{ready,config,stats,infer}) \
        and POST /v2/models/NAME/classify with a PNG or JPEG body, and a web page at /. \
        Models reload without downtime (--model-control-mode poll|explicit; RepositoryIndex, \
        RepositoryModelLoad/Unload); a Triton config.pbtxt beside the versions is honoured. \
        Prometheus metrics on --metrics-addr. SIGTERM/SIGINT: not ready, stop accepting, \
        finish calls in flight, exit 0."
)]
struct Cli {
    /// Model repository.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// How the served models follow the repository: `none` loads all at
    /// start and ignores changes; `poll` rescans every
    /// --repository-poll-secs and loads, reloads (without downtime) and
    /// unloads what changed; `explicit` loads the --load-model models and
    /// then what RepositoryModelLoad/Unload calls ask for.
    #[arg(long, value_enum, default_value_t = ControlMode::None)]
    model_control_mode: ControlMode,
    /// Seconds between repository scans in `poll` mode.
    #[arg(long, default_value_t = 15)]
    repository_poll_secs: u64,
    /// A model to load at start in `explicit` mode (repeatable).
    #[arg(long)]
    load_model: Vec<String>,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8001")]
    grpc_addr: String,
    /// HTTP/REST listen address (KServe v2 REST, Triton's HTTP API, the web
    /// page, and `POST /v2/models/{name}/classify` for images); `off`
    /// serves none. Default 0.0.0.0:8000, or off when --tls-cert is given
    /// (the HTTP side has no TLS of its own).
    #[arg(long)]
    http_addr: Option<String>,
    /// Prometheus metrics listen address (HTTP).
    #[arg(long, default_value = "0.0.0.0:8002")]
    metrics_addr: String,
    /// Inference engine.
    #[arg(long, value_enum, default_value_t = Backend::Ort)]
    backend: Backend,
    /// ONNX Runtime device: auto uses CUDA when it can be had (else the CPU, saying why).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Engine instances per model (each on its own thread).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Intra-op threads per ONNX Runtime instance (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Let ONNX Runtime's idle threads spin-wait between runs (its default).
    /// `false` frees CPU for other work when many models share few cores, at
    /// the price of latency: measured here, 0.50 ms instead of 0.41 ms p50
    /// at concurrency 1 on 2 cores.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ort_spin: bool,
    /// Most images per engine call (and per request).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Batch sizes the engine runs at (Triton's preferred_batch_size): a
    /// formed batch is padded with zeros up to the smallest that holds it,
    /// and every one is warmed up before the server is ready. `pow2`:
    /// 1, 2, 4, ... and --max-batch; `all`: every size (no padding); or a
    /// list such as `1,8,32` (--max-batch is added).
    #[arg(long, default_value = "pow2")]
    batch_buckets: String,
    /// One ONNX Runtime session per batch bucket (true) or one for all
    /// (false). Default: one per bucket on CUDA, where a session re-plans
    /// its convolutions whenever the batch size changes; one on the CPU.
    /// tract always has one plan per bucket.
    #[arg(long)]
    session_per_bucket: Option<bool>,
    /// cuDNN convolution algorithm search in the CUDA provider.
    #[arg(long, value_enum, default_value_t = ConvSearch::Exhaustive)]
    cudnn_conv_search: ConvSearch,
    /// TF32 tensor-core math for fp32 convolutions in the CUDA provider
    /// (PyTorch's cuDNN default too). `false`: exact fp32, slower.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cuda_tf32: bool,
    /// Let the CUDA provider run convolutions in NHWC.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cuda_nhwc: bool,
    /// Upper bound of the CUDA provider's memory arena, MiB (0: none).
    #[arg(long, default_value_t = 0)]
    cuda_mem_limit_mb: usize,

    /// Longest a request waits for others to batch with, microseconds (0: batch what is queued).
    #[arg(long, default_value_t = 0)]
    max_queue_delay_us: u64,
    /// Run a request on the thread that decoded it when nothing is queued
    /// and an engine instance is idle, instead of handing it to an engine
    /// thread and back (two thread wake-ups, about 80 µs on a 2-core VM).
    /// Only with no queue delay, for models whose last run took under 1 ms,
    /// one such run at a time; under load requests batch as before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    run_inline: bool,
    /// Requests that may wait per model before new ones get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024)]
    queue_capacity: usize,
    /// Largest gRPC message and HTTP body (after decompression), bytes
    /// (default 64 MiB: 256 CIFAR images in FP32 need 3 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    max_message_bytes: usize,
    /// Refuse FP32 inputs that hold NaN or infinite values with
    /// INVALID_ARGUMENT. By default they run, as in Triton, and the outputs
    /// say what the model makes of them (stock perf_analyzer sends random
    /// bytes, which include such values).
    #[arg(long)]
    reject_nonfinite: bool,
    /// Largest image (width x height, read from its header before any
    /// decoding) that Classify accepts; larger ones are INVALID_ARGUMENT.
    /// Default 4096 x 4096: a decompression bomb of 20000 x 20000 costs a
    /// header read instead of 400 MB and seconds of CPU.
    #[arg(long, default_value_t = 4096 * 4096)]
    max_image_pixels: u64,
    /// Largest encoded image, bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_image_bytes: usize,
    /// Deadline, milliseconds, of requests that carry none (every HTTP
    /// request; gRPC calls without `grpc-timeout`): one still queued past
    /// it is answered DEADLINE_EXCEEDED (HTTP 504) and not run. 0: none.
    #[arg(long, default_value_t = 30_000)]
    default_timeout_ms: u64,
    /// Images decoded at once, at most, on blocking threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    max_decodes: usize,
    /// Model `Classify` uses when a request names none (default: the only or first model).
    #[arg(long)]
    default_model: Option<String>,
    /// PEM certificate for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: a PEM CA bundle; every client must present a certificate
    /// it signed, or its connection is refused in the handshake (with
    /// --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every call but health
    /// checks, over gRPC and HTTP.
    #[arg(long, env = "RIR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Put the metrics endpoint behind --auth-token too (Prometheus then
    /// scrapes with `authorization: {credentials: TOKEN}`).
    #[arg(long, requires = "auth_token")]
    metrics_auth: bool,
    /// Seconds to let calls in flight finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Connections open at once, per front end (gRPC, HTTP); more are
    /// closed on arrival. rir-serve raises its open-files limit to the
    /// system's hard limit at start, so this, not the OS, is what binds.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Close a connection that sends nothing within this many milliseconds
    /// (idle or slowloris sockets that would hold a slot for good).
    #[arg(long, default_value_t = 10_000)]
    first_byte_timeout_ms: u64,
    /// TCP keepalive after this many idle seconds (0: off).
    #[arg(long, default_value_t = 60)]
    tcp_keepalive_secs: u64,
    /// gRPC calls open at once on one HTTP/2 connection; more are refused
    /// (REFUSED_STREAM, which clients retry).
    #[arg(long, default_value_t = 1024)]
    http2_max_streams: u32,
    /// HTTP/2 keepalive: ping an idle connection every this many seconds and
    /// close it when the ping goes unanswered for 10 s.
    #[arg(long, default_value_t = 30)]
    http2_keepalive_secs: u64,
    /// Largest gRPC request header list (HPACK-decoded), bytes.
    #[arg(long, default_value_t = 16 << 10)]
    max_header_bytes: u32,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

fn main() -> ExitCode {
    rir_cli::main("info,ort=warn", || {
        let cli = Cli::parse();
        rir_cli::block_on(run(cli))?
    })
}

/// `--batch-buckets`: `pow2`, `all` or a comma-separated list.
fn parse_buckets(text: &str, max_batch: usize) -> Result<Buckets> {
    match text {
        "pow2" => Ok(Buckets::powers_of_two(max_batch)),
        "all" => Ok(Buckets::every(max_batch)),
        list => {
            let sizes = list
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| {
                    format!("--batch-buckets {list:?}: expected pow2, all or numbers like 1,8,32")
                })?;
            Buckets::new(sizes, max_batch).map_err(|e| anyhow::anyhow!("--batch-buckets: {e}"))
        }
    }
}

/// SIGTERM and SIGINT, registered when this is called rather than when the
/// future is first polled: a signal that arrives between the "gRPC on" line
/// and the first poll (an orchestrator stopping a pod that just got ready)
/// must drain and exit 0, not kill the process by the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if cli.max_batch == 0 || cli.queue_capacity == 0 {
        bail!("--max-batch and --queue-capacity must be positive");
    }
    let http_addr = match (cli.http_addr.as_deref(), cli.tls_cert.is_some()) {
        (Some("off"), _) => None,
        (Some(addr), true) => bail!(
            "--http-addr {addr} with --tls-cert: the HTTP front end has no TLS of its own; \
             leave --http-addr out (HTTP stays off) or put a TLS proxy in front of it"
        ),
        (Some(addr), false) => Some(addr.to_string()),
        (None, true) => {
            tracing::info!("HTTP off: TLS is on and the HTTP front end has no TLS of its own");
            None
        }
        (None, false) => Some("0.0.0.0:8000".to_string()),
    };
    let buckets = parse_buckets(&cli.batch_buckets, cli.max_batch)?;
    // Asked for CUDA and the library has no CUDA provider: fail now, with
    // the reason, rather than serve with every model unavailable.
    if cli.device == Device::Cuda && cli.backend == Backend::Ort {
        rir_infer::ort_engine::environment(cli.ort_lib.as_deref())?;
        cli.device
            .resolve(rir_infer::ort_engine::cuda_provider())
            .map_err(anyhow::Error::msg)?;
    }
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    let engines = ServingEngines {
        options: EngineOptions {
            backend: cli.backend,
            ort: OrtOptions {
                library: cli.ort_lib.clone(),
                threads: cli.threads,
                device: cli.device,
                spin: cli.ort_spin,
                cuda: CudaOptions {
                    conv_search: cli.cudnn_conv_search,
                    tf32: cli.cuda_tf32,
                    prefer_nhwc: cli.cuda_nhwc,
                    memory_limit: (cli.cuda_mem_limit_mb > 0)
                        .then_some(cli.cuda_mem_limit_mb << 20),
                },
            },
            per_bucket: cli.session_per_bucket,
        },
        instances: cli.instances,
    };
    let batching = BatchConfig {
        buckets,
        max_delay: Duration::from_micros(cli.max_queue_delay_us),
        queue_capacity: cli.queue_capacity,
        inline: cli.run_inline,
    };
    let loader = Loader {
        root: cli.models.clone(),
        engines,
        batching,
        metrics: metrics.clone(),
    };
    if !cli.load_model.is_empty() && cli.model_control_mode != ControlMode::Explicit {
        bail!(
            "--load-model needs --model-control-mode explicit (the other modes load every model)"
        );
    }
    let startup = match cli.model_control_mode {
        ControlMode::Explicit => Some(cli.load_model.as_slice()),
        ControlMode::None | ControlMode::Poll => None,
    };
    let models = loader.load(startup).map_err(anyhow::Error::msg)?;
    if models.by_name.is_empty() && cli.model_control_mode != ControlMode::Explicit {
        bail!(
            "no models in {} (expected <name>/<version>/model.onnx)",
            cli.models.display()
        );
    }
    if let Some(missing) = cli
        .load_model
        .iter()
        .find(|n| !models.by_name.contains_key(*n))
    {
        bail!(
            "--load-model {missing}: no such model in {}",
            cli.models.display()
        );
    }
    let ready = models.all_ready();
    let mode = cli.model_control_mode;
    let state = Arc::new(Core::new(
        models,
        Some(Repository::new(loader, mode)),
        Settings {
            default_model: cli.default_model.clone(),
            reject_nonfinite: cli.reject_nonfinite,
            image_limits: ImageLimits {
                max_pixels: cli.max_image_pixels,
                max_bytes: cli.max_image_bytes,
            },
            max_decodes: cli.max_decodes,
            default_timeout: (cli.default_timeout_ms > 0)
                .then(|| Duration::from_millis(cli.default_timeout_ms)),
        },
    ));
    if mode == ControlMode::Poll {
        let every = Duration::from_secs(cli.repository_poll_secs.max(1));
        tracing::info!(
            "polling {} every {}s",
            cli.models.display(),
            every.as_secs()
        );
        tokio::spawn(state.clone().poll_forever(every));
    }
    let grpc = tokio::net::TcpListener::bind(&cli.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cli.grpc_addr))?;
    let metrics_listener = tokio::net::TcpListener::bind(&cli.metrics_addr)
        .await
        .with_context(|| format!("binding {}", cli.metrics_addr))?;
    tracing::info!("metrics on http://{}/metrics", local(&metrics_listener));
    let metrics_token = cli
        .metrics_auth
        .then(|| cli.auth_token.as_deref().map(Arc::from))
        .flatten();
    tokio::spawn(serve_metrics(
        metrics.clone(),
        metrics_listener,
        metrics_token,
    ));
    match rir_cli::raise_open_files_limit() {
        Ok(n) => tracing::debug!("open files limit: {n}"),
        Err(e) => tracing::warn!("could not raise the open files limit: {e}"),
    }
    let limits = ConnLimits {
        max_connections: cli.max_connections.max(1),
        first_byte_timeout: Duration::from_millis(cli.first_byte_timeout_ms.max(1)),
        tcp_keepalive: (cli.tcp_keepalive_secs > 0)
            .then(|| Duration::from_secs(cli.tcp_keepalive_secs)),
    };
    let transport = TransportConfig {
        max_message_bytes: cli.max_message_bytes,
        tls: cli.tls_cert.clone().zip(cli.tls_key.clone()),
        tls_client_ca: cli.tls_client_ca.clone(),
        auth_token: cli.auth_token.clone(),
        gate: Some(Gate::new(limits, "grpc", &metrics)),
        http2: Http2Settings {
            max_concurrent_streams: cli.http2_max_streams.max(1),
            max_header_list_bytes: cli.max_header_bytes,
            keepalive_interval: Duration::from_secs(cli.http2_keepalive_secs.max(1)),
            ..Http2Settings::default()
        },
    };
    let signalled = shutdown_signal();
    state.ready.store(true, Ordering::SeqCst);
    if !ready {
        tracing::warn!("some models are not ready; the others are served");
    }
    tracing::info!(
        "gRPC on {}{}",
        local(&grpc),
        if transport.tls_client_ca.is_some() {
            " (mutual TLS)"
        } else if transport.tls.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    // One shutdown signal, seen by both front ends.
    let (stop_tx, stop) = Stop::new();
    let timeout = Duration::from_secs(cli.shutdown_timeout);
    tokio::spawn(async move {
        signalled.await;
        let _ = stop_tx.send(true);
    });
    let mut http_task = None;
    if let Some(http_addr) = http_addr {
        let listener = tokio::net::TcpListener::bind(&http_addr)
            .await
            .with_context(|| format!("binding {http_addr}"))?;
        tracing::info!("HTTP on http://{}/v2", local(&listener));
        let config = HttpConfig {
            max_body_bytes: cli.max_message_bytes,
            auth_token: cli.auth_token.as_deref().map(Arc::from),
            gate: Some(Gate::new(limits, "http", &metrics)),
        };
        http_task = Some(tokio::spawn(serve_http(
            state.clone(),
            config,
            listener,
            stop.wait(),
        )));
    }
    let server = serve(state, &transport, grpc, stop.wait());
    tokio::pin!(server);
    let grpc_done = tokio::select! {
        r = &mut server => { r.map_err(anyhow::Error::msg)?; true }
        _ = stop.wait() => false,
    };
    let drained = async {
        if !grpc_done {
            server.await.map_err(anyhow::Error::msg)?;
        }
        if let Some(task) = http_task {
            task.await
                .context("HTTP task")?
                .map_err(anyhow::Error::msg)?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(timeout, drained).await {
        Ok(r) => r?,
        Err(_) => {
            tracing::warn!(
                "calls still in flight after {}s; exiting",
                timeout.as_secs()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

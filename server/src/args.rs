//! The command line of `rir-serve`, and how it becomes a [`Config`]:
//! defaults, the checks that span several flags, and the derived settings
//! (HTTP off under TLS, the batch buckets, the CUDA options). `main` parses
//! it and calls [`crate::run`]; the tests start servers from the same
//! flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rir_contract::repository::DEFAULT_MAX_BATCH;
use rir_infer::{
    Backend, BucketError, Buckets, ConvSearch, CudaOptions, Device, EngineOptions, OrtOptions,
};

use crate::auth::Token;
use crate::batcher::BatchConfig;
use crate::config::{Config, Listen, RepositoryConfig};
use crate::conn::ConnLimits;
use crate::core::RequestPolicy;
use crate::grpc::{GrpcConfig, Http2Settings};
use crate::loader::ServingEngines;
use crate::reload::ControlMode;
use crate::tensors::ImageLimits;
use crate::trace::{OtlpProtocol, TraceConfig};

/// The command line of `rir-serve`.
#[derive(Debug, Parser)]
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
pub struct Args {
    /// Model repository.
    #[arg(long, default_value = "models")]
    pub(crate) models: PathBuf,
    /// How the served models follow the repository: `none` loads all at
    /// start and ignores changes; `poll` rescans every
    /// --repository-poll-secs and loads, reloads (without downtime) and
    /// unloads what changed; `explicit` loads the --load-model models and
    /// then what RepositoryModelLoad/Unload calls ask for.
    #[arg(long, value_enum, default_value_t = ControlMode::None)]
    pub(crate) model_control_mode: ControlMode,
    /// Seconds between repository scans in `poll` mode.
    #[arg(long, default_value_t = 15)]
    pub(crate) repository_poll_secs: u64,
    /// A model to load at start in `explicit` mode (repeatable).
    #[arg(long)]
    pub(crate) load_model: Vec<String>,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8001")]
    pub(crate) grpc_addr: String,
    /// HTTP/REST listen address (KServe v2 REST, Triton's HTTP API, the web
    /// page, and `POST /v2/models/{name}/classify` for images); `off`
    /// serves none. Default 0.0.0.0:8000, or off when --tls-cert is given
    /// (the HTTP side has no TLS of its own).
    #[arg(long)]
    pub(crate) http_addr: Option<String>,
    /// Prometheus metrics listen address (HTTP).
    #[arg(long, default_value = "0.0.0.0:8002")]
    pub(crate) metrics_addr: String,
    /// Inference engine.
    #[arg(long, value_enum, default_value_t = Backend::Ort)]
    pub(crate) backend: Backend,
    /// ONNX Runtime device: auto uses CUDA when it can be had (else the CPU, saying why).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub(crate) device: Device,
    /// Engine instances per model (each on its own thread).
    #[arg(long, default_value_t = 1)]
    pub(crate) instances: usize,
    /// Intra-op threads per ONNX Runtime instance (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Let ONNX Runtime's idle threads spin-wait between runs (its default).
    /// `false` frees CPU for other work when many models share few cores, at
    /// the price of latency: measured here, 0.50 ms instead of 0.41 ms p50
    /// at concurrency 1 on 2 cores.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) ort_spin: bool,
    /// Most images per engine call (and per request).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    pub(crate) max_batch: usize,
    /// Batch sizes the engine runs at (Triton's preferred_batch_size): a
    /// formed batch is padded with zeros up to the smallest that holds it,
    /// and every one is warmed up before the server is ready. `pow2`:
    /// 1, 2, 4, ... and --max-batch; `all`: every size (no padding); or a
    /// list such as `1,8,32` (--max-batch is added).
    #[arg(long, default_value = "pow2")]
    pub(crate) batch_buckets: String,
    /// One ONNX Runtime session per batch bucket (true) or one for all
    /// (false). Default: one per bucket on CUDA, where a session re-plans
    /// its convolutions whenever the batch size changes; one on the CPU.
    /// tract always has one plan per bucket.
    #[arg(long)]
    pub(crate) session_per_bucket: Option<bool>,
    /// cuDNN convolution algorithm search in the CUDA provider.
    #[arg(long, value_enum, default_value_t = ConvSearch::Exhaustive)]
    pub(crate) cudnn_conv_search: ConvSearch,
    /// TF32 tensor-core math for fp32 convolutions in the CUDA provider
    /// (PyTorch's cuDNN default too). `false`: exact fp32, slower.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) cuda_tf32: bool,
    /// Let the CUDA provider run convolutions in NHWC.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) cuda_nhwc: bool,
    /// Upper bound of the CUDA provider's memory arena, MiB (0: none).
    #[arg(long, default_value_t = 0)]
    pub(crate) cuda_mem_limit_mb: usize,
    /// Experimental, not yet measured on a GPU: capture each bucket's
    /// session in a CUDA graph and replay it, removing the kernel launches
    /// that dominate batch-1 latency. Needs the CUDA provider (--device
    /// cuda or auto; on a CPU fallback it is off, with a warning), the ort
    /// backend and one session per bucket; implies --io-binding.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) cuda_graph: bool,
    /// Run ONNX Runtime through an IoBinding with input and output buffers
    /// preallocated on the session's device per bucket, copied into and
    /// out of explicitly; batches are padded to the buckets, as on CUDA
    /// (on the CPU it only adds two copies per call and the padding).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) io_binding: bool,

    /// Longest a request waits for others to batch with, microseconds (0: batch what is queued).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_queue_delay_us: u64,
    /// Run a request on the thread that decoded it when nothing is queued
    /// and an engine instance is idle, instead of handing it to an engine
    /// thread and back (two thread wake-ups, about 80 µs on a 2-core VM).
    /// Only with no queue delay, for models whose last run took under 1 ms,
    /// one such run at a time; under load requests batch as before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) run_inline: bool,
    /// Requests that may wait per model before new ones get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024)]
    pub(crate) queue_capacity: usize,
    /// Largest gRPC message and HTTP body (after decompression), bytes, on
    /// every front end. Default: sized from the models served at start,
    /// the largest legal batch with headroom (2x for protobuf, 8x for
    /// JSON text, at least 4 MiB), and --max-image-bytes plus 64 KiB for
    /// image calls. Models loaded later with larger inputs need this flag.
    #[arg(long)]
    pub(crate) max_message_bytes: Option<usize>,
    /// Memory that requests in flight may hold together, MiB: HTTP bodies
    /// from before they are read, and every decoded tensor until its
    /// outputs are back. A request that does not fit is answered at once
    /// with RESOURCE_EXHAUSTED (HTTP 503, Retry-After: 1).
    #[arg(long, default_value_t = 512)]
    pub(crate) max_inflight_mb: usize,
    /// Refuse FP32 inputs that hold NaN or infinite values with
    /// INVALID_ARGUMENT. By default they run, as in Triton, and the outputs
    /// say what the model makes of them (stock perf_analyzer sends random
    /// bytes, which include such values).
    #[arg(long)]
    pub(crate) reject_nonfinite: bool,
    /// Largest image (width x height, read from its header before any
    /// decoding) that Classify accepts; larger ones are INVALID_ARGUMENT.
    /// Default 4096 x 4096: a decompression bomb of 20000 x 20000 costs a
    /// header read instead of 400 MB and seconds of CPU.
    #[arg(long, default_value_t = 4096 * 4096)]
    pub(crate) max_image_pixels: u64,
    /// Largest encoded image, bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub(crate) max_image_bytes: usize,
    /// Deadline, milliseconds, of requests that carry none (every HTTP
    /// request; gRPC calls without `grpc-timeout`): one still queued past
    /// it is answered DEADLINE_EXCEEDED (HTTP 504) and not run. 0: none.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) default_timeout_ms: u64,
    /// Images decoded at once, at most, on blocking threads (0: one per
    /// CPU); large REST bodies are inflated and parsed there too.
    #[arg(long, default_value_t = 0)]
    pub(crate) max_decodes: usize,
    /// Requests that may wait for one of those threads; more get
    /// RESOURCE_EXHAUSTED at once, and none waits past its deadline.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_decode_queue: usize,
    /// Model `Classify` uses when a request names none (default: the only or first model).
    #[arg(long)]
    pub(crate) default_model: Option<String>,
    /// PEM certificate for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Mutual TLS: a PEM CA bundle; every client must present a certificate
    /// it signed, or its connection is refused in the handshake (with
    /// --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every call over gRPC and
    /// HTTP but these: the health checks (grpc.health.v1, ServerLive/Ready,
    /// /v2/health/*) and the web page at / (whose calls carry the token).
    /// Server reflection is behind it. An empty token is refused.
    #[arg(long, env = "RIR_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<Token>,
    /// Put the metrics endpoint behind a token of its own (Prometheus then
    /// scrapes with `authorization: {credentials: TOKEN}`); never the API
    /// token, so a scrape sniffed on the wire grants no calls.
    #[arg(long, env = "RIR_METRICS_TOKEN", hide_env_values = true)]
    pub(crate) metrics_token: Option<Token>,
    /// Serve RepositoryModelLoad/Unload (--model-control-mode explicit) to
    /// anyone who reaches a non-loopback address, with no --auth-token.
    /// Without it such a server refuses to start.
    #[arg(long)]
    pub(crate) allow_unauthenticated_model_control: bool,
    /// Seconds to let calls in flight finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    pub(crate) shutdown_timeout: u64,
    /// Connections open at once, per front end (gRPC, HTTP); more are
    /// closed on arrival. rir-serve raises its open-files limit to the
    /// system's hard limit at start, so this, not the OS, is what binds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Close a connection that sends nothing within this many milliseconds
    /// (idle or slowloris sockets that would hold a slot for good).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) first_byte_timeout_ms: u64,
    /// Give up on a request whose body (HTTP) or message (gRPC) stops
    /// arriving: nothing for this many milliseconds, counted from the last
    /// bytes that came. HTTP answers 408 and closes the connection, gRPC
    /// ends the call with DEADLINE_EXCEEDED (0: wait for good).
    #[arg(long, default_value_t = 30_000)]
    pub(crate) body_timeout_ms: u64,
    /// The whole body or message must have arrived this many milliseconds
    /// after it began, however it trickles (as --body-timeout-ms, 0: none).
    #[arg(long, default_value_t = 60_000)]
    pub(crate) body_deadline_ms: u64,
    /// Close an HTTP/1 connection (REST, metrics) whose request head has
    /// not fully arrived this many milliseconds after the server began to
    /// read it, or that sits idle this long between kept-alive requests.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) header_timeout_ms: u64,
    /// Close a gRPC connection whose first call has not arrived this many
    /// milliseconds after its first byte: the TLS handshake, the HTTP/2
    /// preface and the call's headers (a half-sent preface held a
    /// connection for good). 0: never.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) handshake_timeout_ms: u64,
    /// TCP keepalive after this many idle seconds (0: off).
    #[arg(long, default_value_t = 60)]
    pub(crate) tcp_keepalive_secs: u64,
    /// gRPC calls open at once on one HTTP/2 connection; more are refused
    /// (REFUSED_STREAM, which clients retry).
    #[arg(long, default_value_t = 1024)]
    pub(crate) http2_max_streams: u32,
    /// HTTP/2 keepalive: ping an idle connection every this many seconds and
    /// close it when the ping goes unanswered for 10 s.
    #[arg(long, default_value_t = 30)]
    pub(crate) http2_keepalive_secs: u64,
    /// Largest gRPC request header list (HPACK-decoded), bytes.
    #[arg(long, default_value_t = 16 << 10)]
    pub(crate) max_header_bytes: u32,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long)]
    pub(crate) ort_lib: Option<PathBuf>,
    /// Export OpenTelemetry traces of requests to this OTLP receiver, e.g.
    /// http://collector:4317 (gRPC) or http://collector:4318 (with
    /// --otlp-protocol http-protobuf); off without it. A caller's W3C
    /// `traceparent` (gRPC metadata, HTTP header) continues its trace.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,
    /// The OTLP transport.
    #[arg(long, value_enum, default_value_t = OtlpProtocol::Grpc)]
    pub(crate) otlp_protocol: OtlpProtocol,
    /// Share of requests traced, 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) trace_sample_ratio: f64,
    /// Let a caller's traceparent decide whether its request is traced (a
    /// sampled caller always is). Off: the ratio decides for every request,
    /// and a caller only lends its trace id to the requests sampled.
    #[arg(long)]
    pub(crate) trace_follow_caller: bool,
    /// How often finished spans are sent to the OTLP receiver,
    /// milliseconds (the SDK's OTEL_BSP_SCHEDULE_DELAY); the spans still
    /// held are sent at shutdown whatever the interval. Shorter keeps the
    /// export queue short at high rates.
    #[arg(long, default_value_t = crate::trace::EXPORT_EVERY.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) otlp_export_interval_ms: u64,
}

/// Flags that do not make a configuration together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// A limit of zero.
    #[error("--max-batch and --queue-capacity must be positive")]
    Zero,
    /// HTTP asked for on a TLS server.
    #[error(
        "--http-addr {0} with --tls-cert: the HTTP front end has no TLS of its own; \
         leave --http-addr out (HTTP stays off) or put a TLS proxy in front of it"
    )]
    HttpWithTls(String),
    /// A bucket list that is not numbers.
    #[error("--batch-buckets {0:?}: expected pow2, all or numbers like 1,8,32")]
    BucketList(String),
    /// Bucket sizes that cannot be buckets.
    #[error("--batch-buckets: {0}")]
    Buckets(#[from] BucketError),
    /// A sample ratio that is not a share.
    #[error("--trace-sample-ratio {0}: must be between 0 and 1")]
    SampleRatio(String),
    /// `--load-model` outside explicit mode.
    #[error("--load-model needs --model-control-mode explicit (the other modes load every model)")]
    LoadModel,
    /// Model control open to the network with no token.
    #[error(
        "--model-control-mode explicit on {0} with no --auth-token lets anyone who reaches it \
         load and unload models; set --auth-token (or RIR_AUTH_TOKEN), listen on loopback, \
         or pass --allow-unauthenticated-model-control"
    )]
    OpenModelControl(String),
    /// CUDA graphs asked for where they cannot run.
    #[error("--cuda-graph: {0}")]
    CudaGraph(&'static str),
}

/// Whether `addr` (`host:port`) listens on loopback only.
fn loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(h, _)| h == "localhost"),
    }
}

/// `--batch-buckets`: `pow2`, `all` or a comma-separated list.
fn parse_buckets(text: &str, max_batch: usize) -> Result<Buckets, FlagError> {
    match text {
        "pow2" => Ok(Buckets::powers_of_two(max_batch)),
        "all" => Ok(Buckets::every(max_batch)),
        list => {
            let sizes = list
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| FlagError::BucketList(list.to_string()))?;
            Ok(Buckets::new(sizes, max_batch)?)
        }
    }
}

/// A count of milliseconds, where 0 means none.
fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl Args {
    /// The configuration these flags describe.
    pub fn into_config(self) -> Result<Config, FlagError> {
        if self.max_batch == 0 || self.queue_capacity == 0 {
            return Err(FlagError::Zero);
        }
        if !self.load_model.is_empty() && self.model_control_mode != ControlMode::Explicit {
            return Err(FlagError::LoadModel);
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(FlagError::SampleRatio(self.trace_sample_ratio.to_string()));
        }
        self.check_cuda_graph()?;
        let listen = self.listen()?;
        self.check_model_control(&listen)?;
        Ok(Config {
            listen,
            batching: BatchConfig {
                buckets: parse_buckets(&self.batch_buckets, self.max_batch)?,
                max_delay: Duration::from_micros(self.max_queue_delay_us),
                queue_capacity: self.queue_capacity,
                inline: self.run_inline,
            },
            engines: self.engines(),
            requests: RequestPolicy {
                default_model: self.default_model.clone(),
                reject_nonfinite: self.reject_nonfinite,
                image_limits: ImageLimits {
                    max_pixels: self.max_image_pixels,
                    max_bytes: self.max_image_bytes,
                },
                max_decodes: self.max_decodes,
                max_decode_queue: self.max_decode_queue,
                default_timeout: millis(self.default_timeout_ms),
                max_inflight_bytes: self.max_inflight_mb.saturating_mul(1 << 20),
            },
            grpc: self.grpc(),
            connections: ConnLimits {
                max_connections: self.max_connections.max(1),
                first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms.max(1)),
                tcp_keepalive: (self.tcp_keepalive_secs > 0)
                    .then(|| Duration::from_secs(self.tcp_keepalive_secs)),
                header_timeout: millis(self.header_timeout_ms),
                handshake_timeout: millis(self.handshake_timeout_ms),
            },
            metrics_token: self.metrics_token.clone(),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            tracing: TraceConfig {
                endpoint: self.otlp_endpoint.clone(),
                protocol: self.otlp_protocol,
                sample_ratio: self.trace_sample_ratio,
                follow_caller: self.trace_follow_caller,
                export_every: Duration::from_millis(self.otlp_export_interval_ms),
            },
            repository: RepositoryConfig {
                root: self.models,
                mode: self.model_control_mode,
                poll_interval: Duration::from_secs(self.repository_poll_secs),
                load_models: self.load_model,
            },
        })
    }

    /// A CUDA graph has one shape, fixed buffers and the CUDA provider: it
    /// needs ONNX Runtime, a device that may be CUDA, and a session per
    /// bucket.
    fn check_cuda_graph(&self) -> Result<(), FlagError> {
        if !self.cuda_graph {
            return Ok(());
        }
        let refusal = match (self.backend, self.device, self.session_per_bucket) {
            (Backend::Tract, ..) => "needs --backend ort (tract runs on the CPU)",
            (_, Device::Cpu, _) => "needs the CUDA provider: --device cuda or auto, not cpu",
            (_, _, Some(false)) => {
                "needs one session per bucket (a graph is captured at one batch size); \
                 leave out --session-per-bucket false"
            }
            _ => return Ok(()),
        };
        Err(FlagError::CudaGraph(refusal))
    }

    /// Explicit model control reachable from the network needs a token,
    /// or the operator's word that it may go without.
    fn check_model_control(&self, listen: &Listen) -> Result<(), FlagError> {
        if self.model_control_mode != ControlMode::Explicit
            || self.auth_token.is_some()
            || self.allow_unauthenticated_model_control
        {
            return Ok(());
        }
        let open = std::iter::once(&listen.grpc)
            .chain(listen.http.as_ref())
            .find(|a| !loopback(a));
        match open {
            Some(addr) => Err(FlagError::OpenModelControl(addr.clone())),
            None => Ok(()),
        }
    }

    /// The listen addresses: HTTP defaults to port 8000, or off under TLS.
    fn listen(&self) -> Result<Listen, FlagError> {
        let http = match (self.http_addr.as_deref(), self.tls_cert.is_some()) {
            (Some("off"), _) => None,
            (Some(addr), true) => return Err(FlagError::HttpWithTls(addr.to_string())),
            (Some(addr), false) => Some(addr.to_string()),
            (None, true) => {
                tracing::info!("HTTP off: TLS is on and the HTTP front end has no TLS of its own");
                None
            }
            (None, false) => Some("0.0.0.0:8000".to_string()),
        };
        Ok(Listen {
            grpc: self.grpc_addr.clone(),
            http,
            metrics: self.metrics_addr.clone(),
        })
    }

    fn engines(&self) -> ServingEngines {
        ServingEngines {
            options: EngineOptions {
                backend: self.backend,
                ort: OrtOptions {
                    library: self.ort_lib.clone(),
                    threads: self.threads,
                    device: self.device,
                    spin: self.ort_spin,
                    bound_io: self.io_binding,
                    cuda: CudaOptions {
                        conv_search: self.cudnn_conv_search,
                        tf32: self.cuda_tf32,
                        prefer_nhwc: self.cuda_nhwc,
                        memory_limit: (self.cuda_mem_limit_mb > 0)
                            .then_some(self.cuda_mem_limit_mb << 20),
                        graph: self.cuda_graph,
                    },
                },
                per_bucket: self.session_per_bucket,
            },
            instances: self.instances,
        }
    }

    fn grpc(&self) -> GrpcConfig {
        GrpcConfig {
            max_message_bytes: self.max_message_bytes,
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            body_deadline: Duration::from_millis(self.body_deadline_ms),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            tls_client_ca: self.tls_client_ca.clone(),
            auth_token: self.auth_token.clone(),
            http2: Http2Settings {
                max_concurrent_streams: self.http2_max_streams.max(1),
                max_header_list_bytes: self.max_header_bytes,
                keepalive_interval: Duration::from_secs(self.http2_keepalive_secs.max(1)),
                ..Http2Settings::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Result<Config, FlagError> {
        Args::try_parse_from(std::iter::once("rir-serve").chain(flags.iter().copied()))
            .expect("flags parse")
            .into_config()
    }

    #[test]
    fn defaults_serve_http_beside_grpc_with_power_of_two_buckets() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.http.as_deref(), Some("0.0.0.0:8000"));
        assert_eq!(
            c.batching.buckets,
            Buckets::powers_of_two(DEFAULT_MAX_BATCH)
        );
        assert_eq!(c.requests.default_timeout, Some(Duration::from_secs(30)));
        // A body that stops arriving is given up after 30 s idle, 60 s whole.
        assert_eq!(c.grpc.body_timeout, Duration::from_secs(30));
        assert_eq!(c.grpc.body_deadline, Duration::from_secs(60));
        let off = config(&["--body-timeout-ms", "0"]).unwrap();
        assert_eq!(off.grpc.body_timeout, Duration::ZERO, "0: wait for good");
    }

    #[test]
    fn flags_that_contradict_each_other_are_refused() {
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        assert!(
            config(&tls).unwrap().listen.http.is_none(),
            "HTTP off under TLS"
        );
        let http = [&tls[..], &["--http-addr", "0.0.0.0:8000"]].concat();
        assert!(matches!(config(&http), Err(FlagError::HttpWithTls(_))));
        assert_eq!(config(&["--max-batch", "0"]).unwrap_err(), FlagError::Zero);
        assert_eq!(
            config(&["--load-model", "m"]).unwrap_err(),
            FlagError::LoadModel
        );
        assert!(matches!(
            config(&["--batch-buckets", "1,x"]),
            Err(FlagError::BucketList(_))
        ));
        assert!(matches!(
            config(&["--max-batch", "8", "--batch-buckets", "16"]),
            Err(FlagError::Buckets(BucketError::AboveMax { .. }))
        ));
        let list = config(&["--max-batch", "32", "--batch-buckets", "1,8"]).unwrap();
        assert_eq!(list.batching.buckets.sizes(), &[1, 8, 32]);
    }

    #[test]
    fn cuda_graphs_are_refused_where_they_cannot_run() {
        let graph = |more: &[&str]| config(&[&["--cuda-graph", "true"], more].concat());
        for (more, says) in [
            (&["--backend", "tract"][..], "--backend ort"),
            (&["--device", "cpu"][..], "--device cuda or auto"),
            (
                &["--session-per-bucket", "false"][..],
                "one session per bucket",
            ),
        ] {
            let err = graph(more).unwrap_err();
            assert!(
                matches!(err, FlagError::CudaGraph(_)) && err.to_string().contains(says),
                "{more:?}: {err}"
            );
        }
        for device in ["auto", "cuda"] {
            let c = graph(&["--device", device]).unwrap();
            assert!(c.engines.options.ort.cuda.graph, "{device}");
        }
        let c = config(&["--io-binding", "true"]).unwrap();
        assert!(c.engines.options.ort.bound_io && !c.engines.options.ort.cuda.graph);
    }

    #[test]
    fn explicit_model_control_open_to_the_network_needs_a_token_or_the_operators_word() {
        let explicit = ["--model-control-mode", "explicit"];
        // The defaults listen on every address: refused, naming the address.
        assert_eq!(
            config(&explicit).unwrap_err(),
            FlagError::OpenModelControl("0.0.0.0:8001".into())
        );
        let http_open = [&explicit[..], &["--grpc-addr", "127.0.0.1:8001"]].concat();
        assert_eq!(
            config(&http_open).unwrap_err(),
            FlagError::OpenModelControl("0.0.0.0:8000".into())
        );
        let loopback = [
            &explicit[..],
            &["--grpc-addr", "[::1]:8001", "--http-addr", "localhost:8000"],
        ]
        .concat();
        assert!(config(&loopback).is_ok());
        assert!(config(&[&explicit[..], &["--auth-token", "t"]].concat()).is_ok());
        let allowed = [&explicit[..], &["--allow-unauthenticated-model-control"]].concat();
        assert!(config(&allowed).is_ok());
        // poll and none modes have no control calls to guard.
        assert!(config(&["--model-control-mode", "poll"]).is_ok());
    }

    #[test]
    fn an_empty_token_is_refused_and_no_token_is_ever_printed() {
        let empty = Args::try_parse_from(["rir-serve", "--auth-token", ""]).unwrap_err();
        assert!(empty.to_string().contains("token is empty"), "{empty}");
        let c = config(&[
            "--auth-token",
            "s3cret-abc",
            "--metrics-token",
            "m3trics-xyz",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret-abc") && !shown.contains("m3trics-xyz"),
            "{shown}"
        );
        let args = Args::try_parse_from(["rir-serve", "--auth-token", "s3cret-abc"]).unwrap();
        assert!(!format!("{args:?}").contains("s3cret-abc"));
    }
}

//! The request path, once for every front end: lookup, validation, the
//! batcher, statistics, and what a response holds. The gRPC handlers
//! ([`crate::grpc`]) and the HTTP routes ([`crate::http`]) only turn their
//! protocol into these calls and back; no rule lives in them.
//!
//! - this file: the [`Core`], readiness, and the calls that describe the
//!   server and its models (metadata, configuration, statistics, the
//!   repository);
//! - [`infer`]: ModelInfer, in protocol-neutral types;
//! - [`classify`]: classification of encoded images;
//! - `live`: what the live view samples, and its report.

mod budget;
mod classify;
mod infer;
mod live;
mod offload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rir_contract::Datatype;
use rir_contract::repository::PLATFORM;

pub use budget::{Budget, Share};
pub use classify::{Classified, Label};
pub use infer::{InferRequest, InferResult, OutputData, OutputTensor, RequestedOutput};
pub use offload::Offload;

use crate::error::ServeError;
use crate::live::LiveView;
use crate::protocol::{
    BatchStatistics, ConfigInput, ConfigOutput, DynamicBatching, EXTENSIONS, IndexEntry,
    InstanceGroup, ModelConfig, ModelMetadata, ModelStatistics, SERVER_NAME, ServerMetadata,
    StatisticDuration, TensorMetadata,
};
use crate::registry::{ModelVersion, Models, Registry, VersionState};
use crate::reload::Controller;
use crate::scan::ModelDescriptor;
use crate::tensors::ImageLimits;
use crate::trace::{RequestTrace, Tracing};

/// How requests are handled, whatever their protocol.
#[derive(Debug, Clone, Default)]
pub struct RequestPolicy {
    /// Model that classification uses when the request names none (None:
    /// the first model served).
    pub(crate) default_model: Option<String>,
    /// Refuse FP32 inputs holding NaN or infinite values (INVALID_ARGUMENT)
    /// instead of running them, as Triton does, through the model.
    pub(crate) reject_nonfinite: bool,
    /// Bounds on encoded images.
    pub(crate) image_limits: ImageLimits,
    /// Most images decoded at once on blocking threads (0: one per CPU).
    pub(crate) max_decodes: usize,
    /// Requests that may wait for one of those threads.
    pub(crate) max_decode_queue: usize,
    /// Bytes requests in flight may hold together ([`Budget`]).
    pub(crate) max_inflight_bytes: usize,
    /// The deadline of a request that carries none (HTTP requests never
    /// do): past it, a request still queued is answered DEADLINE_EXCEEDED
    /// and not run. None: such requests wait as long as it takes.
    pub(crate) default_timeout: Option<Duration>,
}

/// What every front end shares: the served models, the controller that
/// changes them, readiness and the request policy.
pub struct Core {
    /// The served models (the controller swaps its snapshot).
    registry: Arc<Registry>,
    /// Loads, unloads and polls the repository.
    control: Controller,
    /// False before the front ends listen and once shutdown begins; only
    /// the server's lifecycle ([`crate::app`]) sets it.
    ready: AtomicBool,
    /// How requests are handled.
    policy: RequestPolicy,
    /// Blocking work of requests (images, large REST bodies), bounded.
    offload: Offload,
    /// The bytes requests in flight may hold, for the whole process.
    budget: Budget,
    /// Where request spans go, when traces are exported.
    tracing: Option<Tracing>,
    /// The web page's charts: samples while someone watches.
    live: LiveView,
}

impl Core {
    /// A core serving what `control`'s registry holds, tracing requests
    /// with `tracing` when given, holding requests to `budget` and their
    /// blocking work to `offload`. It starts not ready.
    pub fn new(
        control: Controller,
        policy: RequestPolicy,
        tracing: Option<Tracing>,
        budget: Budget,
        offload: Offload,
    ) -> Self {
        Core {
            registry: control.registry().clone(),
            control,
            ready: AtomicBool::new(false),
            policy,
            offload,
            budget,
            tracing,
            live: LiveView::new(),
        }
    }

    /// The process's budget of request bytes in flight.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Runs a request's CPU-heavy `job` off the async workers (bounded,
    /// under the request's deadline or the server's default).
    pub(crate) async fn offload<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServeError> {
        self.offload.run(self.deadline(deadline), job).await
    }

    /// The tracer, when traces are exported.
    pub(crate) fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    /// The caller's trace context from a request's headers (gRPC metadata
    /// or HTTP), read only when traces are exported.
    pub(crate) fn trace_parent(&self, headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
        self.tracing.as_ref().map(|_| Tracing::parent_of(headers))
    }

    /// The server span of a request to `model`, if it is sampled.
    fn trace_request(
        &self,
        name: &'static str,
        parent: Option<&opentelemetry::Context>,
        model: &str,
        version: &str,
    ) -> Option<RequestTrace> {
        let tracing = self.tracing.as_ref()?;
        let attributes = || {
            vec![
                opentelemetry::KeyValue::new("rir.model", crate::trace::clip(model)),
                opentelemetry::KeyValue::new("rir.model_version", crate::trace::clip(version)),
            ]
        };
        let root = opentelemetry::Context::new();
        tracing.request(name, parent.unwrap_or(&root), attributes)
    }

    /// The models served now. Hold it for the length of a request: a
    /// reload swaps in a new snapshot and leaves this one to finish.
    pub fn models(&self) -> Arc<Models> {
        self.registry.snapshot()
    }

    /// Whether the server takes requests (warm, not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks the server ready or not: the lifecycle's call, when the front
    /// ends listen and when shutdown begins.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether a model version serves (and the server with it). An
    /// unknown model is simply not ready, as in Triton, so stock clients
    /// get `false` and not an error.
    pub fn model_ready(&self, name: &str, version: &str) -> bool {
        self.models()
            .get(name, version)
            .is_ok_and(|s| s.ready() && self.is_ready())
    }

    /// ServerMetadata.
    pub(crate) fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: SERVER_NAME,
            version: env!("CARGO_PKG_VERSION"),
            extensions: EXTENSIONS.to_vec(),
        }
    }

    /// `e` as a client may see it: the server's paths relative to the
    /// repository (never the server's disk layout), the message cut short.
    pub(crate) fn public(&self, e: ServeError) -> ServeError {
        e.map_message(|m| self.relative(m))
    }

    /// `text` with the repository's folder taken off every path under it.
    fn relative(&self, text: String) -> String {
        let root = self.control.root().display().to_string();
        let root = root.trim_end_matches('/');
        if root.is_empty() || !text.contains(root) {
            return crate::error::clip(&text, crate::error::MAX_MESSAGE);
        }
        let text = text.replace(&format!("{root}/"), "").replace(root, ".");
        crate::error::clip(&text, crate::error::MAX_MESSAGE)
    }

    /// ModelMetadata.
    pub(crate) fn model_metadata(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelMetadata, ServeError> {
        let models = self.models();
        let (_, d) = loadable(&models, name, version).map_err(|e| self.public(e))?;
        let versions = models
            .by_name
            .get(name)
            .map(|v| v.iter().map(|s| s.version.to_string()).collect())
            .unwrap_or_default();
        let [c, h, w] = d.chw;
        let tensor = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.to_string(),
            datatype: Datatype::Fp32,
            shape,
        };
        Ok(ModelMetadata {
            name: d.name.clone(),
            versions,
            platform: PLATFORM,
            inputs: vec![tensor(&d.input, vec![-1, c as i64, h as i64, w as i64])],
            outputs: d
                .outputs
                .iter()
                .zip(&d.output_widths)
                .map(|(n, k)| tensor(n, vec![-1, *k as i64]))
                .collect(),
        })
    }

    /// ModelConfig.
    pub(crate) fn model_config(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelConfig, ServeError> {
        let models = self.models();
        let (v, d) = loadable(&models, name, version)?;
        let batcher = match &v.state {
            VersionState::Ready { batcher, .. } => Some(batcher),
            VersionState::Unavailable { .. } => None,
        };
        let max_batch_size = batcher.map_or(0, |b| b.config.max_batch());
        let dynamic_batching = batcher.map(|b| DynamicBatching {
            preferred_batch_size: b.config.buckets.sizes().to_vec(),
            max_queue_delay_microseconds: b.config.max_delay.as_micros() as u64,
        });
        let instance_group = batcher
            .map(|b| InstanceGroup {
                count: b.instances(),
            })
            .into_iter()
            .collect();
        let [c, h, w] = d.chw;
        let fp32 = Datatype::Fp32.config_name();
        Ok(ModelConfig {
            name: d.name.clone(),
            platform: PLATFORM,
            backend: v.engine,
            max_batch_size,
            input: vec![ConfigInput {
                name: d.input.clone(),
                data_type: fp32,
                format: "FORMAT_NCHW",
                dims: vec![c as i64, h as i64, w as i64],
            }],
            output: d
                .outputs
                .iter()
                .zip(&d.output_widths)
                .map(|(n, k)| ConfigOutput {
                    name: n.clone(),
                    data_type: fp32,
                    dims: vec![*k as i64],
                })
                .collect(),
            dynamic_batching,
            instance_group,
        })
    }

    /// Statistics of one model version, or of every version of every model
    /// when `name` is empty.
    pub fn statistics(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<ModelStatistics>, ServeError> {
        let models = self.models();
        let versions: Vec<(&String, &Arc<ModelVersion>)> = if name.is_empty() {
            models.versions().collect()
        } else {
            let v = models.get(name, version)?;
            let (name, _) = models
                .by_name
                .get_key_value(name)
                .ok_or_else(|| ServeError::NotFound(name.to_string()))?;
            vec![(name, v)]
        };
        Ok(versions
            .into_iter()
            .map(|(name, v)| statistics_of(name, v))
            .collect())
    }

    /// Every model version served, and every model on disk not loaded;
    /// only ready versions when `ready_only`.
    pub(crate) fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let mut index = self.control.index(ready_only);
        for e in &mut index {
            e.reason = self.relative(std::mem::take(&mut e.reason));
        }
        index
    }

    /// Loads model `name`, or reloads it when it is loaded (explicit model
    /// control). `parameters` are the names of the call's load parameters:
    /// none is supported, so any is INVALID_ARGUMENT, over either protocol.
    pub async fn load_model<'a>(
        &self,
        name: &str,
        mut parameters: impl Iterator<Item = &'a str>,
    ) -> Result<(), ServeError> {
        if let Some(key) = parameters.next() {
            return Err(ServeError::InvalidArgument(format!(
                "load parameter `{key}` is not supported; the model loads from the repository as it is"
            )));
        }
        self.control.load(name).await.map_err(|e| self.public(e))
    }

    /// Stops serving model `name` (explicit model control); requests
    /// already running on it finish.
    pub async fn unload_model(&self, name: &str) -> Result<(), ServeError> {
        self.control.unload(name).await.map_err(|e| self.public(e))
    }

    /// Rescans the repository now and follows what changed (what poll mode
    /// does on every tick).
    pub async fn poll_repository(&self) {
        self.control.poll_once().await;
    }

    /// INVALID_ARGUMENT for a request its front end could not read (bad
    /// JSON, inconsistent tensors), counted as a failure of the model it
    /// names when that model exists.
    pub(crate) fn invalid_request(
        &self,
        model: &str,
        version: &str,
        message: String,
    ) -> ServeError {
        match self.models().get(model, version) {
            Ok(v) => invalid(v, message),
            Err(_) => ServeError::InvalidArgument(message),
        }
    }

    /// The client's deadline, or the server's default for requests without one.
    fn deadline(&self, given: Option<Instant>) -> Option<Instant> {
        given.or_else(|| self.policy.default_timeout.map(|d| Instant::now() + d))
    }
}

/// A version whose model file could be read (ready or not), with its description.
fn loadable<'a>(
    models: &'a Models,
    name: &str,
    version: &str,
) -> Result<(&'a ModelVersion, &'a ModelDescriptor), ServeError> {
    let v = models.get(name, version)?;
    let desc = v.desc().ok_or_else(|| {
        ServeError::Unavailable(format!(
            "model `{name}` is not loadable: {}",
            v.reason().unwrap_or_else(|| "unknown error".into())
        ))
    })?;
    Ok((v, desc))
}

/// INVALID_ARGUMENT with `message`, counted in the version's statistics as
/// a failure that never reached the engine.
pub(crate) fn invalid(v: &ModelVersion, message: String) -> ServeError {
    v.stats.record_failure("InvalidArgument", Duration::ZERO);
    ServeError::InvalidArgument(message)
}

/// The statistics of version `v` of model `name`.
fn statistics_of(name: &str, v: &ModelVersion) -> ModelStatistics {
    let s = v.stats.snapshot();
    ModelStatistics {
        name: name.to_string(),
        version: v.version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: s.requests,
        batch_stats: s
            .batches
            .iter()
            .map(|(size, d)| BatchStatistics {
                batch_size: *size as u64,
                compute_input: StatisticDuration::default(),
                compute_infer: *d,
                compute_output: StatisticDuration::default(),
            })
            .collect(),
    }
}

//! The request path, once for every front end: lookup, validation, the
//! batcher, statistics, and what a response holds. The gRPC handlers
//! ([`crate::service`]) and the HTTP routes ([`crate::http`]) only turn
//! their protocol into these types and back; no rule lives in them.
//!
//! The metadata, configuration and statistics types serialize to the
//! KServe v2 / Triton REST JSON as they are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::batcher::{Batcher, Job, JobError, JobOutput, SubmitError};
use crate::control::Repository;
use crate::error::ServeError;
use crate::models::{Models, Slot, SlotState};
use crate::repository::ModelDescriptor;
pub use crate::stats::InferStatistics;
use crate::stats::{Duration2, RequestTimes};
use crate::tensors::{self, Batch, ImageLimits, TensorInput};

/// Server name reported by ServerMetadata.
pub const SERVER_NAME: &str = "rir";

/// The platform every served model reports (Triton's name for ONNX models).
pub const PLATFORM: &str = "onnxruntime_onnx";

/// The protocol extensions both front ends implement.
pub const EXTENSIONS: [&str; 4] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
];

/// What every front end shares: the models and the server's settings.
pub struct Core {
    /// The served models: a snapshot that a reload replaces whole.
    pub(crate) models: RwLock<Arc<Models>>,
    /// Where models reload from, when they can.
    pub(crate) repository: Option<Repository>,
    /// False before warm-up ends and once shutdown begins.
    pub ready: AtomicBool,
    /// Model that classification uses when the request names none (None:
    /// the first model served).
    pub default_model: Option<String>,
    /// Refuse FP32 inputs holding NaN or infinite values (INVALID_ARGUMENT)
    /// instead of running them, as Triton does, through the model.
    pub reject_nonfinite: bool,
    /// Bounds on encoded images.
    pub image_limits: ImageLimits,
    /// The deadline of requests that carry none.
    pub default_timeout: Option<std::time::Duration>,
    /// Images being decoded at once, at most: decoding runs on blocking
    /// threads, never on the async workers, and takes a permit each.
    decoders: tokio::sync::Semaphore,
}

/// The server's settings that shape how requests are handled.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Model that classification uses when the request names none (None:
    /// the first model served).
    pub default_model: Option<String>,
    /// Refuse FP32 inputs holding NaN or infinite values.
    pub reject_nonfinite: bool,
    /// Bounds on encoded images.
    pub image_limits: ImageLimits,
    /// Most images decoded at once (0: one per CPU).
    pub max_decodes: usize,
    /// The deadline of a request that carries none (HTTP requests never
    /// do): past it, a request still queued is answered DEADLINE_EXCEEDED
    /// and not run. None: such requests wait as long as it takes.
    pub default_timeout: Option<std::time::Duration>,
}

/// ServerMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: &'static str,
    /// Server version.
    pub version: &'static str,
    /// Protocol extensions.
    pub extensions: Vec<&'static str>,
}

/// One tensor in ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// KServe datatype name.
    pub datatype: &'static str,
    /// Shape, `-1` for the batch.
    pub shape: Vec<i64>,
}

/// ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Every version of the model in the repository.
    pub versions: Vec<String>,
    /// Always [`PLATFORM`].
    pub platform: &'static str,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// One input in ModelConfig (Triton's `ModelInput`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInput {
    /// Input name.
    pub name: String,
    /// Triton's data type name (`TYPE_FP32`).
    pub data_type: &'static str,
    /// Triton's format name (`FORMAT_NCHW`).
    pub format: &'static str,
    /// Dimensions without the batch.
    pub dims: Vec<i64>,
}

/// One output in ModelConfig (Triton's `ModelOutput`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOutput {
    /// Output name.
    pub name: String,
    /// Triton's data type name.
    pub data_type: &'static str,
    /// Dimensions without the batch.
    pub dims: Vec<i64>,
}

/// ModelConfig: the subset of Triton's model configuration that describes
/// a served RiR model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// Always [`PLATFORM`].
    pub platform: &'static str,
    /// The engine serving it (`onnxruntime`, `tract`).
    pub backend: String,
    /// Most images per request and per engine call (0 when not ready).
    pub max_batch_size: usize,
    /// Inputs.
    pub input: Vec<ConfigInput>,
    /// Outputs.
    pub output: Vec<ConfigOutput>,
}

/// Statistics of one batch size (Triton's `InferBatchStatistics`).
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatistics {
    /// Images in the batch.
    pub batch_size: u64,
    /// Not measured per batch: zero.
    pub compute_input: Duration2,
    /// Engine executions at this size and their time.
    pub compute_infer: Duration2,
    /// Not measured per batch: zero.
    pub compute_output: Duration2,
}

/// Statistics of one model version (Triton's `ModelStatistics`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatistics {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Last inference, milliseconds since the Unix epoch.
    pub last_inference: u64,
    /// Images inferred.
    pub inference_count: u64,
    /// Engine executions.
    pub execution_count: u64,
    /// Per-request statistics.
    pub inference_stats: InferStatistics,
    /// Per-batch-size statistics.
    pub batch_stats: Vec<BatchStatistics>,
}

/// An output the client asked for, by name, and whether as classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// The classification extension: the top this many as strings.
    pub classification: Option<usize>,
}

/// An inference request in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct InferRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// Version (empty: the latest).
    pub version: &'a str,
    /// The inputs as received.
    pub inputs: Vec<TensorInput<'a>>,
    /// Requested outputs (empty: all, as tensors).
    pub outputs: Vec<RequestedOutput>,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
}

/// Values of one output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    /// Float values, row-major.
    Fp32(Vec<f32>),
    /// Strings (the classification extension).
    Bytes(Vec<Vec<u8>>),
}

impl OutputData {
    /// KServe datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            OutputData::Fp32(_) => "FP32",
            OutputData::Bytes(_) => "BYTES",
        }
    }

    /// The values in the KServe binary layout: little-endian floats, or
    /// each string as a 4-byte little-endian length and its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            OutputData::Fp32(v) => rir_proto::raw::f32_bytes(v),
            OutputData::Bytes(items) => tensors::bytes_raw(items),
        }
    }
}

/// One output tensor of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Output name.
    pub name: String,
    /// Shape, batch first.
    pub shape: Vec<i64>,
    /// Values.
    pub data: OutputData,
}

/// An inference response in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct InferResult {
    /// Model name.
    pub model_name: String,
    /// Version that answered.
    pub model_version: String,
    /// The outputs, in the order asked for.
    pub outputs: Vec<OutputTensor>,
}

/// One label of a classification.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    /// Class index.
    pub index: u32,
    /// Class name (the index as text when the model has no names).
    pub name: String,
    /// Probability.
    pub probability: f32,
}

/// The answer to a classification of encoded images.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// Model name.
    pub model_name: String,
    /// Version that answered.
    pub model_version: String,
    /// The best labels of each image, best first.
    pub results: Vec<Vec<Label>>,
}

/// The ready parts of a slot, or why it cannot serve.
fn serving<'a>(
    slot: &'a Slot,
    name: &str,
) -> Result<(&'a ModelDescriptor, &'a Batcher), ServeError> {
    match &slot.state {
        SlotState::Ready { desc, batcher } => Ok((desc, batcher)),
        SlotState::Unavailable { reason, .. } => Err(ServeError::Unavailable(format!(
            "model `{name}` version {} is not ready: {reason}",
            slot.version
        ))),
    }
}

/// INVALID_ARGUMENT with `message`, counted in the model's statistics as a
/// failure that never reached the engine.
fn invalid(slot: &Slot, message: String) -> ServeError {
    slot.stats.record_failure("InvalidArgument", Duration::ZERO);
    ServeError::InvalidArgument(message)
}

impl Core {
    /// A core serving `models`, reloading from `repository` when given.
    /// It starts not ready: set [`Core::ready`] once the front ends listen.
    pub fn new(models: Models, repository: Option<Repository>, settings: Settings) -> Self {
        let decodes = match settings.max_decodes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Core {
            models: RwLock::new(Arc::new(models)),
            repository,
            ready: AtomicBool::new(false),
            default_model: settings.default_model,
            reject_nonfinite: settings.reject_nonfinite,
            image_limits: settings.image_limits,
            default_timeout: settings.default_timeout,
            decoders: tokio::sync::Semaphore::new(decodes),
        }
    }

    /// The models served now. Hold it for the length of a request: a
    /// reload swaps in a new snapshot and leaves this one to finish.
    pub fn models(&self) -> Arc<Models> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the server takes requests (warm, not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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
    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: SERVER_NAME,
            version: env!("CARGO_PKG_VERSION"),
            extensions: EXTENSIONS.to_vec(),
        }
    }

    /// A slot whose model file could be read (ready or not), with its description.
    fn loadable<'a>(
        models: &'a Models,
        name: &str,
        version: &str,
    ) -> Result<(&'a Slot, &'a ModelDescriptor), ServeError> {
        let slot = models.get(name, version)?;
        let desc = slot.desc().ok_or_else(|| {
            ServeError::Unavailable(format!(
                "model `{name}` is not loadable: {}",
                slot.reason().unwrap_or("unknown error")
            ))
        })?;
        Ok((slot, desc))
    }

    /// ModelMetadata.
    pub fn model_metadata(&self, name: &str, version: &str) -> Result<ModelMetadata, ServeError> {
        let models = self.models();
        let (_, d) = Self::loadable(&models, name, version)?;
        let versions = models
            .by_name
            .get(name)
            .map(|v| v.iter().map(|s| s.version.to_string()).collect())
            .unwrap_or_default();
        let [c, h, w] = d.chw;
        Ok(ModelMetadata {
            name: d.name.clone(),
            versions,
            platform: PLATFORM,
            inputs: vec![TensorMetadata {
                name: d.input.clone(),
                datatype: "FP32",
                shape: vec![-1, c as i64, h as i64, w as i64],
            }],
            outputs: d
                .outputs
                .iter()
                .zip(&d.output_widths)
                .map(|(n, k)| TensorMetadata {
                    name: n.clone(),
                    datatype: "FP32",
                    shape: vec![-1, *k as i64],
                })
                .collect(),
        })
    }

    /// ModelConfig.
    pub fn model_config(&self, name: &str, version: &str) -> Result<ModelConfig, ServeError> {
        let models = self.models();
        let (slot, d) = Self::loadable(&models, name, version)?;
        let max_batch_size = match &slot.state {
            SlotState::Ready { batcher, .. } => batcher.config.max_batch(),
            SlotState::Unavailable { .. } => 0,
        };
        let [c, h, w] = d.chw;
        Ok(ModelConfig {
            name: d.name.clone(),
            platform: PLATFORM,
            backend: slot.engine.clone(),
            max_batch_size,
            input: vec![ConfigInput {
                name: d.input.clone(),
                data_type: "TYPE_FP32",
                format: "FORMAT_NCHW",
                dims: vec![c as i64, h as i64, w as i64],
            }],
            output: d
                .outputs
                .iter()
                .zip(&d.output_widths)
                .map(|(n, k)| ConfigOutput {
                    name: n.clone(),
                    data_type: "TYPE_FP32",
                    dims: vec![*k as i64],
                })
                .collect(),
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
        let slots: Vec<(&String, &Arc<Slot>)> = if name.is_empty() {
            models
                .by_name
                .iter()
                .flat_map(|(n, v)| v.iter().map(move |s| (n, s)))
                .collect()
        } else {
            let slot = models.get(name, version)?;
            let (name, _) = models
                .by_name
                .get_key_value(name)
                .ok_or_else(|| ServeError::NotFound(name.to_string()))?;
            vec![(name, slot)]
        };
        Ok(slots
            .into_iter()
            .map(|(name, slot)| {
                let s = slot.stats.snapshot();
                ModelStatistics {
                    name: name.clone(),
                    version: slot.version.to_string(),
                    last_inference: s.last_inference_ms,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: s.requests,
                    batch_stats: s
                        .batches
                        .iter()
                        .map(|(size, d)| BatchStatistics {
                            batch_size: *size as u64,
                            compute_input: Duration2::default(),
                            compute_infer: *d,
                            compute_output: Duration2::default(),
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// Runs one inference request: checks it against the model, queues it
    /// for batching, and shapes the outputs asked for.
    pub async fn infer(&self, r: InferRequest<'_>) -> Result<InferResult, ServeError> {
        let models = self.models();
        let slot = models.get(r.model, r.version)?;
        let (desc, batcher) = serving(slot, r.model)?;
        let bad = |m: String| invalid(slot, m);
        let input = match r.inputs.as_slice() {
            [] => {
                return Err(bad(format!(
                    "the request has no inputs; the model takes `{}`",
                    desc.input
                )));
            }
            [one] => one,
            more => {
                return Err(bad(format!(
                    "the model takes one input (`{}`), the request has {}",
                    desc.input,
                    more.len()
                )));
            }
        };
        if input.name != desc.input {
            return Err(bad(format!(
                "unknown input `{}`; the model takes `{}`",
                input.name, desc.input
            )));
        }
        let decoding = Instant::now();
        let batch = tensors::decode_input(
            input,
            desc.chw,
            batcher.config.max_batch(),
            self.reject_nonfinite,
        )
        .map_err(bad)?;
        let input_time = decoding.elapsed();
        // Requested outputs (all when none is named) and their classification counts.
        let mut wanted: Vec<(usize, Option<usize>)> = vec![];
        for o in &r.outputs {
            let k = desc
                .outputs
                .iter()
                .position(|n| *n == o.name)
                .ok_or_else(|| {
                    bad(format!(
                        "unknown output `{}`; the model has {}",
                        o.name,
                        desc.outputs.join(", ")
                    ))
                })?;
            wanted.push((k, o.classification));
        }
        if wanted.is_empty() {
            wanted = (0..desc.outputs.len()).map(|k| (k, None)).collect();
        }
        let n = batch.n;
        let out = run(slot, batcher, batch, self.deadline(r.deadline)).await?;
        let encoding = Instant::now();
        let outputs = wanted
            .into_iter()
            .map(|(k, classes)| {
                let width = desc.output_widths[k];
                let values = &out.outputs[k];
                let name = desc.outputs[k].clone();
                match classes {
                    None => OutputTensor {
                        name,
                        shape: vec![n as i64, width as i64],
                        data: OutputData::Fp32(values.clone()),
                    },
                    Some(top) => {
                        let top = top.min(width);
                        OutputTensor {
                            name,
                            shape: vec![n as i64, top as i64],
                            data: OutputData::Bytes(tensors::classification(
                                values,
                                width,
                                top,
                                &desc.class_names,
                            )),
                        }
                    }
                }
            })
            .collect();
        record_success(slot, n, decoding, input_time, &out, encoding);
        Ok(InferResult {
            model_name: desc.name.clone(),
            model_version: slot.version.to_string(),
            outputs,
        })
    }

    /// INVALID_ARGUMENT for a request its front end could not read (bad
    /// JSON, inconsistent tensors), counted as a failure of the model it
    /// names when that model exists.
    pub fn invalid_request(&self, model: &str, version: &str, message: String) -> ServeError {
        match self.models().get(model, version) {
            Ok(slot) => invalid(slot, message),
            Err(_) => ServeError::InvalidArgument(message),
        }
    }

    /// The model classification uses: `name`; when empty, the default
    /// model, else the first model served.
    pub fn classifier_name(&self, name: &str) -> Result<String, ServeError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.default_model
            .clone()
            .or_else(|| self.models().by_name.keys().next().cloned())
            .ok_or_else(|| {
                ServeError::InvalidArgument(
                    "no model name given and the server serves no model".into(),
                )
            })
    }

    /// Classifies PNG or JPEG images: decodes and resizes each to the
    /// model's input, runs them as one request, and returns the `top_k`
    /// (0: 5) labels of each.
    pub async fn classify<B: AsRef<[u8]>>(
        &self,
        name: &str,
        version: &str,
        images: &[B],
        top_k: usize,
        deadline: Option<Instant>,
    ) -> Result<Classified, ServeError> {
        let name = self.classifier_name(name)?;
        let models = self.models();
        let slot = models.get(&name, version)?;
        let (desc, batcher) = serving(slot, &name)?;
        let bad = |m: String| invalid(slot, m);
        let max_batch = batcher.config.max_batch();
        if images.is_empty() {
            return Err(bad("the request has no images".into()));
        }
        if images.len() > max_batch {
            return Err(bad(format!(
                "{} images exceed the model's max batch size {max_batch}",
                images.len()
            )));
        }
        let decoding = Instant::now();
        let mut data = Vec::with_capacity(images.len() * desc.chw.iter().product::<usize>());
        for (i, bytes) in images.iter().enumerate() {
            data.extend(
                self.decode(bytes.as_ref(), desc.chw)
                    .await
                    .map_err(|e| bad(format!("image {i}: {e}")))?,
            );
        }
        let n = images.len();
        let input_time = decoding.elapsed();
        let out = run(slot, batcher, Batch { data, n }, self.deadline(deadline)).await?;
        let encoding = Instant::now();
        // Probabilities: the `probabilities` output when the model has one,
        // else a softmax of its first output.
        let (k, probs) = match desc.outputs.iter().position(|o| o == "probabilities") {
            Some(i) => (desc.output_widths[i], out.outputs[i].clone()),
            None => (
                desc.output_widths[0],
                softmax_rows(&out.outputs[0], desc.output_widths[0]),
            ),
        };
        let top = if top_k == 0 { 5 } else { top_k };
        let results = probs
            .chunks_exact(k)
            .map(|row| {
                tensors::top_k(row, top)
                    .into_iter()
                    .map(|(i, p)| Label {
                        index: i as u32,
                        name: desc
                            .class_names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| i.to_string()),
                        probability: p,
                    })
                    .collect()
            })
            .collect();
        record_success(slot, n, decoding, input_time, &out, encoding);
        Ok(Classified {
            model_name: desc.name.clone(),
            model_version: slot.version.to_string(),
            results,
        })
    }
}

impl Core {
    /// The client's deadline, or the server's default for requests without one.
    fn deadline(&self, given: Option<Instant>) -> Option<Instant> {
        given.or_else(|| self.default_timeout.map(|d| Instant::now() + d))
    }

    /// Decodes one image: its header is read and checked here; a small
    /// image is decoded here too (it takes less time than waking a blocking
    /// thread, the common case for CIFAR- and MNIST-sized inputs), any other
    /// on a blocking thread, at most `Settings::max_decodes` at once.
    async fn decode(&self, bytes: &[u8], chw: [usize; 3]) -> Result<Vec<f32>, String> {
        let header = tensors::ImageHeader::read(bytes, &self.image_limits)?;
        if header.is_small() {
            return header.decode(bytes, chw);
        }
        let _permit = self
            .decoders
            .acquire()
            .await
            .map_err(|_| "the server is shutting down".to_string())?;
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || header.decode(&bytes, chw))
            .await
            .map_err(|e| format!("the decoder failed: {e}"))?
    }
}

/// Queues `batch` on the model's batcher and waits for its outputs,
/// recording failures in the statistics (the caller records a success once
/// it has shaped the response).
async fn run(
    slot: &Slot,
    batcher: &Batcher,
    batch: Batch,
    deadline: Option<Instant>,
) -> Result<JobOutput, ServeError> {
    let started = Instant::now();
    let fail = |e: ServeError| {
        slot.stats.record_failure(e.kind(), started.elapsed());
        e
    };
    let (tx, rx) = oneshot::channel();
    let job = Job {
        images: batch.data,
        n: batch.n,
        deadline,
        enqueued: started,
        reply: tx,
    };
    match batcher.submit(job) {
        Ok(()) => {}
        Err(SubmitError::QueueFull) => {
            return Err(fail(ServeError::QueueFull(format!(
                "the queue of this model is full ({} requests waiting); retry later",
                batcher.config.queue_capacity
            ))));
        }
        Err(SubmitError::Closed) => {
            return Err(fail(ServeError::Unavailable(
                "the server is shutting down".into(),
            )));
        }
    }
    slot.stats.set_pending(batcher.pending());
    match rx.await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(JobError::DeadlineExceeded)) => Err(fail(ServeError::DeadlineExceeded(
            "the deadline passed while the request was queued; it was not run".into(),
        ))),
        Ok(Err(JobError::Engine(e))) => {
            Err(fail(ServeError::Internal(format!("inference failed: {e}"))))
        }
        Err(_) => Err(fail(ServeError::Unavailable(
            "the model's worker stopped".into(),
        ))),
    }
}

/// Counts a success of `n` images whose handling began at `decoding`,
/// spent `input` decoding and has shaped its response since `encoding`.
fn record_success(
    slot: &Slot,
    n: usize,
    decoding: Instant,
    input: Duration,
    out: &JobOutput,
    encoding: Instant,
) {
    slot.stats.record_success(
        n,
        &RequestTimes {
            total: decoding.elapsed(),
            input,
            queue: out.queue,
            infer: out.compute,
            output: encoding.elapsed(),
        },
    );
}

fn softmax_rows(v: &[f32], k: usize) -> Vec<f32> {
    v.chunks_exact(k)
        .flat_map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|x| (x - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(move |x| x / s)
        })
        .collect()
}

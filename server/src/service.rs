//! The gRPC handlers: KServe v2 / Triton `inference.GRPCInferenceService`
//! and `rir.v1.ImageClassifier`. Every bad input is a status with a reason;
//! nothing here panics on what a client sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rir_proto::classify::{self, image_classifier_server::ImageClassifier};
use rir_proto::inference::{
    self as pb, InferParameter, InferTensorContents,
    grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice,
    model_infer_response::InferOutputTensor,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::batcher::{Job, JobError, JobOutput, SubmitError};
use crate::models::{Lookup, Models, Slot};
use crate::stats::RequestTimes;
use crate::tensors::{self, Batch};

/// Server name reported by ServerMetadata.
pub const SERVER_NAME: &str = "rir";

/// What every handler shares.
pub struct AppState {
    /// The served models.
    pub models: Models,
    /// False before warm-up ends and once shutdown begins.
    pub ready: AtomicBool,
    /// Model `Classify` uses when the request names none.
    pub default_model: Option<String>,
    /// Refuse FP32 inputs holding NaN or infinite values (INVALID_ARGUMENT)
    /// instead of running them, as Triton does, through the model.
    pub reject_nonfinite: bool,
}

/// The gRPC service object (cheap to clone).
#[derive(Clone)]
pub struct Service {
    /// Shared state.
    pub state: Arc<AppState>,
}

fn lookup<'a>(models: &'a Models, name: &str, version: &str) -> Result<&'a Slot, Status> {
    models
        .get(name, version)
        .map_err(|Lookup::NotFound(m)| Status::not_found(m))
}

/// A slot whose model file could be read (ready or not), with its description.
fn loadable<'a>(
    models: &'a Models,
    name: &str,
    version: &str,
) -> Result<(&'a Slot, &'a crate::repository::ModelDescriptor), Status> {
    let slot = lookup(models, name, version)?;
    let desc = slot.desc.as_ref().ok_or_else(|| {
        Status::unavailable(format!(
            "model `{name}` is not loadable: {}",
            slot.error.as_deref().unwrap_or("unknown error")
        ))
    })?;
    Ok((slot, desc))
}

/// INVALID_ARGUMENT with `message`, counted in the model's statistics as a
/// failure that never reached the engine.
fn invalid(slot: &Slot, message: String) -> Status {
    slot.stats.record_failure("InvalidArgument", Duration::ZERO);
    Status::invalid_argument(message)
}

fn ready_slot<'a>(models: &'a Models, name: &str, version: &str) -> Result<&'a Slot, Status> {
    let slot = lookup(models, name, version)?;
    if !slot.ready() {
        return Err(Status::unavailable(format!(
            "model `{name}` version {} is not ready: {}",
            slot.version,
            slot.error.as_deref().unwrap_or("loading")
        )));
    }
    Ok(slot)
}

/// The deadline a client set with the `grpc-timeout` header, if any.
pub fn deadline_of<T>(req: &Request<T>) -> Option<Instant> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let v: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(v * 3600),
        "M" => Duration::from_secs(v * 60),
        "S" => Duration::from_secs(v),
        "m" => Duration::from_millis(v),
        "u" => Duration::from_micros(v),
        "n" => Duration::from_nanos(v),
        _ => return None,
    };
    Some(Instant::now() + d)
}

/// Queues `batch` on `slot` and waits for its outputs, recording failures
/// in the statistics (the caller records a success once it has encoded the
/// response).
async fn infer(slot: &Slot, batch: Batch, deadline: Option<Instant>) -> Result<JobOutput, Status> {
    let started = Instant::now();
    let fail = |status: Status| {
        slot.stats
            .record_failure(&format!("{:?}", status.code()), started.elapsed());
        status
    };
    let batcher = slot
        .batcher
        .as_ref()
        .ok_or_else(|| fail(Status::unavailable("model not ready")))?;
    let (tx, rx) = oneshot::channel();
    let n = batch.n;
    let job = Job {
        images: batch.data,
        n,
        deadline,
        enqueued: started,
        reply: tx,
    };
    match batcher.try_submit(job) {
        Ok(()) => {}
        Err(SubmitError::QueueFull) => {
            return Err(fail(Status::resource_exhausted(format!(
                "the queue of this model is full ({} requests waiting); retry later",
                batcher.config.queue_capacity
            ))));
        }
        Err(SubmitError::Closed) => {
            return Err(fail(Status::unavailable("the server is shutting down")));
        }
    }
    slot.stats.set_pending(batcher.pending());
    match rx.await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(JobError::DeadlineExceeded)) => Err(fail(Status::deadline_exceeded(
            "the deadline passed while the request was queued; it was not run",
        ))),
        Ok(Err(JobError::Engine(e))) => {
            Err(fail(Status::internal(format!("inference failed: {e}"))))
        }
        Err(_) => Err(fail(Status::unavailable("the model's worker stopped"))),
    }
}

/// Counts a success of `n` images whose handling began at `decoding`,
/// spent `input` decoding and has encoded its response since `encoding`.
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

fn int_param(p: &HashMap<String, InferParameter>, key: &str) -> Result<Option<usize>, Status> {
    match p.get(key).and_then(|v| v.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) if *v > 0 => Ok(Some(*v as usize)),
        Some(other) => Err(Status::invalid_argument(format!(
            "parameter `{key}` must be a positive int64, got {other:?}"
        ))),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.ready.load(Ordering::SeqCst),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let slot = lookup(&self.state.models, &r.name, &r.version)?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: slot.ready() && self.state.ready.load(Ordering::SeqCst),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![
                "classification".into(),
                "model_configuration".into(),
                "statistics".into(),
            ],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let (_, d) = loadable(&self.state.models, &r.name, &r.version)?;
        let versions = self.state.models.by_name[&r.name]
            .iter()
            .map(|s| s.version.to_string())
            .collect();
        let [c, h, w] = d.chw;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: d.name.clone(),
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: vec![pb::model_metadata_response::TensorMetadata {
                name: d.input.clone(),
                datatype: "FP32".into(),
                shape: vec![-1, c as i64, h as i64, w as i64],
            }],
            outputs: d
                .outputs
                .iter()
                .zip(&d.output_widths)
                .map(|(n, k)| pb::model_metadata_response::TensorMetadata {
                    name: n.clone(),
                    datatype: "FP32".into(),
                    shape: vec![-1, *k as i64],
                })
                .collect(),
        }))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let (slot, d) = loadable(&self.state.models, &r.name, &r.version)?;
        let max_batch = slot.batcher.as_ref().map_or(0, |b| b.config.max_batch());
        let [c, h, w] = d.chw;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: d.name.clone(),
                platform: "onnxruntime_onnx".into(),
                backend: slot.engine.clone(),
                max_batch_size: max_batch as i32,
                input: vec![pb::ModelInput {
                    name: d.input.clone(),
                    data_type: pb::DataType::TypeFp32 as i32,
                    format: pb::model_input::Format::Nchw as i32,
                    dims: vec![c as i64, h as i64, w as i64],
                }],
                output: d
                    .outputs
                    .iter()
                    .zip(&d.output_widths)
                    .map(|(n, k)| pb::ModelOutput {
                        name: n.clone(),
                        data_type: pb::DataType::TypeFp32 as i32,
                        dims: vec![*k as i64],
                        label_filename: String::new(),
                    })
                    .collect(),
            }),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let slots: Vec<(&String, &Slot)> = if r.name.is_empty() {
            self.state
                .models
                .by_name
                .iter()
                .flat_map(|(n, v)| v.iter().map(move |s| (n, s)))
                .collect()
        } else {
            let slot = lookup(&self.state.models, &r.name, &r.version)?;
            let name = self
                .state
                .models
                .by_name
                .keys()
                .find(|k| **k == r.name)
                .ok_or_else(|| Status::not_found(r.name.clone()))?;
            vec![(name, slot)]
        };
        let dur = |d: crate::stats::Duration2| {
            Some(pb::StatisticDuration {
                count: d.count,
                ns: d.ns,
            })
        };
        let model_stats = slots
            .into_iter()
            .map(|(name, slot)| {
                let s = slot.stats.snapshot();
                pb::ModelStatistics {
                    name: name.clone(),
                    version: slot.version.to_string(),
                    last_inference: s.last_inference_ms,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: Some(pb::InferStatistics {
                        success: dur(s.success),
                        fail: dur(s.fail),
                        queue: dur(s.queue),
                        compute_input: dur(s.compute_input),
                        compute_infer: dur(s.compute_infer),
                        compute_output: dur(s.compute_output),
                    }),
                    batch_stats: s
                        .batches
                        .iter()
                        .map(|(size, d)| pb::InferBatchStatistics {
                            batch_size: *size as u64,
                            compute_input: dur(Default::default()),
                            compute_infer: dur(*d),
                            compute_output: dur(Default::default()),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = deadline_of(&req);
        let r = req.into_inner();
        let slot = ready_slot(&self.state.models, &r.model_name, &r.model_version)?;
        let (desc, max_batch) = match (&slot.desc, &slot.batcher) {
            (Some(d), Some(b)) => (d, b.config.max_batch()),
            _ => return Err(Status::unavailable("model not ready")),
        };
        let bad = |m: String| invalid(slot, m);
        if r.inputs.is_empty() {
            return Err(bad(format!(
                "the request has no inputs; the model takes `{}`",
                desc.input
            )));
        }
        if r.inputs.len() != 1 {
            return Err(bad(format!(
                "the model takes one input (`{}`), the request has {}",
                desc.input,
                r.inputs.len()
            )));
        }
        let raw = !r.raw_input_contents.is_empty();
        if raw && r.raw_input_contents.len() != r.inputs.len() {
            return Err(bad(format!(
                "{} raw_input_contents for {} inputs",
                r.raw_input_contents.len(),
                r.inputs.len()
            )));
        }
        let input = &r.inputs[0];
        if input.name != desc.input {
            return Err(bad(format!(
                "unknown input `{}`; the model takes `{}`",
                input.name, desc.input
            )));
        }
        let decoding = Instant::now();
        let batch = tensors::decode_input(
            input,
            r.raw_input_contents.first().map(Vec::as_slice),
            desc.chw,
            max_batch,
            self.state.reject_nonfinite,
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
            wanted.push((
                k,
                int_param(&o.parameters, "classification")
                    .map_err(|s| bad(s.message().to_string()))?,
            ));
        }
        if wanted.is_empty() {
            wanted = (0..desc.outputs.len()).map(|k| (k, None)).collect();
        }
        let n = batch.n;
        let out = infer(slot, batch, deadline).await?;
        let encoding = Instant::now();
        let mut outputs = vec![];
        let mut raw_out = vec![];
        for (k, classes) in wanted {
            let width = desc.output_widths[k];
            let values = &out.outputs[k];
            let name = desc.outputs[k].clone();
            let (tensor, bytes) = match classes {
                None => (
                    InferOutputTensor {
                        name,
                        datatype: "FP32".into(),
                        shape: vec![n as i64, width as i64],
                        parameters: HashMap::new(),
                        contents: (!raw).then(|| InferTensorContents {
                            fp32_contents: values.clone(),
                            ..Default::default()
                        }),
                    },
                    rir_proto::raw::f32_bytes(values),
                ),
                Some(top) => {
                    let top = top.min(width);
                    let items = tensors::classification(values, width, top, &desc.class_names);
                    let bytes = tensors::bytes_raw(&items);
                    (
                        InferOutputTensor {
                            name,
                            datatype: "BYTES".into(),
                            shape: vec![n as i64, top as i64],
                            parameters: HashMap::new(),
                            contents: (!raw).then(|| InferTensorContents {
                                bytes_contents: items,
                                ..Default::default()
                            }),
                        },
                        bytes,
                    )
                }
            };
            outputs.push(tensor);
            if raw {
                raw_out.push(bytes);
            }
        }
        record_success(slot, n, decoding, input_time, &out, encoding);
        Ok(Response::new(pb::ModelInferResponse {
            model_name: desc.name.clone(),
            model_version: slot.version.to_string(),
            id: r.id,
            parameters: HashMap::new(),
            outputs,
            raw_output_contents: raw_out,
        }))
    }
}

#[tonic::async_trait]
impl ImageClassifier for Service {
    async fn classify(
        &self,
        req: Request<classify::ClassifyRequest>,
    ) -> Result<Response<classify::ClassifyResponse>, Status> {
        let deadline = deadline_of(&req);
        let r = req.into_inner();
        let name = if r.model_name.is_empty() {
            self.state.default_model.clone().ok_or_else(|| {
                Status::invalid_argument("no model_name given and the server has no default model")
            })?
        } else {
            r.model_name.clone()
        };
        let slot = ready_slot(&self.state.models, &name, &r.model_version)?;
        let (desc, max_batch) = match (&slot.desc, &slot.batcher) {
            (Some(d), Some(b)) => (d, b.config.max_batch()),
            _ => return Err(Status::unavailable("model not ready")),
        };
        let bad = |m: String| invalid(slot, m);
        if r.images.is_empty() {
            return Err(bad("the request has no images".into()));
        }
        if r.images.len() > max_batch {
            return Err(bad(format!(
                "{} images exceed the model's max batch size {max_batch}",
                r.images.len()
            )));
        }
        let decoding = Instant::now();
        let mut data = Vec::with_capacity(r.images.len() * desc.chw.iter().product::<usize>());
        for (i, bytes) in r.images.iter().enumerate() {
            data.extend(
                tensors::decode_image(bytes, desc.chw)
                    .map_err(|e| bad(format!("image {i}: {e}")))?,
            );
        }
        let n = r.images.len();
        let input_time = decoding.elapsed();
        let out = infer(slot, Batch { data, n }, deadline).await?;
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
        let top = if r.top_k == 0 { 5 } else { r.top_k as usize };
        let results = probs
            .chunks_exact(k)
            .map(|row| classify::Classification {
                labels: tensors::top_k(row, top)
                    .into_iter()
                    .map(|(i, p)| classify::Label {
                        index: i as u32,
                        name: desc
                            .class_names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| i.to_string()),
                        probability: p,
                    })
                    .collect(),
            })
            .collect();
        record_success(slot, n, decoding, input_time, &out, encoding);
        Ok(Response::new(classify::ClassifyResponse {
            model_name: desc.name.clone(),
            model_version: slot.version.to_string(),
            results,
        }))
    }
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

//! ModelInfer in protocol-neutral types: the request as a front end read
//! it, the checks against the model, the batcher, and the outputs asked for
//! (as tensors, or as the classification extension's strings).

use std::time::{Duration, Instant};

use rir_contract::Datatype;
use tokio::sync::oneshot;

use super::{Core, invalid};
use crate::batcher::{Batcher, Job, JobError, JobOutput, SubmitError};
use crate::error::{InvalidRequest, ServeError};
use crate::registry::ModelVersion;
use crate::scan::ModelDescriptor;
use crate::stats::RequestTimes;
use crate::tensors::{self, DecodedImages, TensorInput};
use crate::trace::RequestTrace;

/// An output the client asked for, by name, and whether as classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    /// Output name.
    pub(crate) name: String,
    /// The classification extension: the top this many as strings.
    pub(crate) classification: Option<usize>,
}

/// An inference request in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct InferRequest<'a> {
    /// Model name.
    pub(crate) model: &'a str,
    /// Version (empty: the latest).
    pub(crate) version: &'a str,
    /// The inputs as received.
    pub(crate) inputs: Vec<TensorInput<'a>>,
    /// Requested outputs (empty: all, as tensors).
    pub(crate) outputs: Vec<RequestedOutput>,
    /// When the client stops waiting.
    pub(crate) deadline: Option<Instant>,
    /// The caller's trace context (W3C traceparent), when traces are exported.
    pub(crate) parent: Option<opentelemetry::Context>,
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
    /// KServe datatype.
    pub(crate) fn datatype(&self) -> Datatype {
        match self {
            OutputData::Fp32(_) => Datatype::Fp32,
            OutputData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// The values in the KServe binary layout: little-endian floats, or
    /// each string as a 4-byte little-endian length and its bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
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
    pub(crate) name: String,
    /// Shape, batch first.
    pub(crate) shape: Vec<i64>,
    /// Values.
    pub(crate) data: OutputData,
}

/// An inference response in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct InferResult {
    /// Model name.
    pub(crate) model_name: String,
    /// Version that answered.
    pub(crate) model_version: String,
    /// The outputs, in the order asked for.
    pub(crate) outputs: Vec<OutputTensor>,
}

impl Core {
    /// Runs one inference request: checks it against the model, queues it
    /// for batching, and shapes the outputs asked for.
    pub(crate) async fn infer(&self, r: InferRequest<'_>) -> Result<InferResult, ServeError> {
        let trace = self.trace_request("ModelInfer", r.parent.as_ref(), r.model, r.version);
        let result = self
            .infer_traced(r, trace.as_ref())
            .await
            .map_err(|e| self.public(e));
        end_trace(trace, &result);
        result
    }

    async fn infer_traced(
        &self,
        r: InferRequest<'_>,
        trace: Option<&RequestTrace>,
    ) -> Result<InferResult, ServeError> {
        let models = self.models();
        let version = models.get(r.model, r.version)?;
        let (desc, batcher) = version.serving(r.model)?;
        let bad = |e: InvalidRequest| invalid(version, e.to_string());
        let input = the_input(&r.inputs, desc).map_err(bad)?;
        let decoding = Instant::now();
        let images = tensors::decode_input(
            input,
            desc.chw,
            batcher.config.max_batch(),
            self.policy.reject_nonfinite,
        )
        .map_err(|e| bad(e.into()))?;
        let input_time = decoding.elapsed();
        let wanted = wanted_outputs(&r.outputs, desc).map_err(bad)?;
        let n = images.n;
        let deadline = self.deadline(r.deadline);
        let out = run(version, batcher, images, deadline, trace, &self.budget).await?;
        let encoding = Instant::now();
        let outputs = wanted
            .into_iter()
            .map(|(k, classes)| output_tensor(desc, &out.outputs[k], k, n, classes))
            .collect();
        let times = Timeline {
            decoding,
            input: input_time,
            encoding,
        };
        record_success(version, n, &times, &out, trace);
        Ok(InferResult {
            model_name: desc.name.clone(),
            model_version: version.version.to_string(),
            outputs,
        })
    }
}

/// The request's one input, named as the model's.
fn the_input<'r, 'a>(
    inputs: &'r [TensorInput<'a>],
    desc: &ModelDescriptor,
) -> Result<&'r TensorInput<'a>, InvalidRequest> {
    let expected = || desc.input.clone();
    let input = match inputs {
        [] => {
            return Err(InvalidRequest::NoInputs {
                expected: expected(),
            });
        }
        [one] => one,
        more => {
            return Err(InvalidRequest::Inputs {
                expected: expected(),
                got: more.len(),
            });
        }
    };
    if input.name != desc.input {
        return Err(InvalidRequest::UnknownInput {
            got: input.name.to_string(),
            expected: expected(),
        });
    }
    Ok(input)
}

/// The outputs asked for (all when none is named), each as its index in
/// the model and its classification count.
fn wanted_outputs(
    requested: &[RequestedOutput],
    desc: &ModelDescriptor,
) -> Result<Vec<(usize, Option<usize>)>, InvalidRequest> {
    if requested.is_empty() {
        return Ok((0..desc.outputs.len()).map(|k| (k, None)).collect());
    }
    requested
        .iter()
        .map(|o| {
            let k = desc
                .outputs
                .iter()
                .position(|n| *n == o.name)
                .ok_or_else(|| InvalidRequest::UnknownOutput {
                    got: o.name.clone(),
                    outputs: desc.outputs.clone(),
                })?;
            Ok((k, o.classification))
        })
        .collect()
}

/// Output `k` of `n` images, as floats or as the top `classes` strings.
fn output_tensor(
    desc: &ModelDescriptor,
    values: &[f32],
    k: usize,
    n: usize,
    classes: Option<usize>,
) -> OutputTensor {
    let width = desc.output_widths[k];
    let name = desc.outputs[k].clone();
    match classes {
        None => OutputTensor {
            name,
            shape: vec![n as i64, width as i64],
            data: OutputData::Fp32(values.to_vec()),
        },
        Some(top) => {
            let top = top.min(width);
            let strings = tensors::classification(values, width, top, &desc.class_names);
            OutputTensor {
                name,
                shape: vec![n as i64, top as i64],
                data: OutputData::Bytes(strings),
            }
        }
    }
}

/// Queues `images` on the model's batcher and waits for its outputs,
/// recording failures in the statistics (the caller records a success once
/// it has shaped the response).
pub(super) async fn run(
    version: &ModelVersion,
    batcher: &Batcher,
    images: DecodedImages,
    deadline: Option<Instant>,
    trace: Option<&RequestTrace>,
    budget: &super::Budget,
) -> Result<JobOutput, ServeError> {
    let started = Instant::now();
    let fail = |e: ServeError| {
        version.stats.record_failure(e.kind(), started.elapsed());
        e
    };
    // The decoded tensor, and about as much of the request it came from,
    // held until the outputs are back.
    let _share = budget
        .take(images.data.len() * std::mem::size_of::<f32>() * 2)
        .map_err(fail)?;
    let (tx, rx) = oneshot::channel();
    let job = Job {
        images: images.data,
        n: images.n,
        deadline,
        enqueued: started,
        reply: tx,
        trace: trace.map(RequestTrace::handle),
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
    version.stats.set_pending(batcher.pending());
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

/// When a request's stages began, as its handler measured them.
pub(super) struct Timeline {
    /// Its handling (and decoding) began.
    pub(crate) decoding: Instant,
    /// Decoding took this long.
    pub(crate) input: Duration,
    /// Shaping the response began.
    pub(crate) encoding: Instant,
}

/// Counts a success of `n` images handled along `times`, and gives a
/// traced request its stages' spans.
pub(super) fn record_success(
    version: &ModelVersion,
    n: usize,
    times: &Timeline,
    out: &JobOutput,
    trace: Option<&RequestTrace>,
) {
    let now = Instant::now();
    version.stats.record_success(
        n,
        &RequestTimes {
            total: now - times.decoding,
            input: times.input,
            queue: out.queue,
            infer: out.compute,
            output: now - times.encoding,
        },
    );
    if let Some(t) = trace {
        t.stage("decode", times.decoding, times.decoding + times.input);
        t.stage("queue", out.ran_at - out.queue, out.ran_at);
        t.stage("encode", times.encoding, now);
    }
}

/// Ends a request's span, with the error it was answered with.
pub(super) fn end_trace<T>(trace: Option<RequestTrace>, result: &Result<T, ServeError>) {
    if let Some(t) = trace {
        t.end(result.as_ref().err().map(|e| e.to_string()).as_deref());
    }
}

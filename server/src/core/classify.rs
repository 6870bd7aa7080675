//! Classification of encoded images: each PNG or JPEG decoded and resized
//! to the model's input, all of them run as one request, and the best
//! labels of each returned with their probabilities.

use std::time::Instant;

use rir_contract::onnx;
use serde::Serialize;

use super::infer::{Timeline, end_trace, record_success, run};
use super::{Core, invalid};
use crate::error::{InvalidRequest, ServeError};
use crate::scan::ModelDescriptor;
use crate::tensors::{self, DecodedImages, ImageError, ImageHeader};
use crate::trace::RequestTrace;

/// Labels per image when a request asks for none.
const DEFAULT_TOP_K: usize = 5;

/// One label of a classification.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    /// Class index.
    pub(crate) index: u32,
    /// Class name (the index as text when the model has no names).
    pub(crate) name: String,
    /// Probability.
    pub(crate) probability: f32,
}

/// The answer to a classification of encoded images.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// Model name.
    pub(crate) model_name: String,
    /// Version that answered.
    pub(crate) model_version: String,
    /// The best labels of each image, best first.
    pub(crate) results: Vec<Vec<Label>>,
}

impl Core {
    /// The model classification uses: `name`; when empty, the default
    /// model, else the first model served.
    pub(crate) fn classifier_name(&self, name: &str) -> Result<String, ServeError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.policy
            .default_model
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
    pub(crate) async fn classify<B: AsRef<[u8]>>(
        &self,
        name: &str,
        version: &str,
        images: &[B],
        top_k: usize,
        deadline: Option<Instant>,
        parent: Option<&opentelemetry::Context>,
    ) -> Result<Classified, ServeError> {
        let trace = self.trace_request("Classify", parent, name, version);
        let result = self
            .classify_traced(name, version, images, top_k, deadline, trace.as_ref())
            .await
            .map_err(|e| self.public(e));
        end_trace(trace, &result);
        result
    }

    async fn classify_traced<B: AsRef<[u8]>>(
        &self,
        name: &str,
        version: &str,
        images: &[B],
        top_k: usize,
        deadline: Option<Instant>,
        trace: Option<&RequestTrace>,
    ) -> Result<Classified, ServeError> {
        let name = self.classifier_name(name)?;
        let models = self.models();
        let served = models.get(&name, version)?;
        let (desc, batcher) = served.serving(&name)?;
        let bad = |e: InvalidRequest| invalid(served, e.to_string());
        let max = batcher.config.max_batch();
        match images.len() {
            0 => return Err(bad(InvalidRequest::NoImages)),
            n if n > max => return Err(bad(InvalidRequest::TooManyImages { n, max })),
            _ => {}
        }
        let decoding = Instant::now();
        let mut data = Vec::with_capacity(images.len() * desc.chw.iter().product::<usize>());
        for (index, bytes) in images.iter().enumerate() {
            let pixels = self
                .decode(bytes.as_ref(), desc.chw, deadline)
                .await?
                .map_err(|source| bad(InvalidRequest::Image { index, source }))?;
            data.extend(pixels);
        }
        let n = images.len();
        let input_time = decoding.elapsed();
        let batch = DecodedImages { data, n };
        let out = run(
            served,
            batcher,
            batch,
            self.deadline(deadline),
            trace,
            &self.budget,
        )
        .await?;
        let encoding = Instant::now();
        let top = if top_k == 0 { DEFAULT_TOP_K } else { top_k };
        let results = labels(desc, &out.outputs, top);
        let times = Timeline {
            decoding,
            input: input_time,
            encoding,
        };
        record_success(served, n, &times, &out, trace);
        Ok(Classified {
            model_name: desc.name.clone(),
            model_version: served.version.to_string(),
            results,
        })
    }

    /// Decodes one image: its header is read and checked here; a small
    /// image is decoded here too (it takes less time than waking a blocking
    /// thread, the common case for CIFAR- and MNIST-sized inputs), any other
    /// on a blocking thread ([`Core::offload`]: bounded, under the
    /// request's deadline). The outer error is the server's (busy, late),
    /// the inner one the image's.
    async fn decode(
        &self,
        bytes: &[u8],
        chw: [usize; 3],
        deadline: Option<Instant>,
    ) -> Result<Result<Vec<f32>, ImageError>, ServeError> {
        let header = match ImageHeader::read(bytes, &self.policy.image_limits) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        if header.is_small() {
            return Ok(header.decode(bytes, chw));
        }
        let bytes = bytes.to_vec();
        self.offload(deadline, move || header.decode(&bytes, chw))
            .await
    }
}

/// The best `top` labels of each image: from the model's probabilities
/// output when it has one, else from a softmax of its first output.
fn labels(desc: &ModelDescriptor, outputs: &[Vec<f32>], top: usize) -> Vec<Vec<Label>> {
    let (k, probs) = match desc.outputs.iter().position(|o| o == onnx::PROBABILITIES) {
        Some(i) => (desc.output_widths[i], outputs[i].clone()),
        None => (
            desc.output_widths[0],
            softmax_rows(&outputs[0], desc.output_widths[0]),
        ),
    };
    let label = |(i, probability): (usize, f32)| Label {
        index: i as u32,
        name: desc
            .class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string()),
        probability,
    };
    probs
        .chunks_exact(k)
        .map(|row| tensors::top_k(row, top).into_iter().map(label).collect())
        .collect()
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

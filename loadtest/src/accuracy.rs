//! A data set's test split through a server's ModelInfer: the accuracy a
//! served model actually delivers, to set against the trainer's own
//! evaluation of the checkpoint it was exported from.

use rir_data::dataset::Split;
use rir_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use rir_proto::inference::{ModelConfigRequest, ModelInferRequest, ModelMetadataRequest};

use crate::LoadError;
use crate::balance::{Replicas, Tally};
use crate::connect::{Chan, kserve_client};
use crate::error::code_name;

/// Correct top-1 predictions out of the images sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accuracy {
    /// Predictions equal to the label.
    pub correct: usize,
    /// Images classified.
    pub total: usize,
}

impl Accuracy {
    /// Fraction correct.
    pub fn fraction(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

fn status(what: &str, s: tonic::Status) -> LoadError {
    LoadError::Setup(format!(
        "{what} failed with {}: {}",
        code_name(s.code()),
        s.message()
    ))
}

/// Sends every image of `split` (u8 CHW, `shape` = [C, H, W]) to `model` as
/// FP32 in [0, 1], `batch` per request, and counts top-1 hits of the
/// `logits` output (or the first output). `batch` is capped at the
/// server's max batch size when its ModelConfig gives one. The requests go
/// round-robin over `replicas` (retried on the next when one does not
/// answer), counted in `tally`.
pub async fn evaluate(
    replicas: &Replicas<Chan>,
    model: &str,
    split: &Split,
    shape: [usize; 3],
    batch: usize,
    tally: &mut Tally,
    mut progress: impl FnMut(usize),
) -> Result<Accuracy, LoadError> {
    let replicas = Replicas::new(
        replicas
            .members()
            .iter()
            .map(|m| (m.address.clone(), kserve_client(m.client.clone())))
            .collect(),
    );
    let meta = replicas
        .call(0, |c| {
            let mut c = c.clone();
            async move {
                c.model_metadata(ModelMetadataRequest {
                    name: model.into(),
                    version: String::new(),
                })
                .await
            }
        })
        .await
        .result
        .map_err(|s| status(&format!("ModelMetadata of `{model}`"), s))?
        .into_inner();
    let input = meta
        .inputs
        .first()
        .ok_or_else(|| LoadError::Setup(format!("model `{model}` declares no input")))?;
    let expected: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    if input.shape.get(1..) != Some(&expected[..]) {
        return Err(LoadError::Setup(format!(
            "model `{model}` takes {:?}, the data set's images are {:?}",
            input.shape, shape
        )));
    }
    let output = meta
        .outputs
        .iter()
        .find(|o| o.name == "logits")
        .or(meta.outputs.first())
        .ok_or_else(|| LoadError::Setup(format!("model `{model}` declares no output")))?
        .name
        .clone();
    // Stay within the server's batch limit when it states one.
    let limit = replicas
        .call(0, |c| {
            let mut c = c.clone();
            async move {
                c.model_config(ModelConfigRequest {
                    name: model.into(),
                    version: String::new(),
                })
                .await
            }
        })
        .await
        .result
        .ok()
        .and_then(|r| r.into_inner().config)
        .map_or(0, |c| c.max_batch_size.max(0) as usize);
    let batch = if limit > 0 { batch.min(limit) } else { batch }.max(1);
    let item: usize = shape.iter().product();
    let mut acc = Accuracy {
        correct: 0,
        total: 0,
    };
    for (call, start) in (0..split.len()).step_by(batch).enumerate() {
        let n = batch.min(split.len() - start);
        let pixels: Vec<f32> = split.images[start * item..(start + n) * item]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        let raw = rir_proto::raw::f32_bytes(&pixels);
        let req = ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: input.name.clone(),
                datatype: "FP32".into(),
                shape: [&[n as i64][..], &expected].concat(),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: output.clone(),
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        };
        let routed = replicas
            .call(call as u64, |c| {
                let (mut c, req) = (c.clone(), req.clone());
                async move { c.model_infer(req).await }
            })
            .await;
        tally.record(&routed);
        let resp = routed
            .result
            .map_err(|s| status("ModelInfer", s))?
            .into_inner();
        let bytes = resp
            .raw_output_contents
            .first()
            .ok_or_else(|| LoadError::Setup("the server answered without raw output".into()))?;
        let scores = rir_proto::raw::f32s(bytes);
        if n == 0 || !scores.len().is_multiple_of(n) {
            return Err(LoadError::Setup(format!(
                "{} scores for {n} images",
                scores.len()
            )));
        }
        let classes = scores.len() / n;
        for (i, row) in scores.chunks_exact(classes).enumerate() {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k);
            acc.correct += usize::from(best == split.labels[start + i] as usize);
        }
        acc.total += n;
        progress(acc.total);
    }
    Ok(acc)
}

//! A data set's test split through a server's ModelInfer: the accuracy a
//! served model actually delivers, to set against the trainer's own
//! evaluation of the checkpoint it was exported from.

use rir_contract::onnx;
use rir_data::dataset::Split;
use rir_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use rir_proto::inference::{ModelConfigRequest, ModelInferRequest, ModelMetadataRequest};

use crate::ClientError;
use crate::balance::{Replicas, Tally};
use crate::connect::{Chan, kserve_client};

/// A KServe client over one of the replicas' channels.
type Kserve = rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<Chan>;
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

fn status(what: &str, s: tonic::Status) -> ClientError {
    ClientError::Setup(format!(
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
) -> Result<Accuracy, ClientError> {
    let replicas = Replicas::new(
        replicas
            .members()
            .iter()
            .map(|m| (m.address.clone(), kserve_client(m.client.clone())))
            .collect(),
    );
    let tensors = Tensors::of(&replicas, model, shape).await?;
    let limit = max_batch(&replicas, model).await;
    let batch = if limit > 0 { batch.min(limit) } else { batch }.max(1);
    let item: usize = shape.iter().product();
    let mut acc = Accuracy {
        correct: 0,
        total: 0,
    };
    for (call, start) in (0..split.len()).step_by(batch).enumerate() {
        let n = batch.min(split.len() - start);
        let pixels = &split.images[start * item..(start + n) * item];
        let req = tensors.request(model, pixels, n);
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
        let labels = &split.labels[start..start + n];
        acc.correct += correct(&resp.raw_output_contents, labels)?;
        acc.total += n;
        progress(acc.total);
    }
    Ok(acc)
}

/// The model's input and the output whose argmax is the prediction.
struct Tensors {
    input: String,
    output: String,
    /// One image's dimensions, as the model declares them.
    item: Vec<i64>,
}

impl Tensors {
    /// Reads `model`'s metadata and checks that it takes images of `shape`.
    async fn of(
        replicas: &Replicas<Kserve>,
        model: &str,
        shape: [usize; 3],
    ) -> Result<Tensors, ClientError> {
        let meta = replicas
            .call(0, |c| {
                let mut c = c.clone();
                let request = ModelMetadataRequest {
                    name: model.into(),
                    version: String::new(),
                };
                async move { c.model_metadata(request).await }
            })
            .await
            .result
            .map_err(|s| status(&format!("ModelMetadata of `{model}`"), s))?
            .into_inner();
        let input = meta
            .inputs
            .first()
            .ok_or_else(|| ClientError::Setup(format!("model `{model}` declares no input")))?;
        let item: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        if input.shape.get(1..) != Some(&item[..]) {
            return Err(ClientError::Setup(format!(
                "model `{model}` takes {:?}, the data set's images are {:?}",
                input.shape, shape
            )));
        }
        let output = meta
            .outputs
            .iter()
            .find(|o| o.name == onnx::LOGITS)
            .or(meta.outputs.first())
            .ok_or_else(|| ClientError::Setup(format!("model `{model}` declares no output")))?;
        Ok(Tensors {
            input: input.name.clone(),
            output: output.name.clone(),
            item,
        })
    }

    /// ModelInfer of `n` u8 CHW images as FP32 in [0, 1].
    fn request(&self, model: &str, pixels: &[u8], n: usize) -> ModelInferRequest {
        let floats: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: self.input.clone(),
                datatype: rir_contract::Datatype::Fp32.name().into(),
                shape: [&[n as i64][..], &self.item].concat(),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: self.output.clone(),
                ..Default::default()
            }],
            raw_input_contents: vec![rir_proto::raw::f32_bytes(&floats)],
            ..Default::default()
        }
    }
}

/// The server's batch limit for `model`, when its ModelConfig states one (0: none).
async fn max_batch(replicas: &Replicas<Kserve>, model: &str) -> usize {
    replicas
        .call(0, |c| {
            let mut c = c.clone();
            let request = ModelConfigRequest {
                name: model.into(),
                version: String::new(),
            };
            async move { c.model_config(request).await }
        })
        .await
        .result
        .ok()
        .and_then(|r| r.into_inner().config)
        .and_then(|c| c.max_batch_size)
        .map_or(0, |m| m.max(0) as usize)
}

/// How many rows of the raw scores (one row per label) have their largest
/// score at the label.
fn correct(raw: &[Vec<u8>], labels: &[u8]) -> Result<usize, ClientError> {
    let bytes = raw
        .first()
        .ok_or_else(|| ClientError::Setup("the server answered without raw output".into()))?;
    let scores = rir_proto::raw::f32s(bytes);
    let n = labels.len();
    if n == 0 || !scores.len().is_multiple_of(n) {
        return Err(ClientError::Setup(format!(
            "{} scores for {n} images",
            scores.len()
        )));
    }
    let classes = scores.len() / n;
    let best = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k)
    };
    Ok(scores
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, label)| best(row) == **label as usize)
        .count())
}

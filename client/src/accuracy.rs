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

/// A split through the server: its accuracy and every image's scores, so
/// two servings of one model (TF32 and exact float32, say) can be compared
/// image by image.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Correct top-1 predictions.
    pub accuracy: Accuracy,
    /// Scores per image.
    pub classes: usize,
    /// Every image's scores, in the split's order, `classes` each.
    pub scores: Vec<f32>,
}

impl Evaluation {
    /// Each image's predicted class: the index of its highest score.
    pub fn predictions(&self) -> Vec<usize> {
        self.scores
            .chunks_exact(self.classes.max(1))
            .map(argmax)
            .collect()
    }

    /// `image,label,predicted,score_0,...`, a row per image: what
    /// `rir-classify --eval --outputs` writes.
    pub fn csv(&self, labels: &[u8]) -> String {
        let mut out = String::from("image,label,predicted");
        for k in 0..self.classes {
            out.push_str(&format!(",score_{k}"));
        }
        out.push('\n');
        let rows = self.scores.chunks_exact(self.classes.max(1));
        for (i, (row, label)) in rows.zip(labels).enumerate() {
            out.push_str(&format!("{i},{label},{}", argmax(row)));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        out
    }
}

/// The index of the highest value (the first of equals; 0 when empty).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(k, _)| k)
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
) -> Result<Evaluation, ClientError> {
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
    let (mut all, mut classes) = (Vec::new(), 0);
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
        let scores = scores_of(&resp.raw_output_contents, n)?;
        classes = row_width(classes, scores.len() / n)?;
        acc.correct += scores
            .chunks_exact(classes)
            .zip(labels)
            .filter(|(row, label)| argmax(row) == **label as usize)
            .count();
        acc.total += n;
        all.extend(scores);
        progress(acc.total);
    }
    Ok(Evaluation {
        accuracy: acc,
        classes,
        scores: all,
    })
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

/// Scores per image: `now`'s count when none is known yet (0), else the
/// known one, which every answer must keep (rows of a changing width
/// would run into each other).
fn row_width(known: usize, now: usize) -> Result<usize, ClientError> {
    match known {
        0 => Ok(now),
        k if k == now => Ok(k),
        k => Err(ClientError::Setup(format!(
            "the server answered {k} scores an image, then {now}"
        ))),
    }
}

/// The raw scores of `n` images: the same number for each, and at least
/// one (an empty answer would make rows of no scores).
fn scores_of(raw: &[Vec<u8>], n: usize) -> Result<Vec<f32>, ClientError> {
    let bytes = raw
        .first()
        .ok_or_else(|| ClientError::Setup("the server answered without raw output".into()))?;
    let scores = rir_proto::raw::f32s(bytes);
    if n == 0 || scores.is_empty() || !scores.len().is_multiple_of(n) {
        return Err(ClientError::Setup(format!(
            "{} scores for {n} images",
            scores.len()
        )));
    }
    Ok(scores)
}

/// Who recorded the accuracy a served model is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedBy {
    /// The trainer, evaluating the exported checkpoint.
    Trainer,
    /// The quantizer, measuring the int8 model it wrote.
    Quantization,
}

impl RecordedBy {
    /// What the figure is, in a sentence's words.
    pub fn what(self) -> &'static str {
        match self {
            RecordedBy::Trainer => "trainer's evaluation of the exported checkpoint",
            RecordedBy::Quantization => "int8 model's accuracy measured when it was quantized",
        }
    }

    /// Who it is, as the subject of a sentence.
    pub fn who(self) -> &'static str {
        match self {
            RecordedBy::Trainer => "the trainer",
            RecordedBy::Quantization => "the quantization",
        }
    }
}

/// The served accuracy beside the one its model file records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgainstRecorded {
    /// The recorded test accuracy (0 to 1).
    pub recorded: f64,
    /// Who recorded it.
    pub by: RecordedBy,
    /// The served accuracy (0 to 1).
    pub served: f64,
    /// Images the two figures are apart.
    pub apart: u64,
    /// Whether the served figure reproduces the recorded one (at most
    /// 0.1 % apart: `rir_arch::meta::reproduces_recorded_accuracy`).
    pub reproduced: bool,
}

/// A model file that records no accuracy to hold the server to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model records no trainer accuracy ({})", onnx::keys::METRICS)]
pub struct NothingRecorded;

/// Judges `served` against what `info` records: an int8 model is held to
/// the accuracy measured when it was quantized, any other to the
/// trainer's.
pub fn against_recorded(
    info: &rir_contract::ModelInfo,
    served: &Accuracy,
) -> Result<AgainstRecorded, NothingRecorded> {
    let (recorded, by) = match info.quantization().and_then(|q| q.test_accuracy) {
        Some(int8) => (int8, RecordedBy::Quantization),
        None => {
            let trained = info.recorded_metrics().and_then(|m| m.test_accuracy());
            (trained.ok_or(NothingRecorded)?, RecordedBy::Trainer)
        }
    };
    let fraction = served.fraction();
    Ok(AgainstRecorded {
        recorded,
        by,
        served: fraction,
        apart: ((fraction - recorded).abs() * served.total as f64).round() as u64,
        reproduced: rir_arch::meta::reproduces_recorded_accuracy(fraction, recorded),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn info(meta: &[(&str, &str)]) -> rir_contract::ModelInfo {
        rir_contract::ModelInfo {
            inputs: vec![],
            outputs: vec![],
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            op_types: vec![],
            opset: 17,
        }
    }

    const TRAINER: &str = r#"{"epochs": 30, "last": {"test_acc": 0.9452}}"#;

    #[test]
    fn predictions_and_the_csv_of_scores_by_hand() {
        let ev = Evaluation {
            accuracy: Accuracy {
                correct: 1,
                total: 2,
            },
            classes: 3,
            scores: vec![0.1, 0.9, 0.9, 2.0, -1.5, 0.0],
        };
        // A tie goes to the first class, as torch's argmax has it.
        assert_eq!(ev.predictions(), [1, 0]);
        assert_eq!(
            ev.csv(&[2, 0]),
            "image,label,predicted,score_0,score_1,score_2\n0,2,1,0.1,0.9,0.9\n1,0,0,2,-1.5,0\n"
        );
        // Every answer keeps the first one's scores per image.
        assert_eq!(row_width(0, 10).unwrap(), 10);
        assert_eq!(row_width(10, 10).unwrap(), 10);
        let changed = row_width(10, 11).unwrap_err().to_string();
        assert!(changed.contains("10 scores an image, then 11"), "{changed}");
        // An answer with no scores is an error, not rows of nothing.
        assert!(scores_of(&[vec![]], 2).is_err());
        assert!(scores_of(&[], 2).is_err());
        assert!(scores_of(&[rir_proto::raw::f32_bytes(&[1.0, 2.0, 3.0])], 2).is_err());
        assert_eq!(
            scores_of(&[rir_proto::raw::f32_bytes(&[1.0, 2.0])], 2).unwrap(),
            [1.0, 2.0]
        );
    }

    #[test]
    fn the_served_figure_is_held_to_the_trainer_s_within_a_thousandth() {
        let i = info(&[(onnx::keys::METRICS, TRAINER)]);
        // 9,452 of 10,000 is the recorded figure; 9,442 is 10 images (0.1 %) off.
        let at = |correct| Accuracy {
            correct,
            total: 10_000,
        };
        let j = against_recorded(&i, &at(9_442)).unwrap();
        assert_eq!(
            (j.by, j.apart, j.reproduced),
            (RecordedBy::Trainer, 10, true)
        );
        let j = against_recorded(&i, &at(9_300)).unwrap();
        assert_eq!((j.apart, j.reproduced), (152, false));
    }

    #[test]
    fn an_int8_model_is_held_to_its_own_figure() {
        let q = r#"{"method": "minmax", "images": 512, "seed": 0, "per_channel": true,
            "max_code": 127, "convolutions": 18, "tensors": 40, "source_sha256": "x",
            "test_accuracy": 0.9, "source_test_accuracy": 0.9452}"#;
        let i = info(&[
            (onnx::keys::METRICS, TRAINER),
            (onnx::keys::QUANTIZATION, q),
        ]);
        let j = against_recorded(
            &i,
            &Accuracy {
                correct: 9_000,
                total: 10_000,
            },
        )
        .unwrap();
        assert_eq!(
            (j.by, j.recorded, j.reproduced),
            (RecordedBy::Quantization, 0.9, true)
        );
        assert_eq!(
            against_recorded(
                &info(&[]),
                &Accuracy {
                    correct: 1,
                    total: 1
                }
            ),
            Err(NothingRecorded)
        );
    }
}

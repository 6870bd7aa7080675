//! What a checkpoint says about itself: the network, the data it was trained
//! on and how far training got. Stored as JSON strings in the safetensors
//! header's `__metadata__`, so any safetensors reader can see it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::network::{InputSpec, ModelSpec};

/// Version of the checkpoint layout; bumped on incompatible changes.
pub const FORMAT_VERSION: &str = "1";

const KEY_VERSION: &str = "rir.format_version";
const KEY_SPEC: &str = "rir.spec";
const KEY_DATASET: &str = "rir.dataset";
const KEY_TRAINING: &str = "rir.training";

/// Prefix of optimizer-state tensors in a checkpoint; readers of the model
/// (the exporter) skip them.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The data a model was trained on, as far as inference needs to know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// `fashion-mnist`, `cifar10` or `cifar100`.
    pub name: String,
    /// Class names in label order, from the data set's own metadata.
    pub class_names: Vec<String>,
    /// Per-channel mean of the [0, 1] pixels, subtracted before the network.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the centred pixels are divided by.
    pub std: Vec<f32>,
    /// Image shape.
    pub input: InputSpec,
}

/// Figures of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean training loss (with label smoothing, if on).
    pub train_loss: f64,
    /// Training accuracy on augmented batches.
    pub train_acc: f64,
    /// Mean test cross-entropy.
    pub test_loss: f64,
    /// Test top-1 accuracy, evaluated in float32: the figure the exported
    /// (float32) model reproduces, whatever precision trained it.
    pub test_acc: f64,
    /// Test top-1 accuracy with the bf16 convolutions the run trained with
    /// (only for `--bf16` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc_bf16: Option<f64>,
    /// Training images per second during the epoch.
    pub train_img_per_s: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
}

/// Whether an accuracy measured on the whole test split reproduces the one
/// the trainer recorded for the same weights. Float rounding in another
/// runtime (a different convolution algorithm, TF32 on a GPU) can flip a
/// near-tie or two, so a difference of up to 0.1 % of the split (10 of
/// 10,000 images) is accepted; a wrong export or preprocessing moves it by
/// far more. `rir-export verify` and `rir-classify --eval` both judge by
/// this rule.
pub fn reproduces_recorded_accuracy(measured: f64, recorded: f64) -> bool {
    (measured - recorded).abs() <= 0.001 + 1e-9
}

/// How far training got, enough to resume it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// Index of the next batch inside epoch `epoch + 1` (non-zero only when
    /// the run was interrupted mid-epoch).
    pub next_batch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
    /// The training configuration, as the trainer serialized it.
    pub config: serde_json::Value,
    /// Every finished epoch's figures.
    pub history: Vec<EpochMetrics>,
    /// What the steps of an epoch interrupted midway added up to, so that
    /// its figures after a resume count every step, as a run straight
    /// through would (absent at an epoch's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
}

/// The running sums of an epoch's training steps so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Loss times batch size, summed.
    pub loss_sum: f64,
    /// Right predictions on the augmented batches.
    pub correct: usize,
    /// Images trained on.
    pub seen: usize,
    /// Seconds of training steps.
    pub train_secs: f64,
    /// Wall seconds of the epoch so far.
    pub seconds: f64,
}

impl TrainingState {
    /// The best test accuracy so far.
    pub fn best_test_acc(&self) -> Option<f64> {
        self.history.iter().map(|m| m.test_acc).reduce(f64::max)
    }
}

/// Everything a checkpoint's metadata holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// The network.
    pub spec: ModelSpec,
    /// The data set and its normalization.
    pub dataset: DatasetInfo,
    /// Progress of training.
    pub training: TrainingState,
}

fn get<T: for<'de> Deserialize<'de>>(
    map: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, SpecError> {
    let raw = map.get(key).ok_or(SpecError::MissingMeta(key))?;
    serde_json::from_str(raw).map_err(|source| SpecError::BadMeta { key, source })
}

impl CheckpointMeta {
    /// Serializes to the string map a safetensors header carries.
    pub fn to_map(&self) -> HashMap<String, String> {
        let json = |v: serde_json::Result<String>| v.unwrap_or_else(|e| format!("\"{e}\""));
        HashMap::from([
            (KEY_VERSION.to_string(), FORMAT_VERSION.to_string()),
            (
                KEY_SPEC.to_string(),
                json(serde_json::to_string(&self.spec)),
            ),
            (
                KEY_DATASET.to_string(),
                json(serde_json::to_string(&self.dataset)),
            ),
            (
                KEY_TRAINING.to_string(),
                json(serde_json::to_string(&self.training)),
            ),
        ])
    }

    /// Parses the string map of a safetensors header and validates the spec.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, SpecError> {
        let version = map
            .get(KEY_VERSION)
            .ok_or(SpecError::MissingMeta(KEY_VERSION))?;
        if version != FORMAT_VERSION {
            return Err(SpecError::Version {
                found: version.clone(),
                expected: FORMAT_VERSION,
            });
        }
        let meta = CheckpointMeta {
            spec: get(map, KEY_SPEC)?,
            dataset: get(map, KEY_DATASET)?,
            training: get(map, KEY_TRAINING)?,
        };
        meta.spec.validate()?;
        Ok(meta)
    }
}

/// Re-exported so that crates storing a training configuration need not
/// depend on serde_json themselves.
pub use serde_json::Value as JsonValue;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Variant, preset};

    fn sample() -> CheckpointMeta {
        let input = InputSpec::new(1, 28, 28);
        CheckpointMeta {
            spec: preset::build("micro", Variant::Rir, input, 10).unwrap(),
            dataset: DatasetInfo {
                name: "fashion-mnist".into(),
                class_names: (0..10).map(|i| format!("c{i}")).collect(),
                mean: vec![0.286],
                std: vec![0.353],
                input,
            },
            training: TrainingState {
                epoch: 3,
                next_batch: 0,
                partial: None,
                step: 300,
                config: serde_json::json!({"lr": 0.1}),
                history: vec![],
            },
        }
    }

    #[test]
    fn metadata_round_trips() {
        let m = sample();
        assert_eq!(CheckpointMeta::from_map(&m.to_map()).unwrap(), m);
    }

    #[test]
    fn missing_and_garbled_entries_name_the_key() {
        let mut map = sample().to_map();
        map.insert(KEY_SPEC.into(), "{not json".into());
        let e = CheckpointMeta::from_map(&map).unwrap_err().to_string();
        assert!(e.contains("rir.spec"), "{e}");
        map.remove(KEY_DATASET);
        map.insert(
            KEY_SPEC.into(),
            serde_json::to_string(&sample().spec).unwrap(),
        );
        let e = CheckpointMeta::from_map(&map).unwrap_err().to_string();
        assert!(e.contains("rir.dataset"), "{e}");
    }
}

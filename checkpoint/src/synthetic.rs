//! Checkpoints with random weights and random, non-trivial BatchNorm
//! statistics, made in pure Rust: for `rir-export bench` and for the tests of
//! the trainer, exporter and server, which need networks of any size without
//! training one, drawn from their own generator (libtorch's global one is
//! shared by every test thread of a process).

use std::collections::BTreeMap;

use crate::{Checkpoint, Tensor};
use rir_arch::{CheckpointMeta, DatasetInfo, ModelSpec, TrainingState};
use rir_data::rng::Rng;

/// A checkpoint of `spec` with He-scaled random kernels and random BN
/// statistics (scale and variance in [0.5, 1.5), shift and mean ~ N(0, 0.3)).
pub fn random_checkpoint(spec: &ModelSpec, seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let mut tensors = BTreeMap::new();
    for (name, shape) in spec.tensors() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            (0..n)
                .map(|_| (rng.normal() * (2.0 / fan_in).sqrt()) as f32)
                .collect()
        } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
            (0..n).map(|_| (0.5 + rng.unit()) as f32).collect()
        } else {
            (0..n).map(|_| (0.3 * rng.normal()) as f32).collect()
        };
        tensors.insert(name, Tensor { shape, data });
    }
    let c = spec.input.channels;
    Checkpoint {
        meta: CheckpointMeta {
            spec: spec.clone(),
            dataset: DatasetInfo {
                name: "fashion-mnist".into(),
                class_names: (0..spec.num_classes)
                    .map(|i| format!("class {i}"))
                    .collect(),
                mean: vec![0.3; c],
                std: vec![0.35; c],
                input: spec.input,
            },
            training: TrainingState {
                epoch: 0,
                next_batch: 0,
                partial: None,
                step: 0,
                config: rir_arch::meta::JsonValue::Null,
                history: vec![],
            },
        },
        tensors,
    }
}

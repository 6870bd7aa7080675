//! Random checkpoints in pure Rust, for exporter tests that need no libtorch.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rir_checkpoint::{Checkpoint, Tensor};
use rir_data::rng::Rng;
use rir_spec::{CheckpointMeta, DatasetInfo, InputSpec, ModelSpec, TrainingState, Variant, preset};

fn normal(rng: &mut Rng) -> f64 {
    let (u, v) = (rng.unit().max(1e-12), rng.unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// A checkpoint of `spec` with He-scaled random kernels and random,
/// non-trivial BatchNorm statistics.
pub fn random_checkpoint(spec: &ModelSpec, seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let mut tensors = BTreeMap::new();
    for (name, shape) in spec.tensors() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            (0..n)
                .map(|_| (normal(&mut rng) * (2.0 / fan_in).sqrt()) as f32)
                .collect()
        } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
            (0..n).map(|_| (0.5 + rng.unit()) as f32).collect()
        } else {
            (0..n).map(|_| (0.3 * normal(&mut rng)) as f32).collect()
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
                epoch: 1,
                next_batch: 0,
                step: 1,
                config: rir_spec::meta::JsonValue::Null,
                history: vec![],
            },
        },
        tensors,
    }
}

/// The `micro` spec of a variant on 1x28x28 with 10 classes.
pub fn micro(v: Variant) -> ModelSpec {
    preset::build("micro", v, InputSpec::new(1, 28, 28), 10).unwrap()
}

/// Writes a random checkpoint of `spec` into `dir`.
pub fn write_random(dir: &Path, spec: &ModelSpec, seed: u64) -> PathBuf {
    let path = dir.join(format!("ck-{seed}.safetensors"));
    random_checkpoint(spec, seed).write_atomic(&path).unwrap();
    path
}

/// Random pixels in [0, 1].
pub fn pixels(n: usize, spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let i = spec.input;
    let mut rng = Rng::new(seed);
    (0..n * i.channels * i.height * i.width)
        .map(|_| rng.unit() as f32)
        .collect()
}

/// Python with the official `onnx` package importable, as scripts/setup.sh installs it.
pub fn python_with_onnx() -> std::process::Command {
    let mut c = std::process::Command::new("python3");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = std::env::var("RIR_PYTHONPATH")
        .unwrap_or_else(|_| root.join(".deps/py").display().to_string());
    c.env("PYTHONPATH", path);
    c
}

//! Helpers for the exporter's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rir_arch::{InputSpec, ModelSpec, Variant, preset};
pub use rir_checkpoint::synthetic::random_checkpoint;

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
    rir_exporter::measure::random_pixels(n * i.channels * i.height * i.width, seed)
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

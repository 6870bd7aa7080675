//! The bound-buffer path (`OrtOptions::bound_io`, which CUDA graphs run
//! through) on the CPU, where its buffers are host memory: every output of
//! the served model, at several batch sizes in turn and with the inputs
//! changing between runs, against tract, a second runtime.

use std::path::Path;

use rir_infer::engine::{max_abs_diff, output};
use rir_infer::{Engine, OrtEngine, OrtOptions, TractEngine};

const MODEL: &str = "../models/rir-fashion-mnist/1/model.onnx";
const PER: usize = 28 * 28;

/// `n` images of a pattern that differs with `seed`, in [0, 1].
fn images(n: usize, seed: usize) -> Vec<f32> {
    (0..n * PER)
        .map(|i| ((i * 7 + seed * 131) % 255) as f32 / 255.0)
        .collect()
}

#[test]
fn bound_buffers_give_tracts_outputs_at_every_batch_size_in_turn() {
    let path = Path::new(MODEL);
    let mut bound = OrtEngine::load(
        path,
        &OrtOptions {
            bound_io: true,
            ..OrtOptions::default()
        },
    )
    .unwrap();
    let mut tract = TractEngine::load(path).unwrap();
    // Back to a size already bound, with new images: a stale input or
    // output buffer would give the earlier run's values.
    for (step, n) in [1usize, 4, 1, 4, 3].into_iter().enumerate() {
        let x = images(n, step);
        let shape = [n, 1, 28, 28];
        let got = bound.run(&x, &shape).unwrap();
        let want = tract.run(&x, &shape).unwrap();
        assert_eq!(got.len(), 2, "logits and probabilities");
        for w in &want {
            let g = output(&got, &w.name).unwrap_or_else(|| panic!("no output {}", w.name));
            assert_eq!(g.shape, [n, 10], "{} at batch {n}", w.name);
            let diff = max_abs_diff(&g.data, &w.data);
            assert!(diff < 1e-4, "{} at batch {n}, step {step}: {diff}", w.name);
        }
    }
    // One binding per shape, made at its first run and used again after.
    assert_eq!(
        bound.bound_shapes(),
        [[1, 1, 28, 28], [4, 1, 28, 28], [3, 1, 28, 28]]
    );
}

#[test]
fn a_bound_run_with_the_wrong_number_of_values_is_an_error() {
    let mut bound = OrtEngine::load(
        Path::new(MODEL),
        &OrtOptions {
            bound_io: true,
            ..OrtOptions::default()
        },
    )
    .unwrap();
    let err = bound
        .run(&images(2, 0), &[1, 1, 28, 28])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1568 values") && err.contains("[1, 1, 28, 28]"),
        "{err}"
    );
}

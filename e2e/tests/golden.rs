//! Golden test of the exporter against the trainer: the ONNX export, run in
//! ONNX Runtime and in tract, reproduces the libtorch forward pass (eval
//! mode) of the checkpoint it came from, to 1e-5 of the largest logit, for every
//! variant, outer shortcut on and off, both stride-2 projections, and
//! non-trivial BatchNorm statistics.

use std::path::Path;

use rir_arch::{CheckpointMeta, InputSpec, ModelSpec, Projection, Variant, preset};
use rir_checkpoint::synthetic::random_checkpoint;
use rir_contract::onnx::LOGITS;
use rir_data::rng::Rng;
use rir_data::{Source, load};
use rir_exporter::{Form, Precision, export_file};
use rir_infer::engine::{max_abs_diff as max_diff, output};
use rir_infer::{Engine, OrtEngine, OrtOptions, TractEngine};
use rir_testkit::data as fixtures;
use rir_trainer::{TrainConfig, Trainer, ckpt};
use tch::{Device, Tensor};

/// Gives the trainer's network random kernels and random BatchNorm
/// statistics and affine parameters, so that folding them is actually
/// exercised (fresh BN is the identity), the same for a seed on every run.
fn randomize(t: &Trainer, seed: u64) {
    ckpt::restore(&random_checkpoint(&t.net.spec, seed), &t.vs, None).unwrap();
}

/// Logits of the libtorch model in eval mode for [0, 1] pixels.
fn torch_logits(t: &Trainer, pixels: &[f32], n: usize) -> Vec<f32> {
    let info = &t.data.info;
    let i = info.input;
    let x = Tensor::from_slice(pixels).view([
        n as i64,
        i.channels as i64,
        i.height as i64,
        i.width as i64,
    ]);
    let mean = Tensor::from_slice(&info.mean).view([1, i.channels as i64, 1, 1]);
    let std = Tensor::from_slice(&info.std).view([1, i.channels as i64, 1, 1]);
    let x = (x - mean) / std;
    let y = tch::no_grad(|| t.net.forward(&x, false)).contiguous();
    let mut out = vec![0f32; y.numel()];
    y.copy_data(&mut out, y.numel());
    out
}

fn engine_logits(e: &mut dyn Engine, pixels: &[f32], n: usize, i: InputSpec) -> Vec<f32> {
    let outs = e.run(pixels, &[n, i.channels, i.height, i.width]).unwrap();
    output(&outs, LOGITS).unwrap().data.clone()
}

fn check(name: &str, t: &Trainer, dir: &Path) {
    let spec = &t.net.spec;
    let ck_path = dir.join(format!("{name}.safetensors"));
    let meta = CheckpointMeta {
        spec: spec.clone(),
        dataset: t.data.info.clone(),
        training: t.state.clone(),
    };
    ckpt::snapshot(&t.vs, None, meta)
        .write_atomic(&ck_path)
        .unwrap();
    let i = spec.input;
    let n = 6;
    let mut rng = Rng::new(42);
    let pixels: Vec<f32> = (0..n * i.channels * i.height * i.width)
        .map(|_| rng.unit() as f32)
        .collect();
    let want = torch_logits(t, &pixels, n);
    assert!(
        want.iter().any(|v| v.abs() > 1e-2),
        "{name}: degenerate reference"
    );
    for form in [Form::Folded, Form::Unfolded] {
        let onnx = dir.join(format!("{name}-{form:?}.onnx"));
        export_file(&ck_path, &onnx, form, Precision::Fp32).unwrap();
        let ort = engine_logits(
            &mut OrtEngine::load(&onnx, &OrtOptions::default()).unwrap(),
            &pixels,
            n,
            i,
        );
        let tract = engine_logits(&mut TractEngine::load(&onnx).unwrap(), &pixels, n, i);
        // Relative to the largest logit: these reach 100-200 with random BN,
        // where one f32 step is 1e-5 and summation order alone moves 1e-4.
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let (d_ort, d_tract) = (max_diff(&ort, &want), max_diff(&tract, &want));
        assert!(
            d_ort < 1e-5 * scale,
            "{name} {form:?}: ONNX Runtime differs from libtorch by {d_ort} (largest logit {scale})"
        );
        assert!(
            d_tract < 1e-5 * scale,
            "{name} {form:?}: tract differs from libtorch by {d_tract} (largest logit {scale})"
        );
    }
}

fn trainer(spec: &ModelSpec, dir: &Path) -> Trainer {
    let data = dir.join("data");
    if !data.exists() {
        fixtures::write_fashion_mnist(&data, 64, 16, 28, true, 1).unwrap();
    }
    let ds = load(Source::FashionMnist, &data).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        lr: 0.05,
        eval_batch_size: 64,
        ..TrainConfig::default()
    };
    Trainer::new(spec, ds, cfg, Device::Cpu, &dir.join("run")).unwrap()
}

#[test]
fn every_variant_exports_to_what_libtorch_computes() {
    let dir = tempfile::tempdir().unwrap();
    let input = InputSpec::new(1, 28, 28);
    let mut k = 0;
    for v in Variant::ALL {
        for proj in [Projection::Conv, Projection::ZeroPad] {
            for outer in [true, false] {
                let mut spec = preset::build("micro", v, input, 10).unwrap();
                spec.projection = proj;
                if v == Variant::Rir {
                    spec.outer_shortcut = outer;
                } else if outer != v.default_outer_shortcut() {
                    continue;
                }
                let t = trainer(&spec, dir.path());
                randomize(&t, k);
                check(&format!("{v}-{proj:?}-outer{outer}"), &t, dir.path());
                k += 1;
            }
        }
    }
    assert_eq!(k, 10);
}

#[test]
fn a_trained_model_exports_exactly() {
    // Real BN statistics from training rather than random ones.
    let dir = tempfile::tempdir().unwrap();
    let spec = preset::build("micro", Variant::Rir, InputSpec::new(1, 28, 28), 10).unwrap();
    let mut t = trainer(&spec, dir.path());
    t.config.epochs = 2;
    t.run().unwrap();
    check("trained", &t, dir.path());
}

#[test]
fn a_masked_cifar_shaped_model_exports_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures::write_cifar(dir.path(), fixtures::Cifar::Ten, 8, 8, 1).unwrap();
    let ds = load(Source::Cifar(rir_data::cifar::Flavour::Ten), &data).unwrap();
    let mut spec = preset::build("micro", Variant::Rir, InputSpec::new(3, 32, 32), 10).unwrap();
    spec.mask = "1101".parse().unwrap();
    let t = Trainer::new(
        &spec,
        ds,
        TrainConfig {
            epochs: 1,
            batch_size: 8,
            ..TrainConfig::default()
        },
        Device::Cpu,
        &dir.path().join("run"),
    )
    .unwrap();
    randomize(&t, 9);
    check("cifar-masked", &t, dir.path());
}

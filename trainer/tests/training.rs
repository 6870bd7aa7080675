//! Training behaviour: learning, checkpoints, exact resume.

use crate::common;

use rir_arch::Variant;
use rir_checkpoint::Checkpoint;
use rir_trainer::train::{BEST, LAST, METRICS};
use rir_trainer::{Outcome, TrainConfig, Trainer, ckpt};
use tch::{Device, Kind, Reduction, Tensor};

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.05,
        eval_batch_size: 64,
        ..TrainConfig::default()
    }
}

#[test]
fn a_small_model_overfits_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(dir.path(), 32, 8);
    let spec = common::micro(Variant::Rir);
    let t = Trainer::new(&spec, data, config(1), Device::Cpu, dir.path()).unwrap();
    let mut opt =
        rir_trainer::optim::Optimizer::new(&t.vs, rir_trainer::optim::Rule::sgd(0.9, false), 0.0);
    let mut buf = vec![];
    let mut labels = vec![];
    let idx: Vec<usize> = (0..32).collect();
    rir_data::augment::fill_batch(
        &t.data.info,
        &t.data.train,
        &idx,
        rir_data::augment::Augment::NONE,
        &mut rir_data::rng::Rng::new(0),
        &mut buf,
        &mut labels,
    );
    let x = Tensor::from_slice(&buf).view([32, 1, 28, 28]);
    let y = Tensor::from_slice(&labels);
    let mut last = f64::MAX;
    for _ in 0..150 {
        let loss = t.net.forward(&x, true).cross_entropy_loss(
            &y,
            None::<Tensor>,
            Reduction::Mean,
            -100,
            0.0,
        );
        opt.zero_grad();
        loss.backward();
        opt.step(0.05);
        last = loss.double_value(&[]);
    }
    assert!(last < 0.05, "loss after 150 steps on one batch: {last}");
    let acc = t
        .net
        .forward(&x, true)
        .argmax(-1, false)
        .eq_tensor(&y)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    assert_eq!(acc, 1.0);
}

#[test]
fn training_learns_synthetic_classes_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(&dir.path().join("data"), 512, 128);
    let spec = common::micro(Variant::Rir);
    let out = dir.path().join("run");
    let mut cfg = config(3);
    cfg.crop_pad = 0;
    let mut t = Trainer::new(&spec, data, cfg, Device::Cpu, &out).unwrap();
    assert_eq!(t.run().unwrap(), Outcome::Finished);
    let best = t.state.best_test_acc().unwrap();
    assert!(
        best > 0.5,
        "test accuracy {best} on learnable synthetic data"
    );
    for f in [LAST, BEST, METRICS] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let lines = std::fs::read_to_string(out.join(METRICS)).unwrap();
    let epochs = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "epoch")
        .count();
    assert_eq!(epochs, 3);
}

fn variables(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = t.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn checkpoint_round_trips_exactly() {
    use rir_trainer::optim::OptimizerKind;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(&dir.path().join("data"), 64, 16);
    let spec = common::micro(Variant::Rir);
    // Every optimizer's buffers (and Adam's step count) come back as saved,
    // and its rule with the settings the run was given (none of them the
    // default), written out here by hand.
    use rir_trainer::optim::Rule;
    for (kind, rule) in [
        (
            OptimizerKind::Sgd,
            Rule::Sgd {
                momentum: 0.7,
                nesterov: true,
            },
        ),
        (
            OptimizerKind::Adam,
            Rule::Adam {
                beta1: 0.8,
                beta2: 0.95,
                eps: 1e-6,
            },
        ),
        (
            OptimizerKind::Rmsprop,
            Rule::RmsProp {
                alpha: 0.9,
                eps: 1e-6,
            },
        ),
    ] {
        let out = dir.path().join(format!("run-{kind:?}"));
        let cfg = TrainConfig {
            optimizer: kind,
            lr: if kind == OptimizerKind::Sgd {
                0.05
            } else {
                1e-3
            },
            momentum: 0.7,
            nesterov: true,
            beta1: 0.8,
            beta2: 0.95,
            rms_alpha: 0.9,
            eps: 1e-6,
            ..config(1)
        };
        let mut t = Trainer::new(&spec, data.clone(), cfg, Device::Cpu, &out).unwrap();
        t.run().unwrap();
        let path = out.join(LAST);
        let ck = Checkpoint::read(&path).unwrap();
        assert_eq!(ck.meta.spec, spec);
        assert_eq!(ck.meta.training.epoch, 1);
        assert_eq!(ck.meta.dataset.class_names.len(), 10);
        let other = dir.path().join(format!("other-{kind:?}"));
        let r = Trainer::resume(&path, data.clone(), Device::Cpu, &other).unwrap();
        assert_eq!(r.config.optimizer, kind);
        for ((na, a), (nb, b)) in variables(&t).iter().zip(variables(&r)) {
            assert_eq!(*na, nb);
            assert!(a.equal(&b), "{na} differs after a round trip");
        }
        assert_eq!(r.opt.rule, rule);
        assert_eq!(r.opt.steps, 4, "64 images in steps of 16");
        assert_eq!(t.opt.steps, 4);
        for (pa, pb) in t.opt.params.iter().zip(&r.opt.params) {
            assert_eq!(pa.state.len(), r.opt.rule.buffers().len());
            for (a, b) in pa.state.iter().zip(&pb.state) {
                assert!(a.equal(b), "{kind:?} state of {} differs", pa.name);
            }
        }
        // And the host copy is bit-exact too.
        let again = ckpt::snapshot(&r.vs, Some(&r.opt), ck.meta.clone());
        assert_eq!(again.tensors, ck.tensors);
    }
}

#[test]
fn a_resumed_run_continues_where_it_stopped() {
    // One libtorch thread on this test's thread: parallel reductions then
    // sum in a fixed order even while other tests compete for the cores, so
    // any difference below comes from the resume, not from scheduling.
    // (Initialization does not use libtorch's global generator, which other
    // tests draw from concurrently: see `init::init_kernels`.)
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(&dir.path().join("data"), 96, 16);
    let spec = common::micro(Variant::Rir);

    let mut straight = Trainer::new(
        &spec,
        data.clone(),
        config(2),
        Device::Cpu,
        &dir.path().join("a"),
    )
    .unwrap();
    assert_eq!(straight.run().unwrap(), Outcome::Finished);

    // Stop mid-epoch 1 (6 steps per epoch), then resume twice: once
    // mid-epoch, once at the epoch boundary.
    let b = dir.path().join("b");
    let mut first = Trainer::new(&spec, data.clone(), config(2), Device::Cpu, &b).unwrap();
    first.stop_at_step = Some(4);
    assert_eq!(first.run().unwrap(), Outcome::Interrupted);
    let ck = Checkpoint::read(&b.join(LAST)).unwrap();
    assert_eq!(
        (ck.meta.training.epoch, ck.meta.training.next_batch),
        (0, 4)
    );
    let mut second = Trainer::resume(&b.join(LAST), data.clone(), Device::Cpu, &b).unwrap();
    second.stop_at_step = Some(6);
    assert_eq!(second.run().unwrap(), Outcome::Interrupted);
    let mut third = Trainer::resume(&b.join(LAST), data, Device::Cpu, &b).unwrap();
    assert_eq!(third.run().unwrap(), Outcome::Finished);

    assert_eq!(third.state.step, straight.state.step);
    for ((name, a), (_, b)) in variables(&straight).iter().zip(variables(&third)) {
        let d = (a - &b).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{name}: resumed run differs by {d}");
    }
    let (ha, hb) = (&straight.state.history, &third.state.history);
    assert_eq!(ha.len(), hb.len());
    assert!((ha[1].test_acc - hb[1].test_acc).abs() < 1e-9);
    // The figures of the epoch stopped midway count its steps from before
    // the stop too.
    for (a, b) in ha.iter().zip(hb) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-6, "{a:?} vs {b:?}");
        assert!((a.train_acc - b.train_acc).abs() < 1e-9, "{a:?} vs {b:?}");
    }
}

#[test]
fn model_and_data_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(dir.path(), 16, 4);
    let spec = rir_arch::preset::build(
        "micro",
        Variant::Rir,
        rir_arch::InputSpec::new(3, 32, 32),
        10,
    )
    .unwrap();
    let err = Trainer::new(&spec, data, config(1), Device::Cpu, dir.path())
        .err()
        .expect("mismatch accepted")
        .to_string();
    assert!(err.contains("mismatch"), "{err}");
}

#[test]
fn a_bf16_run_records_the_fp32_accuracy_and_the_bf16_one_apart() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(&dir.path().join("data"), 256, 128);
    let spec = common::micro(Variant::Rir);
    let out = dir.path().join("run");
    let mut cfg = config(1);
    cfg.crop_pad = 0;
    cfg.precision = rir_trainer::model::Precision::Bf16;
    let mut t = Trainer::new(&spec, data, cfg, Device::Cpu, &out).unwrap();
    assert_eq!(t.run().unwrap(), Outcome::Finished);
    let m = t.state.history.last().unwrap().clone();
    assert!(
        m.test_acc_bf16.is_some(),
        "a bf16 run records its bf16 accuracy"
    );
    // The recorded figure is an exact-fp32 evaluation of these weights,
    // computed independently of the trainer's own evaluation: a forward pass
    // of the network in fp32 over the test split, argmax against labels.
    let test = std::mem::take(&mut t.data.test);
    t.net.precision = rir_trainer::model::Precision::Fp32;
    let (mut buf, mut labels) = (vec![], vec![]);
    let idx: Vec<usize> = (0..test.len()).collect();
    rir_data::augment::fill_batch(
        &t.data.info,
        &test,
        &idx,
        rir_data::augment::Augment::NONE,
        &mut rir_data::rng::Rng::new(0),
        &mut buf,
        &mut labels,
    );
    let x = Tensor::from_slice(&buf).view([test.len() as i64, 1, 28, 28]);
    let y = Tensor::from_slice(&labels);
    let mut eval = |precision| {
        t.net.precision = precision;
        let logits = tch::no_grad(|| t.net.forward(&x, false));
        let loss = logits
            .cross_entropy_loss(&y, None::<Tensor>, Reduction::Mean, -100, 0.0)
            .double_value(&[]);
        let correct = logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
        (correct as f64 / test.len() as f64, loss)
    };
    let (fp32_acc, fp32_loss) = eval(rir_trainer::model::Precision::Fp32);
    let (_, bf16_loss) = eval(rir_trainer::model::Precision::Bf16);
    // The two precisions must be told apart, or the check below proves nothing.
    assert!(
        (fp32_loss - bf16_loss).abs() > 1e-6,
        "fp32 and bf16 losses coincide: {fp32_loss} {bf16_loss}"
    );
    assert_eq!(m.test_acc, fp32_acc, "test_acc must be the fp32 evaluation");
    assert!(
        (m.test_loss - fp32_loss).abs() < 1e-6,
        "test_loss {} is not the fp32 evaluation's {fp32_loss} (bf16: {bf16_loss})",
        m.test_loss
    );
}

#[test]
fn the_init_flag_reaches_every_kernel_of_the_network() {
    // Through a trainer built from a recipe, as `rir-train train --init`
    // builds it, each kernel has the property its init promises, by hand:
    // orthogonal rows (W Wᵀ = I where a kernel has no more rows than its
    // fan-in), He-uniform within ±√(6 / fan_in).
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion(dir.path(), 16, 8);
    let spec = common::micro(Variant::Rir);
    let kernels = |init| {
        let cfg = TrainConfig { init, ..config(1) };
        let out = dir.path().join(format!("{init:?}"));
        let t = Trainer::new(&spec, data.clone(), cfg, Device::Cpu, &out).unwrap();
        t.vs.variables()
            .into_iter()
            .filter(|(_, v)| v.dim() == 4)
            .map(|(n, v)| (n, v.copy()))
            .collect::<Vec<_>>()
    };
    let mut checked = 0;
    for (name, w) in kernels(rir_trainer::init::Init::Orthogonal) {
        let out = w.size()[0];
        let rows = w.view([out, -1]);
        if out > rows.size()[1] {
            continue;
        }
        let gram = rows.matmul(&rows.tr());
        let eye = Tensor::eye(out, (Kind::Float, Device::Cpu));
        assert!(
            common::max_diff(&gram, &eye) < 1e-4,
            "{name} is not orthogonal"
        );
        checked += 1;
    }
    assert!(checked > 5, "only {checked} kernels checked");
    for (name, w) in kernels(rir_trainer::init::Init::HeUniform) {
        let fan_in = (w.numel() as i64 / w.size()[0]) as f64;
        let bound = (6.0 / fan_in).sqrt();
        let largest = w.abs().max().double_value(&[]);
        assert!(largest <= bound + 1e-6, "{name}: {largest} > {bound}");
        // And near the bound: a uniform draw of many values reaches it.
        assert!(largest > 0.8 * bound, "{name}: {largest} of {bound}");
    }
}

//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::Path;

use rir_arch::{InputSpec, ModelSpec, Variant, preset};
use rir_checkpoint::synthetic::random_checkpoint;
use rir_data::{Dataset, Source, load};
use rir_testkit::data as fixtures;
use rir_trainer::RirNet;
use tch::{Device, Kind, Tensor, nn::VarStore};

/// A Fashion-MNIST-format data set of `train` + `test` synthetic images.
pub fn fashion(dir: &Path, train: usize, test: usize) -> Dataset {
    fixtures::write_fashion_mnist(dir, train, test, 28, true, 11).unwrap();
    load(Source::FashionMnist, dir).unwrap()
}

/// `micro` spec of a variant on 1x28x28, 10 classes.
pub fn micro(v: Variant) -> ModelSpec {
    preset::build("micro", v, InputSpec::new(1, 28, 28), 10).unwrap()
}

/// Builds a network with random weights and random (non-trivial) BN
/// statistics and affine parameters, the same for a seed on every run.
pub fn random_net(spec: &ModelSpec, seed: u64) -> (VarStore, RirNet) {
    let vs = VarStore::new(Device::Cpu);
    let net = RirNet::new(&vs.root(), spec);
    rir_trainer::ckpt::restore(&random_checkpoint(spec, seed), &vs, None).unwrap();
    (vs, net)
}

/// Max |a - b| over all elements.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A random normalized input batch.
pub fn input(n: i64, spec: &ModelSpec) -> Tensor {
    let i = spec.input;
    Tensor::randn(
        [n, i.channels as i64, i.height as i64, i.width as i64],
        (Kind::Float, Device::Cpu),
    )
}

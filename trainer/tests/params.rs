//! Parameter counts of the built networks agree with the spec's arithmetic
//! and with the paper's published size.

use crate::common;

use rir_arch::preset::PRESETS;
use rir_arch::{InputSpec, Variant, preset};
use rir_trainer::RirNet;
use tch::{Device, nn::VarStore};

fn trainable(vs: &VarStore) -> usize {
    vs.trainable_variables().iter().map(|t| t.numel()).sum()
}

#[test]
fn every_preset_and_variant_has_the_counted_parameters() {
    for p in PRESETS {
        for v in Variant::ALL {
            for input in [InputSpec::new(3, 32, 32), InputSpec::new(1, 28, 28)] {
                let spec = preset::build(p.name, v, input, 10).unwrap();
                let vs = VarStore::new(Device::Cpu);
                let _net = RirNet::new(&vs.root(), &spec);
                assert_eq!(
                    trainable(&vs),
                    spec.cost().params,
                    "{} {v} {input:?}",
                    p.name
                );
            }
        }
    }
}

#[test]
fn paper_preset_has_about_nine_and_a_half_million() {
    // The paper's network: about 9.5 M parameters and 1.28 G multiply-adds per 32x32 CIFAR-10 image.
    let spec = preset::build("paper", Variant::Rir, InputSpec::new(3, 32, 32), 10).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _net = RirNet::new(&vs.root(), &spec);
    let n = trainable(&vs);
    assert!((9_450_000..9_550_000).contains(&n), "{n}");
}

#[test]
fn masked_weights_are_stored_but_not_counted() {
    let mut spec = common::micro(Variant::Rir);
    spec.mask = "1001".parse().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let net = RirNet::new(&vs.root(), &spec);
    let dead: usize = net
        .blocks
        .iter()
        .flat_map(|b| b.units.iter())
        .map(|u| {
            let m = u.mask.as_ref().expect("mask tensor");
            (u.weight.numel() as i64 - (m.sum(tch::Kind::Float).int64_value(&[]) * 9)) as usize
        })
        .sum();
    assert_eq!(trainable(&vs) - dead, spec.cost().params);
}

#[test]
fn the_variables_are_exactly_the_spec_tensors() {
    for v in Variant::ALL {
        for proj in [rir_arch::Projection::Conv, rir_arch::Projection::ZeroPad] {
            let mut spec = common::micro(v);
            spec.projection = proj;
            let vs = VarStore::new(Device::Cpu);
            let _net = RirNet::new(&vs.root(), &spec);
            let mut got: Vec<(String, Vec<usize>)> = vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.size().iter().map(|&d| d as usize).collect()))
                .collect();
            got.sort();
            let mut want = spec.tensors();
            want.sort();
            assert_eq!(got, want, "{v} {proj:?}");
        }
    }
}

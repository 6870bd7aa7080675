//! The one-convolution unit computes exactly what the four-convolution form
//! and the textbook formulations compute.

use crate::common;

use common::{input, max_diff, micro, random_net};
use rir_arch::{Projection, Shortcut, Variant};
use rir_trainer::four_conv::FourConvNet;
use rir_trainer::model::{Precision, Unit};
use tch::{Kind, Tensor};

/// An independent four-convolution evaluation of one unit, before the ReLU:
/// slices of the kernel as `W_rr, W_tr, W_rt, W_tt`, the shortcut computed
/// here from its definition, BN per stream.
fn four_conv_unit(u: &Unit, x: &Tensor, mask: [bool; 4], train: bool) -> Tensor {
    let s = &u.spec;
    let (ir, or) = (s.in_res as i64, s.out_res as i64);
    let (ic, oc) = (s.in_ch as i64, s.out_ch as i64);
    let st = s.stride as i64;
    let conv = |x: &Tensor, w: &Tensor| x.conv2d(w, None::<Tensor>, [st, st], [1, 1], [1, 1], 1);
    let w = &u.weight;
    let r = x.narrow(1, 0, ir);
    let t = x.narrow(1, ir, ic - ir);
    let n = x.size()[0];
    let h = (x.size()[2] - 1) / st + 1;
    let zeros = |c: i64| Tensor::zeros([n, c, h, h], (Kind::Float, x.device()));
    let mut r_out = zeros(or);
    let mut t_out = zeros(oc - or);
    let blocks = [
        (0, or, 0, ir),
        (0, or, ir, ic - ir),
        (or, oc - or, 0, ir),
        (or, oc - or, ir, ic - ir),
    ];
    for (k, (o0, on, i0, inn)) in blocks.into_iter().enumerate() {
        if !mask[k] || on == 0 || inn == 0 {
            continue;
        }
        let wk = w.narrow(0, o0, on).narrow(1, i0, inn);
        let src = if k % 2 == 0 { &r } else { &t };
        let y = conv(src, &wk);
        if k < 2 { r_out += y } else { t_out += y }
    }
    if let Some(sc) = s.shortcut {
        let add = match sc {
            Shortcut::Identity => r.shallow_clone(),
            Shortcut::Conv { .. } => {
                let ops = u.shortcut.as_ref().unwrap();
                let rir_trainer::model::ShortcutOp::Conv { weight, .. } = ops else {
                    panic!()
                };
                r.conv2d(weight, None::<Tensor>, [st, st], [0, 0], [1, 1], 1)
            }
            Shortcut::ZeroPad {
                in_res, out_res, ..
            } => {
                let sub = r.slice(2, 0, None, st).slice(3, 0, None, st);
                let pad = Tensor::zeros(
                    [n, (out_res - in_res) as i64, h, h],
                    (Kind::Float, x.device()),
                );
                Tensor::cat(&[sub, pad], 1)
            }
        };
        r_out += add;
    }
    let bn = &u.bn;
    let part = |t: &Tensor, from: i64, len: i64| -> Tensor {
        t.batch_norm(
            Some(&bn.weight.narrow(0, from, len)),
            Some(&bn.bias.narrow(0, from, len)),
            Some(&bn.running_mean.narrow(0, from, len).copy()),
            Some(&bn.running_var.narrow(0, from, len).copy()),
            train,
            0.1,
            1e-5,
            false,
        )
    };
    let mut outs = vec![];
    if or > 0 {
        outs.push(part(&r_out, 0, or));
    }
    if oc - or > 0 {
        outs.push(part(&t_out, or, oc - or));
    }
    Tensor::cat(&outs, 1)
}

#[test]
fn one_masked_convolution_equals_four_convolutions_per_unit() {
    let masks = ["1111", "1001", "0110", "1011"];
    let mut ran = vec![];
    for v in Variant::ALL {
        for proj in [Projection::Conv, Projection::ZeroPad] {
            for m in masks {
                let mut spec = micro(v);
                spec.projection = proj;
                spec.mask = m.parse().unwrap();
                if spec.validate().is_err() {
                    continue;
                }
                ran.push(format!("{v} {proj:?} {m}"));
                let mask = [spec.mask.rr, spec.mask.tr, spec.mask.rt, spec.mask.tt];
                let (_vs, net) = random_net(&spec, 3);
                // Units 0 (stride 1, block 1) and 2 (stride 2, stage 2).
                for (bi, ui) in [(0usize, 0usize), (0, 1), (1, 0), (2, 0)] {
                    let unit = &net.blocks[bi].units[ui];
                    let ch = unit.spec.in_ch as i64;
                    let side = if bi < 2 { 28 } else { 14 };
                    let x =
                        tch::Tensor::randn([4, ch, side, side], (Kind::Float, tch::Device::Cpu));
                    for train in [false, true] {
                        let a = unit.pre_activation(&x, train, &spec, Precision::Fp32);
                        let b = tch::no_grad(|| four_conv_unit(unit, &x, mask, train));
                        let d = max_diff(&a, &b);
                        assert!(
                            d < 1e-4,
                            "{v} {proj:?} mask {m} block {bi} unit {ui} stride {} train {train}: {d}",
                            unit.spec.stride
                        );
                    }
                }
            }
        }
    }
    // Every variant, projection and mask, but mask 0110 for resnet (which
    // needs rr) and cnn (which needs tt): it leaves them no live weights.
    // What is skipped as invalid must not grow unnoticed.
    assert_eq!(
        ran.len(),
        Variant::ALL.len() * 2 * masks.len() - 2 * 2,
        "{ran:?}"
    );
}

#[test]
fn whole_network_equals_its_four_convolution_form() {
    let mut ran = 0;
    for v in Variant::ALL {
        for outer in [false, true] {
            for proj in [Projection::Conv, Projection::ZeroPad] {
                let mut spec = micro(v);
                spec.projection = proj;
                if v == Variant::Rir {
                    spec.outer_shortcut = outer;
                } else if outer {
                    continue;
                }
                let (_vs, net) = random_net(&spec, 5);
                let four = FourConvNet::from_rir(&net);
                let x = input(3, &spec);
                let a = tch::no_grad(|| net.forward(&x, false));
                let b = tch::no_grad(|| four.forward(&x, false));
                let d = max_diff(&a, &b);
                assert!(d < 1e-4, "{v} outer {outer} {proj:?}: {d}");
                ran += 1;
            }
        }
    }
    // RiR with the outer shortcut on and off, the others without, each
    // with both projections.
    assert_eq!(ran, (Variant::ALL.len() + 1) * 2);
}

/// He et al.'s basic block, written from the paper: conv-BN-ReLU-conv-BN,
/// plus the shortcut, then ReLU; the CNN is conv-BN-ReLU all the way.
fn textbook(vs: &tch::nn::VarStore, spec: &rir_arch::ModelSpec, x: &Tensor) -> Tensor {
    let vars = vs.variables();
    let get = |n: &str| {
        vars.get(n)
            .unwrap_or_else(|| panic!("no {n}"))
            .shallow_clone()
    };
    let bn = |x: &Tensor, p: &str| {
        x.batch_norm(
            Some(&get(&format!("{p}.weight"))),
            Some(&get(&format!("{p}.bias"))),
            Some(&get(&format!("{p}.running_mean"))),
            Some(&get(&format!("{p}.running_var"))),
            false,
            0.1,
            1e-5,
            false,
        )
    };
    let conv = |x: &Tensor, w: &str, s: i64, p: i64| {
        x.conv2d(&get(w), None::<Tensor>, [s, s], [p, p], [1, 1], 1)
    };
    let mut h = bn(&conv(x, "stem.conv.weight", 1, 1), "stem.bn").relu();
    for b in spec.blocks() {
        let s = b.units[0].stride as i64;
        let u0 = &b.units[0].name;
        let u1 = &b.units[1].name;
        let mid = bn(
            &conv(&h, &format!("{u0}.conv.weight"), s, 1),
            &format!("{u0}.bn"),
        )
        .relu();
        let out = bn(
            &conv(&mid, &format!("{u1}.conv.weight"), 1, 1),
            &format!("{u1}.bn"),
        );
        h = match spec.variant {
            Variant::Cnn => out.relu(),
            Variant::Resnet => {
                let short = match b.outer.unwrap() {
                    Shortcut::Identity => h.shallow_clone(),
                    Shortcut::Conv { .. } => conv(&h, &format!("{}.outer.weight", b.name), s, 0),
                    Shortcut::ZeroPad {
                        in_res, out_res, ..
                    } => {
                        let sub = h.slice(2, 0, None, s).slice(3, 0, None, s);
                        sub.constant_pad_nd([0, 0, 0, 0, 0, (out_res - in_res) as i64])
                    }
                };
                (out + short).relu()
            }
            _ => unreachable!(),
        };
    }
    bn(&conv(&h, "head.conv.weight", 1, 0), "head.bn").mean_dim(&[2i64, 3][..], false, Kind::Float)
}

#[test]
fn resnet_and_cnn_equal_their_textbook_formulations() {
    for v in [Variant::Resnet, Variant::Cnn] {
        for proj in [Projection::Conv, Projection::ZeroPad] {
            let mut spec = micro(v);
            spec.projection = proj;
            let (vs, net) = random_net(&spec, 9);
            let x = input(3, &spec);
            let a = tch::no_grad(|| net.forward(&x, false));
            let b = tch::no_grad(|| textbook(&vs, &spec, &x));
            let d = max_diff(&a, &b);
            assert!(d < 1e-4, "{v} {proj:?}: {d}");
        }
    }
}

#[test]
fn bf16_convolutions_stay_close_to_fp32() {
    let spec = micro(Variant::Rir);
    let (_vs, mut net) = random_net(&spec, 2);
    let x = input(4, &spec);
    let a = tch::no_grad(|| net.forward(&x, false));
    net.precision = Precision::Bf16;
    let b = tch::no_grad(|| net.forward(&x, false));
    let rel = max_diff(&a, &b) / a.abs().max().double_value(&[]);
    assert!(rel < 0.05, "bf16 relative error {rel}");
    assert!(rel > 0.0, "bf16 path did not change the arithmetic");
}

/// The flattened gradients of every variable after `loss` on `x`.
fn gradients(vs: &tch::nn::VarStore, net: &rir_trainer::model::RirNet, x: &Tensor) -> Tensor {
    for mut v in vs.trainable_variables() {
        v.zero_grad();
    }
    let labels = Tensor::from_slice(&[0i64, 3, 7, 9]);
    net.forward(x, true)
        .cross_entropy_for_logits(&labels)
        .backward();
    let grads: Vec<Tensor> = vs
        .trainable_variables()
        .iter()
        .map(|v| {
            assert_eq!(v.kind(), Kind::Float, "a master weight left float32");
            assert_eq!(v.grad().kind(), Kind::Float, "a gradient left float32");
            v.grad().flatten(0, -1)
        })
        .collect();
    Tensor::cat(&grads, 0)
}

#[test]
fn bf16_keeps_activations_in_bf16_and_weights_statistics_and_logits_in_fp32() {
    // As PyTorch's autocast: what flows between layers is bfloat16, what
    // is learnt or accumulated is float32.
    let spec = micro(Variant::Rir);
    let (vs, mut net) = random_net(&spec, 3);
    net.precision = Precision::Bf16;
    let x = input(4, &spec);
    let stem = net.stem_forward(&x, true);
    assert_eq!(stem.kind(), Kind::BFloat16, "the stem's output");
    let unit = &net.blocks[0].units[0];
    let pre = unit.pre_activation(&stem, true, &spec, Precision::Bf16);
    assert_eq!(
        pre.kind(),
        Kind::BFloat16,
        "a unit's conv, shortcut sum and BN"
    );
    let mean_before = unit.bn.running_mean.copy();
    let logits = tch::no_grad(|| net.forward(&x, true));
    assert_eq!(logits.kind(), Kind::Float, "the logits");
    assert_eq!(unit.bn.running_mean.kind(), Kind::Float);
    assert!(
        max_diff(&unit.bn.running_mean, &mean_before) > 0.0,
        "training updates the float32 running mean through a bfloat16 input"
    );

    // The gradients point where float32's do: the same weights, exact fp32
    // against bf16, cosine above 0.99 (bfloat16 keeps 8 bits of mantissa).
    let bf16 = gradients(&vs, &net, &x);
    net.precision = Precision::Fp32Exact;
    let fp32 = gradients(&vs, &net, &x);
    let cosine = (&bf16 * &fp32).sum(Kind::Float).double_value(&[])
        / (bf16.norm().double_value(&[]) * fp32.norm().double_value(&[]));
    assert!(cosine > 0.99, "cosine {cosine}");
    assert!(
        max_diff(&bf16, &fp32) > 0.0,
        "bf16 did not change the arithmetic"
    );
}

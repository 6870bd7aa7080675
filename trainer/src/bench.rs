//! Training-throughput measurement behind `rir-train bench`.
//!
//! Each measurement runs in its own process (the bench command re-invokes
//! itself), so that peak RSS is per configuration and one configuration's
//! allocator state does not colour the next. A training step is forward,
//! cross-entropy, backward and an SGD update on a fixed random batch.

use std::time::Instant;

use rir_arch::{ModelSpec, Shortcut};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor, nn::VarStore};

use crate::RirNet;
use crate::four_conv::FourConvNet;
use crate::model::unit_mask;
use crate::optim::{Optimizer, Rule};

/// How a unit's convolutions are written: one masked convolution, or
/// four (the exporter's `Form` is another thing: a folded or literal graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitForm {
    /// One masked convolution per unit (this project's model).
    OneConv,
    /// Four convolutions per unit, BN per stream (public implementations).
    FourConv,
}

/// What one measurement produced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Training images per second.
    pub img_per_s: f64,
    /// Peak resident set size of the measuring process, MiB.
    pub peak_rss_mb: f64,
}

/// Peak RSS of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A fixed random batch of `batch` images (channels-last when `mixed`) and labels.
fn batch_of(spec: &ModelSpec, batch: usize, device: Device, mixed: bool) -> (Tensor, Tensor) {
    let i = spec.input;
    let shape = [
        batch as i64,
        i.channels as i64,
        i.height as i64,
        i.width as i64,
    ];
    let x = Tensor::randn(shape, (Kind::Float, device));
    let x = match mixed {
        true => crate::train::channels_last(&x),
        false => x,
    };
    let classes = spec.num_classes as i64;
    let y = Tensor::randint(classes, [batch as i64], (Kind::Int64, device));
    (x, y)
}

/// SGD over the four-convolution form's own kernels and BatchNorms, and
/// the RiR variables it shares (stem, head, projections).
fn four_conv_optimizer(f: &FourConvNet, vs: &VarStore) -> Optimizer {
    let mut named: Vec<(String, Tensor)> = f
        .trainable()
        .into_iter()
        .enumerate()
        .map(|(k, t)| {
            let kind = if t.dim() == 4 { "weight" } else { "bn" };
            (format!("four.{k}.{kind}"), t)
        })
        .collect();
    for (n, t) in vs.variables() {
        if t.requires_grad() && !(n.contains(".u0.") || n.contains(".u1."))
            || n.ends_with("proj.weight")
        {
            named.push((n, t));
        }
    }
    Optimizer::from_named(named, Rule::sgd(0.9, false), 1e-4)
}

/// Times `steps` training steps of `form` after `warmup` untimed ones.
/// `mixed`: bf16 convolutions and channels-last tensors, as `rir-train
/// train --bf16 --channels-last` runs them.
pub fn measure(
    spec: &ModelSpec,
    form: UnitForm,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: Device,
    mixed: bool,
) -> Measurement {
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let mut net = RirNet::new(&vs.root(), spec);
    if mixed {
        net.precision = crate::model::Precision::Bf16;
        crate::train::to_channels_last(&vs);
    }
    let (x, y) = batch_of(spec, batch, device, mixed);
    let four = (form == UnitForm::FourConv).then(|| FourConvNet::from_rir(&net));
    let mut opt = match &four {
        None => Optimizer::new(&vs, Rule::sgd(0.9, false), 1e-4),
        Some(f) => four_conv_optimizer(f, &vs),
    };
    let mut step = || {
        let logits = match &four {
            None => net.forward(&x, true),
            Some(f) => f.forward(&x, true),
        };
        let loss = logits.cross_entropy_loss(&y, None::<Tensor>, Reduction::Mean, -100, 0.0);
        opt.zero_grad();
        loss.backward();
        opt.step(0.01);
        loss
    };
    for _ in 0..warmup {
        let _ = step();
    }
    let started = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(step());
    }
    if let Some(l) = last {
        l.double_value(&[]);
    }
    let secs = started.elapsed().as_secs_f64();
    Measurement {
        img_per_s: (batch * steps) as f64 / secs,
        peak_rss_mb: peak_rss_mb(),
    }
}

fn shortcut_json(s: Option<Shortcut>) -> serde_json::Value {
    match s {
        None => serde_json::Value::Null,
        Some(Shortcut::Identity) => {
            serde_json::json!({"kind": "identity", "in_res": 0, "out_res": 0, "stride": 1})
        }
        Some(Shortcut::Conv {
            in_res,
            out_res,
            stride,
        }) => {
            serde_json::json!({"kind": "conv", "in_res": in_res, "out_res": out_res, "stride": stride})
        }
        Some(Shortcut::ZeroPad {
            in_res,
            out_res,
            stride,
        }) => {
            serde_json::json!({"kind": "zero-pad", "in_res": in_res, "out_res": out_res, "stride": stride})
        }
    }
}

/// The layer plan the PyTorch reference builds its network from, resolved
/// here so that the two implementations cannot disagree on the shape.
pub fn layer_plan(spec: &ModelSpec) -> serde_json::Value {
    let blocks: Vec<serde_json::Value> = spec
        .blocks()
        .iter()
        .map(|b| {
            let units: Vec<serde_json::Value> = b
                .units
                .iter()
                .map(|u| {
                    let mut sc = shortcut_json(u.shortcut);
                    if let Some(obj) = sc.as_object_mut().filter(|o| o["kind"] == "identity") {
                        obj.insert("in_res".into(), u.in_res.into());
                        obj.insert("out_res".into(), u.out_res.into());
                    }
                    serde_json::json!({"in_ch": u.in_ch, "out_ch": u.out_ch, "stride": u.stride, "shortcut": sc})
                })
                .collect();
            let masks: Vec<serde_json::Value> = b
                .units
                .iter()
                .map(|u| match unit_mask(spec, u, Device::Cpu) {
                    None => serde_json::Value::Null,
                    Some(m) => {
                        let v: Vec<f32> = Vec::try_from(m.flatten(0, -1)).unwrap_or_default();
                        serde_json::json!(v)
                    }
                })
                .collect();
            let mut outer = shortcut_json(b.outer);
            if let Some(obj) = outer.as_object_mut().filter(|o| o["kind"] == "identity") {
                obj.insert("in_res".into(), b.units[0].in_res.into());
                obj.insert("out_res".into(), b.units[1].out_res.into());
            }
            serde_json::json!({"units": units, "masks": masks, "outer": outer})
        })
        .collect();
    serde_json::json!({
        "input": [spec.input.channels, spec.input.height, spec.input.width],
        "classes": spec.num_classes,
        "stem_out": spec.stem_channels(),
        "head_in": spec.head_channels(),
        "blocks": blocks,
    })
}

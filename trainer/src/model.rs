//! The RiR network in libtorch, built from a [`ModelSpec`].
//!
//! Each generalized residual unit is ONE 3x3 convolution over
//! `concat(r, t)`, with the 0/1 block mask multiplied into its kernel when the
//! mask is not full, plus the explicit shortcut added on the residual rows,
//! then BatchNorm and ReLU (see `rir_arch::arch` for the variants). Tensor
//! names are the ones the exporter reads:
//! `stem.conv.weight`, `stem.bn.*`, `s1.b0.u0.conv.weight`, `s1.b0.u0.bn.*`,
//! `s1.b0.u0.proj.weight`, `s1.b0.outer.weight`, `head.conv.weight`, `head.bn.*`.

use rir_arch::{BlockSpec, ModelSpec, Shortcut, UnitSpec};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// Numeric precision of the convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in float32 (cuDNN may use TF32 tensor cores, as
    /// PyTorch lets it by default).
    Fp32,
    /// Everything in float32 with TF32 forbidden: the arithmetic of the
    /// float32 ONNX export, which evaluations use so that the accuracy they
    /// record is the one the export reproduces.
    Fp32Exact,
    /// Activations in bfloat16 from the stem's convolution to the head's,
    /// as PyTorch's autocast keeps them: every convolution, BatchNorm
    /// output, shortcut sum and ReLU is bfloat16. The master weights, the
    /// BatchNorm parameters and running statistics, the pooled logits and
    /// the loss stay float32 (each kernel is cast to bfloat16 where it is
    /// used, and its gradient comes back in float32).
    Bf16,
}

/// A BatchNorm layer's tensors.
#[derive(Debug)]
pub struct BatchNorm {
    /// Scale γ.
    pub weight: Tensor,
    /// Shift β.
    pub bias: Tensor,
    /// Running mean μ, updated in training.
    pub running_mean: Tensor,
    /// Running variance σ², updated in training.
    pub running_var: Tensor,
}

impl BatchNorm {
    fn new(p: nn::Path, ch: usize) -> Self {
        let ch = ch as i64;
        BatchNorm {
            weight: p.var("weight", &[ch], Init::Const(1.0)),
            bias: p.var("bias", &[ch], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[ch]),
            running_var: p.ones_no_train("running_var", &[ch]),
        }
    }

    /// Applies BN with batch statistics (`train`) or running statistics;
    /// the output has the input's kind, the statistics stay float32.
    pub fn forward(&self, x: &Tensor, train: bool, spec: &ModelSpec) -> Tensor {
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            spec.bn_momentum,
            spec.bn_eps,
            true,
        )
    }
}

/// The path of a dotted name such as `s1.b0.u0` (tch refuses dots in one segment).
fn at<'a>(p: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut segs = dotted.split('.');
    let first = segs.next().unwrap_or(dotted);
    segs.fold(p.sub(first), |acc, seg| acc.sub(seg))
}

/// He (MSR) normal initialization over the kernel's full fan-in.
fn he(p: &nn::Path, name: &str, shape: [usize; 4]) -> Tensor {
    let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    p.var(
        name,
        &dims,
        Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_in).sqrt(),
        },
    )
}

/// The 0/1 kernel mask of a unit, or `None` when every weight is live.
pub fn unit_mask(spec: &ModelSpec, u: &UnitSpec, device: Device) -> Option<Tensor> {
    let live: Vec<f32> = (0..u.out_ch)
        .flat_map(|o| (0..u.in_ch).map(move |i| (o, i)))
        .map(|(o, i)| f32::from(spec.mask.live(o, u.out_res, i, u.in_res)))
        .collect();
    if live.iter().all(|&v| v == 1.0) {
        return None;
    }
    Some(
        Tensor::from_slice(&live)
            .view([u.out_ch as i64, u.in_ch as i64, 1, 1])
            .to_device(device),
    )
}

/// A shortcut with its weights, if it has any.
#[derive(Debug)]
pub enum ShortcutOp {
    /// Residual channels as they are.
    Identity { res: usize },
    /// Learned 1x1 projection.
    Conv {
        weight: Tensor,
        in_res: usize,
        stride: usize,
    },
    /// Subsample and zero-pad channels ("option A").
    ZeroPad {
        in_res: usize,
        out_res: usize,
        stride: usize,
    },
}

impl ShortcutOp {
    fn new(p: &nn::Path, s: Shortcut) -> Self {
        match s {
            Shortcut::Identity => unreachable!("identity built by the caller"),
            Shortcut::Conv {
                in_res,
                out_res,
                stride,
            } => ShortcutOp::Conv {
                weight: he(p, "weight", [out_res, in_res, 1, 1]),
                in_res,
                stride,
            },
            Shortcut::ZeroPad {
                in_res,
                out_res,
                stride,
            } => ShortcutOp::ZeroPad {
                in_res,
                out_res,
                stride,
            },
        }
    }

    /// Creates the shortcut's variables, if any, under `p` (named `weight`).
    fn build(p: &nn::Path, s: Shortcut, res: usize) -> Self {
        match s {
            Shortcut::Identity => ShortcutOp::Identity { res },
            s => Self::new(p, s),
        }
    }

    /// The shortcut's contribution, zero-padded to `out_ch` channels so that
    /// it adds onto the residual rows of a unit's output.
    pub fn forward(&self, x: &Tensor, out_ch: usize, precision: Precision) -> Tensor {
        let (y, written) = match self {
            ShortcutOp::Identity { res } => (x.narrow(1, 0, *res as i64), *res),
            ShortcutOp::Conv {
                weight,
                in_res,
                stride,
            } => {
                let r = x.narrow(1, 0, *in_res as i64);
                let y = conv(&r, weight, *stride, 0, precision);
                let n = y.size()[1] as usize;
                (y, n)
            }
            ShortcutOp::ZeroPad {
                in_res,
                out_res,
                stride,
            } => {
                let s = *stride as i64;
                let r = x.narrow(1, 0, *in_res as i64);
                let r = if s > 1 {
                    r.slice(2, 0, None, s).slice(3, 0, None, s)
                } else {
                    r
                };
                (
                    r.constant_pad_nd([0, 0, 0, 0, 0, (*out_res - *in_res) as i64]),
                    *out_res,
                )
            }
        };
        if written < out_ch {
            y.constant_pad_nd([0, 0, 0, 0, 0, (out_ch - written) as i64])
        } else {
            y
        }
    }
}

/// A convolution without bias, in the requested precision: float32 out
/// of float32, bfloat16 out of anything in [`Precision::Bf16`] (a bfloat16
/// input is not cast again).
pub fn conv(x: &Tensor, w: &Tensor, stride: usize, pad: usize, precision: Precision) -> Tensor {
    let (s, p) = (stride as i64, pad as i64);
    match precision {
        Precision::Fp32 => x.conv2d(w, None::<Tensor>, [s, s], [p, p], [1, 1], 1),
        Precision::Fp32Exact => x.internal_convolution(
            w,
            None::<Tensor>,
            [s, s],
            [p, p],
            [1, 1],
            false,
            [0, 0],
            1,
            false,
            false,
            true,
            false,
        ),
        Precision::Bf16 => x.to_kind(Kind::BFloat16).conv2d(
            &w.to_kind(Kind::BFloat16),
            None::<Tensor>,
            [s, s],
            [p, p],
            [1, 1],
            1,
        ),
    }
}

/// One generalized residual unit.
#[derive(Debug)]
pub struct Unit {
    /// Shape and shortcut of the unit.
    pub spec: UnitSpec,
    /// The block kernel `[[W_rr, W_tr], [W_rt, W_tt]]`, `[out_ch, in_ch, 3, 3]`.
    pub weight: Tensor,
    /// The fixed 0/1 block mask, when not every block is live.
    pub mask: Option<Tensor>,
    /// The unit's own shortcut on the residual rows.
    pub shortcut: Option<ShortcutOp>,
    /// BatchNorm over the sum.
    pub bn: BatchNorm,
}

impl Unit {
    fn new(p: &nn::Path, model: &ModelSpec, u: &UnitSpec) -> Self {
        let p = at(p, &u.name);
        let weight = he(&(&p / "conv"), "weight", [u.out_ch, u.in_ch, 3, 3]);
        Unit {
            mask: unit_mask(model, u, p.device()),
            shortcut: u
                .shortcut
                .map(|s| ShortcutOp::build(&(&p / "proj"), s, u.in_res)),
            bn: BatchNorm::new(&p / "bn", u.out_ch),
            weight,
            spec: u.clone(),
        }
    }

    /// The kernel with the mask applied.
    pub fn masked_weight(&self) -> Tensor {
        match &self.mask {
            Some(m) => &self.weight * m,
            None => self.weight.shallow_clone(),
        }
    }

    /// `BN(conv(x, W ⊙ M) + S(x_r))`, before the ReLU.
    // Sums stay out of place (`y = y + s`, not `y += s`): an in-place add
    // would bump the version of a tensor autograd may have saved.
    #[allow(clippy::assign_op_pattern)]
    pub fn pre_activation(
        &self,
        x: &Tensor,
        train: bool,
        model: &ModelSpec,
        precision: Precision,
    ) -> Tensor {
        let mut y = conv(x, &self.masked_weight(), self.spec.stride, 1, precision);
        if let Some(s) = &self.shortcut {
            y = y + s.forward(x, self.spec.out_ch, precision);
        }
        self.bn.forward(&y, train, model)
    }
}

/// One RiR block: two units and the optional shortcut spanning them.
#[derive(Debug)]
pub struct Block {
    /// First and second unit.
    pub units: [Unit; 2],
    /// The block shortcut, added after the second BN, before its ReLU.
    pub outer: Option<ShortcutOp>,
}

impl Block {
    fn new(p: &nn::Path, model: &ModelSpec, b: &BlockSpec) -> Self {
        Block {
            units: [
                Unit::new(p, model, &b.units[0]),
                Unit::new(p, model, &b.units[1]),
            ],
            outer: b
                .outer
                .map(|s| ShortcutOp::build(&at(p, &b.outer_name()), s, b.units[0].in_res)),
        }
    }

    #[allow(clippy::assign_op_pattern)] // out-of-place on purpose, see Unit::pre_activation
    fn forward(&self, x: &Tensor, train: bool, model: &ModelSpec, precision: Precision) -> Tensor {
        let h = self.units[0]
            .pre_activation(x, train, model, precision)
            .relu();
        let mut y = self.units[1].pre_activation(&h, train, model, precision);
        if let Some(s) = &self.outer {
            y = y + s.forward(x, self.units[1].spec.out_ch, precision);
        }
        y.relu()
    }
}

/// The whole network.
#[derive(Debug)]
pub struct RirNet {
    /// What was built.
    pub spec: ModelSpec,
    /// Stem kernel `[2 C0, C_in, 3, 3]`.
    pub stem: Tensor,
    /// Stem BatchNorm.
    pub stem_bn: BatchNorm,
    /// The RiR blocks.
    pub blocks: Vec<Block>,
    /// Head 1x1 kernel `[classes, 2 C, 1, 1]`.
    pub head: Tensor,
    /// Head BatchNorm over the logits.
    pub head_bn: BatchNorm,
    /// Convolution precision.
    pub precision: Precision,
}

impl RirNet {
    /// Creates the variables of `spec` under `p` with He initialization.
    pub fn new(p: &nn::Path, spec: &ModelSpec) -> Self {
        let stem = he(
            &(p / "stem" / "conv"),
            "weight",
            [spec.stem_channels(), spec.input.channels, 3, 3],
        );
        let blocks = spec
            .blocks()
            .iter()
            .map(|b| Block::new(p, spec, b))
            .collect();
        RirNet {
            stem,
            stem_bn: BatchNorm::new(p / "stem" / "bn", spec.stem_channels()),
            blocks,
            head: he(
                &(p / "head" / "conv"),
                "weight",
                [spec.num_classes, spec.head_channels(), 1, 1],
            ),
            head_bn: BatchNorm::new(p / "head" / "bn", spec.num_classes),
            spec: spec.clone(),
            precision: Precision::Fp32,
        }
    }

    /// Features after the stem.
    pub fn stem_forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.stem_in(x, train, self.precision)
    }

    fn stem_in(&self, x: &Tensor, train: bool, precision: Precision) -> Tensor {
        let y = conv(x, &self.stem, 1, 1, precision);
        self.stem_bn.forward(&y, train, &self.spec).relu()
    }

    /// Logits from head features.
    pub fn head_forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_in(x, train, self.precision)
    }

    fn head_in(&self, x: &Tensor, train: bool, precision: Precision) -> Tensor {
        let y = conv(x, &self.head, 1, 0, precision);
        self.head_bn
            .forward(&y, train, &self.spec)
            .mean_dim(&[2i64, 3][..], false, Kind::Float)
    }

    /// Logits of a normalized NCHW float batch, in the network's precision.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_in(x, train, self.precision)
    }

    /// Logits with the convolutions in `precision` (evaluations run exact
    /// fp32 whatever the network trains in).
    pub fn forward_in(&self, x: &Tensor, train: bool, precision: Precision) -> Tensor {
        let mut h = self.stem_in(x, train, precision);
        for b in &self.blocks {
            h = b.forward(&h, train, &self.spec, precision);
        }
        self.head_in(&h, train, precision)
    }
}

/// Whether a variable gets L2 weight decay: convolution kernels (4-D) do,
/// BatchNorm scales and shifts do not. The identity shortcut is not a
/// variable, so it is never decayed.
pub fn decays(name: &str, shape: &[i64]) -> bool {
    shape.len() == 4 && name.ends_with("weight")
}

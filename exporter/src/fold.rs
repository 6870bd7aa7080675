//! Folding a trained RiR network into plain convolutions (README, `rir-export`,
//! "Folding").
//!
//! For every generalized unit, in float64 and then rounded once to float32:
//! 1. the block kernel `W` with the mask applied;
//! 2. the unit's shortcut added into the centre tap `W[o, i, 1, 1]` of the
//!    residual rows (identity: `+1` on `o = i`; 1x1 projection `P`:
//!    `+P[o, i]`; option A: `+1` on `o = i < in_res`), which is exact because
//!    a 3x3 convolution with padding 1 and stride `s` reads input pixel
//!    `(s·y, s·x)` at its centre tap, the pixel a 1x1 stride-`s` shortcut reads;
//! 3. BatchNorm, which follows the sum: `k = γ / sqrt(σ² + ε)`,
//!    `W' = k · W` per output channel, `b' = β − k · μ`.
//!
//! The stem and the head fold their BN the same way. What cannot fold is the
//! block shortcut: it reads the block's input, two ReLUs back, so it stays a
//! separate addition ([`OuterShortcut`]).

use rir_arch::{ModelSpec, Shortcut, UnitSpec};
use rir_checkpoint::Checkpoint;

use crate::error::ExportError;

/// A convolution with bias, float32, OIHW.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBias {
    /// Kernel, `[out, in, k, k]` row-major.
    pub weight: Vec<f32>,
    /// `[out, in, k, k]`.
    pub shape: [usize; 4],
    /// One bias per output channel.
    pub bias: Vec<f32>,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (all sides).
    pub pad: usize,
}

/// The block shortcut, added before the second unit's ReLU.
#[derive(Debug, Clone, PartialEq)]
pub enum OuterShortcut {
    /// The block input's first `in_res` channels, subsampled by `stride` and
    /// zero-padded to all `out_ch` channels (identity when `stride == 1` and
    /// `in_res == out_ch`).
    SliceAndPad {
        in_res: usize,
        out_ch: usize,
        stride: usize,
    },
    /// A 1x1 projection from the residual channels (zero rows and columns
    /// elsewhere), no bias.
    Projection(ConvBias),
}

/// One folded unit: `Relu(Conv(x) [+ outer])`.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedUnit {
    /// Tensor-name prefix in the checkpoint, e.g. `s2.b0.u1`.
    pub name: String,
    /// The whole unit as one convolution.
    pub conv: ConvBias,
    /// Present on the second unit of a block with an outer shortcut.
    pub outer: Option<OuterShortcut>,
}

/// A whole network folded to `stem, units…, head`.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedNet {
    /// Stem convolution (BN folded), followed by ReLU.
    pub stem: ConvBias,
    /// Every unit, in order.
    pub units: Vec<FoldedUnit>,
    /// Head 1x1 convolution (BN folded), after global average pooling.
    pub head: ConvBias,
}

/// BatchNorm parameters read from a checkpoint.
#[derive(Debug, Clone)]
pub struct Bn {
    /// Scale γ.
    pub gamma: Vec<f32>,
    /// Shift β.
    pub beta: Vec<f32>,
    /// Running mean μ.
    pub mean: Vec<f32>,
    /// Running variance σ².
    pub var: Vec<f32>,
}

impl Bn {
    /// Reads `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
    pub fn read(ck: &Checkpoint, prefix: &str, ch: usize) -> Result<Self, ExportError> {
        let get = |n: &str| -> Result<Vec<f32>, ExportError> {
            Ok(ck.shaped(&format!("{prefix}.{n}"), &[ch])?.data.clone())
        };
        Ok(Bn {
            gamma: get("weight")?,
            beta: get("bias")?,
            mean: get("running_mean")?,
            var: get("running_var")?,
        })
    }

    /// Per-channel scale `γ / sqrt(σ² + ε)` and shift `β − scale · μ`.
    pub fn affine(&self, eps: f64) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((&b, &m), &s)| b as f64 - s * m as f64)
            .collect();
        (scale, shift)
    }
}

/// Reads a kernel as float64, checking its shape.
fn kernel(ck: &Checkpoint, name: &str, shape: [usize; 4]) -> Result<Vec<f64>, ExportError> {
    Ok(ck
        .shaped(name, &shape)?
        .data
        .iter()
        .map(|&v| v as f64)
        .collect())
}

/// Scales kernel rows and builds the bias from a BN affine.
fn apply_bn(
    weight: Vec<f64>,
    shape: [usize; 4],
    bn: &Bn,
    eps: f64,
    stride: usize,
    pad: usize,
) -> ConvBias {
    let (scale, shift) = bn.affine(eps);
    let per_out = shape[1] * shape[2] * shape[3];
    let weight = weight
        .chunks_exact(per_out)
        .zip(&scale)
        .flat_map(|(row, &s)| row.iter().map(move |&w| (w * s) as f32))
        .collect();
    ConvBias {
        weight,
        shape,
        bias: shift.into_iter().map(|b| b as f32).collect(),
        stride,
        pad,
    }
}

/// The masked block kernel of a unit with its shortcut in the centre tap, in float64.
pub fn unit_kernel(
    ck: &Checkpoint,
    spec: &ModelSpec,
    u: &UnitSpec,
) -> Result<Vec<f64>, ExportError> {
    let shape = [u.out_ch, u.in_ch, 3, 3];
    let mut w = kernel(ck, &format!("{}.conv.weight", u.name), shape)?;
    for o in 0..u.out_ch {
        for i in 0..u.in_ch {
            if !spec.mask.live(o, u.out_res, i, u.in_res) {
                w[(o * u.in_ch + i) * 9..(o * u.in_ch + i + 1) * 9].fill(0.0);
            }
        }
    }
    let centre = |o: usize, i: usize| (o * u.in_ch + i) * 9 + 4;
    match u.shortcut {
        None => {}
        Some(Shortcut::Identity) => {
            for o in 0..u.out_res {
                w[centre(o, o)] += 1.0;
            }
        }
        Some(Shortcut::ZeroPad { in_res, .. }) => {
            for o in 0..in_res {
                w[centre(o, o)] += 1.0;
            }
        }
        Some(Shortcut::Conv {
            in_res, out_res, ..
        }) => {
            let p = kernel(
                ck,
                &format!("{}.proj.weight", u.name),
                [out_res, in_res, 1, 1],
            )?;
            for o in 0..out_res {
                for i in 0..in_res {
                    w[centre(o, i)] += p[o * in_res + i];
                }
            }
        }
    }
    Ok(w)
}

/// Folds every unit, the stem and the head of the checkpoint's network.
pub fn fold(ck: &Checkpoint) -> Result<FoldedNet, ExportError> {
    let spec = &ck.meta.spec;
    let eps = spec.bn_eps;
    let stem_shape = [spec.stem_channels(), spec.input.channels, 3, 3];
    let stem = apply_bn(
        kernel(ck, "stem.conv.weight", stem_shape)?,
        stem_shape,
        &Bn::read(ck, "stem.bn", spec.stem_channels())?,
        eps,
        1,
        1,
    );
    let mut units = Vec::new();
    for block in spec.blocks() {
        for (k, u) in block.units.iter().enumerate() {
            let shape = [u.out_ch, u.in_ch, 3, 3];
            let conv = apply_bn(
                unit_kernel(ck, spec, u)?,
                shape,
                &Bn::read(ck, &format!("{}.bn", u.name), u.out_ch)?,
                eps,
                u.stride,
                1,
            );
            let outer = if k == 1 {
                block
                    .outer
                    .map(|s| outer_shortcut(ck, &block.outer_name(), s, &block.units[0], u))
                    .transpose()?
            } else {
                None
            };
            units.push(FoldedUnit {
                name: u.name.clone(),
                conv,
                outer,
            });
        }
    }
    let head_shape = [spec.num_classes, spec.head_channels(), 1, 1];
    let head = apply_bn(
        kernel(ck, "head.conv.weight", head_shape)?,
        head_shape,
        &Bn::read(ck, "head.bn", spec.num_classes)?,
        eps,
        1,
        0,
    );
    Ok(FoldedNet { stem, units, head })
}

fn outer_shortcut(
    ck: &Checkpoint,
    name: &str,
    s: Shortcut,
    first: &UnitSpec,
    second: &UnitSpec,
) -> Result<OuterShortcut, ExportError> {
    let out_ch = second.out_ch;
    Ok(match s {
        Shortcut::Identity => OuterShortcut::SliceAndPad {
            in_res: first.in_res,
            out_ch,
            stride: 1,
        },
        Shortcut::ZeroPad { in_res, stride, .. } => OuterShortcut::SliceAndPad {
            in_res,
            out_ch,
            stride,
        },
        Shortcut::Conv {
            in_res,
            out_res,
            stride,
        } => {
            let p = kernel(ck, &format!("{name}.weight"), [out_res, in_res, 1, 1])?;
            let in_ch = first.in_ch;
            let mut w = vec![0f32; out_ch * in_ch];
            for o in 0..out_res {
                for i in 0..in_res {
                    w[o * in_ch + i] = p[o * in_res + i] as f32;
                }
            }
            OuterShortcut::Projection(ConvBias {
                weight: w,
                shape: [out_ch, in_ch, 1, 1],
                bias: vec![],
                stride,
                pad: 0,
            })
        }
    })
}

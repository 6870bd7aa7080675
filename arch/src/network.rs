//! Architecture description: variants, shortcuts, the block mask and the
//! walk over a network's generalized residual units.
//!
//! Every unit, in every variant, is one 3x3 convolution over the stacked
//! streams `x = concat(r, t)` of total width `2C`. The variants differ only in
//! how many of those channels are residual, which blocks of the kernel are
//! live and which shortcuts exist:
//!
//! | variant | residual channels | unit shortcut | outer (block) shortcut |
//! |---|---|---|---|
//! | `rir` | `C` of `2C` | yes, on `r` | optional, on `r` (default on) |
//! | `resnet-init` | `C` of `2C` | yes, on `r` | no |
//! | `resnet` | all `2C` (one wide stream) | no | yes, on all channels |
//! | `cnn` | none | no | no |
//!
//! A unit computes `y = BN(conv(x, W ⊙ M) + S_unit(x_r))`; the second unit of
//! a block adds the outer shortcut `S_block(r_in)` to the residual rows of `y`
//! after BN and before the ReLU (the textbook ResNet placement, so that
//! `resnet` is exactly He et al.'s basic block), and then applies the ReLU.

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// Which member of the RiR family a network is. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Two streams, all four sub-kernels live, per-unit identity on `r`.
    Rir,
    /// One stream of width `2C` with textbook two-convolution residual blocks.
    Resnet,
    /// A plain convolutional network of width `2C`: no shortcuts at all.
    Cnn,
    /// Generalized units without the block shortcut ("ResNet Init").
    ResnetInit,
}

impl Variant {
    /// All variants, in the order the documentation lists them.
    pub const ALL: [Variant; 4] = [
        Variant::Rir,
        Variant::Resnet,
        Variant::Cnn,
        Variant::ResnetInit,
    ];

    /// The name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Rir => "rir",
            Variant::Resnet => "resnet",
            Variant::Cnn => "cnn",
            Variant::ResnetInit => "resnet-init",
        }
    }

    /// Whether each unit adds a shortcut of its own on the residual rows.
    pub fn unit_shortcut(self) -> bool {
        matches!(self, Variant::Rir | Variant::ResnetInit)
    }

    /// The outer-shortcut setting a variant takes when none is asked for.
    pub fn default_outer_shortcut(self) -> bool {
        matches!(self, Variant::Rir | Variant::Resnet)
    }

    /// Residual channels out of a unit whose streams are `width` wide each.
    pub fn residual_channels(self, width: usize) -> usize {
        match self {
            Variant::Rir | Variant::ResnetInit => width,
            Variant::Resnet => 2 * width,
            Variant::Cnn => 0,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| SpecError::UnknownVariant(s.to_string()))
    }
}

/// How a shortcut crosses a change of shape (stride 2 or more channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Projection {
    /// A learned 1x1 convolution with the unit's stride ("option B").
    Conv,
    /// Subsample by the stride and pad the new channels with zeros ("option A").
    ZeroPad,
}

impl std::str::FromStr for Projection {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "conv" | "projection" => Ok(Projection::Conv),
            "zero-pad" | "zeropad" | "option-a" => Ok(Projection::ZeroPad),
            _ => Err(SpecError::Invalid(format!(
                "unknown projection `{s}` (known: conv, zero-pad)"
            ))),
        }
    }
}

/// Which of the four sub-kernels of a unit are live. Masked blocks stay zero
/// in training (the kernel is multiplied by the mask) and in the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMask {
    /// residual → residual (`W_rr`).
    pub rr: bool,
    /// transient → residual (`W_tr`).
    pub tr: bool,
    /// residual → transient (`W_rt`).
    pub rt: bool,
    /// transient → transient (`W_tt`).
    pub tt: bool,
}

impl BlockMask {
    /// All four blocks live: the full generalized unit.
    pub const ALL: BlockMask = BlockMask {
        rr: true,
        tr: true,
        rt: true,
        tt: true,
    };

    /// Whether the weight from an input channel to an output channel is live,
    /// given how many channels of each side are residual.
    pub fn live(&self, out_ch: usize, out_res: usize, in_ch: usize, in_res: usize) -> bool {
        match (out_ch < out_res, in_ch < in_res) {
            (true, true) => self.rr,
            (true, false) => self.tr,
            (false, true) => self.rt,
            (false, false) => self.tt,
        }
    }

    /// Whether every block is live (the mask is then a no-op).
    pub fn is_full(&self) -> bool {
        *self == BlockMask::ALL
    }
}

impl std::str::FromStr for BlockMask {
    type Err = SpecError;
    /// Parses four 0/1 digits in the order `rr tr rt tt`, e.g. `1001`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bits: Vec<bool> = s
            .chars()
            .map(|c| match c {
                '0' => Ok(false),
                '1' => Ok(true),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|_| SpecError::Invalid(format!("mask `{s}` must be four 0/1 digits")))?;
        if bits.len() != 4 {
            return Err(SpecError::Invalid(format!(
                "mask `{s}` must be four 0/1 digits (rr tr rt tt)"
            )));
        }
        Ok(BlockMask {
            rr: bits[0],
            tr: bits[1],
            rt: bits[2],
            tt: bits[3],
        })
    }
}

/// Shape of the network's input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Colour channels (3 for CIFAR, 1 for Fashion-MNIST).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl InputSpec {
    /// An input of `channels` x `height` x `width`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }
}

impl std::fmt::Display for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// One stage: a run of RiR blocks at one width and resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Channels per stream (the unit convolution is `2 * width` wide).
    pub width: usize,
    /// Number of RiR blocks (two units each).
    pub blocks: usize,
    /// Stride of the stage's first unit.
    pub stride: usize,
}

/// The complete, serializable description of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Which family member this is.
    pub variant: Variant,
    /// Input image shape.
    pub input: InputSpec,
    /// Number of output classes.
    pub num_classes: usize,
    /// Channels per stream written by the stem.
    pub stem_width: usize,
    /// The stages, in order.
    pub stages: Vec<StageSpec>,
    /// Whether each RiR block has a shortcut spanning its two units.
    pub outer_shortcut: bool,
    /// How shortcuts cross a change of shape.
    pub projection: Projection,
    /// Live sub-kernels of every unit.
    pub mask: BlockMask,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum (PyTorch convention).
    pub bn_momentum: f64,
}

/// A shortcut on the residual rows, as it must be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// Add the input's residual channels unchanged.
    Identity,
    /// A learned 1x1 convolution from `in_res` to `out_res` channels.
    Conv {
        in_res: usize,
        out_res: usize,
        stride: usize,
    },
    /// Subsample by `stride` and pad `in_res` up to `out_res` channels with zeros.
    ZeroPad {
        in_res: usize,
        out_res: usize,
        stride: usize,
    },
}

impl Shortcut {
    fn between(in_res: usize, out_res: usize, stride: usize, projection: Projection) -> Self {
        if in_res == out_res && stride == 1 {
            Shortcut::Identity
        } else {
            match projection {
                Projection::Conv => Shortcut::Conv {
                    in_res,
                    out_res,
                    stride,
                },
                Projection::ZeroPad => Shortcut::ZeroPad {
                    in_res,
                    out_res,
                    stride,
                },
            }
        }
    }

    /// Whether this shortcut carries learned weights.
    pub fn has_weights(&self) -> bool {
        matches!(self, Shortcut::Conv { .. })
    }
}

/// One generalized residual unit: one 3x3 convolution plus BN and ReLU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// Tensor-name prefix, e.g. `s1.b0.u1`.
    pub name: String,
    /// Total input channels (`2 * C_in`).
    pub in_ch: usize,
    /// Total output channels (`2 * C_out`).
    pub out_ch: usize,
    /// Residual channels among the inputs.
    pub in_res: usize,
    /// Residual channels among the outputs.
    pub out_res: usize,
    /// Convolution stride.
    pub stride: usize,
    /// The unit's own shortcut on its residual rows, if the variant has one.
    pub shortcut: Option<Shortcut>,
}

/// One RiR block: two units and, optionally, a shortcut spanning both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// Tensor-name prefix, e.g. `s1.b0`.
    pub name: String,
    /// The two units, in order.
    pub units: [UnitSpec; 2],
    /// The block shortcut, added to the second unit's residual rows after BN.
    pub outer: Option<Shortcut>,
}

impl BlockSpec {
    /// Tensor-name prefix of the outer shortcut's projection.
    pub fn outer_name(&self) -> String {
        format!("{}.outer", self.name)
    }
}

impl ModelSpec {
    /// Checks that the description is self-consistent.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |m: String| Err(SpecError::Invalid(m));
        if self.input.channels == 0 || self.input.height == 0 || self.input.width == 0 {
            return bad(format!("input shape {:?} has a zero side", self.input));
        }
        if self.num_classes < 2 {
            return bad(format!("{} classes; need at least 2", self.num_classes));
        }
        if self.stem_width == 0 || self.stages.is_empty() {
            return bad("the network needs a stem width and at least one stage".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.width == 0 || s.blocks == 0 || s.stride == 0 {
                return bad(format!(
                    "stage {} has a zero width, block count or stride",
                    i + 1
                ));
            }
        }
        let fixed = match self.variant {
            Variant::Rir => None,
            v => Some(v.default_outer_shortcut()),
        };
        if let Some(f) = fixed
            && f != self.outer_shortcut
        {
            return bad(format!(
                "variant {} always has outer_shortcut = {f}",
                self.variant
            ));
        }
        let live = match self.variant {
            Variant::Rir | Variant::ResnetInit => {
                self.mask.rr || self.mask.tr || self.mask.rt || self.mask.tt
            }
            Variant::Resnet => self.mask.rr,
            Variant::Cnn => self.mask.tt,
        };
        if !live {
            return bad(format!(
                "mask {:?} leaves no live weights for variant {}",
                self.mask, self.variant
            ));
        }
        if self.bn_eps.is_nan() || self.bn_eps <= 0.0 || !(0.0..=1.0).contains(&self.bn_momentum) {
            return bad("bn_eps must be > 0 and bn_momentum in [0, 1]".into());
        }
        Ok(())
    }

    /// Total channels out of the stem (`2 * stem_width`).
    pub fn stem_channels(&self) -> usize {
        2 * self.stem_width
    }

    /// Residual channels out of the stem.
    pub fn stem_residual(&self) -> usize {
        self.variant.residual_channels(self.stem_width)
    }

    /// Channels entering the head.
    pub fn head_channels(&self) -> usize {
        2 * self.stages.last().map_or(self.stem_width, |s| s.width)
    }

    /// Every RiR block, in order, with its units and shortcuts resolved.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut out = Vec::new();
        let mut width = self.stem_width;
        for (si, stage) in self.stages.iter().enumerate() {
            for bi in 0..stage.blocks {
                let stride = if bi == 0 { stage.stride } else { 1 };
                let name = format!("s{}.b{}", si + 1, bi);
                let in_res = self.variant.residual_channels(width);
                let out_res = self.variant.residual_channels(stage.width);
                let unit = |k: usize, in_w: usize, stride: usize| {
                    let (ir, or) = (
                        self.variant.residual_channels(in_w),
                        self.variant.residual_channels(stage.width),
                    );
                    UnitSpec {
                        name: format!("{name}.u{k}"),
                        in_ch: 2 * in_w,
                        out_ch: 2 * stage.width,
                        in_res: ir,
                        out_res: or,
                        stride,
                        shortcut: self
                            .variant
                            .unit_shortcut()
                            .then(|| Shortcut::between(ir, or, stride, self.projection)),
                    }
                };
                let units = [unit(0, width, stride), unit(1, stage.width, 1)];
                let outer = self
                    .outer_shortcut
                    .then(|| Shortcut::between(in_res, out_res, stride, self.projection));
                out.push(BlockSpec { name, units, outer });
                width = stage.width;
            }
        }
        out
    }

    /// Every unit, in order.
    pub fn units(&self) -> Vec<UnitSpec> {
        self.blocks()
            .into_iter()
            .flat_map(|b| b.units.into_iter())
            .collect()
    }

    /// Spatial size after a 3x3 convolution with padding 1 (or a 1x1 with
    /// padding 0; both give the same size).
    pub fn conv_out(size: usize, stride: usize) -> usize {
        (size - 1) / stride + 1
    }

    /// Spatial size (height, width) of the feature maps at the head.
    pub fn head_hw(&self) -> (usize, usize) {
        let mut hw = (self.input.height, self.input.width);
        for u in self.units() {
            hw = (
                Self::conv_out(hw.0, u.stride),
                Self::conv_out(hw.1, u.stride),
            );
        }
        hw
    }

    /// Every model tensor a checkpoint of this network holds, with its
    /// shape, in a fixed order. The trainer creates exactly these variables
    /// and the exporter reads exactly these names.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let bn = |out: &mut Vec<(String, Vec<usize>)>, prefix: &str, ch: usize| {
            for n in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{prefix}.bn.{n}"), vec![ch]));
            }
        };
        out.push((
            "stem.conv.weight".into(),
            vec![self.stem_channels(), self.input.channels, 3, 3],
        ));
        bn(&mut out, "stem", self.stem_channels());
        for b in self.blocks() {
            for u in &b.units {
                out.push((
                    format!("{}.conv.weight", u.name),
                    vec![u.out_ch, u.in_ch, 3, 3],
                ));
                bn(&mut out, &u.name, u.out_ch);
                if let Some(Shortcut::Conv {
                    in_res, out_res, ..
                }) = u.shortcut
                {
                    out.push((
                        format!("{}.proj.weight", u.name),
                        vec![out_res, in_res, 1, 1],
                    ));
                }
            }
            if let Some(Shortcut::Conv {
                in_res, out_res, ..
            }) = b.outer
            {
                out.push((
                    format!("{}.weight", b.outer_name()),
                    vec![out_res, in_res, 1, 1],
                ));
            }
        }
        out.push((
            "head.conv.weight".into(),
            vec![self.num_classes, self.head_channels(), 1, 1],
        ));
        bn(&mut out, "head", self.num_classes);
        out
    }

    /// A one-line human description, e.g. `rir 16/32/64 x 2/3/3 blocks`.
    pub fn describe(&self) -> String {
        let widths: Vec<String> = self.stages.iter().map(|s| s.width.to_string()).collect();
        let blocks: Vec<String> = self.stages.iter().map(|s| s.blocks.to_string()).collect();
        format!(
            "{} {} per stream x {} blocks, {} units, outer shortcut {}, {:?} projection",
            self.variant,
            widths.join("/"),
            blocks.join("/"),
            self.units().len(),
            if self.outer_shortcut { "on" } else { "off" },
            self.projection
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset;

    #[test]
    fn paper_network_has_sixteen_units_and_two_strided_blocks() {
        let spec = preset::build("paper", Variant::Rir, InputSpec::new(3, 32, 32), 10).unwrap();
        let units = spec.units();
        assert_eq!(units.len(), 16);
        assert_eq!(units.iter().filter(|u| u.stride == 2).count(), 2);
        assert_eq!(spec.head_hw(), (8, 8));
        assert_eq!(spec.head_channels(), 384);
        let b = &spec.blocks()[2];
        assert_eq!(
            b.units[0].shortcut,
            Some(Shortcut::Conv {
                in_res: 48,
                out_res: 96,
                stride: 2
            })
        );
    }

    #[test]
    fn variants_place_shortcuts_as_documented() {
        // The variant table of docs/training.md, for `tiny` (C = 8 in the
        // first stage): name, residual channels out of the first unit, its
        // shortcut, the first block's outer shortcut by default.
        let table = [
            ("rir", 8, Some(Shortcut::Identity), true),
            ("resnet-init", 8, Some(Shortcut::Identity), false),
            ("resnet", 16, None, true),
            ("cnn", 0, None, false),
        ];
        assert_eq!(
            table.len(),
            Variant::ALL.len(),
            "every variant in the table"
        );
        let input = InputSpec::new(1, 28, 28);
        for (name, residual, unit_shortcut, outer) in table {
            let v: Variant = name.parse().unwrap();
            let spec = preset::build("tiny", v, input, 10).unwrap();
            spec.validate().unwrap();
            let b = &spec.blocks()[0];
            assert_eq!(b.units[0].out_res, residual, "{name}");
            assert_eq!(b.units[0].shortcut, unit_shortcut, "{name}");
            assert_eq!(b.outer.is_some(), outer, "{name}");
            // Where the width doubles at stride 2, a residual stream's
            // shortcut is a projection.
            let down = &spec.blocks()[spec.stages[0].blocks];
            let projects = matches!(
                down.units[0].shortcut,
                Some(Shortcut::Conv { stride: 2, .. })
            );
            assert_eq!(projects, unit_shortcut.is_some(), "{name} at stride 2");
        }
    }

    #[test]
    fn odd_sizes_follow_the_convolution_formula() {
        assert_eq!(ModelSpec::conv_out(28, 2), 14);
        assert_eq!(ModelSpec::conv_out(7, 2), 4);
        assert_eq!(ModelSpec::conv_out(32, 1), 32);
    }

    #[test]
    fn masks_parse_and_reject() {
        let m: BlockMask = "1001".parse().unwrap();
        assert!(m.rr && !m.tr && !m.rt && m.tt);
        assert!("10".parse::<BlockMask>().is_err());
        assert!("10x1".parse::<BlockMask>().is_err());
    }

    #[test]
    fn fixed_outer_shortcut_is_enforced() {
        let mut spec = preset::build("tiny", Variant::Cnn, InputSpec::new(1, 28, 28), 10).unwrap();
        spec.outer_shortcut = true;
        assert!(spec.validate().is_err());
    }
}

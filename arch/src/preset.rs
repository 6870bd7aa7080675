//! Named network sizes. `paper` is the 18-layer + wide RiR of Targ et al.;
//! the smaller ones keep its depth and shape so that they train on a CPU.

use crate::error::SpecError;
use crate::network::{BlockMask, InputSpec, ModelSpec, Projection, StageSpec, Variant};

/// A preset: per-stream widths of the three stages and their block counts.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Name used on the command line.
    pub name: &'static str,
    /// What it is for, shown by `--help` and `rir-train presets`.
    pub about: &'static str,
    /// Per-stream width of each stage (the stem uses the first).
    pub widths: [usize; 3],
    /// RiR blocks per stage.
    pub blocks: [usize; 3],
}

/// Every preset, largest first.
pub const PRESETS: [Preset; 4] = [
    Preset {
        name: "paper",
        about: "the paper's 18-layer + wide RiR: 48/96/192 per stream, ~9.5 M parameters on CIFAR-10",
        widths: [48, 96, 192],
        blocks: [2, 3, 3],
    },
    Preset {
        name: "small",
        about: "paper depth at a third of the width: 16/32/64 per stream, ~1.1 M parameters",
        widths: [16, 32, 64],
        blocks: [2, 3, 3],
    },
    Preset {
        name: "tiny",
        about: "paper depth at a sixth of the width: 8/16/32 per stream, ~0.27 M parameters; trains on 2 CPU cores",
        widths: [8, 16, 32],
        blocks: [2, 3, 3],
    },
    Preset {
        name: "micro",
        about: "one block per stage, 4/8/16 per stream: for tests and smoke runs",
        widths: [4, 8, 16],
        blocks: [1, 1, 1],
    },
];

/// Looks a preset up by name.
pub fn find(name: &str) -> Result<&'static Preset, SpecError> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| SpecError::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.map(|p| p.name).join(", "),
        })
}

/// Builds the specification of preset `name` for one variant and data set,
/// with the variant's default outer shortcut, 1x1 projections and a full mask.
pub fn build(
    name: &str,
    variant: Variant,
    input: InputSpec,
    num_classes: usize,
) -> Result<ModelSpec, SpecError> {
    let p = find(name)?;
    let stages = (0..3)
        .map(|i| StageSpec {
            width: p.widths[i],
            blocks: p.blocks[i],
            stride: if i == 0 { 1 } else { 2 },
        })
        .collect();
    let spec = ModelSpec {
        variant,
        input,
        num_classes,
        stem_width: p.widths[0],
        stages,
        outer_shortcut: variant.default_outer_shortcut(),
        projection: Projection::Conv,
        mask: BlockMask::ALL,
        bn_eps: 1e-5,
        bn_momentum: 0.1,
    };
    spec.validate()?;
    Ok(spec)
}
/// `rir-train presets`: every preset and variant with its parameters and
/// multiply-adds per image, for images of `input` in `classes` classes.
pub fn table(input: InputSpec, classes: usize) -> Result<String, SpecError> {
    use std::fmt::Write as _;
    let mut s = format!(
        "{:<7} {:<12} {:>12} {:>14}  about\n",
        "preset", "variant", "params", "MACs/image"
    );
    for p in PRESETS {
        for v in Variant::ALL {
            let c = build(p.name, v, input, classes)?.cost();
            let about = if v == Variant::Rir { p.about } else { "" };
            let (name, variant) = (p.name, v.name());
            let _ = writeln!(
                s,
                "{name:<7} {variant:<12} {:>12} {:>14}  {about}",
                c.params, c.macs
            );
        }
    }
    Ok(s)
}

//! The ResNet-in-ResNet model specification.
//!
//! Every crate of the project agrees on one description of a network: which
//! units it has, how wide each stream is, which shortcuts exist and what the
//! tensors of a checkpoint are called. The trainer builds a libtorch module
//! from it, the exporter folds the same description into ONNX, and neither
//! has to guess what the other meant.
//!
//! # Layout
//! - [`network`]: variants, shortcut kinds, the block mask, [`ModelSpec`] and the
//!   walk over its units ([`ModelSpec::blocks`]).
//! - [`preset`]: the named configurations (`paper`, `small`, `tiny`, `micro`).
//! - [`cost`]: parameter and multiply-add counts.
//! - [`meta`]: data-set description and the checkpoint metadata schema.
//! - [`error`]: the crate's error type.
//!
//! ```
//! use rir_arch::{preset, Variant, InputSpec};
//! let spec = preset::build("paper", Variant::Rir, InputSpec::new(3, 32, 32), 10).unwrap();
//! let cost = spec.cost();
//! assert!((9_300_000..9_700_000).contains(&cost.params));
//! ```

#![forbid(unsafe_code)]

pub mod cost;
pub mod error;
pub mod meta;
pub mod network;
pub mod preset;

pub use cost::Cost;
pub use error::SpecError;
pub use meta::{CheckpointMeta, DatasetInfo, TrainingState};
pub use network::{
    BlockMask, BlockSpec, InputSpec, ModelSpec, Projection, Shortcut, StageSpec, UnitSpec, Variant,
};

//! Training ResNet-in-ResNet networks with libtorch.
//!
//! # Layout
//! - [`model`]: the network (one masked convolution per unit, explicit
//!   shortcuts, BN, ReLU), built from a `rir_spec::ModelSpec`.
//! - [`four_conv`]: the same network written as four convolutions per unit,
//!   the way public implementations write it; the reference for tests and
//!   the baseline of the throughput benchmark.
//! - [`bench`]: training-throughput measurement for `rir-train bench`.
//! - [`optim`]: SGD with momentum and L2 on kernels only.
//! - [`schedule`]: step, cosine and one-cycle learning rates.
//! - [`train`]: the loop, evaluation, metrics, checkpoints, interruption.
//! - [`ckpt`]: libtorch variables to and from `rir_checkpoint` files.
//! - [`device`]: CPU or CUDA, including loading `libtorch_cuda.so`.
//! - [`plot`]: the PNG of the training curves.
//! - [`error`]: the crate's error type.

pub mod bench;
pub mod ckpt;
pub mod device;
pub mod error;
pub mod four_conv;
pub mod model;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod summary;
pub mod train;

pub use error::TrainError;
pub use model::RirNet;
pub use train::{Outcome, TrainConfig, Trainer};

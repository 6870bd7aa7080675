//! Training ResNet-in-ResNet networks with libtorch.
//!
//! # Layout
//! - [`model`]: the network (one masked convolution per unit, explicit
//!   shortcuts, BN, ReLU), built from a `rir_arch::ModelSpec`.
//! - [`four_conv`]: the same network written as four convolutions per unit,
//!   the way public implementations write it; the reference for tests and
//!   the baseline of the throughput benchmark.
//! - [`bench`]: one training-throughput measurement (a `rir-train bench`
//!   child process).
//! - [`throughput`]: the side-by-side table of `rir-train bench`: ours,
//!   four-conv and eager PyTorch, in child processes.
//! - [`init`]: He-normal, He-uniform, Xavier-normal or orthogonal kernels,
//!   seeded per variable.
//! - [`optim`]: SGD with momentum, Adam and RMSprop, L2 on kernels only.
//! - [`schedule`]: step, cosine and one-cycle learning rates.
//! - [`recipe`]: a run as typed values (`rir-train train`'s flags and the
//!   recipe they become; a sweep's trials are parsed by the same parser).
//! - [`train`]: the loop, evaluation, metrics, checkpoints, interruption.
//! - [`session`]: a run as the CLI drives it: fresh or resumed, what is
//!   printed at its start and end, evaluating a saved checkpoint.
//! - [`summary`]: the tables of `rir-train report` over finished runs;
//!   [`report`]: the command that reads, ranks and draws them;
//!   [`runlog`]: a run read back from its `metrics.jsonl` alone.
//! - [`stats`]: t-intervals of means and of paired differences.
//! - [`sweep`]: search spaces, their trials, successive halving.
//! - [`ckpt`]: libtorch variables to and from `rir_checkpoint` files.
//! - [`device`]: CPU or CUDA, including loading `libtorch_cuda.so`.
//! - [`plot`]: the PNG of the training curves.
//! - [`error`]: the crate's error type.

pub mod bench;
pub mod ckpt;
pub mod device;
pub mod error;
pub mod four_conv;
pub mod init;
pub mod model;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod report;
pub mod runlog;
pub mod schedule;
pub mod session;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod throughput;
pub mod train;

pub use error::TrainError;
pub use model::RirNet;
pub use train::{Outcome, TrainConfig, Trainer};

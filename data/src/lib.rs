//! Image classification data for the RiR trainer and the exporter's checks.
//!
//! # Layout
//! - [`dataset`]: the in-memory [`Dataset`] (u8 CHW images, labels, metadata)
//!   and [`load`], which picks a reader by [`Source`].
//! - [`cifar`]: CIFAR-10 and CIFAR-100 in the official binary format.
//! - [`idx`]: IDX files (Fashion-MNIST), gzip-compressed or raw.
//! - [`fetch`]: downloads CIFAR from its official site and checks its md5.
//! - [`augment`]: pad-and-crop, horizontal flip and normalization into f32.
//! - [`rng`]: the seeded generator that makes shuffling and augmentation
//!   reproducible, independently of libtorch.

#![forbid(unsafe_code)]

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod rng;

pub use dataset::{Dataset, Source, Split, load};
pub use error::DataError;

//! Building engines from options, and batch buckets.
//!
//! Every program that runs a model (the server, `rir-export verify`, the
//! benches) builds its engines here, so backend choice, the CUDA-to-CPU
//! fallback and the bucket plumbing exist once.
//!
//! **Buckets.** An engine that sees a new batch size pays for it: ONNX
//! Runtime's CUDA provider re-plans every convolution (about 290 ms on an
//! H200 with the default exhaustive cuDNN search, each time the size
//! changes), and tract plans are fastest when the batch is concrete. A
//! server therefore only runs a small fixed set of batch sizes, the
//! buckets, padding a formed batch up to the next one. [`Buckets`] holds
//! that set; [`PerBucket`] is an engine made of one engine per bucket.

use std::path::Path;

use crate::engine::{Engine, Output};
use crate::error::InferError;
use crate::ort_engine::{OrtEngine, OrtOptions};
use crate::tract_engine::TractEngine;

/// Which runtime executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// ONNX Runtime (CPU or CUDA).
    Ort,
    /// tract (pure Rust, CPU).
    Tract,
}

/// How engines are made.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// ONNX Runtime or tract.
    pub backend: Backend,
    /// ONNX Runtime's settings, the device among them.
    pub ort: OrtOptions,
    /// One ONNX Runtime session per bucket (`Some(true)`), one for every
    /// bucket (`Some(false)`), or (`None`) one per bucket exactly when the
    /// session runs on CUDA: the CUDA provider re-plans every convolution
    /// whenever a session's batch size changes (about 290 ms on an H200),
    /// so a shared session collapses under dynamic batching there, while
    /// on the CPU one session is cheaper. tract always gets one plan per
    /// bucket, and so does a session that replays a CUDA graph.
    pub per_bucket: Option<bool>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: Backend::Ort,
            ort: OrtOptions::default(),
            per_bucket: None,
        }
    }
}

/// Why a set of batch sizes cannot be buckets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// A size of 0.
    #[error("batch buckets must be positive")]
    Zero,
    /// A size above the largest batch.
    #[error("batch bucket {bucket} is above the maximum batch {max}")]
    AboveMax {
        /// The size.
        bucket: usize,
        /// The largest batch.
        max: usize,
    },
}

/// The batch sizes an engine is run at: ascending, distinct, positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets(Vec<usize>);

impl Buckets {
    /// Powers of two below `max`, and `max` itself.
    pub fn powers_of_two(max: usize) -> Self {
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|&n| n < max)
            .collect();
        sizes.push(max.max(1));
        Buckets(sizes)
    }

    /// Every size from 1 to `max`: no padding ever.
    pub fn every(max: usize) -> Self {
        Buckets((1..=max.max(1)).collect())
    }

    /// The given sizes, sorted; `max` is added when missing, and sizes
    /// above it are an error (a batch never grows past `max`).
    pub fn new(mut sizes: Vec<usize>, max: usize) -> Result<Self, BucketError> {
        if sizes.contains(&0) {
            return Err(BucketError::Zero);
        }
        if let Some(&bucket) = sizes.iter().find(|&&s| s > max) {
            return Err(BucketError::AboveMax { bucket, max });
        }
        sizes.push(max);
        sizes.sort_unstable();
        sizes.dedup();
        Ok(Buckets(sizes))
    }

    /// The smallest bucket that holds `n` images (`None`: above the largest).
    pub fn fit(&self, n: usize) -> Option<usize> {
        self.0.iter().copied().find(|&b| b >= n)
    }

    /// The largest bucket.
    pub fn max(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }

    /// The sizes, ascending.
    pub fn sizes(&self) -> &[usize] {
        &self.0
    }
}

/// One engine per batch size; a run at a size without an engine is an error
/// (the caller pads to a bucket first).
pub struct PerBucket {
    engines: Vec<(usize, Box<dyn Engine>)>,
}

impl PerBucket {
    /// An engine from `(batch size, engine)` pairs.
    pub fn new(engines: Vec<(usize, Box<dyn Engine>)>) -> Self {
        PerBucket { engines }
    }
}

impl Engine for PerBucket {
    fn name(&self) -> String {
        self.engines
            .first()
            .map_or_else(|| "empty".into(), |(_, e)| e.name())
    }

    fn fixed_batch_sizes(&self) -> bool {
        true
    }

    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>, InferError> {
        let n = shape.first().copied().unwrap_or(0);
        let sizes: Vec<usize> = self.engines.iter().map(|(b, _)| *b).collect();
        let (_, engine) = self
            .engines
            .iter_mut()
            .find(|(b, _)| *b == n)
            .ok_or_else(|| InferError::Run {
                engine: "per-bucket",
                detail: format!("no engine for batch size {n} (buckets: {sizes:?})"),
            })?;
        engine.run(input, shape)
    }
}

/// One engine for `path`, at batch size `batch` when the backend can use a
/// fixed one (`None`: any size).
pub fn load_engine(
    path: &Path,
    options: &EngineOptions,
    batch: Option<usize>,
) -> Result<Box<dyn Engine>, InferError> {
    Ok(match options.backend {
        Backend::Tract => Box::new(TractEngine::load_batch(path, batch)?),
        Backend::Ort => Box::new(OrtEngine::load(path, &options.ort)?),
    })
}

/// An engine that serves every bucket: one shared engine, or one per
/// bucket (see [`EngineOptions::per_bucket`]; tract always).
pub fn load_bucketed(
    path: &Path,
    options: &EngineOptions,
    buckets: &Buckets,
) -> Result<Box<dyn Engine>, InferError> {
    let sizes = buckets.sizes();
    let first: Box<dyn Engine> = match options.backend {
        Backend::Tract => load_engine(path, options, sizes.first().copied())?,
        Backend::Ort => {
            let ort = OrtEngine::load(path, &options.ort)?;
            if options.ort.cuda.graph && !ort.on_cuda() {
                tracing::warn!(
                    "{}: CUDA graphs asked for, but the session runs on the CPU: served without",
                    path.display()
                );
            }
            // A graph is captured at one batch size: a session per bucket.
            let per_bucket = ort.cuda_graph() || options.per_bucket.unwrap_or(ort.on_cuda());
            if !per_bucket || sizes.len() < 2 {
                return Ok(Box::new(ort));
            }
            Box::new(ort)
        }
    };
    let mut engines = Vec::with_capacity(sizes.len());
    engines.push((sizes[0], first));
    for &b in &sizes[1..] {
        engines.push((b, load_engine(path, options, Some(b))?));
    }
    Ok(Box::new(PerBucket::new(engines)))
}

/// Runs every bucket once on constant input, so that first requests pay
/// for no allocation or kernel selection, and checks that the outputs are
/// finite. `chw` is one image's shape.
pub fn warm_up(
    engine: &mut dyn Engine,
    chw: [usize; 3],
    buckets: &Buckets,
) -> Result<(), InferError> {
    let per: usize = chw.iter().product();
    for &batch in buckets.sizes() {
        let x = vec![0.5f32; batch * per];
        let outs = engine
            .run(&x, &[batch, chw[0], chw[1], chw[2]])
            .map_err(|e| InferError::WarmUp {
                batch,
                source: Box::new(e),
            })?;
        if outs.iter().flat_map(|o| &o.data).any(|v| !v.is_finite()) {
            return Err(InferError::NonFinite { batch });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_end_at_the_maximum() {
        assert_eq!(
            Buckets::powers_of_two(64).sizes(),
            &[1, 2, 4, 8, 16, 32, 64]
        );
        assert_eq!(
            Buckets::powers_of_two(48).sizes(),
            &[1, 2, 4, 8, 16, 32, 48]
        );
        assert_eq!(Buckets::powers_of_two(1).sizes(), &[1]);
    }

    #[test]
    fn fit_picks_the_smallest_bucket_that_holds_the_batch() {
        let b = Buckets::new(vec![4, 1, 16], 32).unwrap();
        assert_eq!(b.sizes(), &[1, 4, 16, 32]);
        assert_eq!(b.fit(1), Some(1));
        assert_eq!(b.fit(2), Some(4));
        assert_eq!(b.fit(17), Some(32));
        assert_eq!(b.fit(33), None);
    }

    #[test]
    fn bad_buckets_are_refused() {
        assert!(Buckets::new(vec![0, 4], 8).is_err());
        assert_eq!(
            Buckets::new(vec![16], 8).unwrap_err(),
            BucketError::AboveMax { bucket: 16, max: 8 }
        );
    }
}

//! The CUDA execution provider's settings. [`Device`] itself lives in
//! `rir-contract`, where crates that link no engine (the trainer) read it.

pub use rir_contract::device::{CudaRequired, Device, NoCuda};

/// How cuDNN picks convolution algorithms in ONNX Runtime's CUDA provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConvSearch {
    /// Benchmark every algorithm on the first run of each shape (ONNX
    /// Runtime's default; fastest kernels, slow first run per shape).
    #[default]
    Exhaustive,
    /// cuDNN's heuristics: no benchmarking.
    Heuristic,
    /// Implicit precomputed GEMM, always.
    Default,
}

/// Settings of ONNX Runtime's CUDA execution provider that matter for
/// these models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// cuDNN convolution algorithm search.
    pub conv_search: ConvSearch,
    /// Allow TF32 tensor-core math for fp32 convolutions and GEMMs.
    pub tf32: bool,
    /// Let the provider run convolutions in NHWC.
    pub prefer_nhwc: bool,
    /// Upper bound of the provider's memory arena, bytes (None: no bound).
    pub memory_limit: Option<usize>,
    /// Capture each session's kernels in a CUDA graph and replay it, which
    /// removes the per-kernel launch cost that dominates batch-1 calls. A
    /// graph has one shape and fixed buffers, so such a session runs
    /// through [`crate::OrtOptions::bound_io`]'s binding at one batch size.
    pub graph: bool,
}

impl CudaOptions {
    /// Exact float32 (no TF32), the provider's own layout: what checks
    /// against another runtime use (`rir-export verify`).
    pub fn exact() -> Self {
        CudaOptions {
            conv_search: ConvSearch::Exhaustive,
            tf32: false,
            prefer_nhwc: false,
            memory_limit: None,
            graph: false,
        }
    }

    /// The fastest measured on an H200 for these models (README, "GPU"):
    /// TF32 convolutions (PyTorch's cuDNN default too) in NHWC.
    pub fn fast() -> Self {
        CudaOptions {
            tf32: true,
            prefer_nhwc: true,
            ..Self::exact()
        }
    }
}

impl Default for CudaOptions {
    /// [`CudaOptions::exact`].
    fn default() -> Self {
        Self::exact()
    }
}

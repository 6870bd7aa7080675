//! The engine trait shared by ONNX Runtime and tract.

use crate::error::InferError;

/// One output tensor of a run: name, shape and float32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Output name in the graph.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

/// Something that runs a model with one float32 input.
///
/// `run` takes `&mut self` because ONNX Runtime sessions do; a server
/// keeps one engine per worker rather than sharing one behind a lock.
pub trait Engine: Send {
    /// Short name for logs and reports (`onnxruntime-cpu`, `tract`, ...).
    fn name(&self) -> String;
    /// Runs the model on `input` of `shape` (NCHW) and returns every output.
    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>, InferError>;
    /// Whether callers should run it only at a few fixed batch sizes,
    /// padding batches up to them: true where a new batch size is expensive
    /// (ONNX Runtime's CUDA provider re-plans its convolutions), has no
    /// plan (one engine per bucket) or allocates buffers for it (bound
    /// input and outputs). Where it is false, padding would only
    /// add work, so batches run at their own size.
    fn fixed_batch_sizes(&self) -> bool {
        false
    }
}

/// Finds an output by name.
pub fn output<'a>(outputs: &'a [Output], name: &str) -> Option<&'a Output> {
    outputs.iter().find(|o| o.name == name)
}

/// Largest |a - b| over two equally long slices (NaN counts as infinite,
/// so a NaN on either side can never pass a tolerance).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "comparing slices of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0, f32::max)
}

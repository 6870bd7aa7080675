//! Runs through an ONNX Runtime IoBinding whose buffers never move.
//!
//! A CUDA graph replays the kernels it captured against the addresses it
//! captured them with, so ONNX Runtime runs one only through an IoBinding
//! whose input and outputs are preallocated on the device and stay bound
//! (ONNX Runtime's "Using CUDA Graphs" notes). [`Bound`] holds that for one
//! batch shape: the input and every output on the session's device, a host
//! twin of each, the input copied in before a run and the outputs copied
//! out after it. Without graphs the same path keeps the session from
//! allocating its input and outputs per run. On the CPU both buffers of a
//! pair are host memory, which is how the path is tested where no GPU is.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, ValueType};

use crate::engine::Output;

/// One output: its name, its shape at the bound batch size, and its
/// buffers on the device and on the host.
struct BoundOutput {
    name: String,
    shape: Vec<usize>,
    device: Tensor<f32>,
    host: Tensor<f32>,
}

/// The binding of one session at one input shape.
pub(crate) struct Bound {
    shape: Vec<usize>,
    binding: IoBinding,
    host_input: Tensor<f32>,
    device_input: Tensor<f32>,
    outputs: Vec<BoundOutput>,
}

impl Bound {
    /// Allocates and binds the buffers of `session` for inputs of `shape`,
    /// on the CUDA device when `cuda`, else in host memory.
    pub(crate) fn new(
        session: &Session,
        input: &str,
        shape: &[usize],
        cuda: bool,
    ) -> Result<Self, String> {
        let device = device_allocator(session, cuda)?;
        let host = Allocator::default();
        let mut binding = session.create_binding().map_err(|e| e.to_string())?;
        let device_input =
            Tensor::<f32>::new(&device, shape.to_vec()).map_err(|e| e.to_string())?;
        binding
            .bind_input(input, &device_input)
            .map_err(|e| format!("binding input {input}: {e}"))?;
        let batch = shape.first().copied().unwrap_or(1);
        let mut outputs = Vec::new();
        for outlet in session.outputs() {
            let name = outlet.name().to_string();
            let shape =
                output_shape(outlet.dtype(), batch).map_err(|e| format!("output {name}: {e}"))?;
            let mut device_output =
                Tensor::<f32>::new(&device, shape.clone()).map_err(|e| e.to_string())?;
            binding
                .bind_output(name.as_str(), &mut device_output)
                .map_err(|e| format!("binding output {name}: {e}"))?;
            outputs.push(BoundOutput {
                host: Tensor::<f32>::new(&host, shape.clone()).map_err(|e| e.to_string())?,
                device: device_output,
                name,
                shape,
            });
        }
        Ok(Bound {
            shape: shape.to_vec(),
            binding,
            host_input: Tensor::<f32>::new(&host, shape.to_vec()).map_err(|e| e.to_string())?,
            device_input,
            outputs,
        })
    }

    /// The input shape this binding was made for.
    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Copies `input` in, runs `session` on the bound buffers, and copies
    /// every output out.
    pub(crate) fn run(
        &mut self,
        session: &mut Session,
        input: &[f32],
    ) -> Result<Vec<Output>, String> {
        let (_, staged) = self.host_input.extract_tensor_mut();
        if staged.len() != input.len() {
            return Err(format!(
                "{} values for a bound input of shape {:?}",
                input.len(),
                self.shape
            ));
        }
        staged.copy_from_slice(input);
        self.host_input
            .copy_into(&mut self.device_input)
            .map_err(|e| format!("copying the input to the device: {e}"))?;
        session
            .run_binding(&self.binding)
            .map_err(|e| e.to_string())?;
        self.outputs
            .iter_mut()
            .map(|o| {
                o.device
                    .copy_into(&mut o.host)
                    .map_err(|e| format!("copying output {} to the host: {e}", o.name))?;
                Ok(Output {
                    name: o.name.clone(),
                    shape: o.shape.clone(),
                    data: o.host.extract_tensor().1.to_vec(),
                })
            })
            .collect()
    }
}

/// The allocator of the buffers ONNX Runtime reads and writes: the CUDA
/// device's (through the session, which owns the provider) or the host's.
fn device_allocator(session: &Session, cuda: bool) -> Result<Allocator, String> {
    if !cuda {
        return Ok(Allocator::default());
    }
    let info = MemoryInfo::new(
        AllocationDevice::CUDA,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(|e| e.to_string())?;
    Allocator::new(session, info).map_err(|e| format!("the CUDA allocator: {e}"))
}

/// An output's shape at batch size `batch`: the model's declared shape
/// with its first dimension set to the batch. Every other dimension must
/// be fixed, since the buffer is allocated before any run.
fn output_shape(dtype: &ValueType, batch: usize) -> Result<Vec<usize>, String> {
    let ValueType::Tensor { shape, .. } = dtype else {
        return Err(format!("{dtype} is not a tensor"));
    };
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, usize::try_from(d)) {
            (0, _) => Ok(batch),
            (_, Ok(d)) => Ok(d),
            (_, Err(_)) => Err(format!(
                "dimension {i} of {shape:?} is dynamic; a bound output needs every dimension but the batch fixed"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ort::value::{Shape, SymbolicDimensions, TensorElementType};

    use super::*;

    fn tensor(dims: &[i64]) -> ValueType {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::new(dims.iter().copied()),
            dimension_symbols: SymbolicDimensions::empty(dims.len()),
        }
    }

    #[test]
    fn an_output_shape_takes_the_batch_and_keeps_fixed_dimensions() {
        assert_eq!(output_shape(&tensor(&[-1, 10]), 8).unwrap(), [8, 10]);
        assert_eq!(output_shape(&tensor(&[1, 10]), 4).unwrap(), [4, 10]);
        let err = output_shape(&tensor(&[-1, -1]), 4).unwrap_err();
        assert!(
            err.contains("dimension 1") && err.contains("dynamic"),
            "{err}"
        );
    }
}

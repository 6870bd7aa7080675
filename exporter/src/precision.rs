//! The arithmetic an export computes in, and the float32 twin of a
//! half-precision export that `verify` measures it against.
//!
//! A half-precision export keeps float32 at its edges: `image` comes in as
//! float32 and is normalized in float32, one `Cast` turns it to float16, the
//! body (every kernel and bias stored as float16) runs in float16, and one
//! `Cast` turns the logits back before `Softmax`. Clients, the server and a
//! Triton configuration therefore see the same FP32 tensors as for a float32
//! export; only the arithmetic inside changes.
//!
//! bfloat16 is not offered: ONNX's `Conv` accepts it only from opset 22, and
//! ONNX Runtime's CPU provider has no bfloat16 convolution to verify it with.

use tract_onnx::pb::{ModelProto, TensorProto, tensor_proto::DataType};

use crate::error::{ExportError, GraphError, UnknownPrecision};

/// Precision of an export's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 throughout: exact to the checkpoint up to summation order.
    #[default]
    Fp32,
    /// float16 kernels and activations, float32 input and outputs: half the
    /// file, and the tensor cores of a GPU.
    Fp16,
    /// int8 kernels and uint8 activations in QDQ form, made from a float32
    /// export by [`crate::quantize`]; never built directly, so its
    /// [`Precision::data_type`] and [`Precision::encode`] are float32's.
    Int8,
}

impl Precision {
    /// The name in `--precision` and in the model's `rir.precision` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }

    /// The ONNX element type of the body's tensors.
    pub fn data_type(self) -> DataType {
        match self {
            Precision::Fp32 | Precision::Int8 => DataType::Float,
            Precision::Fp16 => DataType::Float16,
        }
    }

    /// Little-endian bytes of `values` in this precision (round to nearest).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Precision::Fp32 | Precision::Int8 => {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            Precision::Fp16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "int8" => Ok(Precision::Int8),
            other => Err(UnknownPrecision(other.to_string())),
        }
    }
}

/// The float32 twin of a half-precision model: every float16 initializer
/// widened exactly to float32 and every `Cast` to float16 or float32 made an
/// `Identity`, so the twin computes the same weights in float32. What the
/// half model's outputs differ from the twin's is what half precision costs.
pub fn widen(model: &ModelProto) -> Result<ModelProto, ExportError> {
    let mut twin = model.clone();
    let graph = twin.graph.as_mut().ok_or(GraphError::NoGraph)?;
    for t in &mut graph.initializer {
        if t.data_type == DataType::Float16 as i32 {
            widen_tensor(t)?;
        }
    }
    let (half, float) = (DataType::Float16 as i64, DataType::Float as i64);
    for node in &mut graph.node {
        let to = node.attribute.iter().find(|a| a.name == "to").map(|a| a.i);
        if node.op_type == "Cast" && (to == Some(half) || to == Some(float)) {
            node.op_type = "Identity".into();
            node.attribute.clear();
        }
    }
    Ok(twin)
}

fn widen_tensor(t: &mut TensorProto) -> Result<(), ExportError> {
    // float16 values live in raw_data, or one per int32_data element.
    let halves: Vec<half::f16> = if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(2) {
            return Err(GraphError::OddFloat16(t.name.clone()).into());
        }
        t.raw_data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
            .collect()
    } else {
        t.int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16))
            .collect()
    };
    t.raw_data = halves
        .iter()
        .flat_map(|h| h.to_f32().to_le_bytes())
        .collect();
    t.int32_data.clear();
    t.data_type = DataType::Float as i32;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_encoding_rounds_to_nearest_and_widens_back_exactly() {
        let values = [0.0f32, 1.0, -2.5, 1.0 / 3.0, 65504.0, 1e-8];
        let bytes = Precision::Fp16.encode(&values);
        assert_eq!(bytes.len(), 2 * values.len());
        let mut t = TensorProto {
            name: "w".into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Float16 as i32,
            raw_data: bytes,
            ..Default::default()
        };
        widen_tensor(&mut t).unwrap();
        let back: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // Exactly representable values survive; 1/3 is the nearest half
        // (0.33325195); 1e-8 is below the smallest subnormal half and rounds to 0.
        assert_eq!(back, vec![0.0, 1.0, -2.5, 0.333_251_95, 65504.0, 0.0]);
        assert_eq!(t.data_type, DataType::Float as i32);
    }

    #[test]
    fn precision_names_round_trip() {
        for p in [Precision::Fp32, Precision::Fp16, Precision::Int8] {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
        }
        assert!("bf16".parse::<Precision>().is_err());
    }
}

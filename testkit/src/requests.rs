//! Requests to send: ModelInfer for the test repository's gray 28x28 models.

use rir_contract::{Datatype, onnx};
use rir_proto::inference::model_infer_request::InferInputTensor;
use rir_proto::inference::{InferTensorContents, ModelInferRequest};

/// A ModelInferRequest of `n` gray 28x28 FP32 images (`data`) for `model`:
/// raw contents, or typed ones when `raw` is false.
pub fn fp32_request(model: &str, n: usize, data: &[f32], raw: bool) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: "req-1".into(),
        inputs: vec![InferInputTensor {
            name: onnx::INPUT.into(),
            datatype: Datatype::Fp32.name().into(),
            shape: vec![n as i64, 1, 28, 28],
            contents: (!raw).then(|| InferTensorContents {
                fp32_contents: data.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        raw_input_contents: match raw {
            true => vec![rir_proto::raw::f32_bytes(data)],
            false => vec![],
        },
        ..Default::default()
    }
}

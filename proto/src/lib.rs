//! Wire types of the rir server, generated from `inference.proto` (the
//! KServe v2 / Triton protocol, which imports Triton's model configuration
//! from `model_config.proto`) and `rir.proto` (the image-classification
//! call). The server implements them; clients (the load tester, the tests)
//! call them. [`config_text`] reads and writes `config.pbtxt` through the
//! same schema.

#![forbid(unsafe_code)]

/// `inference.*`: KServe v2 / Open Inference Protocol with Triton extensions.
#[allow(missing_docs, clippy::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// `rir.v1.*`: the image-classification service.
#[allow(missing_docs, clippy::all)]
pub mod classify {
    tonic::include_proto!("rir.v1");
}

pub mod config_text;
pub mod wire;

/// Encoded `FileDescriptorSet` of both files, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rir_descriptor");

/// The byte layout of KServe v2 `raw_input_contents` / `raw_output_contents`
/// for FP32 tensors (little-endian, row-major), shared by the server and
/// its clients.
pub mod raw {
    /// FP32 values as raw contents.
    pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Raw contents as FP32 values; a trailing partial value is ignored
    /// (callers check the length against the shape first).
    pub fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

//! Wire types of the rir server, generated from `inference.proto` (the
//! KServe v2 / Triton protocol) and `rir.proto` (the image-classification
//! call). The server implements them; clients (the load tester, the tests)
//! call them.

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

/// Encoded `FileDescriptorSet` of both files, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rir_descriptor");

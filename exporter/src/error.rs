//! The exporter's error type.

use std::path::PathBuf;

/// Why an export or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint is unreadable, truncated, or lacks a tensor.
    #[error(transparent)]
    Checkpoint(#[from] rir_checkpoint::CheckpointError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A model file is unreadable or not ONNX.
    #[error(transparent)]
    ModelFile(#[from] rir_contract::model_file::ModelFileError),
    /// The checkpoint's metadata cannot become the model's.
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    /// The ONNX graph is not one this exporter can read or rewrite.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Quantization cannot proceed.
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    /// A file that is not ONNX.
    #[error("{} is not ONNX: {source}", path.display())]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        #[source]
        source: prost::DecodeError,
    },
    /// Bytes that are not an ONNX model the exporter can describe.
    #[error(transparent)]
    Model(#[from] rir_contract::model_file::NotOnnx),
    /// A pass of the int8 rewrite failed.
    #[error("int8 rewrite, pass {pass}: {source}")]
    Pass {
        /// The pass's name.
        pass: &'static str,
        /// Why.
        #[source]
        source: Box<ExportError>,
    },
    /// A preset that does not build.
    #[error(transparent)]
    Spec(#[from] rir_arch::SpecError),
    /// An engine failed to load or run the model.
    #[error(transparent)]
    Infer(#[from] rir_infer::InferError),
    /// The model records a precision this exporter does not know.
    #[error("metadata: {0}")]
    Precision(#[from] UnknownPrecision),
    /// An int8 model's float32 source is missing or not the file it was
    /// quantized from.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The job cannot be done as asked.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The data set for the accuracy check could not be read.
    #[error(transparent)]
    Data(#[from] rir_data::DataError),
}

/// A name that is not a precision of the exporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (fp32, fp16, int8)")]
pub struct UnknownPrecision(pub String);

/// Why an int8 model's source cannot serve as its reference.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No source was given.
    #[error("an int8 model is verified against its float32 source: pass --source FP32.onnx")]
    Missing,
    /// The source is not the file the model was quantized from.
    #[error(
        "{path} has sha256 {found}, but the model was quantized from {recorded} (rir.quantization)"
    )]
    Mismatch {
        /// The file given.
        path: PathBuf,
        /// Its digest.
        found: String,
        /// The digest the int8 model records.
        recorded: String,
    },
}

/// Why an export was refused before any work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// int8 is quantized from the folded graph.
    #[error("int8 is quantized from the folded export: drop --no-fold")]
    Int8Unfolded,
}

/// Why a checkpoint's metadata cannot become the model's.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The normalization does not match the channels.
    #[error("normalization has {means} means and {stds} stds for {channels} channels")]
    Normalization {
        means: usize,
        stds: usize,
        channels: usize,
    },
    /// A value that does not serialize.
    #[error("{key}: {source}")]
    Json {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// `build_model` asked for int8.
    #[error("int8 is quantized from the float32 export (rir_exporter::quantize)")]
    Int8NotBuilt,
}

/// Why a graph cannot be read or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A model without a graph.
    #[error("the model has no graph")]
    NoGraph,
    /// A graph without an input.
    #[error("the model has no input")]
    NoInput,
    /// An input that is not images.
    #[error("input `{input}` is not [batch, C, H, W]: {dims:?}")]
    NotImages {
        input: String,
        dims: Vec<Option<usize>>,
    },
    /// No class scores.
    #[error("no `{0}` output of shape [batch, classes]")]
    NoLogits(&'static str),
    /// An engine's run without an output asked for.
    #[error("{engine} returned no `{output}` output")]
    NoOutput { engine: String, output: String },
    /// A weight that is not float32.
    #[error("initializer `{0}` is not float32 (quantize a float32 export)")]
    NotFloat32(String),
    /// A float16 weight of an odd size.
    #[error("float16 initializer `{0}` has an odd number of bytes")]
    OddFloat16(String),
    /// A kernel or bias that is not a constant.
    #[error("{what} `{name}` is not an initializer")]
    NotInitializer { what: &'static str, name: String },
    /// A unit with every sub-kernel masked.
    #[error("unit {0} has no live weights")]
    NoLiveWeights(String),
    /// Nothing an int8 rewrite applies to.
    #[error("no convolution over a Relu's output to quantize: is this a rir-export model?")]
    NothingToQuantize,
}

/// Why quantization cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// No calibration image.
    #[error("calibration needs at least one training image")]
    NoImages,
    /// A model that is not float32.
    #[error("the model is {0}; quantize its float32 export")]
    NotFloat32(String),
    /// A tensor the plan quantizes and calibration did not see.
    #[error("no calibrated range for `{0}`")]
    NoRange(String),
    /// Calibration could not read the tensor it watches.
    #[error("calibration: no output `{0}`")]
    NoOutput(String),
    /// The calibration images cannot be read.
    #[error("calibration images: {0}")]
    Images(#[source] Unavailable),
}

/// Why the model's data set cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The metadata names no data set this build reads.
    #[error("unknown data set `{0}` in the model's metadata")]
    UnknownDataset(String),
    /// The data set's files are missing or unreadable.
    #[error(transparent)]
    Unreadable(#[from] rir_data::DataError),
}

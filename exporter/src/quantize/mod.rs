//! Static post-training int8 quantization of a folded float32 export.
//!
//! The kernels go onto symmetric int8 grids, one scale per output channel;
//! the activations between the units onto uint8 grids whose ranges are
//! calibrated on training images of the data set the model records; the
//! biases onto the int32 grids of the accumulators. The model is written in
//! QDQ form (see [`rewrite`]), so ONNX Runtime runs integer kernels and
//! every ONNX reader can still read it. The input, its normalization, the
//! stem, the head and the softmax stay float32 (see [`plan`]).
//!
//! # Layout
//! - [`grid`]: the integer grids and their arithmetic;
//! - [`plan`]: which tensors of the graph are quantized;
//! - [`calibrate`]: their ranges, measured on images;
//! - [`rewrite`]: the QDQ graph.

pub mod calibrate;
pub mod grid;
pub mod plan;
pub mod rewrite;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use rir_contract::ModelInfo;
use rir_contract::onnx::Quantization;
use rir_contract::onnx::keys;
use rir_data::Dataset;
use rir_data::rng::Rng;
use rir_infer::{OrtEngine, OrtOptions};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

pub use calibrate::Method;
pub use grid::{ActivationGrid, WeightScheme};

use crate::digest::sha256_hex;
use crate::error::{ExportError, GraphError, MetadataError, QuantizeError};
use crate::measure::unit_pixels;
use crate::precision::Precision;

/// How to quantize.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Training images to calibrate on.
    pub images: usize,
    /// How a range is chosen from them.
    pub method: Method,
    /// Which training images (a seeded draw without replacement).
    pub seed: u64,
    /// The kernels' grid.
    pub weights: WeightScheme,
    /// Data folder (default: the data set's usual place).
    pub data_dir: Option<std::path::PathBuf>,
    /// ONNX Runtime, which runs the float model during calibration.
    pub ort: OrtOptions,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            images: 512,
            method: Method::default(),
            seed: 0,
            weights: WeightScheme::default(),
            data_dir: None,
            ort: OrtOptions::default(),
        }
    }
}

/// The calibration images: `opts.images` training images of `data`, drawn
/// without replacement with `opts.seed`, as float32 pixels in [0, 1].
pub fn calibration_images(data: &Dataset, opts: &QuantizeOptions) -> Result<Vec<f32>, ExportError> {
    let per = data.image_bytes();
    let n = opts.images.min(data.train.len());
    if n == 0 {
        return Err(QuantizeError::NoImages.into());
    }
    let order = Rng::new(opts.seed).permutation(data.train.len());
    Ok(order[..n]
        .iter()
        .flat_map(|&i| unit_pixels(data.train.image(i, per)))
        .collect())
}

/// Quantizes the float32 `model`, calibrating on `images` (float32 pixels
/// of the model's input shape). `source_sha256` is recorded in the result's
/// metadata, so that verification can check it is given the right source.
pub fn quantize_model(
    model: &ModelProto,
    images: &[f32],
    source_sha256: &str,
    opts: &QuantizeOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(ModelProto, Quantization), ExportError> {
    let info = ModelInfo::from_bytes(&model.encode_to_vec())?;
    match info.metadata.get(keys::PRECISION).map(String::as_str) {
        None | Some("fp32") => {}
        Some(other) => {
            return Err(QuantizeError::NotFloat32(other.to_string()).into());
        }
    }
    let chw = crate::measure::input_chw(&info)?;
    let graph = model.graph.as_ref().ok_or(GraphError::NoGraph)?;
    let plan = plan::plan(graph)?;
    let names: Vec<&str> = plan.calibrated().map(|(n, _)| n).collect();
    let seen = calibrate::observe(model, &names, images, chw, &opts.ort, progress)?;
    let grids: HashMap<String, ActivationGrid> = plan
        .calibrated()
        .zip(&seen)
        .map(|((name, non_negative), o)| {
            let (lo, hi) = o.range(opts.method, non_negative);
            (name.to_string(), ActivationGrid::spanning(lo, hi))
        })
        .collect();
    let mut out = model.clone();
    out.graph = Some(rewrite::rewrite(graph, &plan, &grids, opts.weights)?);
    let record = Quantization {
        method: opts.method.as_str().into(),
        images: images.len() / chw.iter().product::<usize>().max(1),
        seed: opts.seed,
        per_channel: opts.weights.per_channel,
        max_code: opts.weights.max_code,
        convolutions: plan.convs.len(),
        tensors: plan.tensors.len(),
        source_sha256: source_sha256.into(),
        test_accuracy: None,
        source_test_accuracy: None,
    };
    set_metadata(
        &mut out.metadata_props,
        keys::PRECISION,
        Precision::Int8.as_str(),
    );
    record_quantization(&mut out, &record)?;
    out.doc_string = out
        .doc_string
        .replace("fp32 arithmetic", "int8 arithmetic (QDQ)");
    Ok((out, record))
}

/// Writes `record` into `model`'s metadata.
pub fn record_quantization(
    model: &mut ModelProto,
    record: &Quantization,
) -> Result<(), ExportError> {
    let json = serde_json::to_string(record).map_err(|source| MetadataError::Json {
        key: keys::QUANTIZATION,
        source,
    })?;
    set_metadata(&mut model.metadata_props, keys::QUANTIZATION, &json);
    Ok(())
}

fn set_metadata(props: &mut Vec<StringStringEntryProto>, key: &str, value: &str) {
    props.retain(|p| p.key != key);
    props.push(StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    });
}

/// Reads the float32 model `source`, quantizes it on training images of its
/// data set, scores it and its source on the whole test split (recorded in
/// its metadata: what a served int8 model is held to) and writes `output`
/// atomically.
pub fn quantize_file(
    source: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: impl FnMut(usize, usize),
) -> Result<ModelProto, ExportError> {
    let bytes = std::fs::read(source).map_err(|e| ExportError::Io(source.to_path_buf(), e))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::NotOnnx {
        path: source.to_path_buf(),
        source: e,
    })?;
    let info = ModelInfo::from_bytes(&bytes)?;
    let data =
        crate::recorded::dataset(&info, opts.data_dir.as_deref()).map_err(QuantizeError::Images)?;
    let images = calibration_images(&data, opts)?;
    let (mut q, mut record) = quantize_model(&model, &images, &sha256_hex(&bytes), opts, progress)?;
    if !data.test.is_empty() {
        let dir = tempfile::tempdir().map_err(|e| ExportError::Io(std::env::temp_dir(), e))?;
        let path = dir.path().join("int8.onnx");
        std::fs::write(&path, q.encode_to_vec()).map_err(|e| ExportError::Io(path.clone(), e))?;
        let score = |p: &Path| -> Result<f64, ExportError> {
            let mut engine = OrtEngine::load(p, &opts.ort)?;
            crate::measure::test_accuracy(&mut engine, &data.test, &info)
        };
        record.test_accuracy = Some(score(&path)?);
        record.source_test_accuracy = Some(score(source)?);
        record_quantization(&mut q, &record)?;
    }
    rir_checkpoint::write_atomic(output, &q.encode_to_vec())?;
    Ok(q)
}

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
use rir_contract::onnx::keys;
use rir_data::rng::Rng;
use rir_infer::{ModelInfo, OrtOptions};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

pub use calibrate::Method;
pub use grid::{ActivationGrid, WeightScheme};

use crate::error::ExportError;
use crate::export::sha256_hex;
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

/// The calibration images: `opts.images` training images of the data set
/// the model records, drawn without replacement with `opts.seed`, as
/// float32 pixels in [0, 1].
pub fn calibration_images(
    info: &ModelInfo,
    opts: &QuantizeOptions,
) -> Result<Vec<f32>, ExportError> {
    let data = crate::recorded::dataset(info, opts.data_dir.as_deref())
        .map_err(|e| ExportError::Metadata(format!("calibration images: {e}")))?;
    let per = data.image_bytes();
    let n = opts.images.min(data.train.len());
    if n == 0 {
        return Err(ExportError::Metadata(
            "calibration needs at least one training image".into(),
        ));
    }
    let order = Rng::new(opts.seed).permutation(data.train.len());
    Ok(order[..n]
        .iter()
        .flat_map(|&i| {
            data.train
                .image(i, per)
                .iter()
                .map(|&p| f32::from(p) / 255.0)
        })
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
) -> Result<ModelProto, ExportError> {
    let info = ModelInfo::from_bytes(&model.encode_to_vec())
        .map_err(|e| ExportError::Metadata(e.to_string()))?;
    match info.metadata.get(keys::PRECISION).map(String::as_str) {
        None | Some("fp32") => {}
        Some(other) => {
            return Err(ExportError::Metadata(format!(
                "the model is {other}; quantize its float32 export"
            )));
        }
    }
    let chw = crate::verify::input_chw(&info)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ExportError::Metadata("the model has no graph".into()))?;
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
    let n = images.len() / chw.iter().product::<usize>().max(1);
    let record = serde_json::json!({
        "method": opts.method.as_str(),
        "images": n,
        "seed": opts.seed,
        "weights": {
            "type": "int8", "symmetric": true,
            "per_channel": opts.weights.per_channel, "max_code": opts.weights.max_code,
        },
        "activations": {"type": "uint8", "per_tensor": true},
        "convolutions": plan.convs.len(),
        "tensors": plan.tensors.len(),
        "source_sha256": source_sha256,
    });
    set_metadata(
        &mut out.metadata_props,
        keys::PRECISION,
        Precision::Int8.as_str(),
    );
    set_metadata(
        &mut out.metadata_props,
        keys::QUANTIZATION,
        &record.to_string(),
    );
    out.doc_string = out
        .doc_string
        .replace("fp32 arithmetic", "int8 arithmetic (QDQ)");
    Ok(out)
}

fn set_metadata(props: &mut Vec<StringStringEntryProto>, key: &str, value: &str) {
    props.retain(|p| p.key != key);
    props.push(StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    });
}

/// Reads the float32 model `source`, quantizes it on images of its data
/// set and writes `output` atomically.
pub fn quantize_file(
    source: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: impl FnMut(usize, usize),
) -> Result<ModelProto, ExportError> {
    let bytes = std::fs::read(source).map_err(|e| ExportError::Io(source.to_path_buf(), e))?;
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| ExportError::Metadata(format!("{} is not ONNX: {e}", source.display())))?;
    let info = ModelInfo::from_bytes(&bytes).map_err(|e| ExportError::Metadata(e.to_string()))?;
    let images = calibration_images(&info, opts)?;
    let q = quantize_model(&model, &images, &sha256_hex(&bytes), opts, progress)?;
    rir_checkpoint::write_atomic(output, &q.encode_to_vec())?;
    Ok(q)
}

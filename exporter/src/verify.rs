//! Checking an export: the same inputs through ONNX Runtime and tract,
//! compared element by element, plus test accuracy on real images when the
//! model's data set is at hand.
//!
//! A float16 export is also measured against its float32 twin (the same
//! weights widened, [`crate::precision::widen`]) in ONNX Runtime: that is what
//! half precision costs. tract computes float16 in software (about 0.2 s an
//! image on these CPUs), so for such a model it sees the random inputs only,
//! and the real images are compared against the twin.

use std::path::{Path, PathBuf};

use prost::Message;
use rir_contract::ModelInfo;
use rir_infer::engine::max_abs_diff;
use rir_infer::{Engine, OrtEngine, OrtOptions, TractEngine};

use tract_onnx::pb::ModelProto;

use crate::error::{ExportError, SourceError};
use crate::measure::{accuracy, argmax_rows, batched_logits, random_pixels, shape_of, unit_pixels};
use crate::precision::{Precision, widen};
use rir_contract::onnx::keys;

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Random inputs to compare on.
    pub random: usize,
    /// Real test images to compare on and score (0: none).
    pub images: usize,
    /// Data folder (default: the data set's usual place).
    pub data_dir: Option<PathBuf>,
    /// Images per engine call.
    pub batch: usize,
    /// ONNX Runtime settings.
    pub ort: OrtOptions,
    /// The float32 source of an int8 model, its reference.
    pub source: Option<PathBuf>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            random: 16,
            images: 1000,
            data_dir: None,
            batch: 100,
            ort: OrtOptions::default(),
            source: None,
        }
    }
}

/// How two engines' logits compare on one set of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Comparison {
    /// Inputs compared.
    pub n: usize,
    /// Largest absolute difference of any logit.
    pub max_abs: f32,
    /// `max_abs` divided by the largest |logit| (the scale of the outputs).
    pub max_rel: f32,
    /// Fraction of inputs on which both engines pick the same class.
    pub top1_agreement: f64,
}

/// Test accuracy on real images, of the model in ONNX Runtime and of the
/// reference it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Accuracy {
    /// Images scored.
    pub n: usize,
    /// The model's top-1 accuracy in ONNX Runtime.
    pub ort: f64,
    /// Whether these were all the data set's test images.
    pub full_split: bool,
    /// The test accuracy the trainer recorded for these weights, if the
    /// model's metadata carries it.
    pub recorded: Option<f64>,
    /// The reference's top-1 accuracy ([`Report::reference`]).
    pub reference: f64,
}

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The model's precision (its `rir.precision` metadata).
    pub precision: Precision,
    /// The ONNX Runtime engine that ran it (`onnxruntime-cpu`, `onnxruntime-cuda`).
    pub engine: String,
    /// ONNX Runtime vs tract on random inputs in [0, 1].
    pub random: Comparison,
    /// A float16 model vs its float32 twin, or an int8 model vs its float32
    /// source, both in ONNX Runtime, on the same random inputs.
    pub random_twin: Option<Comparison>,
    /// What the real images are compared against: `tract`, for a float16
    /// model `float32 twin`, for an int8 model `float32 source`.
    pub reference: &'static str,
    /// ONNX Runtime vs the reference on real test images, when available.
    pub real: Option<Comparison>,
    /// Accuracy on those images.
    pub accuracy: Option<Accuracy>,
    /// Why real images were not used, if they were not.
    pub real_skipped: Option<String>,
    /// For an int8 model: the test accuracy recorded when it was quantized.
    pub int8_recorded: Option<f64>,
}

/// Runs `inputs` (`n` images of `chw` floats) through both engines in batches.
fn compare(
    ort: &mut dyn Engine,
    tract: &mut dyn Engine,
    inputs: &[f32],
    chw: [usize; 3],
    k: usize,
    batch: usize,
) -> Result<(Comparison, Vec<f32>, Vec<f32>), ExportError> {
    let n = inputs.len() / chw.iter().product::<usize>();
    let a = batched_logits(ort, inputs, chw, batch)?;
    let b = batched_logits(tract, inputs, chw, batch)?;
    let max_abs = max_abs_diff(&a, &b);
    let scale = a.iter().map(|v| v.abs()).fold(0.0, f32::max).max(1e-12);
    let (ta, tb) = (argmax_rows(&a, k), argmax_rows(&b, k));
    let agree = ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
    Ok((
        Comparison {
            n,
            max_abs,
            max_rel: max_abs / scale,
            top1_agreement: agree as f64 / n.max(1) as f64,
        },
        a,
        b,
    ))
}

/// Verifies `model` as [`VerifyOptions`] say.
pub fn verify(model: &Path, opts: &VerifyOptions) -> Result<Report, ExportError> {
    let info = ModelInfo::read(model)?;
    let (chw, k) = shape_of(&info)?;
    let precision = match info.metadata.get(keys::PRECISION) {
        None => Precision::Fp32,
        Some(p) => p.parse()?,
    };
    let mut ort = OrtEngine::load(model, &opts.ort)?;
    tracing::info!(
        "verifying {} on {} against tract",
        precision.as_str(),
        ort.name()
    );
    let mut tract = TractEngine::load(model)?;
    let mut twin = match precision {
        Precision::Fp32 => None,
        Precision::Fp16 => Some(twin_engine(model, &opts.ort)?),
        Precision::Int8 => Some(source_engine(&info, opts)?),
    };
    let per = chw.iter().product::<usize>();
    let random = random_pixels(opts.random * per, 0x5eed);
    let random_twin = match &mut twin {
        Some(t) => Some(compare(&mut ort, t, &random, chw, k, opts.batch)?.0),
        None => None,
    };
    let (random, _, _) = compare(&mut ort, &mut tract, &random, chw, k, opts.batch)?;
    let mut report = Report {
        precision,
        engine: ort.name(),
        random,
        random_twin,
        reference: match precision {
            Precision::Fp32 => "tract",
            Precision::Fp16 => "float32 twin",
            Precision::Int8 => "float32 source",
        },
        ..Report::default()
    };
    let data = match test_split(&info, opts) {
        Ok(data) => data,
        Err(why) => {
            report.real_skipped = Some(why.to_string());
            return Ok(report);
        }
    };
    let n = opts.images.min(data.test.len());
    let pixels = unit_pixels(&data.test.images[..n * per]);
    let reference: &mut dyn Engine = match &mut twin {
        Some(t) => t,
        None => &mut tract,
    };
    let (real, a, b) = compare(&mut ort, reference, &pixels, chw, k, opts.batch)?;
    let labels = &data.test.labels[..n];
    report.real = Some(real);
    report.accuracy = Some(Accuracy {
        n,
        ort: accuracy(&a, labels, k),
        reference: accuracy(&b, labels, k),
        full_split: n == data.test.len(),
        recorded: info.recorded_metrics().and_then(|m| m.test_accuracy()),
    });
    report.int8_recorded = info.quantization().and_then(|q| q.test_accuracy);
    Ok(report)
}

/// Why the check on real images is skipped.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("--images 0")]
    NoImages,
    #[error(transparent)]
    Unavailable(#[from] crate::recorded::Unavailable),
}

/// The data set the model records, to check on real images.
fn test_split(info: &ModelInfo, opts: &VerifyOptions) -> Result<rir_data::Dataset, Skip> {
    if opts.images == 0 {
        return Err(Skip::NoImages);
    }
    Ok(crate::recorded::dataset(info, opts.data_dir.as_deref())?)
}

/// Loads the float32 source of an int8 model in ONNX Runtime, after
/// checking it is the file the model records having been quantized from.
fn source_engine(info: &ModelInfo, opts: &VerifyOptions) -> Result<OrtEngine, ExportError> {
    let path = opts.source.as_deref().ok_or(SourceError::Missing)?;
    let bytes = std::fs::read(path).map_err(|e| ExportError::Io(path.to_path_buf(), e))?;
    let recorded = info.quantization().map(|q| q.source_sha256);
    let found = crate::digest::sha256_hex(&bytes);
    if let Some(recorded) = recorded
        && recorded != found
    {
        return Err(SourceError::Mismatch {
            path: path.to_path_buf(),
            found,
            recorded,
        }
        .into());
    }
    Ok(OrtEngine::load(path, &opts.ort)?)
}

/// Loads the float32 twin of the float16 `model` in ONNX Runtime. The twin's
/// file is only read while the session is built, so it goes with its folder.
fn twin_engine(model: &Path, ort: &OrtOptions) -> Result<OrtEngine, ExportError> {
    let bytes = std::fs::read(model).map_err(|e| ExportError::Io(model.to_path_buf(), e))?;
    let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::NotOnnx {
        path: model.to_path_buf(),
        source: e,
    })?;
    let dir = tempfile::tempdir().map_err(|e| ExportError::Io(model.to_path_buf(), e))?;
    let path = dir.path().join("fp32-twin.onnx");
    std::fs::write(&path, widen(&proto)?.encode_to_vec())
        .map_err(|e| ExportError::Io(path.clone(), e))?;
    Ok(OrtEngine::load(&path, ort)?)
}

//! How the exporter measures a model: its input shape and classes read
//! from the file, pixels as the model takes them, logits in batches, top-1
//! predictions and accuracy on a test split. Verification and
//! quantization both measure with these.

use rir_contract::ModelInfo;
use rir_contract::onnx::LOGITS;
use rir_data::rng::Rng;
use rir_infer::Engine;
use rir_infer::engine::output;

use crate::error::{ExportError, GraphError};

/// Index of the largest value in each row of `k` columns.
pub fn argmax_rows(data: &[f32], k: usize) -> Vec<usize> {
    data.chunks_exact(k)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

pub(crate) fn logits(
    engine: &mut dyn Engine,
    input: &[f32],
    shape: &[usize],
) -> Result<Vec<f32>, ExportError> {
    let outs = engine.run(input, shape)?;
    output(&outs, LOGITS)
        .map(|o| o.data.clone())
        .ok_or_else(|| {
            ExportError::from(GraphError::NoOutput {
                engine: engine.name().to_string(),
                output: LOGITS.to_string(),
            })
        })
}

/// The logits of `inputs` (images of `chw` floats), `batch` images per run.
pub(crate) fn batched_logits(
    engine: &mut dyn Engine,
    inputs: &[f32],
    chw: [usize; 3],
    batch: usize,
) -> Result<Vec<f32>, ExportError> {
    let per = chw.iter().product::<usize>();
    let n = inputs.len() / per;
    let mut all = Vec::new();
    for start in (0..n).step_by(batch.max(1)) {
        let m = batch.min(n - start);
        let x = &inputs[start * per..(start + m) * per];
        all.extend(logits(engine, x, &[m, chw[0], chw[1], chw[2]])?);
    }
    Ok(all)
}

/// 8-bit pixels as the model's input: float32 in [0, 1].
pub fn unit_pixels(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// `values` seeded random floats in [0, 1]: inputs with no data set.
pub fn random_pixels(values: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..values).map(|_| rng.unit() as f32).collect()
}

/// One image's `[C, H, W]`, from the model's `[batch, C, H, W]` input.
pub fn input_chw(info: &ModelInfo) -> Result<[usize; 3], ExportError> {
    let input = info.inputs.first().ok_or(GraphError::NoInput)?;
    let dims: Vec<usize> = input.dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect();
    if dims.len() != 3 || dims.contains(&0) {
        return Err(GraphError::NotImages {
            input: input.name.clone(),
            dims: input.dims.clone(),
        }
        .into());
    }
    Ok([dims[0], dims[1], dims[2]])
}

/// One image's `[C, H, W]` and the number of classes, from the model's
/// input and its logits output.
pub(crate) fn shape_of(info: &ModelInfo) -> Result<([usize; 3], usize), ExportError> {
    let chw = input_chw(info)?;
    let k = info
        .outputs
        .iter()
        .find(|o| o.name == LOGITS)
        .and_then(|o| o.dims.get(1).copied().flatten())
        .ok_or_else(|| ExportError::from(GraphError::NoLogits(LOGITS)))?;
    Ok((chw, k))
}

/// The top-1 accuracy of `engine` on `split` (a model of `info`'s shape).
pub fn test_accuracy(
    engine: &mut dyn Engine,
    split: &rir_data::Split,
    info: &ModelInfo,
) -> Result<f64, ExportError> {
    let (chw, k) = shape_of(info)?;
    let all = batched_logits(engine, &unit_pixels(&split.images), chw, 100)?;
    Ok(accuracy(&all, &split.labels, k))
}

/// The share of rows of `logits` (`k` wide) whose argmax is the label.
pub(crate) fn accuracy(logits: &[f32], labels: &[u8], k: usize) -> f64 {
    let right = argmax_rows(logits, k)
        .iter()
        .zip(labels)
        .filter(|(p, y)| **p == **y as usize)
        .count();
    right as f64 / labels.len().max(1) as f64
}

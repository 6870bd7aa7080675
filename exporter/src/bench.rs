//! `rir-export bench`: what folding and int8 buy at inference time.
//!
//! For each preset, a random checkpoint is exported folded and literal, and
//! the folded export is quantized to int8 (calibrated on seeded random
//! pixels: the timing does not depend on the ranges, the accuracy is
//! `verify`'s business). The three models run in ONNX Runtime on the CPU
//! side by side: they alternate in rounds, so drift of the machine hits all.
//! Batch 1 gives latency per image (median over all runs); batch 64 gives
//! throughput (median over rounds).

use std::path::Path;
use std::time::Instant;

use rir_arch::{InputSpec, Variant, preset};
use rir_infer::{Engine, OrtEngine, OrtOptions};

use crate::error::ExportError;
use crate::export::{Form, export_file};
use crate::measure::random_pixels;
use crate::precision::Precision;
use crate::quantize::{QuantizeOptions, quantize_model};
use prost::Message;
use rir_checkpoint::synthetic::random_checkpoint;
use rir_figures::median;

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Presets to measure.
    pub presets: Vec<String>,
    /// Image shape.
    pub input: InputSpec,
    /// Classes.
    pub classes: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Alternating rounds per form.
    pub rounds: usize,
    /// Batch-1 runs per round.
    pub latency_runs: usize,
    /// Batch-64 runs per round.
    pub throughput_runs: usize,
    /// ONNX Runtime settings (library path).
    pub ort: OrtOptions,
}

/// Figures for one form of one preset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FormFigures {
    /// Median latency of one batch-1 run, microseconds.
    pub latency_us: f64,
    /// Median batch-64 throughput, images per second.
    pub throughput: f64,
    /// Conv nodes in the graph.
    pub convs: usize,
    /// All nodes in the graph.
    pub nodes: usize,
}

/// Folded, literal and int8 figures of one preset.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Preset name.
    pub preset: String,
    /// The folded export.
    pub folded: FormFigures,
    /// The literal export.
    pub unfolded: FormFigures,
    /// The folded export quantized to int8.
    pub int8: FormFigures,
}

/// Calibration images of the benchmark: random pixels.
const CALIBRATION_IMAGES: usize = 64;

/// Runs the benchmark, writing the models into `dir`.
pub fn run(
    opts: &BenchOptions,
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRow>, ExportError> {
    let mut rows = vec![];
    for name in &opts.presets {
        let (mut figures, mut engines) = prepare(opts, dir, name, &mut progress)?;
        let medians = measure(opts, &mut engines, |round| {
            progress(&format!("{name}: round {}/{}", round + 1, opts.rounds))
        })?;
        for (f, (latency_us, throughput)) in figures.iter_mut().zip(medians) {
            f.latency_us = latency_us;
            f.throughput = throughput;
        }
        rows.push(BenchRow {
            preset: name.clone(),
            folded: figures[0],
            unfolded: figures[1],
            int8: figures[2],
        });
    }
    Ok(rows)
}

/// The folded, literal and int8 exports of a random checkpoint of preset
/// `name`: their graph figures and their sessions, warmed up.
fn prepare(
    opts: &BenchOptions,
    dir: &Path,
    name: &str,
    progress: &mut impl FnMut(&str),
) -> Result<(Vec<FormFigures>, Vec<OrtEngine>), ExportError> {
    let i = opts.input;
    let per = i.channels * i.height * i.width;
    let spec = preset::build(name, Variant::Rir, i, opts.classes)?;
    let ck = dir.join(format!("{name}.safetensors"));
    random_checkpoint(&spec, 1).write_atomic(&ck)?;
    let ort = OrtOptions {
        threads: opts.threads,
        ..opts.ort.clone()
    };
    let mut models = vec![];
    for form in [Form::Folded, Form::Unfolded] {
        let path = dir.join(format!("{name}-{form:?}.onnx"));
        models.push((export_file(&ck, &path, form, Precision::Fp32)?, path));
    }
    progress(&format!("{name}: quantizing"));
    let path = dir.join(format!("{name}-int8.onnx"));
    let pixels = random_pixels(CALIBRATION_IMAGES * per, 7);
    let q = QuantizeOptions {
        images: CALIBRATION_IMAGES,
        ort: ort.clone(),
        ..QuantizeOptions::default()
    };
    let (int8, _) = quantize_model(&models[0].0, &pixels, "", &q, |_, _| {})?;
    rir_checkpoint::write_atomic(&path, &int8.encode_to_vec())?;
    models.push((int8, path));
    let (mut figures, mut engines) = (vec![], vec![]);
    for (model, path) in models {
        let g = model.graph.unwrap_or_default();
        figures.push(FormFigures {
            convs: g.node.iter().filter(|n| n.op_type == "Conv").count(),
            nodes: g.node.len(),
            ..FormFigures::default()
        });
        let mut e = OrtEngine::load(&path, &ort)?;
        for _ in 0..3 {
            e.run(&vec![0.5f32; per], &[1, i.channels, i.height, i.width])?;
        }
        e.run(
            &vec![0.5f32; 64 * per],
            &[64, i.channels, i.height, i.width],
        )?;
        engines.push(e);
    }
    Ok((figures, engines))
}

/// Batch-1 latency (µs) and batch-64 throughput (images/s) of each engine,
/// medians over rounds in which every engine runs in turn.
fn measure(
    opts: &BenchOptions,
    engines: &mut [OrtEngine],
    mut round_started: impl FnMut(usize),
) -> Result<Vec<(f64, f64)>, ExportError> {
    let i = opts.input;
    let per = i.channels * i.height * i.width;
    let (one, many) = (vec![0.5f32; per], vec![0.5f32; 64 * per]);
    let mut lat = vec![vec![]; engines.len()];
    let mut thr = vec![vec![]; engines.len()];
    for round in 0..opts.rounds {
        round_started(round);
        for (k, e) in engines.iter_mut().enumerate() {
            for _ in 0..opts.latency_runs {
                let t = Instant::now();
                e.run(&one, &[1, i.channels, i.height, i.width])?;
                lat[k].push(t.elapsed().as_secs_f64() * 1e6);
            }
            let t = Instant::now();
            for _ in 0..opts.throughput_runs {
                e.run(&many, &[64, i.channels, i.height, i.width])?;
            }
            thr[k].push((64 * opts.throughput_runs) as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(lat
        .into_iter()
        .map(median)
        .zip(thr.into_iter().map(median))
        .collect())
}

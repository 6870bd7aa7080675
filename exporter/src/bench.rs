//! `rir-export bench`: what folding buys at inference time.
//!
//! For each preset, a random checkpoint is exported twice, folded and
//! literal, and both models run in ONNX Runtime on the CPU side by side:
//! the two forms alternate in rounds, so drift of the machine hits both.
//! Batch 1 gives latency per image (median over all runs); batch 64 gives
//! throughput (median over rounds).

use std::path::Path;
use std::time::Instant;

use rir_arch::{InputSpec, Variant, preset};
use rir_infer::{Engine, OrtEngine, OrtOptions};

use crate::error::ExportError;
use crate::export::{Form, export_file};
use crate::precision::Precision;
use rir_checkpoint::synthetic::random_checkpoint;
use rir_process::median;

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

/// Folded and literal figures of one preset.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Preset name.
    pub preset: String,
    /// The folded export.
    pub folded: FormFigures,
    /// The literal export.
    pub unfolded: FormFigures,
}

/// Runs the benchmark, writing the models into `dir`.
pub fn run(
    opts: &BenchOptions,
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRow>, ExportError> {
    let mut rows = vec![];
    let i = opts.input;
    let per = i.channels * i.height * i.width;
    for name in &opts.presets {
        let spec = preset::build(name, Variant::Rir, i, opts.classes)
            .map_err(|e| ExportError::Metadata(e.to_string()))?;
        let ck = dir.join(format!("{name}.safetensors"));
        random_checkpoint(&spec, 1).write_atomic(&ck)?;
        let mut engines = vec![];
        let mut figures = vec![];
        for form in [Form::Folded, Form::Unfolded] {
            let path = dir.join(format!("{name}-{form:?}.onnx"));
            let model = export_file(&ck, &path, form, Precision::Fp32)?;
            let g = model.graph.unwrap_or_default();
            figures.push(FormFigures {
                convs: g.node.iter().filter(|n| n.op_type == "Conv").count(),
                nodes: g.node.len(),
                ..FormFigures::default()
            });
            let ort = OrtOptions {
                threads: opts.threads,
                ..opts.ort.clone()
            };
            engines.push(OrtEngine::load(&path, &ort)?);
        }
        let one = vec![0.5f32; per];
        let many = vec![0.5f32; 64 * per];
        for e in engines.iter_mut() {
            for _ in 0..3 {
                e.run(&one, &[1, i.channels, i.height, i.width])?;
            }
            e.run(&many, &[64, i.channels, i.height, i.width])?;
        }
        let mut lat = [vec![], vec![]];
        let mut thr = [vec![], vec![]];
        for round in 0..opts.rounds {
            progress(&format!("{name}: round {}/{}", round + 1, opts.rounds));
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
        let [lf, lu] = lat;
        let [tf, tu] = thr;
        figures[0].latency_us = median(lf);
        figures[0].throughput = median(tf);
        figures[1].latency_us = median(lu);
        figures[1].throughput = median(tu);
        rows.push(BenchRow {
            preset: name.clone(),
            folded: figures[0],
            unfolded: figures[1],
        });
    }
    Ok(rows)
}

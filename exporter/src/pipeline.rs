//! What `rir-export` does, as library calls with typed results: export a
//! checkpoint, quantize an export, verify a model, and put the result where
//! a server loads it only once it passed.
//!
//! A model that is verified is written under a staging name beside its
//! output (`model.onnx.staged`), verified there, and renamed into place
//! only when the [`Verdict`] passes. One that fails is renamed to
//! `model.onnx.rejected`: no server loads that name (a version folder
//! counts only with a `model.onnx`), and an older model at the output is
//! left as it was.

use std::path::{Path, PathBuf};

use tract_onnx::pb::ModelProto;

use crate::error::{ExportError, JobError};
use crate::export::{Form, export_file};
use crate::precision::Precision;
use crate::quantize::{QuantizeOptions, quantize_file};
use crate::triton::{ConfigWritten, write_config};
use crate::verdict::{Bounds, Verdict, judge};
use crate::verify::{Report, VerifyOptions, verify};

/// How to verify a model and judge it.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// What to measure.
    pub verify: VerifyOptions,
    /// What to judge it against.
    pub bounds: Bounds,
}

/// A measured and judged model.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The measurements.
    pub report: Report,
    /// The judgement.
    pub verdict: Verdict,
    /// What it was judged against.
    pub bounds: Bounds,
}

/// Counts of the written graph, for the line that says what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphCounts {
    /// All nodes.
    pub nodes: usize,
    /// `Conv` nodes.
    pub convs: usize,
    /// `BatchNormalization` nodes (none once folded).
    pub batch_norms: usize,
    /// `QuantizeLinear` nodes (int8).
    pub quantize: usize,
    /// `DequantizeLinear` nodes (int8).
    pub dequantize: usize,
}

impl GraphCounts {
    fn of(model: &ModelProto) -> Self {
        let Some(g) = model.graph.as_ref() else {
            return GraphCounts::default();
        };
        let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
        GraphCounts {
            nodes: g.node.len(),
            convs: count("Conv"),
            batch_norms: count("BatchNormalization"),
            quantize: count("QuantizeLinear"),
            dequantize: count("DequantizeLinear"),
        }
    }
}

/// Where a model ended up and what was checked on the way.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The output asked for.
    pub output: PathBuf,
    /// Where the file is: the output, or the rejected name beside it.
    pub path: PathBuf,
    /// The body's arithmetic.
    pub precision: Precision,
    /// What the graph holds.
    pub counts: GraphCounts,
    /// Size of the file, bytes.
    pub bytes: u64,
    /// The verification, when one was asked for.
    pub verified: Option<Verified>,
    /// `config.pbtxt`, when one was asked for and the model was placed.
    pub config: Option<ConfigWritten>,
}

impl Placed {
    /// Whether the model is at its output (it was not rejected).
    pub fn placed(&self) -> bool {
        self.path == self.output
    }
}

/// A checkpoint to export.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// The `.safetensors` checkpoint.
    pub checkpoint: PathBuf,
    /// The ONNX file to write.
    pub output: PathBuf,
    /// Folded or literal.
    pub form: Form,
    /// The body's arithmetic; int8 is the folded float32 export quantized.
    pub precision: Precision,
    /// How int8 is calibrated (unused otherwise).
    pub quantize: QuantizeOptions,
    /// Write `config.pbtxt` beside a model placed in a repository.
    pub triton_config: bool,
    /// Verify before placing.
    pub check: Option<Check>,
}

/// A float32 export to quantize to int8.
#[derive(Debug, Clone)]
pub struct QuantizeJob {
    /// The float32 model rir-export wrote.
    pub source: PathBuf,
    /// The int8 file to write.
    pub output: PathBuf,
    /// Calibration and grid.
    pub quantize: QuantizeOptions,
    /// Verify against the source before placing.
    pub check: Option<Check>,
}

/// The staging name beside `output`.
pub fn staged_path(output: &Path) -> PathBuf {
    suffixed(output, "staged")
}

/// The name a rejected model is kept under beside `output`.
pub fn rejected_path(output: &Path) -> PathBuf {
    suffixed(output, "rejected")
}

fn suffixed(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    output.with_file_name(name)
}

/// Measures `model` and judges it.
pub fn verify_file(model: &Path, check: &Check) -> Result<Verified, ExportError> {
    let report = verify(model, &check.verify)?;
    let verdict = judge(&report, &check.bounds);
    Ok(Verified {
        report,
        verdict,
        bounds: check.bounds,
    })
}

/// Exports `job.checkpoint`; `progress(done, total)` follows int8
/// calibration.
pub fn export(job: &ExportJob, progress: impl FnMut(usize, usize)) -> Result<Placed, ExportError> {
    let staged = staged_path(&job.output);
    let (model, source) = match job.precision {
        Precision::Int8 => {
            if job.form != Form::Folded {
                return Err(JobError::Int8Unfolded.into());
            }
            let dir = tempfile::tempdir().map_err(|e| ExportError::Io(std::env::temp_dir(), e))?;
            let fp32 = dir.path().join("fp32.onnx");
            export_file(&job.checkpoint, &fp32, job.form, Precision::Fp32)?;
            let model = quantize_file(&fp32, &staged, &job.quantize, progress)?;
            (model, Some((dir, fp32)))
        }
        p => (export_file(&job.checkpoint, &staged, job.form, p)?, None),
    };
    let check = job.check.clone().map(|mut c| {
        c.verify.source = source.as_ref().map(|(_, p)| p.clone());
        c
    });
    let mut placed = place(&staged, &job.output, job.precision, &model, check.as_ref())?;
    if job.triton_config && placed.placed() {
        placed.config = Some(write_config(&job.output)?);
    }
    Ok(placed)
}

/// Quantizes `job.source` to int8; `progress(done, total)` follows
/// calibration.
pub fn quantize(
    job: &QuantizeJob,
    progress: impl FnMut(usize, usize),
) -> Result<Placed, ExportError> {
    let staged = staged_path(&job.output);
    let model = quantize_file(&job.source, &staged, &job.quantize, progress)?;
    let check = job.check.clone().map(|mut c| {
        c.verify.source = Some(job.source.clone());
        c
    });
    place(
        &staged,
        &job.output,
        Precision::Int8,
        &model,
        check.as_ref(),
    )
}

/// Verifies `staged` when asked, then renames it to `output`, or to the
/// rejected name when it failed.
fn place(
    staged: &Path,
    output: &Path,
    precision: Precision,
    model: &ModelProto,
    check: Option<&Check>,
) -> Result<Placed, ExportError> {
    let verified = match check {
        Some(c) => Some(verify_file(staged, c).inspect_err(|_| {
            let _ = std::fs::remove_file(staged);
        })?),
        None => None,
    };
    let passed = verified.as_ref().is_none_or(|v| v.verdict.passed());
    let path = match passed {
        true => output.to_path_buf(),
        false => rejected_path(output),
    };
    std::fs::rename(staged, &path).map_err(|e| ExportError::Io(path.clone(), e))?;
    Ok(Placed {
        output: output.to_path_buf(),
        bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        path,
        precision,
        counts: GraphCounts::of(model),
        verified,
        config: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_staging_and_rejected_names_are_not_the_name_a_server_loads() {
        let out = Path::new("models/mine/2/model.onnx");
        assert_eq!(
            staged_path(out),
            Path::new("models/mine/2/model.onnx.staged")
        );
        assert_eq!(
            rejected_path(out),
            Path::new("models/mine/2/model.onnx.rejected")
        );
    }
}

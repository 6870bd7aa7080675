//! The side-by-side comparison behind `rir-train bench`: for each preset,
//! this project's one-convolution network, the same network as four
//! convolutions per unit in tch, and eager PyTorch on the same layer plan,
//! optionally again in bf16 with channels-last tensors.
//!
//! Our rows run in child processes of the given executable (its
//! `bench-child` subcommand, one [`measure`](crate::bench::measure) each),
//! so each has its own peak RSS; the PyTorch rows run
//! `bench/torch_reference.py`. A failing child of ours is an error; a
//! PyTorch reference that cannot run (no torch Python) is a skipped row
//! with its reason, so the rest of the table still stands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rir_arch::{ModelSpec, Variant, preset};
use rir_contract::Device;
use rir_data::Source;

use crate::bench::{Measurement, UnitForm, layer_plan};
use crate::error::TrainError;
use crate::recipe::Runtime;

/// What to compare, and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Presets to measure, in order.
    pub presets: Vec<String>,
    /// Data set whose image shape and class count the networks take.
    pub source: Source,
    /// Variant of the networks.
    pub variant: Variant,
    /// Images per step.
    pub batch: usize,
    /// Untimed steps before the timed ones.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// CPU threads for libtorch and for PyTorch.
    pub threads: i32,
    /// Where every row computes, PyTorch's included.
    pub device: Device,
    /// Also the bf16 + channels-last rows.
    pub bf16: bool,
    /// Python for the PyTorch reference; `None`: `python3` with the torch
    /// the set-up installed beside libtorch on its PYTHONPATH.
    pub python: Option<PathBuf>,
    /// The executable whose `bench-child` subcommand measures our rows.
    pub exe: PathBuf,
}

/// `rir-train bench`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Presets to measure, comma-separated.
    #[arg(long, default_value = "tiny,small", value_delimiter = ',')]
    pub presets: Vec<String>,
    /// Data set whose image shape and class count to use (no data is read).
    #[arg(long, default_value = "cifar10")]
    pub dataset: Source,
    /// Variant to measure.
    #[arg(long, default_value = "rir")]
    pub variant: Variant,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Python with torch 2.11 for the eager reference [default: python3 with
    /// the whole torch that scripts/setup.sh installed on PYTHONPATH: on a
    /// GPU machine the one libtorch comes from, on a CPU machine the one
    /// `RIR_TORCH_REFERENCE=1` adds; without either the reference row is
    /// skipped and says why].
    #[arg(long, env = "RIR_TORCH_PYTHON")]
    pub python: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also measure bf16 convolutions with channels-last tensors, ours
    /// against PyTorch's bf16 autocast with channels-last.
    #[arg(long)]
    pub bf16: bool,
    #[command(flatten)]
    pub runtime: Runtime,
}

impl BenchArgs {
    /// The plan these flags describe (`exe` measures our rows), and where
    /// the results' JSON goes.
    pub fn plan(self, exe: PathBuf) -> (Plan, Option<PathBuf>) {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get() as i32);
        let plan = Plan {
            presets: self.presets,
            source: self.dataset,
            variant: self.variant,
            batch: self.batch,
            warmup: self.warmup,
            steps: self.steps,
            threads: self.runtime.threads.unwrap_or_else(cores),
            device: self.runtime.device,
            bf16: self.bf16,
            python: self.python,
            exe,
        };
        (plan, self.json)
    }
}

/// Writes `results` as the JSON `--json` asks for.
pub fn write_json(path: &Path, results: &[PresetRows]) -> Result<(), TrainError> {
    let rows: Vec<_> = results.iter().map(|r| r.to_json()).collect();
    let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
    std::fs::write(path, text).map_err(|e| TrainError::Io(path.to_path_buf(), e))
}

/// Which implementation a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// This project's trainer, in the given form.
    Ours(UnitForm),
    /// Eager PyTorch on the same layer plan.
    PyTorch,
}

/// One measured (or skipped) row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the table calls it, with the device PyTorch reports, as `[cpu]`.
    pub label: String,
    /// What ran.
    pub implementation: Implementation,
    /// bf16 convolutions with channels-last tensors.
    pub mixed: bool,
    /// The figures, or why the row was skipped.
    pub outcome: Result<Measurement, Skipped>,
}

/// Why a row of the table was not measured, in words for the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Skipped(pub String);

/// Every row of one preset.
#[derive(Debug, Clone)]
pub struct PresetRows {
    /// Preset name.
    pub preset: String,
    /// Rows in table order.
    pub rows: Vec<Row>,
}

/// The network a preset names for a data set's shape, without reading data.
pub fn spec_for(name: &str, source: Source, variant: Variant) -> Result<ModelSpec, TrainError> {
    let (input, classes) = source.shape();
    Ok(preset::build(name, variant, input, classes)?)
}

/// The rows of one preset, in table order.
const ROWS: [(&str, Implementation, bool); 5] = [
    (
        "rir one-conv (ours)",
        Implementation::Ours(UnitForm::OneConv),
        false,
    ),
    (
        "rir four-conv (tch)",
        Implementation::Ours(UnitForm::FourConv),
        false,
    ),
    ("rir one-conv (PyTorch)", Implementation::PyTorch, false),
    (
        "bf16+CL one-conv (ours)",
        Implementation::Ours(UnitForm::OneConv),
        true,
    ),
    ("bf16+CL (PyTorch)", Implementation::PyTorch, true),
];

impl Plan {
    /// Measures every preset, handing each one's rows to `done` as soon as
    /// they are measured (a paper-width preset takes minutes on a CPU).
    pub fn run(&self, mut done: impl FnMut(&PresetRows)) -> Result<Vec<PresetRows>, TrainError> {
        let mut all = vec![];
        for name in &self.presets {
            let spec = spec_for(name, self.source, self.variant)?;
            let mut rows = vec![];
            for (label, implementation, mixed) in ROWS {
                if mixed && !self.bf16 {
                    continue;
                }
                let row = match implementation {
                    Implementation::Ours(form) => Row {
                        label: label.to_string(),
                        implementation,
                        mixed,
                        outcome: Ok(self.ours(name, form, mixed)?),
                    },
                    Implementation::PyTorch => self.pytorch(&spec, label, mixed),
                };
                rows.push(row);
            }
            let rows = PresetRows {
                preset: name.clone(),
                rows,
            };
            done(&rows);
            all.push(rows);
        }
        Ok(all)
    }

    /// The header line of the table.
    pub fn header(&self) -> String {
        format!(
            "training throughput, {} {}, batch {}, {} timed steps after {} warm-up, {} threads\n\
             {:<7} {:<29} {:>10} {:>12} {:>14}",
            self.source.name(),
            self.variant,
            self.batch,
            self.steps,
            self.warmup,
            self.threads,
            "preset",
            "implementation",
            "img/s",
            "ratio",
            "peak RSS MiB"
        )
    }

    fn ours(&self, preset: &str, form: UnitForm, mixed: bool) -> Result<Measurement, TrainError> {
        // The name `bench-child --form` parses.
        let form = clap::ValueEnum::to_possible_value(&form)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        let form = form.as_str();
        let mut cmd = Command::new(&self.exe);
        cmd.args(["bench-child", "--preset", preset, "--form", form])
            .args([
                "--dataset",
                self.source.name(),
                "--variant",
                self.variant.name(),
            ])
            .args(["--batch", &self.batch.to_string()])
            .args(["--warmup", &self.warmup.to_string()])
            .args(["--steps", &self.steps.to_string()])
            .args(["--threads", &self.threads.to_string()])
            .args(["--device", self.device.as_str()])
            .args(mixed.then_some("--mixed"));
        let what = format!("{} bench-child ({preset}, {form})", self.exe.display());
        let out = cmd
            .output()
            .map_err(|e| TrainError::Bench(format!("{what}: {e}")))?;
        parse(&out, &what).map_err(|e| TrainError::Bench(e.0))
    }

    fn pytorch(&self, spec: &ModelSpec, label: &str, mixed: bool) -> Row {
        let args = serde_json::json!({
            "plan": layer_plan(spec), "threads": self.threads, "batch": self.batch,
            "warmup": self.warmup, "steps": self.steps, "device": self.device.as_str(),
            "mixed": mixed,
        });
        let python = self
            .python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3"));
        let mut cmd = Command::new(&python);
        if let (None, Some(root)) = (&self.python, setup_torch()) {
            cmd.env("PYTHONPATH", root);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
        let outcome = match cmd.arg(&script).arg(args.to_string()).output() {
            Ok(out) => parse::<ReferenceLine>(&out, "PyTorch reference").map_err(|e| {
                // The last line of a Python traceback says what went wrong.
                let last = e.0.lines().last().unwrap_or_default().to_string();
                let no_torch = last.contains("ImportError") || last.contains("No module");
                Skipped(if self.python.is_none() && no_torch {
                    format!("{last} ({NO_TORCH_HINT})")
                } else {
                    last
                })
            }),
            Err(e) => Err(Skipped(format!("{}: {e}", python.display()))),
        };
        let label = match outcome.as_ref().map(|r| r.device.as_deref()) {
            Ok(Some(d)) => format!("{label} [{d}]"),
            _ => label.to_string(),
        };
        let outcome = outcome.map(|r| r.measurement);
        Row {
            label,
            implementation: Implementation::PyTorch,
            mixed,
            outcome,
        }
    }
}

/// Why the reference may be missing, for a skipped row.
const NO_TORCH_HINT: &str = "no torch 2.11 Python found: on a CPU machine the set-up installs \
     libtorch alone; `RIR_TORCH_REFERENCE=1 source scripts/setup.sh` adds a whole torch for \
     the reference, or pass --python";

/// The folder whose root goes on the reference's PYTHONPATH: the one the
/// set-up exported, else the whole torch it installs for the reference on a
/// CPU machine (`.deps/torch-2.11.0-python`, beside libtorch's folder), else
/// libtorch's own torch (whole on a GPU machine). libtorch's lib/ is
/// `<root>/torch/lib`.
fn setup_torch() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("RIR_TORCH_PYTHONPATH") {
        return Some(PathBuf::from(root));
    }
    let libtorch_root = Path::new(env!("RIR_LIBTORCH_LIB")).parent()?.parent()?;
    let whole = libtorch_root.parent()?.join("torch-2.11.0-python");
    Some(if whole.join("torch/__init__.py").is_file() {
        whole
    } else {
        libtorch_root.to_path_buf()
    })
}

/// What the PyTorch reference prints: the measurement and the device it ran on.
#[derive(serde::Deserialize)]
struct ReferenceLine {
    #[serde(flatten)]
    measurement: Measurement,
    device: Option<String>,
}

/// What a child printed as its last line of output, as JSON.
fn parse<T: serde::de::DeserializeOwned>(out: &Output, what: &str) -> Result<T, Skipped> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Skipped(match stderr.trim() {
            "" => format!("{what} ended with {} and printed no error", out.status),
            e => format!("{what} failed: {e}"),
        }));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| Skipped(format!("{what} printed {line:?}: {e}")))
}

impl PresetRows {
    /// The row measuring `implementation` at the given precision.
    pub fn find(&self, implementation: Implementation, mixed: bool) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.implementation == implementation && r.mixed == mixed)
    }

    fn measured(&self, implementation: Implementation, mixed: bool) -> Option<Measurement> {
        self.find(implementation, mixed)
            .and_then(|r| r.outcome.as_ref().ok().copied())
    }

    /// A row's throughput over PyTorch's at the same precision.
    pub fn ratio(&self, row: &Row) -> Option<f64> {
        let m = row.outcome.as_ref().ok()?;
        let reference = self.measured(Implementation::PyTorch, row.mixed)?;
        Some(m.img_per_s / reference.img_per_s)
    }

    /// One-conv over four-conv in fp32: what folding the streams buys in
    /// training.
    pub fn speed_up(&self) -> Option<f64> {
        let one = self.measured(Implementation::Ours(UnitForm::OneConv), false)?;
        let four = self.measured(Implementation::Ours(UnitForm::FourConv), false)?;
        Some(one.img_per_s / four.img_per_s)
    }

    /// The preset's lines of the table.
    pub fn table(&self) -> String {
        let name = &self.preset;
        let mut lines: Vec<String> = self
            .rows
            .iter()
            .map(|row| match &row.outcome {
                Ok(m) => {
                    let ratio = match (row.implementation, self.ratio(row)) {
                        (Implementation::PyTorch, _) => "1.00 (ref)".to_string(),
                        (_, Some(r)) => format!("{r:.2}"),
                        (_, None) => "-".to_string(),
                    };
                    format!(
                        "{name:<7} {:<29} {:>10.0} {ratio:>12} {:>14.0}",
                        row.label, m.img_per_s, m.peak_rss_mb
                    )
                }
                Err(why) => format!("{name:<7} {:<29}   skipped: {why}", row.label),
            })
            .collect();
        if let Some(s) = self.speed_up() {
            lines.push(format!(
                "{name:<7} one-conv speed-up over four-conv: {s:.2}x"
            ));
        }
        lines.join("\n")
    }

    /// The preset's measurements as `--json` writes them (`null` for a row
    /// skipped or not asked for).
    pub fn to_json(&self) -> serde_json::Value {
        let m = |i, mixed| self.measured(i, mixed);
        serde_json::json!({
            "preset": self.preset,
            "one_conv": m(Implementation::Ours(UnitForm::OneConv), false),
            "four_conv": m(Implementation::Ours(UnitForm::FourConv), false),
            "pytorch": m(Implementation::PyTorch, false),
            "bf16_one_conv": m(Implementation::Ours(UnitForm::OneConv), true),
            "bf16_pytorch": m(Implementation::PyTorch, true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, implementation: Implementation, mixed: bool, img_per_s: f64) -> Row {
        Row {
            label: label.into(),
            implementation,
            mixed,
            outcome: Ok(Measurement {
                img_per_s,
                peak_rss_mb: 100.0,
            }),
        }
    }

    #[test]
    fn ratios_are_against_pytorch_at_the_same_precision() {
        let mut p = PresetRows {
            preset: "tiny".into(),
            rows: vec![
                row("one", Implementation::Ours(UnitForm::OneConv), false, 300.0),
                row(
                    "four",
                    Implementation::Ours(UnitForm::FourConv),
                    false,
                    100.0,
                ),
                row("torch", Implementation::PyTorch, false, 200.0),
                row(
                    "bf16 one",
                    Implementation::Ours(UnitForm::OneConv),
                    true,
                    500.0,
                ),
                row("bf16 torch", Implementation::PyTorch, true, 1000.0),
            ],
        };
        assert_eq!(p.ratio(&p.rows[0]), Some(1.5));
        assert_eq!(p.ratio(&p.rows[3]), Some(0.5));
        assert_eq!(p.speed_up(), Some(3.0));
        let table = p.table();
        assert!(table.contains("1.50"), "{table}");
        assert!(table.contains("0.50"), "{table}");
        assert!(table.contains("speed-up over four-conv: 3.00x"), "{table}");
        assert_eq!(p.to_json()["bf16_pytorch"]["img_per_s"], 1000.0);

        p.rows[2].outcome = Err(Skipped("no torch".into()));
        assert_eq!(p.ratio(&p.rows[0]), None);
        let table = p.table();
        assert!(table.contains("skipped: no torch"), "{table}");
        assert!(p.to_json()["pytorch"].is_null());
    }

    #[test]
    fn a_reference_that_cannot_start_is_a_skipped_row() {
        let plan = Plan {
            presets: vec!["micro".into()],
            source: Source::FashionMnist,
            variant: Variant::Rir,
            batch: 2,
            warmup: 0,
            steps: 1,
            threads: 1,
            device: Device::Cpu,
            bf16: false,
            python: Some(PathBuf::from("/nonexistent/python3")),
            exe: PathBuf::from("/nonexistent/rir-train"),
        };
        let spec = spec_for("micro", plan.source, plan.variant).unwrap();
        let row = plan.pytorch(&spec, "rir one-conv (PyTorch)", false);
        let why = row.outcome.unwrap_err().0;
        assert!(why.starts_with("/nonexistent/python3: "), "{why}");
        // One that runs and fails silently is skipped with its exit status.
        let plan_false = Plan {
            python: Some(PathBuf::from("false")),
            ..plan.clone()
        };
        let why = plan_false.pytorch(&spec, "x", false).outcome.unwrap_err().0;
        assert!(why.contains("exit status: 1"), "{why}");
        // Our own rows are not optional: a child that cannot start fails the bench.
        let err = plan.run(|_| {}).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/rir-train"), "{err}");
    }
}

//! `rir-export`: fold a trained RiR checkpoint into ONNX and prove the export.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_contract::onnx::keys;
use rir_exporter::triton::{ConfigWritten, write_config};
use rir_exporter::verify::{Comparison, VerifyOptions, verify};
use rir_exporter::{Form, Precision, export_file};
use rir_infer::{ModelInfo, OrtOptions};

#[derive(Parser)]
#[command(
    name = "rir-export",
    version,
    args_conflicts_with_subcommands = true,
    about = "Fold a trained RiR checkpoint into one convolution per unit and write ONNX.",
    long_about = "Fold a trained RiR checkpoint into one convolution per unit and write ONNX.\n\n\
        Each generalized residual unit (four sub-convolutions, its shortcut and its BatchNorm) \
        becomes one Conv with bias and one Relu; the block shortcut stays an Add. The model \
        takes `image`, float32 NCHW pixels in [0, 1] (normalization is inside the graph), and \
        returns `logits` and `probabilities`.\n\n\
        Examples:\n  rir-export runs/x/best.safetensors -o models/rir/1/model.onnx --verify\n  \
        rir-export verify models/rir/1/model.onnx\n  rir-export inspect models/rir/1/model.onnx\n\n\
        Exit status: 0 success, 1 error or failed verification."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// Checkpoint written by rir-train (.safetensors).
    checkpoint: Option<PathBuf>,
    /// Output ONNX file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write the literal graph (four convolutions, adds and BatchNorm per unit).
    #[arg(long)]
    no_fold: bool,
    /// Arithmetic of the network's body: fp32, or fp16 (float16 kernels and
    /// activations, half the file; `image` and the outputs stay float32, so
    /// clients and the server see no difference). `--verify` then also
    /// measures the fp16 model against its float32 twin.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Do not write `config.pbtxt`. By default, when the output is
    /// `<repository>/<name>/<version>/model.onnx` and the model has no
    /// configuration yet, a Triton one is written beside the versions
    /// (`<repository>/<name>/config.pbtxt`); an existing one is kept.
    #[arg(long)]
    no_triton_config: bool,
    /// Verify the written model right away (as `rir-export verify`).
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Args, Clone)]
struct CheckArgs {
    /// Real test images to compare and score on (0: random inputs only). With the
    /// whole test split, the accuracy must also match the one the trainer recorded.
    #[arg(long, default_value_t = 10000)]
    images: usize,
    /// Random inputs to compare on.
    #[arg(long, default_value_t = 16)]
    random: usize,
    /// Data folder for the real images (default: the data set's usual place).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Largest acceptable difference of any logit between ONNX Runtime and
    /// its reference (tract; for an fp16 model also its float32 twin). For an
    /// fp32 model the absolute |diff|, default 1e-3; for an fp16 model |diff|
    /// divided by the largest |logit|, default 1e-2 (float16 keeps 11 bits).
    #[arg(long)]
    tolerance: Option<f32>,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then the one scripts/setup.sh installed).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Where ONNX Runtime runs the check: auto uses CUDA when it can be had.
    #[arg(long, value_enum, default_value_t = rir_infer::Device::Auto)]
    device: rir_infer::Device,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model in ONNX Runtime and tract and compare them (and score it on real images).
    Verify {
        /// ONNX model.
        model: PathBuf,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Write the Triton `config.pbtxt` of a model already in a repository
    /// (`<repository>/<name>/<version>/model.onnx`), unless one is there.
    TritonConfig {
        /// ONNX model inside a repository.
        model: PathBuf,
    },
    /// Print a model's inputs, outputs, operator counts and metadata.
    Inspect {
        /// ONNX model.
        model: PathBuf,
    },
    /// Measure folded vs literal exports in ONNX Runtime (CPU): batch-1 latency, batch-64 throughput.
    Bench {
        /// Presets to measure, comma-separated.
        #[arg(long, default_value = "small,paper", value_delimiter = ',')]
        presets: Vec<String>,
        /// Image shape: cifar (3x32x32, 10 classes) or fashion-mnist (1x28x28).
        #[arg(long, default_value = "cifar")]
        shape: String,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Alternating rounds per form.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Batch-1 runs per round.
        #[arg(long, default_value_t = 20)]
        latency_runs: usize,
        /// Batch-64 runs per round.
        #[arg(long, default_value_t = 2)]
        throughput_runs: usize,
        /// Path of libonnxruntime.so.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    rir_process::main("info,ort=warn", || run(Cli::parse()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Verify { model, check }) => run_verify(&model, &check),
        Some(Command::Inspect { model }) => inspect(&model),
        Some(Command::TritonConfig { model }) => {
            report_config(&model, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Bench {
            presets,
            shape,
            threads,
            rounds,
            latency_runs,
            throughput_runs,
            ort_lib,
        }) => {
            let input = match shape.as_str() {
                "cifar" => rir_arch::InputSpec::new(3, 32, 32),
                "fashion-mnist" => rir_arch::InputSpec::new(1, 28, 28),
                other => bail!("unknown --shape {other} (cifar, fashion-mnist)"),
            };
            let opts = rir_exporter::bench::BenchOptions {
                presets,
                input,
                classes: 10,
                threads,
                rounds,
                latency_runs,
                throughput_runs,
                ort: OrtOptions {
                    library: ort_lib,
                    ..OrtOptions::default()
                },
            };
            bench(&opts)
        }
        None => {
            let a = cli.export;
            let Some(checkpoint) = a.checkpoint else {
                bail!("no checkpoint given; see `rir-export --help`");
            };
            let Some(output) = a.output else {
                bail!("no output given: pass -o MODEL.onnx");
            };
            let form = if a.no_fold {
                Form::Unfolded
            } else {
                Form::Folded
            };
            let model = export_file(&checkpoint, &output, form, a.precision)
                .with_context(|| format!("exporting {}", checkpoint.display()))?;
            let graph = model.graph.as_ref();
            let count =
                |op: &str| graph.map_or(0, |g| g.node.iter().filter(|n| n.op_type == op).count());
            println!(
                "wrote {} ({:?}, {}): {} Conv, {} BatchNormalization, {} nodes, {} bytes",
                output.display(),
                form,
                a.precision.as_str(),
                count("Conv"),
                count("BatchNormalization"),
                graph.map_or(0, |g| g.node.len()),
                std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0)
            );
            if !a.no_triton_config {
                report_config(&output, false)?;
            }
            if a.verify {
                return run_verify(&output, &a.check);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `config.pbtxt` for `model` and says what happened; `required`:
/// a model outside a repository layout is an error.
fn report_config(model: &std::path::Path, required: bool) -> Result<()> {
    match write_config(model).context("writing config.pbtxt")? {
        ConfigWritten::Wrote(p) => println!("wrote {} (Triton model configuration)", p.display()),
        ConfigWritten::Kept(p) => println!("kept the existing {}", p.display()),
        ConfigWritten::NotARepository if required => bail!(
            "{} is not at <repository>/<name>/<version>/model.onnx",
            model.display()
        ),
        ConfigWritten::NotARepository => {}
    }
    Ok(())
}

fn run_verify(model: &std::path::Path, c: &CheckArgs) -> Result<ExitCode> {
    let opts = VerifyOptions {
        random: c.random,
        images: c.images,
        data_dir: c.data_dir.clone(),
        ort: OrtOptions {
            library: c.ort_lib.clone(),
            device: c.device,
            ..OrtOptions::default()
        },
        ..VerifyOptions::default()
    };
    let r = verify(model, &opts).with_context(|| format!("verifying {}", model.display()))?;
    let half = r.precision != Precision::Fp32;
    // fp32 is judged on the absolute difference, fp16 on the relative one.
    let (tolerance, what) = if half {
        (c.tolerance.unwrap_or(1e-2), "max rel")
    } else {
        (c.tolerance.unwrap_or(1e-3), "max |diff|")
    };
    let worst = print_comparisons(&r, half);
    let mut failed = !accuracy_reproduced(&r);
    if let Some(why) = &r.real_skipped {
        println!("real images skipped: {why}");
    }
    if worst > tolerance {
        eprintln!("FAILED: {what} {worst:.3e} exceeds the tolerance {tolerance:.1e}");
        failed = true;
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    let reproduced = r
        .accuracy
        .is_some_and(|a| a.full_split && a.recorded.is_some());
    println!(
        "OK: {what} within {tolerance:.1e}{}",
        if reproduced {
            " and the trainer's accuracy reproduced"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints each comparison of the report; the worst difference it is judged
/// on (relative for half precision, absolute otherwise).
fn print_comparisons(r: &rir_exporter::verify::Report, half: bool) -> f32 {
    println!(
        "{} model in ONNX Runtime ({}), compared with",
        r.precision.as_str(),
        r.engine
    );
    println!(
        "{:<43} {:>8} {:>12} {:>12} {:>10}",
        "", "inputs", "max |diff|", "max rel", "top-1 agree"
    );
    let mut worst = 0f32;
    let mut row = |name: &str, c: &Comparison| {
        println!(
            "{:<43} {:>8} {:>12.3e} {:>12.3e} {:>10.2}%",
            name,
            c.n,
            c.max_abs,
            c.max_rel,
            100.0 * c.top1_agreement
        );
        worst = worst.max(if half { c.max_rel } else { c.max_abs });
    };
    row("tract, random inputs", &r.random);
    if let Some(t) = &r.random_twin {
        row("float32 twin, random inputs", t);
    }
    if let Some(real) = &r.real {
        row(&format!("{}, real test images", r.reference), real);
    }
    worst
}

/// Prints the accuracy figures; false when the export, on the whole test
/// split, does not score what the trainer recorded for these weights.
fn accuracy_reproduced(r: &rir_exporter::verify::Report) -> bool {
    let Some(a) = &r.accuracy else {
        return true;
    };
    println!(
        "test accuracy on {} images: ONNX Runtime {:.2}%, {} {:.2}%",
        a.n,
        100.0 * a.ort,
        r.reference,
        100.0 * a.reference
    );
    let Some(rec) = a.recorded else {
        return true;
    };
    println!(
        "the trainer recorded {:.2}% on the full test split for these weights",
        100.0 * rec
    );
    // On the same images the export must score what the trainer scored (up
    // to a few near-ties flipped by float rounding).
    if a.full_split && !rir_arch::meta::reproduces_recorded_accuracy(a.ort, rec) {
        eprintln!(
            "FAILED: the export scores {:.2}%, the trainer {:.2}%",
            100.0 * a.ort,
            100.0 * rec
        );
        return false;
    }
    true
}

fn bench(opts: &rir_exporter::bench::BenchOptions) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let bar = indicatif::ProgressBar::new_spinner();
    let rows = rir_exporter::bench::run(opts, dir.path(), |m| bar.set_message(m.to_string()))?;
    bar.finish_and_clear();
    println!(
        "ONNX Runtime CPU, {} threads, input {}x{}x{}, medians over {} alternating rounds",
        opts.threads, opts.input.channels, opts.input.height, opts.input.width, opts.rounds
    );
    println!(
        "{:<7} {:<9} {:>6} {:>6} {:>16} {:>18}",
        "preset", "form", "Conv", "nodes", "batch 1 µs/img", "batch 64 img/s"
    );
    for r in &rows {
        for (name, f) in [("folded", &r.folded), ("unfolded", &r.unfolded)] {
            println!(
                "{:<7} {:<9} {:>6} {:>6} {:>16.0} {:>18.0}",
                r.preset, name, f.convs, f.nodes, f.latency_us, f.throughput
            );
        }
        println!(
            "{:<7} speed-up of folding: {:.2}x at batch 1, {:.2}x at batch 64",
            r.preset,
            r.unfolded.latency_us / r.folded.latency_us,
            r.folded.throughput / r.unfolded.throughput
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(model: &std::path::Path) -> Result<ExitCode> {
    let info = ModelInfo::read(model)?;
    println!("opset {}", info.opset);
    for i in &info.inputs {
        println!("input  {} {} {:?}", i.name, i.type_name(), i.dims);
    }
    for o in &info.outputs {
        println!("output {} {} {:?}", o.name, o.type_name(), o.dims);
    }
    let mut ops: Vec<&String> = info.op_types.iter().collect();
    ops.sort();
    ops.dedup();
    let counts: Vec<String> = ops
        .iter()
        .map(|op| format!("{op} x{}", info.count(op)))
        .collect();
    println!("nodes  {}", counts.join(", "));
    for (k, v) in &info.metadata {
        let shown = if k == keys::SPEC && v.len() > 120 {
            format!("{}...", &v[..120])
        } else {
            v.clone()
        };
        println!("meta   {k} = {shown}");
    }
    Ok(ExitCode::SUCCESS)
}

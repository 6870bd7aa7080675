//! `rir-export`: fold a trained RiR checkpoint into ONNX and prove the export.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_contract::ModelInfo;
use rir_contract::onnx::keys;
use rir_exporter::quantize::{QuantizeOptions, WeightScheme, quantize_file};
use rir_exporter::triton::{ConfigWritten, write_config};
use rir_exporter::verify::{Comparison, VerifyOptions, verify};
use rir_exporter::{Form, Precision, export_file};
use rir_infer::OrtOptions;

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
        rir-export verify models/rir/1/model.onnx\n  \
        rir-export quantize models/rir/1/model.onnx -o models/rir/2/model.onnx --verify\n  \
        rir-export inspect models/rir/1/model.onnx\n\n\
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
    /// Arithmetic of the network's body: fp32; fp16 (float16 kernels and
    /// activations, half the file); or int8 (the float32 export quantized
    /// as `rir-export quantize` does, calibrated on training images).
    /// `image` and the outputs stay float32 either way, so clients and the
    /// server see no difference. `--verify` then also measures the model
    /// against its float32 twin (fp16) or source (int8).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    #[command(flatten)]
    quantize: QuantizeArgs,
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
    /// For an int8 model: its float32 source, which it is compared with on
    /// the test split (the sha256 its metadata records must match).
    #[arg(long)]
    source: Option<PathBuf>,
    /// For an int8 model: the least top-1 agreement with the source on the
    /// test images, in percent.
    #[arg(long, default_value_t = 99.5)]
    min_agreement: f64,
    /// For an int8 model: the most its test accuracy may fall below the
    /// source's, in percentage points.
    #[arg(long, default_value_t = 0.3)]
    max_accuracy_drop: f64,
    /// Where ONNX Runtime runs the check: auto uses CUDA when it can be had.
    #[arg(long, value_enum, default_value_t = rir_infer::Device::Auto)]
    device: rir_infer::Device,
}

#[derive(Args, Clone)]
struct QuantizeArgs {
    /// Training images of the model's data set to calibrate the activation
    /// ranges on (a seeded draw).
    #[arg(long, default_value_t = 512)]
    calibration_images: usize,
    /// How a range is chosen from them: minmax (all values seen; the most
    /// accurate measured), percentile (the 99.99th), entropy (least
    /// Kullback-Leibler divergence; clips too much on RiR).
    #[arg(long, default_value = "minmax")]
    calibration: rir_exporter::quantize::Method,
    /// Seed of the draw of calibration images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One scale per kernel instead of one per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// 7-bit kernels (ONNX Runtime's `reduce_range`): no overflow in AVX2's
    /// 16-bit pair sums, one bit less precision.
    #[arg(long)]
    reduce_range: bool,
}

impl QuantizeArgs {
    fn options(&self, data_dir: Option<PathBuf>, ort_lib: Option<PathBuf>) -> QuantizeOptions {
        QuantizeOptions {
            images: self.calibration_images,
            method: self.calibration,
            seed: self.seed,
            weights: WeightScheme {
                per_channel: !self.per_tensor,
                max_code: if self.reduce_range { 63 } else { 127 },
            },
            data_dir,
            ort: OrtOptions {
                library: ort_lib,
                ..OrtOptions::default()
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a float32 export to int8 (QDQ: int8 kernels per output
    /// channel, uint8 activations calibrated on training images); the
    /// stem, head, normalization and softmax stay float32.
    Quantize {
        /// Float32 ONNX model written by rir-export.
        model: PathBuf,
        /// Output ONNX file.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        quantize: QuantizeArgs,
        /// Verify the written model against its source right away.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        check: CheckArgs,
    },
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
    /// Measure folded, literal and int8 exports of random checkpoints in ONNX
    /// Runtime (CPU), side by side: batch-1 latency, batch-64 throughput.
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
        Some(Command::Quantize {
            model,
            output,
            quantize,
            verify,
            mut check,
        }) => {
            let opts = quantize.options(check.data_dir.clone(), check.ort_lib.clone());
            run_quantize(&model, &output, &opts)?;
            if !verify {
                return Ok(ExitCode::SUCCESS);
            }
            check.source = Some(model);
            run_verify(&output, &check)
        }
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
            let Some(checkpoint) = a.checkpoint.clone() else {
                bail!("no checkpoint given; see `rir-export --help`");
            };
            let Some(output) = a.output.clone() else {
                bail!("no output given: pass -o MODEL.onnx");
            };
            let form = if a.no_fold {
                Form::Unfolded
            } else {
                Form::Folded
            };
            if a.precision == Precision::Int8 {
                return export_int8(&checkpoint, &output, form, &a);
            }
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

/// `--precision int8`: the folded float32 export, into a temporary file,
/// quantized into `output` (and verified against that float32 source).
fn export_int8(
    checkpoint: &std::path::Path,
    output: &std::path::Path,
    form: Form,
    a: &ExportArgs,
) -> Result<ExitCode> {
    if form != Form::Folded {
        bail!("int8 is quantized from the folded export: drop --no-fold");
    }
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let fp32 = dir.path().join("fp32.onnx");
    export_file(checkpoint, &fp32, form, Precision::Fp32)
        .with_context(|| format!("exporting {}", checkpoint.display()))?;
    let opts = a
        .quantize
        .options(a.check.data_dir.clone(), a.check.ort_lib.clone());
    run_quantize(&fp32, output, &opts)?;
    if !a.no_triton_config {
        report_config(output, false)?;
    }
    if !a.verify {
        return Ok(ExitCode::SUCCESS);
    }
    let check = CheckArgs {
        source: Some(fp32),
        ..a.check.clone()
    };
    run_verify(output, &check)
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

/// Quantizes `source` into `output` with a progress bar, and says what it wrote.
fn run_quantize(
    source: &std::path::Path,
    output: &std::path::Path,
    opts: &QuantizeOptions,
) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} batches")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let model = quantize_file(source, output, opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("quantizing {}", source.display()))?;
    bar.finish_and_clear();
    let graph = model.graph.unwrap_or_default();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    println!(
        "wrote {} (int8, {} calibration on {} images, seed {}): {} QuantizeLinear, {} DequantizeLinear, {} bytes",
        output.display(),
        opts.method.as_str(),
        opts.images,
        opts.seed,
        count("QuantizeLinear"),
        count("DequantizeLinear"),
        std::fs::metadata(output).map(|m| m.len()).unwrap_or(0)
    );
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
        source: c.source.clone(),
        ..VerifyOptions::default()
    };
    let r = verify(model, &opts).with_context(|| format!("verifying {}", model.display()))?;
    // fp32 is judged on the absolute difference, fp16 and int8 (against
    // tract, which rounds its requantizations on its own) on the relative one.
    let (tolerance, what) = match r.precision {
        Precision::Fp32 => (c.tolerance.unwrap_or(1e-3), "max |diff|"),
        Precision::Fp16 => (c.tolerance.unwrap_or(1e-2), "max rel"),
        Precision::Int8 => (c.tolerance.unwrap_or(5e-2), "max rel"),
    };
    let worst = print_comparisons(&r);
    let mut failed = match r.precision {
        Precision::Int8 => !int8_bound_met(&r, c),
        _ => !accuracy_reproduced(&r),
    };
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
    let extra = match r.precision {
        Precision::Int8 if r.accuracy.is_some() => " and the int8 bound met",
        Precision::Int8 => "",
        _ if reproduced => " and the trainer's accuracy reproduced",
        _ => "",
    };
    println!("OK: {what} within {tolerance:.1e}{extra}");
    Ok(ExitCode::SUCCESS)
}

/// Prints each comparison of the report; the worst difference it is judged
/// on: absolute for float32, relative otherwise; for int8 only against
/// tract (its distance from the float32 source is judged by agreement).
fn print_comparisons(r: &rir_exporter::verify::Report) -> f32 {
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
    let mut row = |name: &str, c: &Comparison, judged: bool| {
        println!(
            "{:<43} {:>8} {:>12.3e} {:>12.3e} {:>10.2}%",
            name,
            c.n,
            c.max_abs,
            c.max_rel,
            100.0 * c.top1_agreement
        );
        if judged {
            let d = match r.precision {
                Precision::Fp32 => c.max_abs,
                _ => c.max_rel,
            };
            worst = worst.max(d);
        }
    };
    let int8 = r.precision == Precision::Int8;
    row("tract, random inputs", &r.random, true);
    if let Some(t) = &r.random_twin {
        row(&format!("{}, random inputs", r.reference), t, !int8);
    }
    if let Some(real) = &r.real {
        row(&format!("{}, real test images", r.reference), real, !int8);
    }
    worst
}

/// Prints how an int8 model compares with its float32 source on the test
/// images; false when the agreement or the accuracy misses the bound (or
/// there were no test images to judge it on).
fn int8_bound_met(r: &rir_exporter::verify::Report, c: &CheckArgs) -> bool {
    let (Some(a), Some(real)) = (&r.accuracy, &r.real) else {
        if c.images == 0 {
            return true;
        }
        eprintln!("FAILED: the int8 bound is judged on test images, and none could be read");
        return false;
    };
    let (agree, drop) = (100.0 * real.top1_agreement, 100.0 * (a.reference - a.ort));
    println!(
        "test accuracy on {} images: int8 {:.2}%, float32 source {:.2}% ({:+.2} points); top-1 agreement {:.2}%",
        a.n,
        100.0 * a.ort,
        100.0 * a.reference,
        -drop,
        agree
    );
    println!(
        "bound: agreement at least {:.2}%, accuracy at most {:.2} points below the source",
        c.min_agreement, c.max_accuracy_drop
    );
    let mut met = true;
    // The figure recorded when the model was made must come back (as for
    // any export against its trainer's), on the same whole split.
    if let Some(rec) = r.int8_recorded
        && a.full_split
    {
        println!(
            "recorded when it was quantized: {:.2}% on the full test split",
            100.0 * rec
        );
        if !rir_arch::meta::reproduces_recorded_accuracy(a.ort, rec) {
            eprintln!(
                "FAILED: the int8 model scores {:.2}%, {:.2}% was recorded when it was quantized",
                100.0 * a.ort,
                100.0 * rec
            );
            met = false;
        }
    }
    if agree < c.min_agreement {
        eprintln!(
            "FAILED: top-1 agreement {agree:.2}% is below {:.2}%",
            c.min_agreement
        );
        met = false;
    }
    if drop > c.max_accuracy_drop {
        eprintln!(
            "FAILED: the accuracy falls {drop:.2} points, more than {:.2}",
            c.max_accuracy_drop
        );
        met = false;
    }
    met
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
        for (name, f) in [
            ("folded", &r.folded),
            ("unfolded", &r.unfolded),
            ("int8", &r.int8),
        ] {
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
        println!(
            "{:<7} int8 against folded fp32: {:.2}x at batch 1, {:.2}x at batch 64",
            r.preset,
            r.folded.latency_us / r.int8.latency_us,
            r.int8.throughput / r.folded.throughput
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

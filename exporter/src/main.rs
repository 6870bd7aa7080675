//! `rir-export`: fold a trained RiR checkpoint into ONNX and prove the export.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_contract::ModelInfo;
use rir_exporter::pipeline::{self, Check, ExportJob, Placed, QuantizeJob};
use rir_exporter::quantize::{QuantizeOptions, WeightScheme};
use rir_exporter::triton::{ConfigWritten, write_config};
use rir_exporter::verdict::{self, Bounds};
use rir_exporter::verify::VerifyOptions;
use rir_exporter::{Form, Precision, show};
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
    #[arg(long, default_value_t = verdict::MIN_AGREEMENT)]
    min_agreement: f64,
    /// For an int8 model: the most its test accuracy may fall below the
    /// source's, in percentage points.
    #[arg(long, default_value_t = verdict::MAX_ACCURACY_DROP)]
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

impl CheckArgs {
    fn check(&self) -> Check {
        Check {
            verify: VerifyOptions {
                random: self.random,
                images: self.images,
                data_dir: self.data_dir.clone(),
                ort: OrtOptions {
                    library: self.ort_lib.clone(),
                    device: self.device,
                    ..OrtOptions::default()
                },
                source: self.source.clone(),
                ..VerifyOptions::default()
            },
            bounds: Bounds {
                tolerance: self.tolerance,
                min_agreement: self.min_agreement,
                max_accuracy_drop: self.max_accuracy_drop,
                images_asked: self.images > 0,
            },
        }
    }
}

impl ExportArgs {
    fn job(self) -> Result<ExportJob> {
        let Some(checkpoint) = self.checkpoint else {
            bail!("no checkpoint given; see `rir-export --help`");
        };
        let Some(output) = self.output else {
            bail!("no output given: pass -o MODEL.onnx");
        };
        let c = &self.check;
        Ok(ExportJob {
            checkpoint,
            output,
            form: if self.no_fold {
                Form::Unfolded
            } else {
                Form::Folded
            },
            precision: self.precision,
            quantize: self.quantize.options(c.data_dir.clone(), c.ort_lib.clone()),
            triton_config: !self.no_triton_config,
            check: self.verify.then(|| c.check()),
        })
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
        Some(Command::Verify { model, check }) => {
            let v = pipeline::verify_file(&model, &check.check())
                .with_context(|| format!("verifying {}", model.display()))?;
            Ok(report_verified(&v))
        }
        Some(Command::Quantize {
            model,
            output,
            quantize,
            verify,
            check,
        }) => {
            let job = QuantizeJob {
                quantize: quantize.options(check.data_dir.clone(), check.ort_lib.clone()),
                check: verify.then(|| check.check()),
                source: model,
                output,
            };
            let placed = with_bar(|p| pipeline::quantize(&job, p))
                .with_context(|| format!("quantizing {}", job.source.display()))?;
            Ok(report_placed(&placed, &show::int8_what(&job.quantize)))
        }
        Some(Command::Inspect { model }) => {
            print!("{}", show::inspect(&ModelInfo::read(&model)?));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::TritonConfig { model }) => match write_config(&model)? {
            ConfigWritten::NotARepository => bail!(
                "{} is not at <repository>/<name>/<version>/model.onnx",
                model.display()
            ),
            c => {
                println!("{}", show::config(&c).unwrap_or_default());
                Ok(ExitCode::SUCCESS)
            }
        },
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
            let dir = tempfile::tempdir()?;
            let bar = indicatif::ProgressBar::new_spinner();
            let rows =
                rir_exporter::bench::run(&opts, dir.path(), |m| bar.set_message(m.to_string()))?;
            bar.finish_and_clear();
            print!("{}", show::bench(&opts, &rows));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let job = cli.export.job()?;
            let placed = with_bar(|p| pipeline::export(&job, p))
                .with_context(|| format!("exporting {}", job.checkpoint.display()))?;
            let what = match job.precision {
                Precision::Int8 => show::int8_what(&job.quantize),
                p => format!("{:?}, {}", job.form, p.as_str()),
            };
            Ok(report_placed(&placed, &what))
        }
    }
}

/// Runs `f` with a calibration progress bar.
fn with_bar<T>(f: impl FnOnce(&mut dyn FnMut(usize, usize)) -> T) -> T {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} batches")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let out = f(&mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    out
}

/// Prints what was written (or rejected) and its verification; the exit
/// code: failure when the model was rejected.
fn report_placed(p: &Placed, what: &str) -> ExitCode {
    if p.placed() {
        println!("{}", show::written(p, what));
        if let Some(line) = p.config.as_ref().and_then(show::config) {
            println!("{line}");
        }
    }
    let code = p
        .verified
        .as_ref()
        .map_or(ExitCode::SUCCESS, report_verified);
    if !p.placed() {
        eprintln!("{}", show::written(p, what));
    }
    code
}

/// Prints a verification; the exit code of its verdict.
fn report_verified(v: &pipeline::Verified) -> ExitCode {
    print!("{}", show::comparisons(&v.report));
    print!("{}", show::accuracy(&v.report, &v.bounds));
    let said = show::verdict(&v.verdict);
    match v.verdict.passed() {
        true => {
            print!("{said}");
            ExitCode::SUCCESS
        }
        false => {
            eprint!("{said}");
            ExitCode::FAILURE
        }
    }
}

//! `rir-train`: train, evaluate and inspect ResNet-in-ResNet classifiers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_arch::meta::EpochMetrics;
use rir_arch::preset::{self, PRESETS};
use rir_arch::{BlockMask, Projection, Variant};
use rir_contract::Device as DeviceChoice;
use rir_data::cifar::Flavour;
use rir_data::{Source, load};
use rir_trainer::bench::Form;
use rir_trainer::device;
use rir_trainer::init::Init;
use rir_trainer::model::Precision;
use rir_trainer::optim::OptimizerKind;
use rir_trainer::schedule::Schedule;
use rir_trainer::session::{self, Start};
use rir_trainer::{Outcome, TrainConfig, Trainer, compare, plot, summary};

mod sweep;

#[derive(Parser)]
#[command(
    name = "rir-train",
    version,
    about = "Train ResNet-in-ResNet image classifiers with libtorch (CPU or CUDA).",
    long_about = "Train ResNet-in-ResNet (Targ et al., 2016) image classifiers with libtorch.\n\n\
        Each generalized residual unit is one convolution over the stacked residual and \
        transient streams, with a block mask and explicit shortcuts; `rir`, `resnet`, `cnn` \
        and `resnet-init` are the same network with different masks and shortcuts.\n\n\
        Data: Fashion-MNIST (IDX, Debian's dataset-fashion-mnist), CIFAR-10 and CIFAR-100 \
        (official binary format; `rir-train fetch` downloads them).\n\n\
        Exit status: 0 done, 1 error, 130 interrupted by SIGINT/SIGTERM (state saved; \
        continue with --resume)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network; writes last/best checkpoints, metrics.jsonl and curves.png.
    Train(TrainArgs),
    /// Evaluate a checkpoint on its data set's test split.
    Eval {
        /// Checkpoint (.safetensors) written by `rir-train train`.
        checkpoint: PathBuf,
        /// Folder with the data files (default: the data set's usual place).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Download CIFAR-10 or CIFAR-100 from the official site (md5-checked).
    Fetch {
        /// cifar10 or cifar100.
        dataset: Source,
        /// Folder to unpack into.
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// Download from this site instead of the official one
        /// (https://www.cs.toronto.edu/~kriz/): a mirror or a local server
        /// holding the same archive. The published md5 is checked either way.
        #[arg(long)]
        mirror: Option<String>,
    },
    /// List presets with parameters and multiply-adds for each variant.
    Presets {
        /// Data set whose input shape and classes to assume.
        #[arg(long, default_value = "cifar10")]
        dataset: Source,
    },
    /// Show the libtorch build and the devices it sees.
    Info,
    /// Measure training throughput: one-conv vs four-conv vs PyTorch eager.
    Bench(BenchArgs),
    /// Compare finished runs (a sweep, or runs from anywhere): configurations
    /// ranked with 95 % intervals over seeds, variants compared pairwise, curves.
    Report(ReportArgs),
    /// Search a space of recipes: a grid of `rir-train train` options crossed
    /// with variants and seeds, in full or by successive halving, locally or
    /// as the pods of an Indexed Job; resumable.
    Sweep {
        #[command(subcommand)]
        command: sweep::SweepCommand,
    },
    /// One measurement of `bench`, in its own process (internal).
    #[command(hide = true)]
    BenchChild {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        dataset: Source,
        #[arg(long)]
        variant: Variant,
        #[arg(long, value_enum)]
        form: Form,
        #[arg(long)]
        batch: usize,
        #[arg(long)]
        warmup: usize,
        #[arg(long)]
        steps: usize,
        #[arg(long)]
        mixed: bool,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Print a preset's layer plan as JSON (what the PyTorch references build).
    Plan {
        /// Preset.
        #[arg(long, default_value = "paper")]
        preset: String,
        /// Data set whose image shape and class count to use.
        #[arg(long, default_value = "cifar10")]
        dataset: Source,
        /// Variant.
        #[arg(long, default_value = "rir")]
        variant: Variant,
    },
}

#[derive(Args, Default)]
struct ReportArgs {
    /// Run folders (each with last.safetensors), or folders holding runs
    /// (searched below), e.g. a sweep or runs copied back from several
    /// machines; the same run found twice counts once (the copy with most
    /// epochs).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Draw every run's loss and accuracy curves into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Draw final accuracy against each option that differs between the
    /// runs (one panel per option) into this PNG.
    #[arg(long)]
    axes_plot: Option<PathBuf>,
    /// Also write the ranked configurations as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Title of the curves plot.
    #[arg(long, default_value = "test and training curves")]
    title: String,
}

#[derive(Args)]
struct BenchArgs {
    /// Presets to measure, comma-separated.
    #[arg(long, default_value = "tiny,small", value_delimiter = ',')]
    presets: Vec<String>,
    /// Data set whose image shape and class count to use (no data is read).
    #[arg(long, default_value = "cifar10")]
    dataset: Source,
    /// Variant to measure.
    #[arg(long, default_value = "rir")]
    variant: Variant,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Python with torch 2.11 for the eager reference [default: python3 with
    /// the whole torch that scripts/setup.sh installed on PYTHONPATH: on a
    /// GPU machine the one libtorch comes from, on a CPU machine the one
    /// `RIR_TORCH_REFERENCE=1` adds; without either the reference row is
    /// skipped and says why].
    #[arg(long, env = "RIR_TORCH_PYTHON")]
    python: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also measure bf16 convolutions with channels-last tensors, ours
    /// against PyTorch's bf16 autocast with channels-last.
    #[arg(long)]
    bf16: bool,
    #[command(flatten)]
    runtime: Runtime,
}

#[derive(Args)]
struct Runtime {
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    threads: Option<i32>,
}

#[derive(Args)]
struct TrainArgs {
    /// fashion-mnist, cifar10, cifar100 or cifar100-coarse.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: Source,
    /// Folder with the data files (default: /usr/share/datasets/fashion-mnist or data/<cifar folder>).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Network size: paper, small, tiny or micro (see `rir-train presets`).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// rir, resnet, cnn or resnet-init.
    #[arg(long, default_value = "rir")]
    variant: Variant,
    /// Shortcut spanning each RiR block's two units (rir only; others fix it).
    #[arg(long)]
    outer_shortcut: Option<bool>,
    /// How shortcuts cross a stride or width change: conv (1x1) or zero-pad (option A).
    #[arg(long, default_value = "conv")]
    projection: Projection,
    /// Live sub-kernels as four 0/1 digits rr tr rt tt (ablations), e.g. 1001.
    #[arg(long, default_value = "1111")]
    mask: BlockMask,
    /// Epochs [default: 82, the paper's]. With --resume, extends or shortens the stored run.
    #[arg(long)]
    epochs: Option<usize>,
    /// Minibatch size (the paper used 500).
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Learning-rate schedule; `step` is the paper's x0.1 at 42 and 62 of 82 epochs, scaled.
    #[arg(long, value_enum, default_value_t = Schedule::Step)]
    schedule: Schedule,
    /// Linear learning-rate warm-up, in epochs.
    #[arg(long, default_value_t = 0.0)]
    warmup_epochs: f64,
    /// Initialization of the convolution kernels.
    #[arg(long, value_enum, default_value_t = Init::HeNormal)]
    init: Init,
    /// Update rule: SGD with momentum (the paper's), Adam or RMSprop (as
    /// PyTorch's, L2 on the kernels added to the gradient).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum (SGD); `--nesterov=false` too, for a sweep's grid.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    nesterov: bool,
    /// Adam: decay of the first moment.
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// Adam: decay of the second moment.
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// RMSprop: decay of the mean square.
    #[arg(long, default_value_t = 0.99)]
    rms_alpha: f64,
    /// Adam and RMSprop: added to the root of the second moment.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// L2 on convolution kernels (not on BN, never on the identity).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Zero padding before the random crop (0 disables the crop).
    #[arg(long, default_value_t = 4)]
    crop_pad: usize,
    /// Disable the random horizontal flip (`--no-flip=false` too).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    no_flip: bool,
    /// Seed of initialization, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Convolutions in bfloat16 on float32 master weights.
    #[arg(long)]
    bf16: bool,
    /// Channels-last memory layout (for CUDA tensor cores).
    #[arg(long)]
    channels_last: bool,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Run folder (default: runs/<dataset>-<variant>-<preset>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (recipe and model come from it).
    #[arg(long)]
    resume: bool,
    /// Stop (as on SIGINT) after this many optimizer steps in total.
    #[arg(long, hide = true)]
    stop_at_step: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    runtime: Runtime,
}

fn main() -> ExitCode {
    rir_process::main("info", || run(Cli::parse()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train(a),
        Command::Eval {
            checkpoint,
            data_dir,
            runtime,
        } => eval(&checkpoint, data_dir, &runtime),
        Command::Fetch {
            dataset,
            dir,
            mirror,
        } => fetch(dataset, &dir, mirror.as_deref()),
        Command::Presets { dataset } => presets(dataset),
        Command::Info => info(),
        Command::Bench(a) => bench(a),
        Command::Report(a) => report(&a),
        Command::Sweep { command } => sweep::run(command),
        Command::BenchChild {
            preset: name,
            dataset,
            variant,
            form,
            batch,
            warmup,
            steps,
            mixed,
            runtime,
        } => {
            let device = setup_runtime(&runtime)?;
            let spec = compare::spec_for(&name, dataset, variant)?;
            let m = rir_trainer::bench::measure(&spec, form, batch, warmup, steps, device, mixed);
            println!("{}", serde_json::to_string(&m)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            preset,
            dataset,
            variant,
        } => {
            let spec = compare::spec_for(&preset, dataset, variant)?;
            println!("{}", rir_trainer::bench::layer_plan(&spec));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn setup_runtime(r: &Runtime) -> Result<tch::Device> {
    if let Some(n) = r.threads {
        tch::set_num_threads(n);
    }
    device::select(r.device)
}

/// Installs SIGINT/SIGTERM handling: the first signal asks the trainer to
/// save and stop; a second one exits at once.
fn install_stop(trainer: &Trainer) -> Result<()> {
    let stop = trainer.stop.clone();
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("second signal: exiting without saving");
            // At once: no exit handlers, which would tear libtorch down
            // under the threads still training (and crash on the way out).
            // SAFETY: _exit ends the process; nothing runs after it.
            unsafe { libc::_exit(130) };
        }
        eprintln!("signal received: finishing this step, saving, then exiting (again to force)");
        stop.store(true, Ordering::SeqCst);
    })
    .context("installing the signal handler")
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    preset::find(&a.preset)?;
    let device = setup_runtime(&a.runtime)?;
    let data = session::load_data(a.dataset, a.data_dir.clone())?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| session::default_folder(a.dataset, a.variant, &a.preset, a.seed));
    let start = if a.resume {
        Start::Resume { epochs: a.epochs }
    } else {
        let mut spec = preset::build(
            &a.preset,
            a.variant,
            data.info.input,
            data.info.class_names.len(),
        )?;
        spec.outer_shortcut = a.outer_shortcut.unwrap_or(spec.outer_shortcut);
        spec.projection = a.projection;
        spec.mask = a.mask;
        Start::Fresh {
            spec: Box::new(spec),
            config: recipe(&a),
        }
    };
    let mut trainer = session::open(start, data, device, &out)?;
    trainer.stop_at_step = a.stop_at_step;
    trainer.progress = !a.quiet;
    println!("{}", trainer.describe());
    install_stop(&trainer)?;
    let started = std::time::Instant::now();
    let outcome = trainer.run()?;
    if let Err(e) = trainer.write_curves() {
        tracing::warn!("no plot: {e}");
    }
    println!("{}", trainer.conclusion(outcome, started.elapsed()));
    Ok(match outcome {
        Outcome::Finished => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    })
}

/// The recipe the flags of a fresh run ask for.
fn recipe(a: &TrainArgs) -> TrainConfig {
    TrainConfig {
        epochs: a.epochs.unwrap_or(82),
        batch_size: a.batch_size,
        lr: a.lr,
        schedule: a.schedule,
        warmup_epochs: a.warmup_epochs,
        init: a.init,
        optimizer: a.optimizer,
        momentum: a.momentum,
        nesterov: a.nesterov,
        beta1: a.beta1,
        beta2: a.beta2,
        rms_alpha: a.rms_alpha,
        eps: a.eps,
        weight_decay: a.weight_decay,
        label_smoothing: a.label_smoothing,
        crop_pad: a.crop_pad,
        flip: !a.no_flip,
        seed: a.seed,
        eval_batch_size: 500,
        precision: if a.bf16 {
            Precision::Bf16
        } else {
            Precision::Fp32
        },
        channels_last: a.channels_last,
        train_limit: a.train_limit,
        test_limit: a.test_limit,
    }
}

fn eval(path: &Path, data_dir: Option<PathBuf>, runtime: &Runtime) -> Result<ExitCode> {
    let device = setup_runtime(runtime)?;
    let (e, images) = session::evaluate_checkpoint(path, data_dir, device)?;
    println!(
        "{}: test accuracy {:.2}% ({images} images), loss {:.4}",
        path.display(),
        100.0 * e.accuracy,
        e.loss
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch(source: Source, dir: &Path, mirror: Option<&str>) -> Result<ExitCode> {
    let Source::Cifar(flavour) = source else {
        bail!(
            "fetch is for cifar10 and cifar100; Fashion-MNIST comes from Debian's dataset-fashion-mnist package"
        );
    };
    let flavour = if flavour == Flavour::HundredCoarse {
        Flavour::HundredFine
    } else {
        flavour
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    let folder = rir_data::fetch::fetch_cifar(flavour, dir, mirror, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    load(source, &folder).context("the downloaded files do not load")?;
    println!("{} ready in {}", source.name(), folder.display());
    Ok(ExitCode::SUCCESS)
}

fn report(a: &ReportArgs) -> Result<ExitCode> {
    let runs = summary::find_runs(&a.runs)?
        .iter()
        .map(|f| summary::read_run(f).with_context(|| format!("reading run {}", f.display())))
        .collect::<Result<Vec<_>>>()?;
    let (runs, dropped) = summary::merge(runs);
    for (left, kept) in &dropped {
        eprintln!(
            "note: {} is the same run as {} (variant, network, recipe, seed); counted once, from {}",
            left.display(),
            kept.display(),
            kept.display()
        );
    }
    let paired = summary::paired_table(&runs);
    print!("{}", summary::table(&runs));
    if !paired.is_empty() {
        print!("\n{paired}");
    }
    print!("\n{}", summary::runs_list(&runs));
    if let Some(path) = &a.csv {
        std::fs::write(path, summary::csv(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("csv: {}", path.display());
    }
    if let Some(path) = &a.plot {
        let labels: Vec<String> = runs
            .iter()
            .map(|r| format!("{} s{}", r.variant, r.seed))
            .collect();
        let series: Vec<(&str, &[EpochMetrics])> = labels
            .iter()
            .zip(&runs)
            .map(|(l, r)| (l.as_str(), r.history.as_slice()))
            .collect();
        plot::curves(path, &a.title, &series)?;
        println!("curves: {}", path.display());
    }
    if let Some(path) = &a.axes_plot {
        plot::axes(
            path,
            "final-epoch accuracy by option",
            &summary::axes(&runs),
        )?;
        println!("axes: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    let plan = compare::Plan {
        presets: a.presets,
        source: a.dataset,
        variant: a.variant,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
        threads: a
            .runtime
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32)),
        device: a.runtime.device,
        bf16: a.bf16,
        python: a.python,
        exe: std::env::current_exe()?,
    };
    println!("{}", plan.header());
    let results = plan.run(|rows| println!("{}", rows.table()))?;
    if let Some(path) = a.json {
        let rows: Vec<_> = results.iter().map(|r| r.to_json()).collect();
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn presets(source: Source) -> Result<ExitCode> {
    let (input, classes) = source.shape();
    println!(
        "{:<7} {:<12} {:>12} {:>14}  about",
        "preset", "variant", "params", "MACs/image"
    );
    for p in PRESETS {
        for v in Variant::ALL {
            let c = preset::build(p.name, v, input, classes)?.cost();
            let about = if v == Variant::Rir { p.about } else { "" };
            println!(
                "{:<7} {:<12} {:>12} {:>14}  {}",
                p.name,
                v.name(),
                c.params,
                c.macs,
                about
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn info() -> Result<ExitCode> {
    let cuda = device::register_cuda();
    println!("libtorch lib:   {}", env!("RIR_LIBTORCH_LIB"));
    println!(
        "libtorch_cuda:  {}",
        match &cuda {
            Ok(()) => "loaded".to_string(),
            Err(e) => format!("not loaded ({e})"),
        }
    );
    println!("CUDA available: {}", tch::Cuda::is_available());
    println!("CUDA devices:   {}", tch::Cuda::device_count());
    println!("cuDNN:          {}", tch::Cuda::cudnn_is_available());
    println!("CPU threads:    {}", tch::get_num_threads());
    Ok(ExitCode::SUCCESS)
}

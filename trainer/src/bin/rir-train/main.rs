//! `rir-train`: train ResNet-in-ResNet classifiers, compare runs, search
//! recipes. The command line is declared here and in the library
//! (`rir_trainer::recipe`, `rir_trainer::sweep::args`); every command is one
//! library call whose typed result is printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rir_arch::Variant;
use rir_arch::preset;
use rir_data::Source;
use rir_trainer::bench::UnitForm;
use rir_trainer::recipe::{Runtime, TrainArgs};
use rir_trainer::report::{ReportArgs, report};
use rir_trainer::sweep::args::SweepCommand;
use rir_trainer::sweep::pool::{Event, Pool};
use rir_trainer::sweep::trial::{self, TrialEnd};
use rir_trainer::sweep::{estimate, listing, pack};
use rir_trainer::throughput::BenchArgs;
use rir_trainer::{Outcome, session, throughput};

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
    Eval(EvalArgs),
    /// Download CIFAR-10 or CIFAR-100 from the official site (md5-checked).
    Fetch(FetchArgs),
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
        command: SweepCommand,
    },
    /// One measurement of `bench`, in its own process (internal).
    #[command(hide = true)]
    BenchChild(ChildArgs),
    /// Print a preset's layer plan as JSON (what the PyTorch references build).
    Plan(PlanArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// Checkpoint (.safetensors) written by `rir-train train`.
    checkpoint: PathBuf,
    /// Folder with the data files (default: the data set's usual place).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    runtime: Runtime,
}

#[derive(Args)]
struct FetchArgs {
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
}

#[derive(Args)]
struct ChildArgs {
    #[arg(long)]
    preset: String,
    #[arg(long)]
    dataset: Source,
    #[arg(long)]
    variant: Variant,
    #[arg(long, value_enum)]
    form: UnitForm,
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
}

#[derive(Args)]
struct PlanArgs {
    /// Preset.
    #[arg(long, default_value = "paper")]
    preset: String,
    /// Data set whose image shape and class count to use.
    #[arg(long, default_value = "cifar10")]
    dataset: Source,
    /// Variant.
    #[arg(long, default_value = "rir")]
    variant: Variant,
}

fn main() -> ExitCode {
    rir_process::main("info", || run(Cli::parse()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train(&a),
        Command::Eval(a) => {
            let device = session::setup_runtime(&a.runtime)?;
            let (e, n) = session::evaluate_checkpoint(&a.checkpoint, a.data_dir, device)?;
            let (acc, loss, path) = (100.0 * e.accuracy, e.loss, a.checkpoint.display());
            say(format!(
                "{path}: test accuracy {acc:.2}% ({n} images), loss {loss:.4}"
            ))
        }
        Command::Fetch(a) => {
            let bar = bar(
                "{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
                0,
            );
            let folder = session::fetch(a.dataset, &a.dir, a.mirror.as_deref(), &mut |n, of| {
                bar.set_length(of);
                bar.set_position(n);
            })?;
            bar.finish_and_clear();
            say(format!(
                "{} ready in {}",
                a.dataset.name(),
                folder.display()
            ))
        }
        Command::Presets { dataset } => {
            let (input, classes) = dataset.shape();
            say(preset::table(input, classes)?.trim_end())
        }
        Command::Info => say(rir_trainer::device::describe_build()),
        Command::Bench(a) => bench(a),
        Command::Report(a) => print_report(&a),
        Command::Sweep { command } => sweep(command),
        Command::BenchChild(a) => {
            let device = session::setup_runtime(&a.runtime)?;
            let spec = throughput::spec_for(&a.preset, a.dataset, a.variant)?;
            let (b, w, n) = (a.batch, a.warmup, a.steps);
            let m = rir_trainer::bench::measure(&spec, a.form, b, w, n, device, a.mixed);
            say(serde_json::to_string(&m)?)
        }
        Command::Plan(a) => {
            let spec = throughput::spec_for(&a.preset, a.dataset, a.variant)?;
            say(rir_trainer::bench::layer_plan(&spec))
        }
    }
}

/// Prints `text`: the command is done.
fn say(text: impl std::fmt::Display) -> Result<ExitCode> {
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A progress bar in `template`.
fn bar(template: &str, len: u64) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(len).with_style(style.progress_chars("=> "))
}

/// Exit 130 when a signal stopped the run (its state saved).
fn exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Finished => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    }
}

fn train(a: &TrainArgs) -> Result<ExitCode> {
    let trained = session::train(&a.recipe(), |about| println!("{about}"))?;
    println!("{}", trained.conclusion);
    Ok(exit(trained.outcome))
}

fn print_report(a: &ReportArgs) -> Result<ExitCode> {
    let r = report(a)?;
    r.notes.iter().for_each(|n| eprintln!("{n}"));
    print!("{}", r.text);
    for (what, path) in &r.written {
        println!("{what}: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn sweep(command: SweepCommand) -> Result<ExitCode> {
    match command {
        SweepCommand::List {
            space,
            no_estimate,
            runtime,
        } => {
            let s = space.resolve()?;
            let listing = listing::listing(&s, &space.dir);
            println!("{listing}");
            if !no_estimate {
                let device = session::setup_runtime(&runtime)?;
                let e = estimate::estimate(&s, &space.dir, listing.trial_epochs, device)?;
                println!("{e}");
            }
        }
        SweepCommand::Count { space, rung } => {
            println!("{}", trial::count(&space.resolve()?, rung)?);
        }
        SweepCommand::Run { space, place, how } => {
            let s = space.resolve()?;
            match trial::run(&s, &space.dir, place, how, |line| println!("{line}"))? {
                TrialEnd::Trained(t) => {
                    println!("{}", t.conclusion);
                    return Ok(exit(t.outcome));
                }
                TrialEnd::DivergedBefore(why) => {
                    let (i, r) = (place.index, place.rung);
                    println!("trial {i} of rung {r} diverged before and stays so: {why}")
                }
                TrialEnd::Diverged(_) => {}
                TrialEnd::Logged => {
                    let (i, r) = (place.index, place.rung);
                    println!(
                        "trial {i} of rung {r} has trained (its log is kept, not its checkpoint)"
                    )
                }
            }
        }
        SweepCommand::All {
            space,
            jobs,
            device,
        } => return sweep_all(&space, jobs, device),
        SweepCommand::Pack { dir, to } => {
            let packed = pack::pack(&dir, &to)?;
            for (name, why) in &packed.left_out {
                println!("left out {name}: {why}");
            }
            println!(
                "packed {} finished trials into {}",
                packed.kept.len(),
                to.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sweep_all(
    space: &rir_trainer::sweep::args::SpaceArgs,
    jobs: usize,
    device: Option<rir_contract::Device>,
) -> Result<ExitCode> {
    let s = space.resolve()?;
    let pool = Pool {
        jobs,
        device,
        exe: std::env::current_exe()?,
        poll: std::time::Duration::from_millis(200),
    };
    let mut progress = bar("{pos}/{len} trials [{bar:30}] {elapsed} {msg}", 0);
    let all = pool.train_all(&s, &space.dir, &mut |e| {
        if let Event::Rung { todo, .. } = e {
            progress.finish_and_clear();
            progress = bar("{pos}/{len} trials [{bar:30}] {elapsed} {msg}", todo as u64);
        }
        if let Event::Ended { .. } = e {
            progress.inc(1);
        }
        // Above the bar, or on stderr when it is hidden (a log).
        match progress.is_hidden() || matches!(e, Event::Rung { .. }) {
            true => eprintln!("{e}"),
            false => progress.println(e.to_string()),
        }
    });
    progress.finish_and_clear();
    print!("{}", all?);
    print_report(&ReportArgs {
        runs: vec![space.dir.clone()],
        ..ReportArgs::default()
    })
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    let (plan, json) = a.plan(std::env::current_exe()?);
    println!("{}", plan.header());
    let results = plan.run(|rows| println!("{}", rows.table()))?;
    if let Some(path) = json {
        throughput::write_json(&path, &results)?;
    }
    Ok(ExitCode::SUCCESS)
}

//! `rir-train sweep`: the command line of a search space (its flags, or a
//! TOML file) and the four things done with it: `list` the plan, `count`
//! its trials (an Indexed Job's completions), `run` one trial (a Job's pod)
//! and `all` of them here, N at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rir_arch::Variant;
use rir_contract::Device as DeviceChoice;
use rir_trainer::TrainError;
use rir_trainer::bench::{Form, measure};
use rir_trainer::compare::spec_for;
use rir_trainer::sweep::{self, Declared, Halving, Rungs, Space, Trial};
use rir_trainer::train::LAST;

use super::{Cli, Command, Runtime, TrainArgs};

/// What to do with a sweep.
#[derive(Subcommand)]
pub enum SweepCommand {
    /// Print the plan: each trial's index, folder, settings and progress,
    /// the number of trials per rung, and a time estimate measured here.
    List {
        #[command(flatten)]
        space: SpaceArgs,
        /// Skip the throughput measurement behind the time estimate.
        #[arg(long)]
        no_estimate: bool,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Print how many trials a rung has: an Indexed Job's completions.
    Count {
        #[command(flatten)]
        space: SpaceArgs,
        /// The rung (successive halving; 0 is the whole grid without it).
        #[arg(long, default_value_t = 0)]
        rung: usize,
    },
    /// Train one trial (resuming its folder if it holds a checkpoint).
    Run {
        #[command(flatten)]
        space: SpaceArgs,
        /// The trial's index in its rung (the Job's completion index).
        #[arg(long, env = "JOB_COMPLETION_INDEX")]
        index: usize,
        /// The rung of successive halving whose trial to train; its index
        /// counts the trials the earlier rungs kept.
        #[arg(long, default_value_t = 0)]
        rung: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Where to compute [default: the trial's --device, else auto].
        #[arg(long, value_enum)]
        device: Option<DeviceChoice>,
        /// CPU threads for libtorch [default: the trial's --threads, else one per core].
        #[arg(long)]
        threads: Option<i32>,
        /// Stop (as on SIGINT) after this many optimizer steps in total.
        #[arg(long, hide = true)]
        stop_at_step: Option<usize>,
    },
    /// Train every trial, N at a time, rung after rung, resuming finished
    /// and interrupted ones; then print the report.
    All {
        #[command(flatten)]
        space: SpaceArgs,
        /// Trials trained at once (each in its own process, with the cores
        /// shared out among them).
        #[arg(short = 'j', long, default_value_t = 1)]
        jobs: usize,
        /// Where the trials compute [default: the shared --device, else auto].
        #[arg(long, value_enum)]
        device: Option<DeviceChoice>,
    },
}

/// The search space as the command line gives it.
#[derive(Args, Clone)]
pub struct SpaceArgs {
    /// Sweep folder: its plan (sweep.json), one folder per trial
    /// (c<configuration>-<variant>-s<seed>), logs/ and halving.json.
    #[arg(long, default_value = "runs/sweep")]
    dir: PathBuf,
    /// The space as TOML: [grid] (one key per axis), variants, seeds,
    /// epochs, args and [halving] (eta, min-epochs); flags given as well go
    /// on top. Without a space the plan recorded in --dir is used.
    #[arg(long, value_name = "FILE")]
    space: Option<PathBuf>,
    /// A grid axis: an option of `rir-train train` and its values, crossed
    /// with every other axis, e.g. --grid lr=0.2,0.1 --grid optimizer=sgd,adam.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Variants each configuration is trained as [default: rir].
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<Variant>>,
    /// Seeds each configuration and variant is trained with [default: 0].
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Epochs per trial (the largest budget with --halving) [default: 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Successive halving: every configuration-and-variant starts on
    /// --min-epochs, and the best 1/ETA (mean test accuracy over the
    /// seeds) continue on ETA times the budget, up to --epochs.
    #[arg(long, value_name = "ETA", requires = "min_epochs")]
    halving: Option<usize>,
    /// The first rung's epochs under --halving.
    #[arg(long, requires = "halving")]
    min_epochs: Option<usize>,
    /// Options of `rir-train train` every trial shares, after `--`
    /// (e.g. -- --preset micro --schedule cosine).
    #[arg(last = true, value_name = "TRAIN OPTIONS")]
    train_args: Vec<String>,
}

impl SpaceArgs {
    /// The declared space, or the one recorded in --dir, with every
    /// trial's options checked by `rir-train train`'s own parser.
    fn resolve(&self) -> Result<Space> {
        let mut declared = match &self.space {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Declared::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Declared::default(),
        };
        let flags = Declared {
            grid: self
                .grid
                .iter()
                .map(|g| g.parse())
                .collect::<Result<_, _>>()?,
            variants: self
                .variants
                .as_ref()
                .map(|v| v.iter().map(|v| v.name().to_string()).collect()),
            seeds: self.seeds.clone(),
            epochs: self.epochs,
            args: self.train_args.clone(),
            halving: self
                .halving
                .zip(self.min_epochs)
                .map(|(eta, min_epochs)| Halving { eta, min_epochs }),
        };
        declared = declared.overlay(flags);
        let space = if declared.is_empty() {
            Space::load(&self.dir)?.with_context(|| {
                format!(
                    "no space given (--grid, --variants, --seeds, --epochs, --space FILE or \
                     options after --), and {} holds no sweep",
                    self.dir.display()
                )
            })?
        } else {
            let space = declared.space()?;
            space.is_recorded_in(&self.dir)?;
            space
        };
        for t in space.trials() {
            let args = space.train_args(&t, &space.folder(&self.dir, &t), space.epochs);
            parse_train(&args)
                .with_context(|| format!("trial {} ({})", t.index, t.describe_settings()))?;
        }
        Ok(space)
    }
}

/// `rir-train train ARGS` as the train command parses them.
fn parse_train(args: &[String]) -> Result<TrainArgs> {
    let argv = ["rir-train", "train"].into_iter().map(String::from);
    match Cli::try_parse_from(argv.chain(args.iter().cloned())) {
        Ok(Cli {
            command: Command::Train(a),
        }) => Ok(a),
        Ok(_) => bail!("not a train command"),
        Err(e) => bail!("{}", e.render().to_string().trim_end()),
    }
}

/// Runs a sweep command.
pub fn run(cmd: SweepCommand) -> Result<ExitCode> {
    match cmd {
        SweepCommand::List {
            space,
            no_estimate,
            runtime,
        } => list(&space, no_estimate, &runtime),
        SweepCommand::Count { space, rung } => {
            let s = space.resolve()?;
            let rungs = Rungs::of(&s);
            if rung >= rungs.budgets().len() {
                bail!("rung {rung}: the sweep has {} rungs", rungs.budgets().len());
            }
            println!("{}", rungs.trials_at(rung));
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::Run {
            space,
            index,
            rung,
            quiet,
            device,
            threads,
            stop_at_step,
        } => {
            let place = Place { index, rung };
            let runtime = TrialRuntime {
                quiet,
                device,
                threads,
                stop_at_step,
            };
            run_trial(&space, place, &runtime)
        }
        SweepCommand::All {
            space,
            jobs,
            device,
        } => all(&space, jobs, device),
    }
}

/// Test accuracy of trial `t` after `epochs`, if it trained that far.
fn accuracy_in<'a>(space: &'a Space, dir: &'a Path) -> impl Fn(&Trial, usize) -> Option<f64> + 'a {
    move |t, epochs| {
        sweep::progress(&space.folder(dir, t))
            .ok()?
            .accuracy_after(epochs)
    }
}

/// Which trial `sweep run` trains: its index among the trials of its rung.
struct Place {
    index: usize,
    rung: usize,
}

/// How `sweep run` trains it, over what the trial's own options say.
struct TrialRuntime {
    quiet: bool,
    device: Option<DeviceChoice>,
    threads: Option<i32>,
    stop_at_step: Option<usize>,
}

fn run_trial(args: &SpaceArgs, place: Place, how: &TrialRuntime) -> Result<ExitCode> {
    let Place { index, rung } = place;
    let space = args.resolve()?;
    space.bind(&args.dir)?;
    let rungs = Rungs::of(&space);
    let trials = rungs.trials(rung, &args.dir, &accuracy_in(&space, &args.dir))?;
    let Some(t) = trials.get(index) else {
        bail!(
            "trial index {index} is not in 0..{} (rung {rung} has {} trials)",
            trials.len().saturating_sub(1),
            trials.len()
        );
    };
    let epochs = rungs.budgets()[rung];
    let folder = space.folder(&args.dir, t);
    if let Some(why) = sweep::progress(&folder)?.diverged {
        println!("trial {} diverged before and stays so: {why}", t.index);
        return Ok(ExitCode::SUCCESS);
    }
    let mut train_args = space.train_args(t, &folder, epochs);
    if folder.join(LAST).is_file() {
        train_args.push("--resume".into());
    }
    let mut a = parse_train(&train_args)?;
    a.quiet |= how.quiet;
    a.runtime.device = how.device.unwrap_or(a.runtime.device);
    a.runtime.threads = how.threads.or(a.runtime.threads);
    a.stop_at_step = how.stop_at_step.or(a.stop_at_step);
    println!(
        "trial {} of rung {rung} ({epochs} epochs): {} {} seed {} -> {}",
        t.index,
        t.describe_settings(),
        t.variant,
        t.seed,
        folder.display()
    );
    match super::train(a) {
        // A recipe that diverges is an outcome of the search, not a failure
        // of the sweep: recorded, scored 0, not trained again.
        Err(e) if matches!(e.downcast_ref(), Some(TrainError::Diverged { .. })) => {
            sweep::mark_diverged(&folder, &e.to_string())?;
            tracing::warn!("trial {} diverged: {e}", t.index);
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn list(args: &SpaceArgs, no_estimate: bool, runtime: &Runtime) -> Result<ExitCode> {
    let space = args.resolve()?;
    let rungs = Rungs::of(&space);
    println!("sweep in {}:\n{}", args.dir.display(), space.describe());
    let budgets = rungs.budgets();
    if space.halving.is_some() {
        let plan: Vec<String> = budgets
            .iter()
            .enumerate()
            .map(|(r, e)| format!("rung {r}: {} trials to {e} epochs", rungs.trials_at(r)))
            .collect();
        println!("  successive halving: {}", plan.join("; "));
    }
    println!(
        "\n{:>5}  {:<22} {:<12} {:>5}  {:>7}  settings",
        "index", "folder", "variant", "seed", "epochs"
    );
    for t in space.trials() {
        let folder = space.folder(&args.dir, &t);
        let p = sweep::progress(&folder).unwrap_or_default();
        let done = match p.diverged {
            Some(_) => "diverged".to_string(),
            None => format!("{:>3}/{:<3}", p.accuracies.len(), space.epochs),
        };
        println!(
            "{:>5}  {:<22} {:<12} {:>5}  {:>7}  {}",
            t.index,
            folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            t.variant,
            t.seed,
            done,
            t.describe_settings()
        );
    }
    // Epochs trained in all: each rung adds its budget's growth to the
    // trials it keeps.
    let epochs: usize = budgets
        .iter()
        .enumerate()
        .map(|(r, e)| rungs.trials_at(r) * (e - if r == 0 { 0 } else { budgets[r - 1] }))
        .sum();
    println!(
        "\n{} trials, {epochs} trial-epochs in all (the full grid: {})",
        space.len(),
        space.len() * space.epochs
    );
    if !no_estimate {
        println!("{}", estimate(&space, &args.dir, epochs, runtime)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Hours of training the plan takes on this machine, from a short
/// throughput measurement of each network the trials train (the training
/// step only; evaluation adds a little).
fn estimate(space: &Space, dir: &Path, epochs: usize, runtime: &Runtime) -> Result<String> {
    let device = super::setup_runtime(runtime)?;
    let mut per_image: BTreeMap<(String, &'static str, &'static str, usize), f64> = BTreeMap::new();
    let mut seconds_per_epoch = vec![];
    for t in space.trials() {
        let a = parse_train(&space.train_args(&t, &space.folder(dir, &t), space.epochs))?;
        let key = (
            a.preset.clone(),
            a.dataset.name(),
            a.variant.name(),
            a.batch_size,
        );
        let images = a
            .train_limit
            .unwrap_or(usize::MAX)
            .min(a.dataset.train_images());
        let s = match per_image.get(&key) {
            Some(s) => *s,
            None => {
                let spec = spec_for(&a.preset, a.dataset, a.variant)?;
                // A few steps past libtorch's first (slow) ones.
                let m = measure(&spec, Form::OneConv, a.batch_size, 3, 8, device, a.bf16);
                let s = 1.0 / m.img_per_s;
                per_image.insert(key, s);
                s
            }
        };
        seconds_per_epoch.push(s * images as f64);
    }
    let mean = seconds_per_epoch.iter().sum::<f64>() / seconds_per_epoch.len().max(1) as f64;
    let rates: Vec<String> = per_image
        .iter()
        .map(|((p, _, v, b), s)| format!("{p} {v} batch {b}: {:.0} img/s", 1.0 / s))
        .collect();
    let seconds = mean * epochs as f64;
    let time = if seconds < 3600.0 {
        format!("{:.0} min", (seconds / 60.0).ceil())
    } else {
        format!("{:.1} h", seconds / 3600.0)
    };
    Ok(format!(
        "estimate: about {time} of training, one trial at a time on this machine ({}), \
         before evaluation; -j N shares the cores, so it gains little on a CPU",
        rates.join(", ")
    ))
}

/// One trial training in a child process.
struct Running {
    child: Child,
    trial: Trial,
    log: PathBuf,
}

fn all(args: &SpaceArgs, jobs: usize, device: Option<DeviceChoice>) -> Result<ExitCode> {
    if jobs == 0 {
        bail!("-j must be at least 1");
    }
    let space = args.resolve()?;
    space.bind(&args.dir)?;
    let dir = &args.dir;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let rungs = Rungs::of(&space);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.div_ceil(jobs).max(1);
    let exe = std::env::current_exe()?;
    let accuracy = accuracy_in(&space, dir);
    for (rung, &epochs) in rungs.budgets().iter().enumerate() {
        let trials = rungs.trials(rung, dir, &accuracy)?;
        let todo: Vec<(usize, &Trial)> = trials
            .iter()
            .enumerate()
            .filter(|(_, t)| !sweep::progress(&space.folder(dir, t)).is_ok_and(|p| p.done(epochs)))
            .collect();
        eprintln!(
            "== rung {rung}: {} trials to {epochs} epochs, {} to train, {jobs} at a time, {threads} threads each; logs in {}",
            trials.len(),
            todo.len(),
            logs.display()
        );
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{pos}/{len} trials [{bar:30}] {elapsed} {msg}",
            )?
            .progress_chars("=> "),
        );
        // Lines that stay above the bar, or on stderr when it is hidden
        // (not a terminal, e.g. a log).
        let say = |line: String| {
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        };
        let mut queue = todo.into_iter();
        let mut running: Vec<Running> = vec![];
        let mut failed: Vec<(Trial, PathBuf)> = vec![];
        loop {
            while running.len() < jobs {
                let Some((position, t)) = queue.next() else {
                    break;
                };
                let name = space
                    .folder(dir, t)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let log = logs.join(format!("{name}.log"));
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .with_context(|| format!("opening {}", log.display()))?;
                let child = Process::new(&exe)
                    .args(["sweep", "run", "--quiet", "--dir"])
                    .arg(dir)
                    .args([
                        "--index",
                        &position.to_string(),
                        "--rung",
                        &rung.to_string(),
                    ])
                    .args(["--threads", &threads.to_string()])
                    .args(device.iter().flat_map(|d| ["--device", d.as_str()]))
                    .env_remove("JOB_COMPLETION_INDEX")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .spawn()
                    .with_context(|| format!("starting {}", exe.display()))?;
                say(format!("== started trial {} ({name})", t.index));
                running.push(Running {
                    child,
                    trial: t.clone(),
                    log,
                });
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                match running[i].child.try_wait()? {
                    None => i += 1,
                    Some(status) => {
                        let r = running.swap_remove(i);
                        bar.inc(1);
                        if status.success() {
                            say(format!("== finished trial {}", r.trial.index));
                        } else {
                            say(format!("== FAILED trial {} ({status})", r.trial.index));
                            failed.push((r.trial, r.log));
                        }
                    }
                }
            }
        }
        bar.finish_and_clear();
        if !failed.is_empty() {
            for (t, log) in &failed {
                eprintln!(
                    "trial {} ({} {} seed {}) failed: see {}",
                    t.index,
                    t.describe_settings(),
                    t.variant,
                    t.seed,
                    log.display()
                );
            }
            bail!(
                "{} trials of rung {rung} failed; `rir-train sweep all` again resumes them",
                failed.len()
            );
        }
    }
    let diverged: Vec<String> = space
        .trials()
        .iter()
        .filter_map(|t| {
            let why = sweep::progress(&space.folder(dir, t)).ok()?.diverged?;
            Some(format!(
                "  trial {} ({} {} seed {}): {why}",
                t.index,
                t.describe_settings(),
                t.variant,
                t.seed
            ))
        })
        .collect();
    if !diverged.is_empty() {
        println!(
            "diverged (not trained again; halving scores them 0):\n{}\n",
            diverged.join("\n")
        );
    }
    super::report(&super::ReportArgs {
        runs: vec![dir.clone()],
        ..super::ReportArgs::default()
    })
}

//! `rir-train sweep all`: every trial trained here, rung after rung, N at
//! a time, each in its own `rir-train sweep run` child process with the
//! cores shared out, its output in `logs/`. Finished trials are skipped
//! and interrupted ones resumed, so running it again continues a sweep.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rir_contract::Device as DeviceChoice;

use crate::error::TrainError;
use crate::sweep::trial::accuracy_in;
use crate::sweep::{self, Rungs, Space, Trial};

/// How the trials are run.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Trials trained at once.
    pub jobs: usize,
    /// Where they compute (default: each trial's own `--device`).
    pub device: Option<DeviceChoice>,
    /// The `rir-train` executable the children run.
    pub exe: PathBuf,
    /// How often finished children are looked for.
    pub poll: Duration,
}

/// What the pool reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A rung starts: its trials, those left to train, their budget.
    Rung {
        rung: usize,
        trials: usize,
        todo: usize,
        epochs: usize,
        jobs: usize,
        threads: usize,
        logs: &'a Path,
    },
    /// A trial's process started.
    Started { trial: &'a Trial, name: &'a str },
    /// A trial's process ended.
    Ended {
        trial: &'a Trial,
        status: ExitStatus,
    },
}

impl std::fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Rung {
                rung,
                trials,
                todo,
                epochs,
                jobs,
                threads,
                logs,
            } => write!(
                f,
                "== rung {rung}: {trials} trials to {epochs} epochs, {todo} to train, {jobs} at a time, {threads} threads each; logs in {}",
                logs.display()
            ),
            Event::Started { trial, name } => {
                write!(f, "== started trial {} ({name})", trial.index)
            }
            Event::Ended { trial, status } if status.success() => {
                write!(f, "== finished trial {}", trial.index)
            }
            Event::Ended { trial, status } => {
                write!(f, "== FAILED trial {} ({status})", trial.index)
            }
        }
    }
}

/// Every trial of the sweep trained; the ones that diverged, with why.
#[derive(Debug, Clone, Default)]
pub struct AllTrained {
    /// Trials that diverged (scored 0 by halving, not trained again).
    pub diverged: Vec<(Trial, String)>,
}

impl std::fmt::Display for AllTrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.diverged.is_empty() {
            return Ok(());
        }
        writeln!(f, "diverged (not trained again; halving scores them 0):")?;
        for (t, why) in &self.diverged {
            let (s, v, seed) = (t.describe_settings(), &t.variant, t.seed);
            writeln!(f, "  trial {} ({s} {v} seed {seed}): {why}", t.index)?;
        }
        Ok(())
    }
}

/// One trial training in a child process.
struct Running {
    child: Child,
    trial: Trial,
    log: PathBuf,
}

impl Pool {
    /// Trains every trial of `space` (bound to `dir`), telling `on` what
    /// happens. Stops after the first rung with a failed trial.
    pub fn train_all(
        &self,
        space: &Space,
        dir: &Path,
        on: &mut dyn FnMut(Event),
    ) -> Result<AllTrained, TrainError> {
        if self.jobs == 0 {
            return Err(TrainError::Sweep("-j must be at least 1".into()));
        }
        space.bind(dir)?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| TrainError::Io(logs.clone(), e))?;
        let rungs = Rungs::of(space);
        for (rung, &epochs) in rungs.budgets().iter().enumerate() {
            let trials = rungs.trials(rung, dir, &accuracy_in(space, dir))?;
            let todo: Vec<(usize, &Trial)> = trials
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    !sweep::progress(&space.folder(dir, t)).is_ok_and(|p| p.done(epochs))
                })
                .collect();
            on(Event::Rung {
                rung,
                trials: trials.len(),
                todo: todo.len(),
                epochs,
                jobs: self.jobs,
                threads: self.threads(),
                logs: &logs,
            });
            let failed = self.rung(space, dir, rung, todo, on)?;
            if !failed.is_empty() {
                return Err(TrainError::TrialsFailed { rung, failed });
            }
        }
        Ok(AllTrained {
            diverged: diverged(space, dir),
        })
    }

    /// libtorch threads per child: the cores shared out.
    fn threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.div_ceil(self.jobs).max(1)
    }

    /// Runs `todo` (positions in the rung, trials), `jobs` at a time; the
    /// trials that failed, with their logs.
    fn rung(
        &self,
        space: &Space,
        dir: &Path,
        rung: usize,
        todo: Vec<(usize, &Trial)>,
        on: &mut dyn FnMut(Event),
    ) -> Result<Vec<(Trial, PathBuf)>, TrainError> {
        let mut queue = todo.into_iter();
        let mut running: Vec<Running> = vec![];
        let mut failed = vec![];
        loop {
            while running.len() < self.jobs {
                let Some((position, t)) = queue.next() else {
                    break;
                };
                let r = self.spawn(space, dir, rung, position, t)?;
                let name = log_name(&r.log);
                on(Event::Started {
                    trial: t,
                    name: &name,
                });
                running.push(r);
            }
            if running.is_empty() {
                return Ok(failed);
            }
            std::thread::sleep(self.poll);
            for r in reap(&mut running)? {
                on(Event::Ended {
                    trial: &r.0.trial,
                    status: r.1,
                });
                if !r.1.success() {
                    failed.push((r.0.trial, r.0.log));
                }
            }
        }
    }

    /// Starts `rir-train sweep run` for the trial at `position` of `rung`.
    fn spawn(
        &self,
        space: &Space,
        dir: &Path,
        rung: usize,
        position: usize,
        t: &Trial,
    ) -> Result<Running, TrainError> {
        let name = space
            .folder(dir, t)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| TrainError::Io(log.clone(), e))?;
        let err = out
            .try_clone()
            .map_err(|e| TrainError::Io(log.clone(), e))?;
        let child = Command::new(&self.exe)
            .args(["sweep", "run", "--quiet", "--dir"])
            .arg(dir)
            .args(["--index", &position.to_string()])
            .args(["--rung", &rung.to_string()])
            .args(["--threads", &self.threads().to_string()])
            .args(self.device.iter().flat_map(|d| ["--device", d.as_str()]))
            .env_remove("JOB_COMPLETION_INDEX")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| TrainError::Io(self.exe.clone(), e))?;
        Ok(Running {
            child,
            trial: t.clone(),
            log,
        })
    }
}

/// The children that have exited, removed from `running`, with their status.
fn reap(running: &mut Vec<Running>) -> Result<Vec<(Running, ExitStatus)>, TrainError> {
    let mut ended = vec![];
    let mut i = 0;
    while i < running.len() {
        let status = running[i]
            .child
            .try_wait()
            .map_err(|e| TrainError::Io(running[i].log.clone(), e))?;
        match status {
            None => i += 1,
            Some(status) => ended.push((running.swap_remove(i), status)),
        }
    }
    Ok(ended)
}

/// The trial folder's name a log is named after.
fn log_name(log: &Path) -> String {
    log.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The trials of `space` that diverged, with why.
fn diverged(space: &Space, dir: &Path) -> Vec<(Trial, String)> {
    space
        .trials()
        .into_iter()
        .filter_map(|t| {
            let why = sweep::progress(&space.folder(dir, &t)).ok()?.diverged?;
            Some((t, why))
        })
        .collect()
}

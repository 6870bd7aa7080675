//! The command line of `rir-train sweep`, in the library so that tests and
//! the binary resolve a space the same way: its flags, or a TOML file, or
//! the plan recorded in the sweep folder, with every trial checked as a
//! [`crate::recipe::Recipe`].

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rir_arch::Variant;
use rir_contract::Device as DeviceChoice;

use crate::error::TrainError;
use crate::recipe::Runtime;
use crate::sweep::trial::{Overrides, Place};
use crate::sweep::{Declared, Halving, Space};

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
        #[command(flatten)]
        place: Place,
        #[command(flatten)]
        how: Overrides,
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
    /// Copy the sweep's plan and its finished trials' logs, without
    /// checkpoints, into a folder: the few small files that carry a sweep
    /// trained in slices from one machine to the next. `sweep all` on a
    /// folder made from them trains only the trials not in it.
    Pack {
        /// Sweep folder.
        #[arg(long, default_value = "runs/sweep")]
        dir: PathBuf,
        /// Folder to write (created; its files of the same names replaced).
        #[arg(long)]
        to: PathBuf,
    },
}

/// The search space as the command line gives it.
#[derive(Args, Clone, Debug)]
pub struct SpaceArgs {
    /// Sweep folder: its plan (sweep.json), one folder per trial
    /// (c<configuration>-<variant>-s<seed>), logs/ and halving.json.
    #[arg(long, default_value = "runs/sweep")]
    pub dir: PathBuf,
    /// The space as TOML: [grid] (one key per axis), variants, seeds,
    /// epochs, args and [halving] (eta, min-epochs); flags given as well go
    /// on top. Without a space the plan recorded in --dir is used.
    #[arg(long, value_name = "FILE")]
    pub space: Option<PathBuf>,
    /// A grid axis: an option of `rir-train train` and its values, crossed
    /// with every other axis, e.g. --grid lr=0.2,0.1 --grid optimizer=sgd,adam.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Variants each configuration is trained as [default: rir].
    #[arg(long, value_delimiter = ',')]
    pub variants: Option<Vec<Variant>>,
    /// Seeds each configuration and variant is trained with [default: 0].
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Epochs per trial (the largest budget with --halving) [default: 10].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Successive halving: every configuration-and-variant starts on
    /// --min-epochs, and the best 1/ETA (mean test accuracy over the
    /// seeds) continue on ETA times the budget, up to --epochs.
    #[arg(long, value_name = "ETA", requires = "min_epochs")]
    pub halving: Option<usize>,
    /// The first rung's epochs under --halving.
    #[arg(long, requires = "halving")]
    pub min_epochs: Option<usize>,
    /// Options of `rir-train train` every trial shares, after `--`
    /// (e.g. -- --preset micro --schedule cosine).
    #[arg(last = true, value_name = "TRAIN OPTIONS")]
    pub train_args: Vec<String>,
}

impl SpaceArgs {
    /// The declared space, or the one recorded in --dir, with every
    /// trial's options checked by `rir-train train`'s own parser.
    pub fn resolve(&self) -> Result<Space, TrainError> {
        let mut declared = match &self.space {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| TrainError::Io(path.clone(), e))?;
                Declared::from_toml(&text)
                    .map_err(|e| TrainError::Sweep(format!("in {}: {e}", path.display())))?
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
            Space::load(&self.dir)?.ok_or_else(|| {
                TrainError::Sweep(format!(
                    "no space given (--grid, --variants, --seeds, --epochs, --space FILE or \
                     options after --), and {} holds no sweep",
                    self.dir.display()
                ))
            })?
        } else {
            let space = declared.space()?;
            space.is_recorded_in(&self.dir)?;
            space
        };
        for t in space.trials() {
            space.recipe(&t, &self.dir, space.epochs).map_err(|e| {
                TrainError::Sweep(format!(
                    "trial {} ({}): {e}",
                    t.index,
                    t.describe_settings()
                ))
            })?;
        }
        Ok(space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path, space: Option<PathBuf>) -> SpaceArgs {
        SpaceArgs {
            dir: dir.join("sweep"),
            space,
            grid: vec![],
            variants: None,
            seeds: None,
            epochs: None,
            halving: None,
            min_epochs: None,
            train_args: vec![],
        }
    }

    #[test]
    fn a_space_file_is_read_and_flags_go_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("space.toml");
        std::fs::write(
            &file,
            r#"
            variants = ["rir", "cnn"]
            seeds = [0, 1, 2]
            epochs = 4
            args = ["--preset", "micro"]
            [grid]
            lr = [0.2, 0.1]
            [halving]
            eta = 2
            min-epochs = 1
            "#,
        )
        .unwrap();
        let mut a = args(dir.path(), Some(file.clone()));
        a.epochs = Some(6);
        let s = a.resolve().unwrap();
        assert_eq!(s.axes.len(), 1);
        assert_eq!(
            (s.axes[0].key.as_str(), &s.axes[0].values[..]),
            ("lr", &["0.2".to_string(), "0.1".to_string()][..])
        );
        assert_eq!((s.variants.len(), s.seeds.len()), (2, 3));
        assert_eq!(s.epochs, 6, "the flag over the file's 4");
        assert_eq!(
            s.halving,
            Some(Halving {
                eta: 2,
                min_epochs: 1
            })
        );
        assert_eq!(s.len(), 2 * 2 * 3);
    }

    #[test]
    fn a_space_file_that_cannot_be_read_or_trained_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let err = args(dir.path(), Some(missing.clone()))
            .resolve()
            .unwrap_err();
        assert!(
            matches!(&err, TrainError::Io(p, _) if *p == missing),
            "{err}"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[grid]\nlr = [\"fast\"]\n").unwrap();
        let err = args(dir.path(), Some(bad))
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trial 0 (lr=fast)") && err.contains("'fast'"),
            "{err}"
        );
    }
}

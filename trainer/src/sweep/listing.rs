//! `rir-train sweep list`: the plan as rows (each trial's index, folder,
//! settings and progress), the rungs of successive halving, and the
//! trial-epochs it trains in all.

use std::fmt;
use std::path::Path;

use crate::sweep::{self, Rungs, Space};

/// One trial of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its stable index.
    pub index: usize,
    /// Its folder's name below the sweep folder.
    pub folder: String,
    /// Its variant.
    pub variant: String,
    /// Its seed.
    pub seed: u64,
    /// Epochs trained so far.
    pub trained: usize,
    /// Why it diverged, if it did.
    pub diverged: Option<String>,
    /// Its settings of the grid.
    pub settings: String,
}

/// A sweep's plan and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The sweep folder.
    pub dir: String,
    /// The space in a few lines.
    pub space: String,
    /// Trials and epochs of each rung, when halving.
    pub rungs: Option<Vec<(usize, usize)>>,
    /// Every trial.
    pub rows: Vec<Row>,
    /// The epochs of each trial of the full grid.
    pub epochs: usize,
    /// Epochs trained in all: each rung adds its budget's growth to the
    /// trials it keeps.
    pub trial_epochs: usize,
}

/// The plan of `space` in `dir`.
pub fn listing(space: &Space, dir: &Path) -> Listing {
    let rungs = Rungs::of(space);
    let budgets = rungs.budgets();
    let per_rung: Vec<(usize, usize)> = budgets
        .iter()
        .enumerate()
        .map(|(r, e)| (rungs.trials_at(r), *e))
        .collect();
    let trial_epochs = per_rung
        .iter()
        .enumerate()
        .map(|(r, (n, e))| n * (e - if r == 0 { 0 } else { budgets[r - 1] }))
        .sum();
    let rows = space
        .trials()
        .into_iter()
        .map(|t| {
            let folder = space.folder(dir, &t);
            let p = sweep::progress(&folder).unwrap_or_default();
            Row {
                index: t.index,
                folder: folder
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                settings: t.describe_settings(),
                variant: t.variant,
                seed: t.seed,
                trained: p.accuracies.len(),
                diverged: p.diverged,
            }
        })
        .collect();
    Listing {
        dir: dir.display().to_string(),
        space: space.describe(),
        rungs: space.halving.is_some().then_some(per_rung),
        rows,
        epochs: space.epochs,
        trial_epochs,
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sweep in {}:\n{}", self.dir, self.space)?;
        if let Some(rungs) = &self.rungs {
            let plan: Vec<String> = rungs
                .iter()
                .enumerate()
                .map(|(r, (n, e))| format!("rung {r}: {n} trials to {e} epochs"))
                .collect();
            writeln!(f, "  successive halving: {}", plan.join("; "))?;
        }
        writeln!(
            f,
            "\n{:>5}  {:<22} {:<12} {:>5}  {:>7}  settings",
            "index", "folder", "variant", "seed", "epochs"
        )?;
        for r in &self.rows {
            let done = match r.diverged {
                Some(_) => "diverged".to_string(),
                None => format!("{:>3}/{:<3}", r.trained, self.epochs),
            };
            writeln!(
                f,
                "{:>5}  {:<22} {:<12} {:>5}  {:>7}  {}",
                r.index, r.folder, r.variant, r.seed, done, r.settings
            )?;
        }
        write!(
            f,
            "\n{} trials, {} trial-epochs in all (the full grid: {})",
            self.rows.len(),
            self.trial_epochs,
            self.rows.len() * self.epochs
        )
    }
}

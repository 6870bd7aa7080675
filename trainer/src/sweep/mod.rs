//! `rir-train sweep`: a declared search space trained trial by trial,
//! locally or as the pods of an Indexed Job, over the full grid or by
//! successive halving, resumable at every step.
//!
//! - [`space`]: the space, its stable trial numbering and folders, and the
//!   plan recorded in the sweep folder.
//! - [`halving`]: the rungs of successive halving and their recorded
//!   decisions.
//! - [`args`]: the command line of `rir-train sweep`.
//! - [`listing`]: the plan and where it stands; [`estimate`]: how long
//!   it takes here.
//! - [`trial`]: one trial trained in this process (`sweep run`);
//!   [`pool`]: all of them in child processes, N at a time (`sweep all`).
//! - [`pack`]: the plan and the finished trials' logs, without
//!   checkpoints (`sweep pack`).

pub mod args;
pub mod estimate;
pub mod halving;
pub mod listing;
pub mod pack;
pub mod pool;
pub mod space;
pub mod trial;

use std::path::Path;

pub use halving::{Ledger, Rungs};
pub use space::{Axis, Declared, Halving, PLAN, Space, Trial};

use crate::error::TrainError;
use crate::runlog;

/// Where a trial stands, read from its folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Test accuracy after each finished epoch.
    pub accuracies: Vec<f64>,
    /// Why it stopped for good, when training diverged.
    pub diverged: Option<String>,
}

impl Progress {
    /// Whether the trial has nothing left to train for a budget of `epochs`.
    pub fn done(&self, epochs: usize) -> bool {
        self.diverged.is_some() || self.accuracies.len() >= epochs
    }

    /// Its score after `epochs`: the test accuracy then, or 0 when it
    /// diverged before; `None` while it has not trained that far.
    pub fn accuracy_after(&self, epochs: usize) -> Option<f64> {
        let at = epochs.checked_sub(1)?;
        match (self.accuracies.get(at), &self.diverged) {
            (Some(a), _) => Some(*a),
            (None, Some(_)) => Some(0.0),
            (None, None) => None,
        }
    }
}

/// The file a trial's folder holds once its training diverged: the error,
/// so that the sweep counts the trial as finished (at accuracy 0) instead
/// of training it again to the same end.
pub const DIVERGED: &str = "diverged.txt";

/// Where the trial in `folder` stands (nothing trained before its first
/// checkpoint).
pub fn progress(folder: &Path) -> Result<Progress, TrainError> {
    // A trial kept as its log (its checkpoint not brought back) counts.
    let history = runlog::of_folder(folder)?.map_or_else(Vec::new, |r| r.history);
    let accuracies = history.iter().map(|m| m.test_acc).collect();
    let marker = folder.join(DIVERGED);
    let diverged = match std::fs::read_to_string(&marker) {
        Ok(why) => Some(why.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(TrainError::Io(marker, e)),
    };
    Ok(Progress {
        accuracies,
        diverged,
    })
}

/// Records that the trial in `folder` diverged, with the trainer's error.
pub fn mark_diverged(folder: &Path, why: &str) -> Result<(), TrainError> {
    space::write_atomically(&folder.join(DIVERGED), &format!("{why}\n"))
}

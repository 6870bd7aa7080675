//! `rir-train sweep run`: one trial of one rung trained in this process,
//! as an Indexed Job's pod does it. A trial that diverges is an outcome of
//! the search, not a failure: it is recorded, scored 0 and not trained
//! again.

use std::path::Path;

use rir_contract::Device as DeviceChoice;

use crate::error::TrainError;
use crate::session::{Trained, train};
use crate::sweep::{self, Rungs, Space, Trial};
use crate::train::LAST;

/// Which trial: its index among the trials of its rung.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The trial's index in its rung (the Job's completion index).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub index: usize,
    /// The rung of successive halving whose trial to train; its index
    /// counts the trials the earlier rungs kept.
    #[arg(long, default_value_t = 0)]
    pub rung: usize,
}

/// What this process changes from the trial's own recipe.
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Where to compute [default: the trial's --device, else auto].
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// CPU threads for libtorch [default: the trial's --threads, else one per core].
    #[arg(long)]
    pub threads: Option<i32>,
    /// Stop (as on SIGINT) after this many optimizer steps in total.
    #[arg(long, hide = true)]
    pub stop_at_step: Option<usize>,
}

/// The number of trials of `rung`, or why there is no such rung.
pub fn count(space: &Space, rung: usize) -> Result<usize, TrainError> {
    let rungs = Rungs::of(space);
    match rung < rungs.budgets().len() {
        true => Ok(rungs.trials_at(rung)),
        false => Err(TrainError::Sweep(format!(
            "rung {rung}: the sweep has {} rungs",
            rungs.budgets().len()
        ))),
    }
}

/// How a trial ended.
#[derive(Debug, Clone)]
pub enum TrialEnd {
    /// Trained (or stopped by a signal, its state saved).
    Trained(Trained),
    /// It diverged in an earlier attempt and stays so.
    DivergedBefore(String),
    /// It diverged now; recorded in its folder.
    Diverged(String),
    /// It had trained its epochs already and its folder keeps only its log
    /// (a run brought back from another machine without its checkpoint):
    /// nothing to resume, nothing trained again.
    Logged,
}

/// Test accuracy of trial `t` after `epochs`, if it trained that far.
pub fn accuracy_in<'a>(
    space: &'a Space,
    dir: &'a Path,
) -> impl Fn(&Trial, usize) -> Option<f64> + 'a {
    move |t, epochs| {
        sweep::progress(&space.folder(dir, t))
            .ok()?
            .accuracy_after(epochs)
    }
}

/// The trial at `place`, its budget in epochs.
pub fn locate(space: &Space, dir: &Path, place: Place) -> Result<(Trial, usize), TrainError> {
    let rungs = Rungs::of(space);
    let Some(&epochs) = rungs.budgets().get(place.rung) else {
        return Err(TrainError::Sweep(format!(
            "rung {}: the sweep has {} rungs",
            place.rung,
            rungs.budgets().len()
        )));
    };
    let trials = rungs.trials(place.rung, dir, &accuracy_in(space, dir))?;
    match trials.get(place.index) {
        Some(t) => Ok((t.clone(), epochs)),
        None => Err(TrainError::Sweep(format!(
            "trial index {} is not in 0..{} (rung {} has {} trials)",
            place.index,
            trials.len().saturating_sub(1),
            place.rung,
            trials.len()
        ))),
    }
}

/// Trains the trial at `place` of `space` (recorded in `dir`);
/// `announce` gets the line naming it, then the run's description.
pub fn run(
    space: &Space,
    dir: &Path,
    place: Place,
    how: Overrides,
    mut announce: impl FnMut(&str),
) -> Result<TrialEnd, TrainError> {
    space.bind(dir)?;
    let (t, epochs) = locate(space, dir, place)?;
    let folder = space.folder(dir, &t);
    let progress = sweep::progress(&folder)?;
    if let Some(why) = progress.diverged {
        return Ok(TrialEnd::DivergedBefore(why));
    }
    if progress.accuracies.len() >= epochs && !folder.join(LAST).is_file() {
        return Ok(TrialEnd::Logged);
    }
    let mut recipe = space.recipe(&t, dir, epochs)?;
    recipe.resume = folder.join(LAST).is_file();
    recipe.quiet |= how.quiet;
    recipe.runtime.device = how.device.unwrap_or(recipe.runtime.device);
    recipe.runtime.threads = how.threads.or(recipe.runtime.threads);
    recipe.stop_at_step = how.stop_at_step.or(recipe.stop_at_step);
    announce(&format!(
        "trial {} of rung {} ({epochs} epochs): {} {} seed {} -> {}",
        t.index,
        place.rung,
        t.describe_settings(),
        t.variant,
        t.seed,
        folder.display()
    ));
    match train(&recipe, announce) {
        Err(e @ TrainError::Diverged { .. }) => {
            sweep::mark_diverged(&folder, &e.to_string())?;
            tracing::warn!("trial {} diverged: {e}", t.index);
            Ok(TrialEnd::Diverged(e.to_string()))
        }
        other => other.map(TrialEnd::Trained),
    }
}

//! `rir-train sweep`: a declared search space trained trial by trial,
//! locally or as the pods of an Indexed Job, over the full grid or by
//! successive halving, resumable at every step.
//!
//! - [`space`]: the space, its stable trial numbering and folders, and the
//!   plan recorded in the sweep folder.
//! - [`halving`]: the rungs of successive halving and their recorded
//!   decisions.

pub mod halving;
pub mod space;

use std::path::Path;

use rir_checkpoint::Checkpoint;

pub use halving::{Ledger, Rungs};
pub use space::{Axis, Declared, Halving, Space, Trial};

use crate::error::TrainError;
use crate::train::LAST;

/// The test accuracy after each epoch a trial's folder has finished (none
/// before its first checkpoint).
pub fn progress(folder: &Path) -> Result<Vec<f64>, TrainError> {
    let path = folder.join(LAST);
    if !path.is_file() {
        return Ok(vec![]);
    }
    let ck = Checkpoint::read(&path)?;
    Ok(ck
        .meta
        .training
        .history
        .iter()
        .map(|m| m.test_acc)
        .collect())
}

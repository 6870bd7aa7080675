//! `rir-train sweep pack`: a sweep's finished trials as small files.
//!
//! A trial's checkpoint at paper width weighs tens of megabytes; its log a
//! few kilobytes and says everything a report needs ([`crate::runlog`]).
//! A sweep trained in slices on a machine lent for minutes keeps its
//! finished trials this way between slices: the pack holds the plan, the
//! decisions of successive halving, and each finished (or diverged)
//! trial's `metrics.jsonl`. A sweep folder made from a pack skips those
//! trials and trains the rest; trials cut short are left out, to be
//! trained again from the start.

use std::path::{Path, PathBuf};

use crate::error::TrainError;
use crate::runlog;
use crate::sweep::{DIVERGED, PLAN, halving::DECISIONS};
use crate::train::METRICS;

/// What a pack holds and what it left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    /// Trial folders kept (names), sorted.
    pub kept: Vec<String>,
    /// Trial folders left out (names), with why, sorted.
    pub left_out: Vec<(String, String)>,
}

/// Copies the plan of the sweep in `dir` and the logs of its finished
/// trials into `to` (created; files already there are replaced).
pub fn pack(dir: &Path, to: &Path) -> Result<Packed, TrainError> {
    if !dir.join(PLAN).is_file() {
        return Err(TrainError::Sweep(format!(
            "{} holds no sweep (no {PLAN})",
            dir.display()
        )));
    }
    make_dir(to)?;
    for file in [PLAN, DECISIONS] {
        if dir.join(file).is_file() {
            copy(&dir.join(file), &to.join(file))?;
        }
    }
    let mut packed = Packed::default();
    for folder in trial_folders(dir)? {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match unfinished(&folder)? {
            Some(why) => packed.left_out.push((name, why)),
            None => {
                make_dir(&to.join(&name))?;
                for file in [METRICS, DIVERGED] {
                    if folder.join(file).is_file() {
                        copy(&folder.join(file), &to.join(&name).join(file))?;
                    }
                }
                packed.kept.push(name);
            }
        }
    }
    Ok(packed)
}

/// The sub-folders of `dir` with a trial's log, in name order.
fn trial_folders(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::Io(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(METRICS).is_file())
        .collect();
    folders.sort();
    Ok(folders)
}

/// Why the trial in `folder` is not finished (`None`: it is): it trained
/// fewer epochs than its recipe asks and did not diverge.
fn unfinished(folder: &Path) -> Result<Option<String>, TrainError> {
    if folder.join(DIVERGED).is_file() {
        return Ok(None);
    }
    let log = runlog::read(&folder.join(METRICS))?;
    let asked = log.config["epochs"].as_u64().unwrap_or(0) as usize;
    let done = log.history.len();
    Ok((done < asked).then(|| format!("trained {done} of {asked} epochs")))
}

fn make_dir(path: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(path).map_err(|e| TrainError::Io(path.to_path_buf(), e))
}

fn copy(from: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| TrainError::Io(from.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use rir_arch::Variant;

    use super::*;
    use crate::runlog::tests::{epoch, start};

    /// A trial folder `name` under `dir` whose log has `epochs` of its 3.
    fn trial(dir: &Path, name: &str, epochs: usize) -> PathBuf {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let mut lines = vec![start("start", Variant::Rir, 0)];
        lines.extend((1..=epochs).map(|n| epoch(n, 0.5)));
        std::fs::write(folder.join(METRICS), lines.join("\n") + "\n").unwrap();
        std::fs::write(folder.join("last.safetensors"), b"tens of megabytes").unwrap();
        folder
    }

    #[test]
    fn a_pack_keeps_the_plan_and_the_logs_of_finished_and_diverged_trials_only() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = dir.path().join("sweep");
        trial(&sweep, "c00-rir-s0", 3);
        trial(&sweep, "c00-rir-s1", 2);
        let diverged = trial(&sweep, "c00-cnn-s0", 1);
        std::fs::write(diverged.join(DIVERGED), "loss NaN\n").unwrap();
        std::fs::create_dir_all(sweep.join("logs")).unwrap();
        std::fs::write(sweep.join("logs/trial-0.log"), "progress").unwrap();
        let to = dir.path().join("pack");
        assert!(
            matches!(pack(&sweep, &to), Err(TrainError::Sweep(_))),
            "no plan yet"
        );

        std::fs::write(sweep.join(PLAN), "{}").unwrap();
        let packed = pack(&sweep, &to).unwrap();
        assert_eq!(packed.kept, ["c00-cnn-s0", "c00-rir-s0"]);
        assert_eq!(
            packed.left_out,
            [(
                "c00-rir-s1".to_string(),
                "trained 2 of 3 epochs".to_string()
            )]
        );
        let mut files: Vec<String> = walk(&to);
        files.sort();
        assert_eq!(
            files,
            [
                "c00-cnn-s0/diverged.txt",
                "c00-cnn-s0/metrics.jsonl",
                "c00-rir-s0/metrics.jsonl",
                "sweep.json"
            ]
        );
        assert_eq!(
            std::fs::read(to.join("c00-rir-s0").join(METRICS)).unwrap(),
            std::fs::read(sweep.join("c00-rir-s0").join(METRICS)).unwrap()
        );
    }

    /// Every file below `root`, as a path relative to it.
    fn walk(root: &Path) -> Vec<String> {
        let mut out = vec![];
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                out.extend(walk(&path).into_iter().map(|f| format!("{name}/{f}")));
            } else {
                out.push(name);
            }
        }
        out
    }
}

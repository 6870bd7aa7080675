//! Several finished runs side by side: the table and the curves docs/benchmarks.md
//! shows, read back from the runs' own checkpoints (their metadata carries
//! the spec, the recipe and every epoch's figures), so that the published
//! numbers come from the runs and not from hand copying.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rir_arch::meta::EpochMetrics;
use rir_checkpoint::Checkpoint;

use crate::error::TrainError;
use crate::train::LAST;
use rir_process::median;

/// One run's figures.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run folder.
    pub folder: PathBuf,
    /// Variant name (`rir`, `resnet`, ...).
    pub variant: String,
    /// The network in words.
    pub describe: String,
    /// Seed of the run.
    pub seed: u64,
    /// Learned parameters.
    pub params: usize,
    /// Multiply-adds per image.
    pub macs: usize,
    /// Every epoch.
    pub history: Vec<EpochMetrics>,
}

impl RunSummary {
    /// Best test accuracy over the epochs.
    pub fn best(&self) -> f64 {
        self.history.iter().map(|m| m.test_acc).fold(0.0, f64::max)
    }

    /// Test accuracy after the last epoch.
    pub fn last(&self) -> f64 {
        self.history.last().map_or(0.0, |m| m.test_acc)
    }

    /// Wall time of all epochs, evaluation included, seconds.
    pub fn seconds(&self) -> f64 {
        self.history.iter().map(|m| m.seconds).sum()
    }

    /// Median training images per second over the epochs (robust to an
    /// epoch slowed by other work on the machine).
    pub fn img_per_s(&self) -> f64 {
        median(self.history.iter().map(|m| m.train_img_per_s).collect())
    }
}

/// Deepest folder level searched below a path given to [`find_runs`].
const MAX_DEPTH: usize = 4;

/// The run folders at or below `paths`: a folder holding `last.safetensors`
/// is a run; any other folder is searched (in name order, at most
/// [`MAX_DEPTH`] levels down) for runs. Runs copied back from several
/// machines, or a sweep Job's volume, can so be named by the folders that
/// hold them. A path with no run at or below it is an error.
pub fn find_runs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TrainError> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), TrainError> {
        if dir.join(LAST).is_file() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        if depth == MAX_DEPTH {
            return Ok(());
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| TrainError::Io(dir.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for sub in subs {
            walk(&sub, depth + 1, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let before = out.len();
        walk(p, 0, &mut out)?;
        if out.len() == before {
            return Err(TrainError::Config(format!(
                "no run (a folder with {LAST}) at or below {}",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Runs gathered from several places can hold the same run twice (a copy,
/// or a run resumed on another machine): the same variant, network and
/// seed. Of each such group this keeps the run with the most epochs (the
/// first found among equals) and returns the kept runs in their order with
/// the `(left out, kept)` folder pairs.
pub fn merge(runs: Vec<RunSummary>) -> (Vec<RunSummary>, Vec<(PathBuf, PathBuf)>) {
    let mut kept: Vec<RunSummary> = Vec::new();
    let mut dropped = Vec::new();
    for r in runs {
        let same = kept
            .iter_mut()
            .find(|k| k.variant == r.variant && k.describe == r.describe && k.seed == r.seed);
        match same {
            Some(k) if r.history.len() > k.history.len() => {
                let old = std::mem::replace(k, r);
                dropped.push((old.folder, k.folder.clone()));
            }
            Some(k) => dropped.push((r.folder, k.folder.clone())),
            None => kept.push(r),
        }
    }
    (kept, dropped)
}

/// Reads `<folder>/last.safetensors`.
pub fn read_run(folder: &Path) -> Result<RunSummary, TrainError> {
    let ck = Checkpoint::read(&folder.join(LAST))?;
    let meta = ck.meta;
    let cost = meta.spec.cost();
    Ok(RunSummary {
        folder: folder.to_path_buf(),
        variant: meta.spec.variant.name().to_string(),
        describe: meta.spec.describe(),
        seed: meta.training.config["seed"].as_u64().unwrap_or(0),
        params: cost.params,
        macs: cost.macs,
        history: meta.training.history,
    })
}

/// A Markdown table with one row per variant (runs of a variant are its
/// seeds): accuracy as mean and range over seeds, then size, epochs, time
/// and throughput.
pub fn table(runs: &[RunSummary]) -> String {
    let mut groups: BTreeMap<&str, Vec<&RunSummary>> = BTreeMap::new();
    for r in runs {
        groups.entry(&r.variant).or_default().push(r);
    }
    let mut out = String::from(
        "| model | params | MACs/image | seeds | epochs | best test acc, mean (min–max) | final-epoch acc, mean | wall time per run | train img/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    // RiR first, as the paper's subject, then the baselines.
    let order = ["rir", "resnet-init", "resnet", "cnn"];
    let mut names: Vec<&str> = groups.keys().copied().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    for name in names {
        let g = &groups[name];
        let best: Vec<f64> = g.iter().map(|r| 100.0 * r.best()).collect();
        let last: Vec<f64> = g.iter().map(|r| 100.0 * r.last()).collect();
        let secs: Vec<f64> = g.iter().map(|r| r.seconds()).collect();
        let ips: Vec<f64> = g.iter().map(|r| r.img_per_s()).collect();
        let epochs: Vec<String> = {
            let mut e: Vec<usize> = g.iter().map(|r| r.history.len()).collect();
            e.dedup();
            e.iter().map(usize::to_string).collect()
        };
        let lo = best.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = best.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            out,
            "| {name} | {:.3} M | {:.1} M | {} | {} | {:.2} % ({lo:.2}–{hi:.2}) | {:.2} % | {:.1} min | {:.0} |",
            g[0].params as f64 / 1e6,
            g[0].macs as f64 / 1e6,
            g.len(),
            epochs.join("/"),
            mean(&best),
            mean(&last),
            mean(&secs) / 60.0,
            median(ips),
        );
    }
    out
}

/// Per-run lines: folder, seed, best and final accuracy.
pub fn runs_list(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    for r in runs {
        let _ = writeln!(
            out,
            "{}: {} seed {}: best {:.2} %, final {:.2} %, {:.1} min, {:.0} img/s",
            r.folder.display(),
            r.describe,
            r.seed,
            100.0 * r.best(),
            100.0 * r.last(),
            r.seconds() / 60.0,
            r.img_per_s()
        );
    }
    out
}

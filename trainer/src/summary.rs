//! Several finished runs side by side: the table and the curves docs/benchmarks.md
//! shows, read back from the runs' own checkpoints (their metadata carries
//! the spec, the recipe and every epoch's figures), so that the published
//! numbers come from the runs and not from hand copying.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rir_arch::meta::EpochMetrics;

use crate::error::TrainError;
use crate::plot;
use crate::runlog::{self, RunLog};
use crate::stats::Interval;
use crate::train::{LAST, METRICS};
use rir_figures::median;

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
    /// The recipe it was trained with (`TrainConfig` as JSON).
    pub config: serde_json::Value,
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
/// (or only `metrics.jsonl`) is a run; any other folder is searched (in
/// name order, at most [`MAX_DEPTH`] levels down) for runs. Runs copied back from several
/// machines, or a sweep Job's volume, can so be named by the folders that
/// hold them. A path with no run at or below it is an error.
pub fn find_runs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TrainError> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), TrainError> {
        if is_run(dir) {
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
                "no run (a folder with {LAST} or {METRICS}) at or below {}",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Runs gathered from several places can hold the same run twice (a copy,
/// or a run resumed on another machine): the same variant, network, recipe
/// (its epoch target included) and seed. Of each such group this keeps the
/// run with the most epochs (the first found among equals) and returns the
/// kept runs in their order with the `(left out, kept)` folder pairs.
pub fn merge(runs: Vec<RunSummary>) -> (Vec<RunSummary>, Vec<(PathBuf, PathBuf)>) {
    let mut kept: Vec<RunSummary> = Vec::new();
    let mut dropped = Vec::new();
    for r in runs {
        let same = kept.iter_mut().find(|k| {
            k.variant == r.variant
                && k.describe == r.describe
                && k.seed == r.seed
                && settings_of(k) == settings_of(&r)
                && k.config.get("epochs") == r.config.get("epochs")
        });
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

/// Whether `folder` holds a run: its checkpoint, or (a run kept as its
/// log, [`crate::runlog`]) its `metrics.jsonl`.
pub fn is_run(folder: &Path) -> bool {
    folder.join(LAST).is_file() || folder.join(METRICS).is_file()
}

/// Reads `<folder>/last.safetensors`, or without one `<folder>/metrics.jsonl`.
pub fn read_run(folder: &Path) -> Result<RunSummary, TrainError> {
    let RunLog {
        spec,
        config,
        history,
    } = runlog::of_folder(folder)?.ok_or_else(|| {
        TrainError::Config(format!(
            "{} holds no run (no {LAST} or {METRICS})",
            folder.display()
        ))
    })?;
    let cost = spec.cost();
    Ok(RunSummary {
        folder: folder.to_path_buf(),
        variant: spec.variant.name().to_string(),
        describe: spec.describe(),
        seed: config["seed"].as_u64().unwrap_or(0),
        params: cost.params,
        macs: cost.macs,
        config,
        history,
    })
}

/// The runs that share a network and a recipe (all but the seed), trained
/// for the same number of epochs: one configuration, its runs its seeds.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// Its runs, one per seed.
    pub runs: Vec<&'a RunSummary>,
    /// The recipe options that differ between the report's groups, with
    /// this group's values (`--` names, e.g. `lr=0.05`).
    pub settings: Vec<(String, String)>,
    /// Final-epoch test accuracy over the seeds, in percent.
    pub last: Interval,
    /// Best test accuracy over the epochs, in percent, per seed.
    pub best: Vec<f64>,
}

impl Group<'_> {
    /// The variant's name.
    pub fn variant(&self) -> &str {
        &self.runs[0].variant
    }

    /// Epochs of the group's runs.
    pub fn epochs(&self) -> usize {
        self.runs[0].history.len()
    }

    /// `lr=0.05 optimizer=adam`, or `-` when every group shares the recipe.
    pub fn describe_settings(&self) -> String {
        crate::sweep::space::describe_settings(&self.settings)
    }
}

/// Recipe fields that identify neither a configuration nor a difference
/// between configurations.
const NOT_A_SETTING: [&str; 2] = ["seed", "epochs"];

/// The recipe as a map of `--` option names to values, the seed and the
/// epoch count left out.
fn settings_of(run: &RunSummary) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(map) = run.config.as_object() {
        for (k, v) in map {
            if NOT_A_SETTING.contains(&k.as_str()) {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.replace('_', "-"), v);
        }
    }
    out
}

/// What makes runs one configuration: network, recipe and epochs.
fn configuration_key(run: &RunSummary) -> (String, String, BTreeMap<String, String>, usize) {
    (
        run.variant.clone(),
        run.describe.clone(),
        settings_of(run),
        run.history.len(),
    )
}

/// Variants in report order: RiR first, as the paper's subject, then the
/// baselines.
fn variant_rank(name: &str) -> usize {
    const ORDER: [&str; 4] = ["rir", "resnet-init", "resnet", "cnn"];
    ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len())
}

/// The runs grouped into configurations, ranked by mean final-epoch test
/// accuracy (best first; ties in variant order).
pub fn groups(runs: &[RunSummary]) -> Vec<Group<'_>> {
    let mut by_key: BTreeMap<_, Vec<&RunSummary>> = BTreeMap::new();
    for r in runs {
        by_key.entry(configuration_key(r)).or_default().push(r);
    }
    // The options whose values are not the same in every run.
    let all: Vec<BTreeMap<String, String>> = runs.iter().map(settings_of).collect();
    let mut differing: Vec<String> = all
        .iter()
        .flat_map(|m| m.keys().cloned())
        .filter(|k| all.iter().any(|m| m.get(k) != all[0].get(k)))
        .collect();
    differing.sort();
    differing.dedup();
    let mut out: Vec<Group> = by_key
        .into_iter()
        .map(|((_, _, settings, _), runs)| {
            let last: Vec<f64> = runs.iter().map(|r| 100.0 * r.last()).collect();
            Group {
                settings: differing
                    .iter()
                    .map(|k| {
                        (
                            k.clone(),
                            settings.get(k).cloned().unwrap_or_else(|| "-".into()),
                        )
                    })
                    .collect(),
                last: Interval::of(&last),
                best: runs.iter().map(|r| 100.0 * r.best()).collect(),
                runs,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.last
            .mean
            .total_cmp(&a.last.mean)
            .then(variant_rank(a.variant()).cmp(&variant_rank(b.variant())))
    });
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `[93.10, 93.56]`, or `n = 1` without an interval.
fn bounds(i: &Interval) -> String {
    match i.half {
        Some(_) => {
            let (lo, hi) = i.bounds();
            format!("[{lo:.2}, {hi:.2}]")
        }
        None => "n = 1".into(),
    }
}

/// A Markdown table with one row per configuration, ranked: final-epoch
/// accuracy as mean and 95 % t-interval over the seeds, best accuracy as
/// mean and range, then size, epochs, time and throughput.
pub fn table(runs: &[RunSummary]) -> String {
    let mut out = String::from(
        "| rank | model | settings | params | MACs/image | seeds | epochs | final-epoch acc, mean | 95 % interval | best acc, mean (min–max) | wall time per run | train img/s |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (rank, g) in groups(runs).iter().enumerate() {
        let lo = g.best.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = g.best.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let secs: Vec<f64> = g.runs.iter().map(|r| r.seconds()).collect();
        let ips: Vec<f64> = g.runs.iter().map(|r| r.img_per_s()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} M | {:.1} M | {} | {} | {:.2} % | {} | {:.2} % ({lo:.2}–{hi:.2}) | {:.1} min | {:.0} |",
            rank + 1,
            g.variant(),
            g.describe_settings(),
            g.runs[0].params as f64 / 1e6,
            g.runs[0].macs as f64 / 1e6,
            g.runs.len(),
            g.epochs(),
            g.last.mean,
            bounds(&g.last),
            mean(&g.best),
            mean(&secs) / 60.0,
            median(ips),
        );
    }
    out
}

/// One variant against another over the runs they share a configuration
/// and a seed with.
#[derive(Debug, Clone)]
pub struct Paired {
    /// The variant subtracted from.
    pub a: String,
    /// The variant subtracted.
    pub b: String,
    /// Final-epoch accuracy of `a` minus `b`, in percentage points.
    pub difference: Interval,
    /// Pairs in which `a` came out ahead.
    pub a_ahead: usize,
}

/// Every pair of variants, compared on the runs that share a recipe,
/// epochs and seed (the seed's noise cancels in the difference).
pub fn paired(runs: &[RunSummary]) -> Vec<Paired> {
    let mut variants: Vec<&str> = runs.iter().map(|r| r.variant.as_str()).collect();
    variants.sort_by_key(|v| (variant_rank(v), v.to_string()));
    variants.dedup();
    let key = |r: &RunSummary| (settings_of(r), r.history.len(), r.seed);
    let mut out = vec![];
    for (i, a) in variants.iter().enumerate() {
        for b in &variants[i + 1..] {
            let pairs: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.variant == *a)
                .filter_map(|ra| {
                    runs.iter()
                        .find(|rb| rb.variant == *b && key(rb) == key(ra))
                        .map(|rb| (100.0 * ra.last(), 100.0 * rb.last()))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            out.push(Paired {
                a: a.to_string(),
                b: b.to_string(),
                a_ahead: pairs.iter().filter(|(x, y)| x > y).count(),
                difference: Interval::of_differences(&pairs),
            });
        }
    }
    out
}

/// The paired comparisons as a Markdown table (empty without any pair).
pub fn paired_table(runs: &[RunSummary]) -> String {
    let rows = paired(runs);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| paired (same recipe and seed) | final-epoch acc difference, mean | 95 % interval | pairs | first ahead in | settled at 95 % |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    for p in rows {
        let i = &p.difference;
        let interval = match i.half {
            Some(_) => {
                let (lo, hi) = i.bounds();
                format!("[{lo:+.2}, {hi:+.2}] pp")
            }
            None => "n = 1".into(),
        };
        let _ = writeln!(
            out,
            "| {} − {} | {:+.2} pp | {interval} | {} | {} | {} |",
            p.a,
            p.b,
            i.mean,
            i.n,
            p.a_ahead,
            if i.excludes_zero() { "yes" } else { "no" }
        );
    }
    out
}

/// The ranked configurations as CSV, one row each.
pub fn csv(runs: &[RunSummary]) -> String {
    let mut out = String::from(
        "rank,variant,settings,seeds,epochs,final_acc_mean,final_acc_low,final_acc_high,best_acc_mean,params,minutes_per_run\n",
    );
    for (rank, g) in groups(runs).iter().enumerate() {
        let (lo, hi) = match g.last.half {
            Some(_) => {
                let (lo, hi) = g.last.bounds();
                (format!("{lo:.4}"), format!("{hi:.4}"))
            }
            None => (String::new(), String::new()),
        };
        let secs: Vec<f64> = g.runs.iter().map(|r| r.seconds()).collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.4},{lo},{hi},{:.4},{},{:.2}",
            rank + 1,
            g.variant(),
            g.describe_settings(),
            g.runs.len(),
            g.epochs(),
            g.last.mean,
            mean(&g.best),
            g.runs[0].params,
            mean(&secs) / 60.0
        );
    }
    out
}

/// For each option that differs between the runs: its values in order
/// (numerically where they are numbers) and every run's (value position,
/// final accuracy in percent), by variant. What `--axes-plot` draws.
pub fn axes(runs: &[RunSummary]) -> Vec<plot::Axis> {
    let Some(first) = groups(runs).first().map(|g| g.settings.clone()) else {
        return vec![];
    };
    first
        .iter()
        .map(|(key, _)| {
            let value = |r: &RunSummary| settings_of(r).get(key).cloned().unwrap_or_default();
            let mut values: Vec<String> = runs.iter().map(value).collect();
            values.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            values.dedup();
            let mut by_variant: BTreeMap<String, Vec<(usize, f64)>> = BTreeMap::new();
            for r in runs {
                let at = values.iter().position(|v| *v == value(r)).unwrap_or(0);
                by_variant
                    .entry(r.variant.clone())
                    .or_default()
                    .push((at, 100.0 * r.last()));
            }
            plot::Axis {
                name: key.clone(),
                values,
                points: by_variant.into_iter().collect(),
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variant: &str, lr: f64, seed: u64, epochs: usize, accs: &[f64]) -> RunSummary {
        RunSummary {
            folder: PathBuf::from(format!("{variant}-{lr}-s{seed}-{}", accs.len())),
            variant: variant.into(),
            describe: variant.into(),
            seed,
            params: 1,
            macs: 1,
            config: serde_json::json!({"lr": lr, "seed": seed, "epochs": epochs, "init": "he-normal"}),
            history: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| EpochMetrics {
                    epoch: i + 1,
                    lr,
                    train_loss: 1.0,
                    train_acc: a,
                    test_loss: 1.0,
                    test_acc: a,
                    test_acc_bf16: None,
                    train_img_per_s: 100.0,
                    seconds: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn copies_merge_but_other_epoch_targets_do_not() {
        let partial = run("rir", 0.1, 0, 3, &[0.5]);
        let whole = run("rir", 0.1, 0, 3, &[0.5, 0.6, 0.7]);
        let shorter_target = run("rir", 0.1, 0, 1, &[0.55]);
        let (kept, dropped) = merge(vec![partial.clone(), whole.clone(), shorter_target]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].history.len(), 3, "the copy with most epochs stays");
        assert_eq!(dropped, [(partial.folder, whole.folder)]);
    }

    #[test]
    fn configurations_are_ranked_and_variants_paired_by_recipe_and_seed() {
        let runs = vec![
            run("rir", 0.1, 0, 1, &[0.80]),
            run("rir", 0.1, 1, 1, &[0.84]),
            run("cnn", 0.1, 0, 1, &[0.79]),
            run("cnn", 0.1, 1, 1, &[0.82]),
            run("rir", 0.2, 0, 1, &[0.90]),
            run("cnn", 0.2, 1, 1, &[0.50]),
        ];
        let g = groups(&runs);
        let order: Vec<(String, String, usize)> = g
            .iter()
            .map(|g| (g.variant().to_string(), g.describe_settings(), g.runs.len()))
            .collect();
        // Only lr differs between the runs, so only lr is a setting.
        assert_eq!(
            order,
            [
                ("rir".into(), "lr=0.2".into(), 1),
                ("rir".into(), "lr=0.1".into(), 2),
                ("cnn".into(), "lr=0.1".into(), 2),
                ("cnn".into(), "lr=0.2".into(), 1),
            ]
        );
        assert!((g[1].last.mean - 82.0).abs() < 1e-9);
        // Pairs: (lr 0.1, seeds 0 and 1); lr 0.2 has no common seed.
        let p = paired(&runs);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].a.as_str(), p[0].b.as_str(), p[0].difference.n),
            ("rir", "cnn", 2)
        );
        assert!((p[0].difference.mean - 1.5).abs() < 1e-9, "{:?}", p[0]);
        assert_eq!(p[0].a_ahead, 2);
        let table = paired_table(&runs);
        // Differences 1 and 2: half-width t(1) 12.706 × 0.5 = 6.35, so the
        // interval holds zero and the sign is not settled.
        assert!(
            table.contains("| rir − cnn | +1.50 pp | [-4.85, +7.85] pp | 2 | 2 | no |"),
            "{table}"
        );
        // Differences 1.0, 1.2 and 1.4 over three seeds: sd 0.2, half-width
        // t(2) 4.303 × 0.2 / √3 = 0.50, [0.70, 1.70]: settled. One pair
        // has no interval, and settles nothing.
        let close = vec![
            run("rir", 0.1, 0, 1, &[0.810]),
            run("cnn", 0.1, 0, 1, &[0.800]),
            run("rir", 0.1, 1, 1, &[0.812]),
            run("cnn", 0.1, 1, 1, &[0.800]),
            run("rir", 0.1, 2, 1, &[0.814]),
            run("cnn", 0.1, 2, 1, &[0.800]),
        ];
        let table = paired_table(&close);
        assert!(
            table.contains("| rir − cnn | +1.20 pp | [+0.70, +1.70] pp | 3 | 3 | yes |"),
            "{table}"
        );
        let one = paired_table(&close[..2]);
        assert!(one.contains("| +1.00 pp | n = 1 | 1 | 1 | no |"), "{one}");
        let axes = axes(&runs);
        assert_eq!(axes.len(), 1);
        assert_eq!(
            (axes[0].name.as_str(), axes[0].values.as_slice()),
            ("lr", &["0.1".to_string(), "0.2".to_string()][..])
        );
    }
}

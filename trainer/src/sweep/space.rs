//! A declared search space and the numbered trials it holds.
//!
//! The space crosses its grid axes (options of `rir-train train`, each with
//! its values) with the variants and the seeds. Every trial has a stable
//! index: seeds are the outermost loop, then the grid configurations (the
//! last axis fastest), then the variants, so that the first indices hold
//! every configuration and variant at the first seed, and the trials that a
//! paired comparison sets side by side (same configuration and seed, other
//! variant) are neighbours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One swept option of `rir-train train` and the values it takes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// The option's long name without its dashes, e.g. `lr` or `weight-decay`.
    pub key: String,
    /// Its values, as they are written on the command line.
    pub values: Vec<String>,
}

impl FromStr for Axis {
    type Err = TrainError;

    /// `KEY=V1,V2,...`, as `--grid` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, values) = s.split_once('=').ok_or_else(|| {
            TrainError::Sweep(format!(
                "--grid {s:?}: expected KEY=V1,V2,... (e.g. lr=0.1,0.05)"
            ))
        })?;
        let key = key.trim().trim_start_matches("--").to_string();
        let values = values.split(',').map(|v| v.trim().to_string()).collect();
        Ok(Axis { key, values })
    }
}

/// Successive halving's settings: every arm starts on `min_epochs`, and at
/// each rung the best 1/`eta` of the arms continue on `eta` times the
/// budget, up to the space's `epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halving {
    /// The factor the arms are cut by, and the budget grows by, per rung.
    pub eta: usize,
    /// The first rung's epochs.
    pub min_epochs: usize,
}

/// A search space: what `rir-train sweep` trains, and the plan it records
/// in the sweep folder so that every process of a sweep numbers its trials
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// The swept options, crossed in order (the last one fastest).
    pub axes: Vec<Axis>,
    /// Variants every configuration is trained as.
    pub variants: Vec<String>,
    /// Seeds every configuration and variant is trained with.
    pub seeds: Vec<u64>,
    /// Epochs of a trial (the largest budget under halving).
    pub epochs: usize,
    /// Options of `rir-train train` that every trial shares.
    #[serde(default)]
    pub args: Vec<String>,
    /// Successive halving instead of the full grid.
    #[serde(default)]
    pub halving: Option<Halving>,
}

/// Options the sweep sets itself for each trial, so neither a grid axis
/// nor a shared option may name them.
const SET_BY_THE_SWEEP: [&str; 6] = ["variant", "seed", "epochs", "out", "resume", "quiet"];

/// One trial: a configuration of the grid, as one variant, with one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    /// Its stable index in the space.
    pub index: usize,
    /// Which grid configuration (0 when there is no grid).
    pub config: usize,
    /// Which configuration-and-variant arm (what halving keeps or drops).
    pub arm: usize,
    /// Variant name.
    pub variant: String,
    /// Seed.
    pub seed: u64,
    /// The configuration's value of each axis, in axis order.
    pub settings: Vec<(String, String)>,
}

impl Trial {
    /// `lr=0.1 optimizer=adam`, or `-` without a grid.
    pub fn describe_settings(&self) -> String {
        describe_settings(&self.settings)
    }
}

/// Option settings as a sweep's tables write them: `lr=0.1 optimizer=adam`,
/// or `-` for none.
pub fn describe_settings(settings: &[(String, String)]) -> String {
    if settings.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(" ")
}

/// The parts of a space as declared, in a TOML file or on the command line,
/// before defaults fill what neither gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Grid axes.
    pub grid: Vec<Axis>,
    /// Variants, if given.
    pub variants: Option<Vec<String>>,
    /// Seeds, if given.
    pub seeds: Option<Vec<u64>>,
    /// Epochs per trial, if given.
    pub epochs: Option<usize>,
    /// Shared `rir-train train` options.
    pub args: Vec<String>,
    /// Successive halving, if asked for.
    pub halving: Option<Halving>,
}

/// The TOML form of a space (`rir-train sweep ... --space FILE`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SpaceFile {
    #[serde(default)]
    grid: toml::Table,
    variants: Option<Vec<String>>,
    seeds: Option<Vec<u64>>,
    epochs: Option<usize>,
    #[serde(default)]
    args: Vec<String>,
    halving: Option<HalvingFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HalvingFile {
    eta: usize,
    min_epochs: usize,
}

impl Declared {
    /// Reads the TOML form: `[grid]` with one key per axis (a value or an
    /// array of values), `variants`, `seeds`, `epochs`, `args` and a
    /// `[halving]` table with `eta` and `min-epochs`.
    pub fn from_toml(text: &str) -> Result<Declared, TrainError> {
        let file: SpaceFile = toml::from_str(text).map_err(|e| TrainError::Sweep(e.to_string()))?;
        let scalar = |key: &str, v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(TrainError::Sweep(format!(
                "grid.{key}: {other} is not a string, number or boolean"
            ))),
        };
        let grid = file
            .grid
            .iter()
            .map(|(key, v)| {
                let values = match v {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| scalar(key, i))
                        .collect::<Result<_, _>>()?,
                    one => vec![scalar(key, one)?],
                };
                Ok(Axis {
                    key: key.clone(),
                    values,
                })
            })
            .collect::<Result<_, TrainError>>()?;
        Ok(Declared {
            grid,
            variants: file.variants,
            seeds: file.seeds,
            epochs: file.epochs,
            args: file.args,
            halving: file.halving.map(|h| Halving {
                eta: h.eta,
                min_epochs: h.min_epochs,
            }),
        })
    }

    /// Whether nothing at all was declared (the plan then comes from the
    /// sweep folder).
    pub fn is_empty(&self) -> bool {
        *self == Declared::default()
    }

    /// These parts with `over`'s on top: an axis of `over` replaces the
    /// one of the same key, what `over` gives replaces what it does not,
    /// and the shared options are appended.
    pub fn overlay(mut self, over: Declared) -> Declared {
        for axis in over.grid {
            match self.grid.iter_mut().find(|a| a.key == axis.key) {
                Some(a) => *a = axis,
                None => self.grid.push(axis),
            }
        }
        self.args.extend(over.args);
        Declared {
            grid: self.grid,
            variants: over.variants.or(self.variants),
            seeds: over.seeds.or(self.seeds),
            epochs: over.epochs.or(self.epochs),
            args: self.args,
            halving: over.halving.or(self.halving),
        }
    }

    /// The space, with `rir`, seed 0 and 10 epochs where nothing was given.
    pub fn space(self) -> Result<Space, TrainError> {
        let space = Space {
            axes: self.grid,
            variants: self.variants.unwrap_or_else(|| vec!["rir".into()]),
            seeds: self.seeds.unwrap_or_else(|| vec![0]),
            epochs: self.epochs.unwrap_or(10),
            args: self.args,
            halving: self.halving,
        };
        space.check()?;
        Ok(space)
    }
}

/// The name of the file in a sweep folder that records its space.
pub const PLAN: &str = "sweep.json";

impl Space {
    /// Refuses a space whose trials could not be told apart or trained.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Sweep(m));
        let mut keys: Vec<&str> = vec![];
        for a in &self.axes {
            if a.key.is_empty() {
                return bad("a grid axis without a name".into());
            }
            if SET_BY_THE_SWEEP.contains(&a.key.as_str()) {
                return bad(format!(
                    "--{} is set by the sweep for each trial ({}); it cannot be a grid axis{}",
                    a.key,
                    SET_BY_THE_SWEEP.join(", "),
                    match a.key.as_str() {
                        "variant" => ": use --variants",
                        "seed" => ": use --seeds",
                        "epochs" => ": use --epochs",
                        _ => "",
                    }
                ));
            }
            if keys.contains(&a.key.as_str()) {
                return bad(format!("grid axis {} given twice", a.key));
            }
            keys.push(&a.key);
            if a.values.is_empty() || a.values.iter().any(String::is_empty) {
                return bad(format!("grid axis {} has an empty value", a.key));
            }
            if has_duplicates(&a.values) {
                return bad(format!("grid axis {} repeats a value", a.key));
            }
        }
        for flag in self.args.iter().filter_map(|a| a.strip_prefix("--")) {
            let name = flag.split('=').next().unwrap_or_default();
            if SET_BY_THE_SWEEP.contains(&name) {
                return bad(format!("--{name} is set by the sweep for each trial"));
            }
            if keys.contains(&name) {
                return bad(format!("--{name} is both a grid axis and a shared option"));
            }
        }
        if self.variants.is_empty() || has_duplicates(&self.variants) {
            return bad("--variants needs distinct variants".into());
        }
        if self.seeds.is_empty() || has_duplicates(&self.seeds) {
            return bad("--seeds needs distinct seeds".into());
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if let Some(h) = self.halving {
            if h.eta < 2 {
                return bad(format!("--halving {}: ETA must be at least 2", h.eta));
            }
            if h.min_epochs == 0 || h.min_epochs > self.epochs {
                return bad(format!(
                    "--min-epochs {} must be between 1 and --epochs {}",
                    h.min_epochs, self.epochs
                ));
            }
        }
        Ok(())
    }

    /// Grid configurations (1 without a grid).
    pub fn configs(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    /// Configuration-and-variant arms.
    pub fn arms(&self) -> usize {
        self.configs() * self.variants.len()
    }

    /// Trials in all.
    pub fn len(&self) -> usize {
        self.arms() * self.seeds.len()
    }

    /// Whether the space holds no trial (never, once [`Space::check`]ed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Trial `index`.
    pub fn trial(&self, index: usize) -> Result<Trial, TrainError> {
        if index >= self.len() {
            return Err(TrainError::Sweep(format!(
                "trial index {index} is not in 0..{} (the sweep has {} trials)",
                self.len().saturating_sub(1),
                self.len()
            )));
        }
        let arms = self.arms();
        let arm = index % arms;
        let variants = self.variants.len();
        let config = arm / variants;
        let mut rest = config;
        let mut settings = vec![(String::new(), String::new()); self.axes.len()];
        for (slot, axis) in settings.iter_mut().zip(&self.axes).rev() {
            let n = axis.values.len();
            *slot = (axis.key.clone(), axis.values[rest % n].clone());
            rest /= n;
        }
        Ok(Trial {
            index,
            config,
            arm,
            variant: self.variants[arm % variants].clone(),
            seed: self.seeds[index / arms],
            settings,
        })
    }

    /// Every trial, in index order.
    pub fn trials(&self) -> Vec<Trial> {
        (0..self.len()).filter_map(|i| self.trial(i).ok()).collect()
    }

    /// The trial's folder below the sweep folder: `c03-rir-s1` (the
    /// configuration's number is as wide as the largest one needs).
    pub fn folder(&self, dir: &Path, t: &Trial) -> PathBuf {
        let width = (self.configs().saturating_sub(1)).to_string().len().max(2);
        dir.join(format!("c{:0width$}-{}-s{}", t.config, t.variant, t.seed))
    }

    /// The `rir-train train` arguments (after `train`) of trial `t`,
    /// trained to `epochs` in `folder`.
    pub fn train_args(&self, t: &Trial, folder: &Path, epochs: usize) -> Vec<String> {
        let mut args = vec![
            "--variant".to_string(),
            t.variant.clone(),
            "--seed".into(),
            t.seed.to_string(),
            "--epochs".into(),
            epochs.to_string(),
            "--out".into(),
            folder.display().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        args.extend(t.settings.iter().map(|(k, v)| format!("--{k}={v}")));
        args
    }

    /// Trial `t`'s recipe, trained to `epochs` in its folder below `dir`:
    /// its argument list read back by `rir-train train`'s parser.
    pub fn recipe(
        &self,
        t: &Trial,
        dir: &Path,
        epochs: usize,
    ) -> Result<crate::recipe::Recipe, crate::recipe::RecipeError> {
        crate::recipe::Recipe::parse(&self.train_args(t, &self.folder(dir, t), epochs))
    }

    /// The space in a few lines: axes, variants, seeds, budget, trials.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for a in &self.axes {
            let _ = writeln!(out, "  {}: {}", a.key, a.values.join(", "));
        }
        let _ = writeln!(out, "  variants: {}", self.variants.join(", "));
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "  seeds: {}", seeds.join(", "));
        if !self.args.is_empty() {
            let _ = writeln!(out, "  shared options: {}", self.args.join(" "));
        }
        let _ = write!(
            out,
            "  {} configurations x {} variants x {} seeds = {} trials",
            self.configs(),
            self.variants.len(),
            self.seeds.len(),
            self.len()
        );
        out
    }

    /// The space recorded in `dir`, if it holds one.
    pub fn load(dir: &Path) -> Result<Option<Space>, TrainError> {
        let path = dir.join(PLAN);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| TrainError::Sweep(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TrainError::Io(path, e)),
        }
    }

    /// Whether `dir` records this space (false when it records none); an
    /// error when it records another one.
    pub fn is_recorded_in(&self, dir: &Path) -> Result<bool, TrainError> {
        match Space::load(dir)? {
            Some(recorded) if recorded != *self => Err(TrainError::Sweep(format!(
                "{} holds another sweep:\n{}\nrun it without a space (or with the same one), or pick another --dir",
                dir.display(),
                recorded.describe()
            ))),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// Records the space in `dir` (created if need be), or checks that the
    /// one recorded there is the same: the trials' numbers and folders are
    /// only stable while the space is.
    pub fn bind(&self, dir: &Path) -> Result<(), TrainError> {
        if self.is_recorded_in(dir)? {
            return Ok(());
        }
        let text =
            serde_json::to_string_pretty(self).map_err(|e| TrainError::Sweep(e.to_string()))?;
        write_atomically(&dir.join(PLAN), &text)
    }
}

fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, x)| items[..i].contains(x))
}

/// Writes `text` to `path` through a temporary file and a rename, so that
/// other processes of the sweep never read half a file.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), TrainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io(dir.to_path_buf(), e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).map_err(|e| TrainError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::Io(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Declared {
            grid: vec![
                "lr=0.1,0.05,0.02".parse().unwrap(),
                "optimizer=sgd,adam".parse().unwrap(),
            ],
            variants: Some(vec!["rir".into(), "resnet".into()]),
            seeds: Some(vec![0, 7]),
            epochs: Some(3),
            args: vec!["--preset".into(), "micro".into()],
            halving: None,
        }
        .space()
        .unwrap()
    }

    #[test]
    fn every_index_is_one_trial_and_every_trial_one_index() {
        let s = space();
        assert_eq!((s.configs(), s.arms(), s.len()), (6, 12, 24));
        assert!(!s.is_empty());
        let mut none = s.clone();
        none.seeds.clear();
        assert!(none.is_empty());
        assert_eq!(
            s.describe(),
            "  lr: 0.1, 0.05, 0.02\n  optimizer: sgd, adam\n  variants: rir, resnet\n  \
             seeds: 0, 7\n  shared options: --preset micro\n  \
             6 configurations x 2 variants x 2 seeds = 24 trials"
        );
        let trials = s.trials();
        assert_eq!(trials.len(), 24);
        let mut seen = std::collections::HashSet::new();
        for (i, t) in trials.iter().enumerate() {
            assert_eq!(t.index, i);
            assert!(seen.insert((t.settings.clone(), t.variant.clone(), t.seed)));
            assert!(seen.len() == i + 1);
        }
        // Seeds outermost, the last axis fastest among configurations,
        // variants innermost: pinned, since folders and Job indices rely on it.
        let t = s.trial(0).unwrap();
        assert_eq!(
            (t.variant.as_str(), t.seed, t.describe_settings().as_str()),
            ("rir", 0, "lr=0.1 optimizer=sgd")
        );
        let t = s.trial(1).unwrap();
        assert_eq!((t.variant.as_str(), t.config), ("resnet", 0));
        let t = s.trial(3).unwrap();
        assert_eq!(
            (t.variant.as_str(), t.describe_settings().as_str()),
            ("resnet", "lr=0.1 optimizer=adam")
        );
        let t = s.trial(13).unwrap();
        assert_eq!(
            (t.variant.as_str(), t.seed, t.config, t.arm),
            ("resnet", 7, 0, 1)
        );
        let t = s.trial(23).unwrap();
        assert_eq!(
            (t.seed, t.describe_settings().as_str()),
            (7, "lr=0.02 optimizer=adam")
        );
        assert!(
            s.trial(24)
                .unwrap_err()
                .to_string()
                .contains("not in 0..23")
        );
        assert_eq!(
            s.folder(Path::new("/r"), &s.trial(13).unwrap()),
            PathBuf::from("/r/c00-resnet-s7")
        );
        assert_eq!(
            s.train_args(&s.trial(3).unwrap(), Path::new("/r/x"), 2),
            [
                "--variant",
                "resnet",
                "--seed",
                "0",
                "--epochs",
                "2",
                "--out",
                "/r/x",
                "--preset",
                "micro",
                "--lr=0.1",
                "--optimizer=adam"
            ]
        );
    }

    #[test]
    fn a_toml_file_declares_the_same_space_and_flags_go_on_top() {
        let file = Declared::from_toml(
            r#"
            variants = ["rir", "resnet"]
            seeds = [0, 7]
            epochs = 3
            args = ["--preset", "micro"]
            [grid]
            lr = [0.1, 0.05, 0.02]
            optimizer = ["sgd", "adam"]
            "#,
        )
        .unwrap();
        assert_eq!(file.clone().space().unwrap(), space());
        let over = Declared {
            grid: vec!["lr=1".parse().unwrap()],
            seeds: Some(vec![3]),
            ..Declared::default()
        };
        let s = file.overlay(over).space().unwrap();
        assert_eq!(s.axes[0].values, ["1"]);
        assert_eq!((s.seeds.as_slice(), s.len()), (&[3][..], 4));
        let err = Declared::from_toml("[grid]\nlr = [[1]]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid.lr"), "{err}");
        let err = Declared::from_toml("sedes = [1]").unwrap_err().to_string();
        assert!(err.contains("sedes"), "{err}");
    }

    #[test]
    fn spaces_whose_trials_would_clash_are_refused() {
        let with = |f: &dyn Fn(&mut Space)| {
            let mut s = space();
            f(&mut s);
            s.check().unwrap_err().to_string()
        };
        assert!(with(&|s| s.axes[0].key = "seed".into()).contains("--seeds"));
        assert!(with(&|s| s.axes[1].key = "lr".into()).contains("twice"));
        assert!(with(&|s| s.axes[0].values.push("0.1".into())).contains("repeats"));
        assert!(with(&|s| s.args.push("--lr=3".into())).contains("both a grid axis"));
        assert!(with(&|s| s.args.push("--out".into())).contains("set by the sweep"));
        assert!(with(&|s| s.seeds.push(0)).contains("distinct"));
        assert!(
            with(&|s| s.halving = Some(Halving {
                eta: 1,
                min_epochs: 1
            }))
            .contains("ETA")
        );
        assert!("lr".parse::<Axis>().is_err());
        assert!(with(&|s| s.axes[0].values.clear()).contains("empty value"));
        assert!(with(&|s| s.axes[0].values = vec!["".into()]).contains("empty value"));
        assert!(with(&|s| s.variants.clear()).contains("distinct variants"));
        assert!(with(&|s| s.seeds.clear()).contains("distinct seeds"));
        let halving = |min_epochs| {
            move |s: &mut Space| {
                s.halving = Some(Halving { eta: 2, min_epochs });
            }
        };
        assert!(with(&halving(0)).contains("--min-epochs 0"));
        let past = space().epochs + 1;
        assert!(with(&halving(past)).contains("must be between 1 and --epochs"));
        // At --epochs itself: allowed.
        let mut ok = space();
        halving(ok.epochs)(&mut ok);
        ok.check().unwrap();
        assert!(Declared::default().is_empty());
        let seeds = Declared {
            seeds: Some(vec![1]),
            ..Declared::default()
        };
        assert!(!seeds.is_empty());
    }

    #[test]
    fn a_folder_keeps_its_space() {
        let dir = tempfile::tempdir().unwrap();
        let s = space();
        assert_eq!(Space::load(dir.path()).unwrap(), None);
        // A folder where the plan should be: an error, not "no sweep yet".
        let odd = tempfile::tempdir().unwrap();
        std::fs::create_dir(odd.path().join(PLAN)).unwrap();
        assert!(matches!(Space::load(odd.path()), Err(TrainError::Io(..))));
        s.bind(dir.path()).unwrap();
        s.bind(dir.path()).unwrap();
        assert_eq!(Space::load(dir.path()).unwrap(), Some(s.clone()));
        let mut other = s;
        other.seeds = vec![1];
        let err = other.bind(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds another sweep"), "{err}");
    }
}

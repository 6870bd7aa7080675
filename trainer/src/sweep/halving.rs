//! Successive halving over a space's arms (a grid configuration trained as
//! one variant, over all its seeds): every arm trains on the first rung's
//! budget, the best 1/ETA by mean test accuracy over their seeds continue
//! on ETA times the budget, and so on up to the space's epochs. A trial
//! that continues resumes its checkpoint with the larger budget (its
//! learning-rate schedule is stretched to the new length from there).
//!
//! Each rung's decision is recorded in the sweep folder (`halving.json`)
//! once it is taken, so that a resumed sweep, or pods of a Job that train
//! a later rung, follow the same one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::space::{Halving, Space, Trial, write_atomically};
use crate::error::TrainError;

/// The file in a sweep folder that records the rungs' decisions.
pub const DECISIONS: &str = "halving.json";

/// The epochs of each rung: `min`, `min*eta`, ... while below `max`, then `max`.
pub fn budgets(h: Halving, max: usize) -> Vec<usize> {
    let mut out = vec![];
    let mut e = h.min_epochs;
    while e < max {
        out.push(e);
        e = e.saturating_mul(h.eta);
    }
    out.push(max);
    out
}

/// How many of `arms` arms continue past a rung.
pub fn kept(arms: usize, eta: usize) -> usize {
    arms.div_ceil(eta).max(1)
}

/// The arms to keep, given each arm's score: the `kept` best (ties go to
/// the lower arm), in arm order.
pub fn promote(scores: &[(usize, f64)], eta: usize) -> Vec<usize> {
    let mut ranked = scores.to_vec();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep: Vec<usize> = ranked
        .iter()
        .take(kept(scores.len(), eta))
        .map(|s| s.0)
        .collect();
    keep.sort_unstable();
    keep
}

/// One rung's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The rung's budget in epochs.
    pub epochs: usize,
    /// Each arm's mean test accuracy over its seeds after `epochs`.
    pub scores: Vec<(usize, f64)>,
    /// The arms that continue.
    pub promoted: Vec<usize>,
}

/// The decisions taken so far, rung by rung.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Decision of rung 0, 1, ...
    pub decisions: Vec<Decision>,
}

impl Ledger {
    /// The decisions recorded in `dir` (none if it holds no file yet).
    pub fn load(dir: &Path) -> Result<Ledger, TrainError> {
        let path = dir.join(DECISIONS);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| TrainError::Sweep(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(TrainError::Io(path, e)),
        }
    }

    fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| TrainError::Sweep(e.to_string()))?;
        write_atomically(&dir.join(DECISIONS), &text)
    }
}

/// A space's rungs: the full grid is one rung of `epochs` with every trial.
#[derive(Debug, Clone)]
pub struct Rungs<'a> {
    space: &'a Space,
    budgets: Vec<usize>,
}

impl<'a> Rungs<'a> {
    /// The rungs of `space`.
    pub fn of(space: &'a Space) -> Rungs<'a> {
        let budgets = match space.halving {
            Some(h) => budgets(h, space.epochs),
            None => vec![space.epochs],
        };
        Rungs { space, budgets }
    }

    /// Each rung's epochs.
    pub fn budgets(&self) -> &[usize] {
        &self.budgets
    }

    fn eta(&self) -> usize {
        self.space.halving.map_or(1, |h| h.eta)
    }

    /// Arms trained on rung `rung`, known before any decision is taken.
    pub fn arms_at(&self, rung: usize) -> usize {
        (0..rung).fold(self.space.arms(), |n, _| kept(n, self.eta()))
    }

    /// Trials trained on rung `rung` (what its Job's completions must be).
    pub fn trials_at(&self, rung: usize) -> usize {
        self.arms_at(rung) * self.space.seeds.len()
    }

    /// The trials of rung `rung`, in index order, taking (and recording in
    /// `dir`) the decisions of the rungs before it that are not taken yet.
    /// `accuracy(trial, epochs)` is the trial's test accuracy after
    /// `epochs`, if it has trained that far.
    pub fn trials(
        &self,
        rung: usize,
        dir: &Path,
        accuracy: &dyn Fn(&Trial, usize) -> Option<f64>,
    ) -> Result<Vec<Trial>, TrainError> {
        if rung >= self.budgets.len() {
            return Err(TrainError::Sweep(format!(
                "rung {rung} is not in 0..{} (budgets {:?} epochs)",
                self.budgets.len() - 1,
                self.budgets
            )));
        }
        let mut ledger = Ledger::load(dir)?;
        let mut arms: Vec<usize> = (0..self.space.arms()).collect();
        for r in 0..rung {
            if let Some(d) = ledger.decisions.get(r) {
                arms = d.promoted.clone();
                continue;
            }
            let d = self.decide(r, &arms, accuracy)?;
            arms = d.promoted.clone();
            ledger.decisions.push(d);
            ledger.save(dir)?;
        }
        Ok(self
            .space
            .trials()
            .into_iter()
            .filter(|t| arms.contains(&t.arm))
            .collect())
    }

    fn decide(
        &self,
        rung: usize,
        arms: &[usize],
        accuracy: &dyn Fn(&Trial, usize) -> Option<f64>,
    ) -> Result<Decision, TrainError> {
        let epochs = self.budgets[rung];
        let trials: Vec<Trial> = self
            .space
            .trials()
            .into_iter()
            .filter(|t| arms.contains(&t.arm))
            .collect();
        let missing = trials
            .iter()
            .filter(|t| accuracy(t, epochs).is_none())
            .count();
        if missing > 0 {
            return Err(TrainError::Sweep(format!(
                "rung {rung} ({epochs} epochs) is not finished: {missing} of its {} trials have not trained that far",
                trials.len()
            )));
        }
        let scores: Vec<(usize, f64)> = arms
            .iter()
            .map(|&arm| {
                let accs: Vec<f64> = trials
                    .iter()
                    .filter(|t| t.arm == arm)
                    .filter_map(|t| accuracy(t, epochs))
                    .collect();
                (arm, accs.iter().sum::<f64>() / accs.len().max(1) as f64)
            })
            .collect();
        Ok(Decision {
            epochs,
            promoted: promote(&scores, self.eta()),
            scores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::space::Declared;

    #[test]
    fn a_ledger_not_yet_written_is_empty_and_one_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Ledger::load(dir.path()).unwrap(), Ledger::default());
        // A folder where the file should be: reading fails, and the sweep
        // must not take that for "no decision yet" and redo every rung.
        std::fs::create_dir(dir.path().join(DECISIONS)).unwrap();
        assert!(matches!(Ledger::load(dir.path()), Err(TrainError::Io(..))));
    }

    #[test]
    fn budgets_grow_by_eta_up_to_the_maximum() {
        let h = |eta, min_epochs| Halving { eta, min_epochs };
        assert_eq!(budgets(h(3, 1), 9), [1, 3, 9]);
        assert_eq!(budgets(h(3, 1), 10), [1, 3, 9, 10]);
        assert_eq!(budgets(h(2, 2), 5), [2, 4, 5]);
        assert_eq!(budgets(h(2, 4), 4), [4]);
        assert_eq!(
            (kept(9, 3), kept(10, 3), kept(2, 3), kept(1, 2)),
            (3, 4, 1, 1)
        );
    }

    #[test]
    fn the_best_third_is_kept_and_ties_go_to_the_lower_arm() {
        let scores = [(0, 0.5), (1, 0.9), (2, 0.7), (3, 0.9), (4, 0.1), (5, 0.8)];
        assert_eq!(promote(&scores, 3), [1, 3]);
        assert_eq!(promote(&scores, 2), [1, 3, 5]);
        let tied = [(4, 0.5), (2, 0.5), (7, 0.5)];
        assert_eq!(promote(&tied, 2), [2, 4]);
    }

    #[test]
    fn decisions_are_recorded_and_followed() {
        let space = Declared {
            grid: vec!["lr=0.4,0.2,0.1,0.05".parse().unwrap()],
            variants: Some(vec!["rir".into(), "cnn".into()]),
            seeds: Some(vec![0, 1]),
            epochs: Some(4),
            args: vec![],
            halving: Some(Halving {
                eta: 2,
                min_epochs: 1,
            }),
        }
        .space()
        .unwrap();
        let rungs = Rungs::of(&space);
        assert_eq!(rungs.budgets(), [1, 2, 4]);
        assert_eq!(
            (rungs.trials_at(0), rungs.trials_at(1), rungs.trials_at(2)),
            (16, 8, 4)
        );
        let dir = tempfile::tempdir().unwrap();
        // Arm a scores a/10, seed 1 a bit higher: arms 7, 6, 5, 4 lead.
        let acc = |t: &Trial, _e: usize| Some(t.arm as f64 / 10.0 + t.seed as f64 / 100.0);
        assert_eq!(rungs.trials(0, dir.path(), &acc).unwrap().len(), 16);
        assert!(!dir.path().join(DECISIONS).exists());
        let second = rungs.trials(1, dir.path(), &acc).unwrap();
        let arms: Vec<usize> = second.iter().map(|t| t.arm).collect();
        assert_eq!(arms, [4, 5, 6, 7, 4, 5, 6, 7]);
        let ledger = Ledger::load(dir.path()).unwrap();
        assert_eq!(ledger.decisions.len(), 1);
        assert_eq!(ledger.decisions[0].promoted, [4, 5, 6, 7]);
        assert!((ledger.decisions[0].scores[7].1 - 0.705).abs() < 1e-12);
        // Recorded decisions stand, whatever the accuracies read later.
        let reversed = |t: &Trial, _e: usize| Some(1.0 - t.arm as f64 / 10.0);
        let third = rungs.trials(2, dir.path(), &reversed).unwrap();
        let arms: Vec<usize> = third.iter().map(|t| t.arm).collect();
        assert_eq!(arms, [4, 5, 4, 5], "rung 1 decided on the reversed scores");
        assert_eq!(
            Ledger::load(dir.path()).unwrap().decisions[0].promoted,
            [4, 5, 6, 7]
        );
        // A rung cannot be decided before its trials have trained.
        let other = tempfile::tempdir().unwrap();
        let none = |_: &Trial, _: usize| None;
        let err = rungs
            .trials(1, other.path(), &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 of its 16 trials"), "{err}");
        assert!(rungs.trials(3, other.path(), &none).is_err());
    }
}

//! The search for the highest load whose latency percentile stays under a
//! bound (what perf_analyzer's `--latency-threshold` with `--binary-search`
//! answers): the load doubles from the lowest level until a level misses
//! the bound, then the gap between the last level that met it and the first
//! that missed is halved until they are one step apart. Levels are whole
//! steps: a concurrency, or a multiple of the open loop's rate.

use std::collections::BTreeMap;

use crate::report::Report;
use crate::thresholds::Percentile;

/// What the search is after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The latency figure judged.
    pub percentile: Percentile,
    /// Its bound, milliseconds.
    pub bound_ms: f64,
    /// The highest level tried.
    pub max_level: u64,
}

impl Goal {
    /// Whether `r` met the goal: every request succeeded and the
    /// percentile is at most the bound.
    pub fn met(&self, r: &Report) -> bool {
        r.ok > 0 && r.failed() == 0 && self.percentile.of(&r.latency_ms) <= self.bound_ms
    }
}

/// The levels tried so far and whether each met the goal.
#[derive(Debug, Clone, Default)]
pub struct Search {
    tried: BTreeMap<u64, bool>,
}

impl Search {
    /// Records that `level` met the goal or not.
    pub fn record(&mut self, level: u64, met: bool) {
        self.tried.insert(level, met);
    }

    /// The highest level that met the goal below the lowest that missed it.
    pub fn best(&self) -> Option<u64> {
        let first_miss = self.first_miss().unwrap_or(u64::MAX);
        self.tried
            .iter()
            .filter(|&(&l, &met)| met && l < first_miss)
            .map(|(&l, _)| l)
            .max()
    }

    fn first_miss(&self) -> Option<u64> {
        self.tried.iter().find(|&(_, &met)| !met).map(|(&l, _)| l)
    }

    /// The next level to try, or `None` when the answer is known.
    pub fn next(&self, max_level: u64) -> Option<u64> {
        let max_level = max_level.max(1);
        let best = self.best();
        match (best, self.first_miss()) {
            (None, None) => Some(1),
            // Even the lowest level missed.
            (None, Some(_)) => None,
            (Some(lo), None) if lo >= max_level => None,
            (Some(lo), None) => Some(lo.saturating_mul(2).min(max_level)),
            (Some(lo), Some(hi)) if hi - lo <= 1 => None,
            (Some(lo), Some(hi)) => Some(lo + (hi - lo) / 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal_report(ok: u64, failed: u64) -> Report {
        let mut r = Report {
            ok,
            requests: ok + failed,
            ..Report::default()
        };
        (r.latency_ms.p90, r.latency_ms.p99) = (5.0, 50.0);
        if failed > 0 {
            r.errors.insert("UNAVAILABLE".into(), failed);
        }
        r
    }

    #[test]
    fn the_answer_lies_below_the_first_miss_even_when_a_higher_level_met() {
        // A noisy machine: level 4 missed, then 6 met. The answer is the
        // highest level met below the lowest miss, 2.
        let mut s = Search::default();
        for (level, met) in [(1, true), (2, true), (4, false), (6, true)] {
            s.record(level, met);
        }
        assert_eq!(s.best(), Some(2));
    }

    #[test]
    fn a_goal_is_met_on_its_percentile_and_never_with_a_failure() {
        let p90 = Goal {
            percentile: Percentile::P90,
            bound_ms: 10.0,
            max_level: 8,
        };
        // p90 (5 ms) is judged, not p99 (50 ms).
        assert!(p90.met(&goal_report(100, 0)));
        assert!(
            !Goal {
                percentile: Percentile::P99,
                ..p90
            }
            .met(&goal_report(100, 0))
        );
        // Any failed request is a miss, and so is nothing answered.
        assert!(!p90.met(&goal_report(100, 1)));
        assert!(!p90.met(&goal_report(0, 0)));
    }

    /// The levels a search tries against a server whose bound is met up to
    /// `knee`, and its answer.
    fn search(knee: u64, max: u64) -> (Vec<u64>, Option<u64>) {
        let mut s = Search::default();
        let mut tried = vec![];
        while let Some(level) = s.next(max) {
            assert!(!tried.contains(&level), "{level} tried twice: {tried:?}");
            tried.push(level);
            s.record(level, level <= knee);
        }
        (tried, s.best())
    }

    #[test]
    fn doubles_then_halves_the_gap_to_the_knee() {
        // By hand: 1, 2, 4, 8, 16 (misses), then 12, 10 (misses), 9 (misses).
        assert_eq!(search(8, 256), (vec![1, 2, 4, 8, 16, 12, 10, 9], Some(8)));
        assert_eq!(
            search(11, 256),
            (vec![1, 2, 4, 8, 16, 12, 10, 11], Some(11))
        );
        // Met everywhere: up to the highest level, which is the answer.
        assert_eq!(search(1_000, 48), (vec![1, 2, 4, 8, 16, 32, 48], Some(48)));
        // Not even one request in flight meets it.
        assert_eq!(search(0, 256), (vec![1], None));
        for knee in 1..200 {
            assert_eq!(search(knee, 256).1, Some(knee));
        }
    }
}

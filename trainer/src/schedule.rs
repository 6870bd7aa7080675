//! Learning-rate schedules, as functions of fractional epochs done.

use serde::{Deserialize, Serialize};

/// The shape of the learning-rate curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The paper's recipe: x0.1 after 42/82 and 62/82 of the epochs.
    Step,
    /// Cosine decay from the base rate to zero.
    Cosine,
    /// Linear ramp up to the base rate over the first quarter, then linear
    /// decay to zero (the "one-cycle" of fast CIFAR training).
    OneCycle,
}

impl Schedule {
    /// The epochs (0-based) from which the step schedule divides by ten,
    /// scaled from 42 and 62 of 82 to `epochs`.
    pub fn milestones(epochs: usize) -> [usize; 2] {
        let at = |m: f64| ((epochs as f64) * m / 82.0).round() as usize;
        [at(42.0), at(62.0)]
    }

    /// Learning rate after `t` epochs (fractional) of `epochs`, with a linear
    /// warm-up over the first `warmup` epochs.
    pub fn lr(self, base: f64, epochs: usize, t: f64, warmup: f64) -> f64 {
        let e = epochs.max(1) as f64;
        let shape = match self {
            Schedule::Step => {
                let passed = Self::milestones(epochs)
                    .iter()
                    .filter(|&&m| t.floor() as usize >= m)
                    .count();
                0.1f64.powi(passed as i32)
            }
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * (t / e).min(1.0)).cos()),
            Schedule::OneCycle => {
                let peak = 0.25 * e;
                if t < peak {
                    t / peak
                } else {
                    ((e - t) / (e - peak)).max(0.0)
                }
            }
        };
        let warm = if warmup > 0.0 && t < warmup {
            (t / warmup).max(0.01)
        } else {
            1.0
        };
        base * shape * warm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_matches_the_paper_at_82_epochs() {
        assert_eq!(Schedule::milestones(82), [42, 62]);
        let lr = |t| Schedule::Step.lr(0.1, 82, t, 0.0);
        assert!((lr(41.9) - 0.1).abs() < 1e-12);
        assert!((lr(42.0) - 0.01).abs() < 1e-12);
        assert!((lr(62.5) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_and_one_cycle_end_at_zero() {
        assert!(Schedule::Cosine.lr(0.1, 10, 10.0, 0.0).abs() < 1e-12);
        assert!((Schedule::OneCycle.lr(0.1, 8, 2.0, 0.0) - 0.1).abs() < 1e-12);
        assert!(Schedule::OneCycle.lr(0.1, 8, 8.0, 0.0).abs() < 1e-12);
        assert!(Schedule::Cosine.lr(0.1, 10, 0.5, 1.0) < 0.051);
    }
}

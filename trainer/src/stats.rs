//! Intervals for what a sweep measures over seeds: the mean of a
//! configuration's accuracies, and the mean of paired differences between
//! two variants trained with the same configuration and seed (which is
//! what can rank them when seed noise is larger than the effect).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean with its two-sided 95 % Student-t interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The sample mean.
    pub mean: f64,
    /// Half the interval's width; `None` with fewer than two values.
    pub half: Option<f64>,
    /// How many values.
    pub n: usize,
}

impl Interval {
    /// The 95 % t-interval of the mean of `values` (n − 1 degrees of
    /// freedom, the sample standard deviation).
    pub fn of(values: &[f64]) -> Interval {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let half = (n >= 2).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
                .map(|d| d.inverse_cdf(0.975))
                .unwrap_or(f64::NAN);
            t * (var / n as f64).sqrt()
        });
        Interval { mean, half, n }
    }

    /// The paired interval of `a[i] − b[i]`.
    pub fn of_differences(pairs: &[(f64, f64)]) -> Interval {
        let d: Vec<f64> = pairs.iter().map(|(a, b)| a - b).collect();
        Interval::of(&d)
    }

    /// Lower and upper bounds (the mean twice without an interval).
    pub fn bounds(&self) -> (f64, f64) {
        let h = self.half.unwrap_or(0.0);
        (self.mean - h, self.mean + h)
    }

    /// Whether the interval excludes zero (the sign of the mean is settled
    /// at 95 %).
    pub fn excludes_zero(&self) -> bool {
        let (lo, hi) = self.bounds();
        self.half.is_some() && (lo > 0.0 || hi < 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_excludes_zero_only_strictly_and_only_with_a_width() {
        let at = |mean: f64, half: Option<f64>| Interval { mean, half, n: 3 }.excludes_zero();
        assert!(at(2.0, Some(1.0)), "1..3");
        assert!(at(-2.0, Some(1.0)), "-3..-1");
        assert!(!at(1.0, Some(1.0)), "0..2 touches zero");
        assert!(!at(-1.0, Some(1.0)), "-2..0 touches zero");
        assert!(!at(0.5, Some(1.0)), "-0.5..1.5 holds zero");
        assert!(!at(2.0, None), "one seed: no interval, nothing settled");
    }

    #[test]
    fn intervals_match_values_worked_out_by_hand() {
        // 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t(0.975; 3) = 3.182446305.
        let i = Interval::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((i.mean, i.n), (2.5, 4));
        let want = 3.182446305 * (5.0f64 / 3.0).sqrt() / 2.0;
        assert!((i.half.unwrap() - want).abs() < 1e-8, "{i:?} vs {want}");
        // Two values: t(0.975; 1) = 12.70620474, s = |a - b| / sqrt 2.
        let i = Interval::of(&[93.2, 93.6]);
        let want = 12.70620474 * (0.4 / 2f64.sqrt()) / 2f64.sqrt();
        assert!((i.half.unwrap() - want).abs() < 1e-6, "{i:?} vs {want}");
        // One value has no interval.
        let i = Interval::of(&[5.0]);
        assert_eq!((i.mean, i.half, i.bounds()), (5.0, None, (5.0, 5.0)));
        assert!(!i.excludes_zero());
    }

    #[test]
    fn paired_differences_cancel_the_shared_seed_noise() {
        // Seeds move both variants alike; the difference is 0.2 ± a little.
        let pairs = [(93.1, 92.9), (94.0, 93.8), (92.5, 92.2), (93.7, 93.6)];
        let d = Interval::of_differences(&pairs);
        assert!((d.mean - 0.2).abs() < 1e-9, "{d:?}");
        // d = 0.2, 0.2, 0.3, 0.1: s = sqrt(0.02/3), half = t(3) s / 2.
        let want = 3.182446305 * (0.02f64 / 3.0).sqrt() / 2.0;
        assert!((d.half.unwrap() - want).abs() < 1e-8);
        assert!(d.excludes_zero());
        // Unpaired, the two means' intervals overlap widely.
        let a = Interval::of(&pairs.map(|p| p.0));
        let b = Interval::of(&pairs.map(|p| p.1));
        assert!(a.bounds().0 < b.bounds().1);
    }
}

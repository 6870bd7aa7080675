//! What a run offers the server, and how long it measures: a closed loop
//! at a concurrency or an open loop at a rate, and a duration, a request
//! count or stability windows. The drivers ([`crate::run`]) apply it and
//! the reports ([`crate::report`]) label their rows with it.

use std::time::Duration;

/// Arrival process of the open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced, 1/rate apart.
    Constant,
    /// Exponential gaps of mean 1/rate (independent arrivals, as from many users).
    Poisson,
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` requests always in flight.
    Closed {
        /// Outstanding requests.
        concurrency: usize,
    },
    /// Requests sent at a fixed rate regardless of answers.
    Open {
        /// Requests per second.
        rate: f64,
        /// Spacing of the sends.
        arrivals: Arrivals,
    },
}

impl Load {
    /// Short label, e.g. `concurrency 8` or `rate 200/s poisson`.
    pub fn label(&self) -> String {
        match self {
            Load::Closed { concurrency } => format!("concurrency {concurrency}"),
            Load::Open { rate, arrivals } => format!(
                "rate {}/s {}",
                if rate.fract() == 0.0 {
                    format!("{rate:.0}")
                } else {
                    format!("{rate:.2}")
                },
                match arrivals {
                    Arrivals::Constant => "constant",
                    Arrivals::Poisson => "poisson",
                }
            ),
        }
    }
}

/// When the measurement ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many requests (all of them answered).
    Requests(u64),
}

/// Measure in windows until the last three agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stability {
    /// Length of one window.
    pub window: Duration,
    /// Largest relative deviation from their mean, of the last three windows'
    /// throughput and average latency (0.1 = 10 %).
    pub tolerance: f64,
    /// Give up (and report the last three, marked unstable) after this many.
    pub max_windows: usize,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Load before measuring, not recorded.
    pub warmup: Duration,
    /// End of the measurement (ignored when `stability` is set).
    pub stop: Stop,
    /// Optional stability windows.
    pub stability: Option<Stability>,
    /// Without stability windows: also report each interval of this length
    /// (a soak's figures over time).
    pub interval: Option<Duration>,
    /// Open loop: most requests in flight; when reached, sends wait (and
    /// their latency still counts from the intended time).
    pub max_in_flight: usize,
    /// Seed of Poisson arrivals.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// A number of seconds on the command line that is not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{flag} must be a non-negative number of seconds, not {value}")]
pub struct BadSeconds {
    /// The flag.
    pub flag: &'static str,
    /// What it was given.
    pub value: f64,
}

/// `value` seconds of flag `flag`, as a duration.
pub fn seconds(value: f64, flag: &'static str) -> Result<Duration, BadSeconds> {
    Duration::try_from_secs_f64(value).map_err(|_| BadSeconds { flag, value })
}

/// A `--concurrency` that is neither a list nor a range of positive counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--concurrency {0:?}: expected counts of at least 1, as a list (1,4,16) or a doubling range (1..64)"
)]
pub struct BadConcurrency(pub String);

/// The concurrencies of `1,2,4` or of `1..64` (powers of two from the
/// first to the last).
pub fn concurrencies(s: &str) -> Result<Vec<usize>, BadConcurrency> {
    let bad = || BadConcurrency(s.to_string());
    let count = |v: &str| v.trim().parse::<usize>().ok().filter(|n| *n > 0);
    let list: Vec<usize> = match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (count(a).ok_or_else(bad)?, count(b).ok_or_else(bad)?);
            if b < a {
                return Err(bad());
            }
            std::iter::successors(Some(a), |x| x.checked_mul(2))
                .take_while(|x| *x <= b)
                .collect()
        }
        None => s
            .split(',')
            .map(count)
            .collect::<Option<_>>()
            .ok_or_else(bad)?,
    };
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrencies_are_lists_or_doubling_ranges() {
        assert_eq!(concurrencies("1,8, 64"), Ok(vec![1, 8, 64]));
        assert_eq!(concurrencies("1..64"), Ok(vec![1, 2, 4, 8, 16, 32, 64]));
        assert_eq!(concurrencies("3..20"), Ok(vec![3, 6, 12]));
        for bad in ["", "0", "1,0", "8..1", "0..4", "a", "1..x"] {
            assert!(concurrencies(bad).is_err(), "{bad:?}");
        }
    }
}

//! What a run offers the server, and how long it measures: a closed loop
//! at a concurrency, an open loop at a rate or on a schedule of rates
//! (steps or a linear ramp), and a duration, a request count or stability
//! windows. The drivers ([`crate::run`]) apply it and
//! the reports ([`crate::report`]) label their rows with it.

use std::sync::Arc;
use std::time::Duration;

/// Arrival process of the open loop.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced, 1/rate apart.
    #[default]
    Constant,
    /// Exponential gaps of mean 1/rate (independent arrivals, as from many users).
    Poisson,
}

/// How the open loop's rate changes over one measurement (the warm-up
/// runs at the first rate).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Each rate in turn for `step`.
    Steps {
        /// Requests per second of each step.
        rates: Arc<[f64]>,
        /// Length of one step.
        step: Duration,
    },
    /// From `from` to `to` requests per second, linearly over `over`.
    Ramp {
        /// The rate at the start.
        from: f64,
        /// The rate at the end.
        to: f64,
        /// The ramp's length.
        over: Duration,
    },
}

impl Schedule {
    /// The rate `t` into the measurement (the last one past its end).
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Schedule::Steps { rates, step } => {
                let k = (t.as_secs_f64() / step.as_secs_f64().max(1e-9)) as usize;
                rates[k.min(rates.len() - 1)]
            }
            Schedule::Ramp { from, to, over } => {
                let x = (t.as_secs_f64() / over.as_secs_f64().max(1e-9)).min(1.0);
                from + (to - from) * x
            }
        }
    }

    /// How long it measures.
    pub fn length(&self) -> Duration {
        match self {
            Schedule::Steps { rates, step } => step.saturating_mul(rates.len() as u32),
            Schedule::Ramp { over, .. } => *over,
        }
    }

    /// The requests it offers from `a` to `b` seconds into the measurement
    /// (the rate's integral).
    pub fn sends_between(&self, a: f64, b: f64) -> f64 {
        match self {
            Schedule::Steps { rates, step } => {
                let s = step.as_secs_f64();
                rates
                    .iter()
                    .enumerate()
                    .map(|(k, r)| {
                        let (lo, hi) = ((k as f64 * s).max(a), ((k + 1) as f64 * s).min(b));
                        r * (hi - lo).max(0.0)
                    })
                    .sum()
            }
            Schedule::Ramp { over, .. } => {
                let len = over.as_secs_f64();
                let at = |t: f64| self.rate_at(Duration::from_secs_f64(t));
                let (a, b) = (a.clamp(0.0, len), b.clamp(0.0, len));
                // Linear between a and b: the mean of the two ends.
                (at(a) + at(b)) / 2.0 * (b - a)
            }
        }
    }

    /// The mean offered rate from `a` to `b` seconds into the measurement.
    pub fn mean_rate(&self, a: f64, b: f64) -> f64 {
        match b > a {
            true => self.sends_between(a, b) / (b - a),
            false => self.rate_at(Duration::from_secs_f64(a.max(0.0))),
        }
    }

    /// The length of one report row: a step, or a tenth of the ramp.
    pub fn row(&self) -> Duration {
        match self {
            Schedule::Steps { step, .. } => *step,
            Schedule::Ramp { over, .. } => over.div_f64(10.0),
        }
    }

    /// Short label, e.g. `rate 100,200/s steps of 10 s` or `rate 100..400/s over 30 s`.
    pub fn label(&self) -> String {
        match self {
            Schedule::Steps { rates, step } => format!(
                "rate {}/s steps of {} s",
                rates
                    .iter()
                    .map(|r| number(*r))
                    .collect::<Vec<_>>()
                    .join(","),
                number(step.as_secs_f64())
            ),
            Schedule::Ramp { from, to, over } => format!(
                "rate {}..{}/s over {} s",
                number(*from),
                number(*to),
                number(over.as_secs_f64())
            ),
        }
    }

    /// The label of the span from `a` to `b` seconds: the step's rate, or
    /// the ramp's rates at both ends.
    pub fn span_label(&self, a: f64, b: f64) -> String {
        let at = |t: f64| self.rate_at(Duration::from_secs_f64(t.max(0.0)));
        match self {
            Schedule::Steps { .. } => format!("rate {}/s", number(at((a + b) / 2.0))),
            Schedule::Ramp { .. } => {
                format!("rate {}-{}/s", number(at(a).round()), number(at(b).round()))
            }
        }
    }
}

/// `v` without decimals when it is whole, else with two.
fn number(v: f64) -> String {
    match v.fract() == 0.0 {
        true => format!("{v:.0}"),
        false => format!("{v:.2}"),
    }
}

/// How load is applied. In reports it is written as tagged JSON
/// (`{"loop": "closed", "concurrency": 8}`), so that `merge` reads it back
/// as the value it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "LoadJson", try_from = "LoadJson")]
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
    /// Requests sent at a rate that follows a schedule.
    Scheduled {
        /// The rates over the measurement.
        schedule: Schedule,
        /// Spacing of the sends.
        arrivals: Arrivals,
    },
}

impl RunOptions {
    /// How long each split of the measurement is: the interval, else the
    /// timeline's.
    pub fn split(&self) -> Option<Duration> {
        self.interval.or(self.timeline)
    }
}

impl Load {
    /// Short label, e.g. `concurrency 8` or `rate 200/s poisson`.
    pub fn label(&self) -> String {
        match self {
            Load::Closed { concurrency } => format!("concurrency {concurrency}"),
            Load::Open { rate, arrivals } => {
                format!("rate {}/s {}", number(*rate), arrivals.name())
            }
            Load::Scheduled { schedule, arrivals } => {
                format!("{} {}", schedule.label(), arrivals.name())
            }
        }
    }

    /// The offered rate `t` into the measurement (the warm-up's at zero);
    /// `None` for the closed loop.
    pub fn rate_at(&self, t: Duration) -> Option<f64> {
        match self {
            Load::Closed { .. } => None,
            Load::Open { rate, .. } => Some(*rate),
            Load::Scheduled { schedule, .. } => Some(schedule.rate_at(t)),
        }
    }
}

impl Arrivals {
    /// Its name in labels.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Constant => "constant",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// A `--rate` that is neither a rate, a list of rates nor a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--rate {0:?}: expected positive requests per second: one (200), a list (100,200,400) or a range (100..400, with --ramp)"
)]
pub struct BadRate(pub String);

/// What `--rate` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RateSpec {
    /// One rate, or several (`100,200,400`): one run each, or one stepped run.
    List(Vec<f64>),
    /// `A..B`: a ramp from A to B.
    Range(f64, f64),
}

impl std::str::FromStr for RateSpec {
    type Err = BadRate;

    fn from_str(s: &str) -> Result<Self, BadRate> {
        let bad = || BadRate(s.to_string());
        let rate = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(bad)
        };
        Ok(match s.split_once("..") {
            Some((a, b)) => RateSpec::Range(rate(a)?, rate(b)?),
            None => RateSpec::List(s.split(',').map(rate).collect::<Result<_, _>>()?),
        })
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
    /// Without `interval`: split the measurement every this long all the
    /// same, into the report's `timeline` rather than its rows (what
    /// `--html` draws over time).
    pub timeline: Option<Duration>,
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
    fn a_load_reads_back_from_json_as_the_value_it_was() {
        let loads = [
            Load::Closed { concurrency: 8 },
            Load::Open {
                rate: 250.5,
                arrivals: Arrivals::Poisson,
            },
            Load::Scheduled {
                schedule: Schedule::Steps {
                    rates: [100.0, 300.0].as_slice().into(),
                    step: Duration::from_millis(600),
                },
                arrivals: Arrivals::Constant,
            },
            Load::Scheduled {
                schedule: Schedule::Ramp {
                    from: 100.0,
                    to: 500.0,
                    over: Duration::from_secs(90),
                },
                arrivals: Arrivals::Poisson,
            },
        ];
        for l in &loads {
            let json = serde_json::to_string(l).unwrap();
            assert_eq!(&serde_json::from_str::<Load>(&json).unwrap(), l, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&loads[0]).unwrap(),
            r#"{"loop":"closed","concurrency":8}"#
        );
    }

    #[test]
    fn generators_loads_add_up_only_when_alike() {
        let open = |rate| Load::Open {
            rate,
            arrivals: Arrivals::Poisson,
        };
        assert_eq!(Load::sum(&[open(100.0), open(50.0)]), Some(open(150.0)));
        let steps = |a: f64, b: f64| Load::Scheduled {
            schedule: Schedule::Steps {
                rates: [a, b].as_slice().into(),
                step: Duration::from_secs(2),
            },
            arrivals: Arrivals::Constant,
        };
        assert_eq!(
            Load::sum(&[steps(100.0, 200.0), steps(10.0, 20.0)]),
            Some(steps(110.0, 220.0))
        );
        assert_eq!(
            Load::sum(&[open(1.0), Load::Closed { concurrency: 1 }]),
            None
        );
        assert_eq!(Load::sum(&[steps(1.0, 2.0), open(1.0)]), None);
    }

    #[test]
    fn rate_specs_are_one_rate_a_list_or_a_range() {
        assert_eq!("250".parse(), Ok(RateSpec::List(vec![250.0])));
        assert_eq!(
            "100, 200,400".parse(),
            Ok(RateSpec::List(vec![100.0, 200.0, 400.0]))
        );
        assert_eq!("100..0.5".parse(), Ok(RateSpec::Range(100.0, 0.5)));
        for bad in ["", "0", "-5", "1,,2", "a..2", "1..", "inf", "NaN"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generators_schedules_add_only_when_alike_and_every_load_has_its_rate() {
        let ms = Duration::from_millis;
        let steps = |rates: Vec<f64>, step: u64| Load::Scheduled {
            schedule: Schedule::Steps {
                rates: rates.into(),
                step: ms(step),
            },
            arrivals: Arrivals::Constant,
        };
        let ramp = |from: f64, to: f64, over: u64| Load::Scheduled {
            schedule: Schedule::Ramp {
                from,
                to,
                over: ms(over),
            },
            arrivals: Arrivals::Poisson,
        };
        let a = steps(vec![100.0, 300.0], 2000);
        let b = steps(vec![10.0, 30.0], 2000);
        assert_eq!(Load::sum([&a, &b]), Some(steps(vec![110.0, 330.0], 2000)));
        // Another step length, another count of steps: not one schedule.
        assert_eq!(Load::sum([&a, &steps(vec![10.0, 30.0], 1000)]), None);
        assert_eq!(Load::sum([&a, &steps(vec![10.0], 2000)]), None);
        assert_eq!(
            Load::sum([&ramp(100.0, 500.0, 4000), &ramp(50.0, 70.0, 4000)]),
            Some(ramp(150.0, 570.0, 4000))
        );
        assert_eq!(
            Load::sum([&ramp(100.0, 500.0, 4000), &ramp(50.0, 70.0, 3000)]),
            None
        );
        // The rate at a point: none in closed loop; a span of no length
        // gives the rate at its start, a later span its own mean.
        let t = ms(2500);
        assert_eq!(Load::Closed { concurrency: 3 }.rate_at(t), None);
        let open = Load::Open {
            rate: 40.0,
            arrivals: Arrivals::Constant,
        };
        assert_eq!(open.rate_at(t), Some(40.0));
        assert_eq!(a.rate_at(t), Some(300.0));
        let Load::Scheduled { schedule, .. } = &a else {
            unreachable!()
        };
        assert_eq!(schedule.mean_rate(2.5, 2.5), 300.0);
        // 1.5 s: 0.5 at 100 and 1 at 300, 350 sends.
        assert!((schedule.mean_rate(1.5, 3.0) - 350.0 / 1.5).abs() < 1e-9);
        assert_eq!(format!("{a}"), "rate 100,300/s steps of 2 s constant");
        assert_eq!(concurrencies("4..4").unwrap(), [4]);
    }

    #[test]
    fn schedules_give_the_rate_and_the_sends_of_any_span() {
        let ms = Duration::from_millis;
        let steps = Schedule::Steps {
            rates: vec![100.0, 300.0].into(),
            step: ms(2000),
        };
        assert_eq!(steps.length(), ms(4000));
        assert_eq!(steps.rate_at(ms(1999)), 100.0);
        assert_eq!(steps.rate_at(ms(2000)), 300.0);
        assert_eq!(steps.rate_at(ms(9000)), 300.0);
        // 1 s at 100 and 1 s at 300.
        assert!((steps.sends_between(1.0, 3.0) - 400.0).abs() < 1e-9);
        assert!((steps.mean_rate(0.0, 4.0) - 200.0).abs() < 1e-9);
        assert_eq!(steps.span_label(2.0, 4.0), "rate 300/s");
        assert_eq!(steps.label(), "rate 100,300/s steps of 2 s");
        let ramp = Schedule::Ramp {
            from: 100.0,
            to: 500.0,
            over: ms(4000),
        };
        assert_eq!(ramp.rate_at(ms(1000)), 200.0);
        assert_eq!(ramp.rate_at(ms(8000)), 500.0);
        // The trapezoid from 1 s (200/s) to 3 s (400/s), and none past the end.
        assert!((ramp.sends_between(1.0, 3.0) - 600.0).abs() < 1e-9);
        assert!((ramp.sends_between(0.0, 10.0) - 1200.0).abs() < 1e-9);
        assert_eq!(ramp.row(), ms(400));
        assert_eq!(ramp.span_label(0.0, 0.4), "rate 100-140/s");
    }

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

impl Default for Load {
    /// One request at a time.
    fn default() -> Self {
        Load::Closed { concurrency: 1 }
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Load {
    /// The load of several generators run at once: concurrencies and
    /// rates added (a schedule's rates at every point); `None` when they
    /// are not the same kind of load.
    pub fn sum<'a>(loads: impl IntoIterator<Item = &'a Load>) -> Option<Load> {
        let mut loads = loads.into_iter();
        let mut total = loads.next()?.clone();
        for l in loads {
            total = match (total, l) {
                (Load::Closed { concurrency: a }, Load::Closed { concurrency: b }) => {
                    Load::Closed { concurrency: a + b }
                }
                (Load::Open { rate: a, arrivals }, Load::Open { rate: b, .. }) => Load::Open {
                    rate: a + b,
                    arrivals,
                },
                (
                    Load::Scheduled { schedule, arrivals },
                    Load::Scheduled {
                        schedule: other, ..
                    },
                ) => Load::Scheduled {
                    schedule: schedule.plus(other)?,
                    arrivals,
                },
                _ => return None,
            };
        }
        Some(total)
    }
}

impl Schedule {
    /// Two generators' schedules of the same shape, rates added.
    fn plus(&self, other: &Schedule) -> Option<Schedule> {
        match (self, other) {
            (
                Schedule::Steps { rates, step },
                Schedule::Steps {
                    rates: r2,
                    step: s2,
                },
            ) if step == s2 && rates.len() == r2.len() => Some(Schedule::Steps {
                rates: rates.iter().zip(r2.iter()).map(|(a, b)| a + b).collect(),
                step: *step,
            }),
            (
                Schedule::Ramp { from, to, over },
                Schedule::Ramp {
                    from: f2,
                    to: t2,
                    over: o2,
                },
            ) if over == o2 => Some(Schedule::Ramp {
                from: from + f2,
                to: to + t2,
                over: *over,
            }),
            _ => None,
        }
    }
}

/// [`Load`] as JSON: tagged by its loop, durations in seconds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "loop", rename_all = "lowercase")]
enum LoadJson {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        arrivals: Arrivals,
    },
    Steps {
        rates: Vec<f64>,
        step_s: f64,
        arrivals: Arrivals,
    },
    Ramp {
        from: f64,
        to: f64,
        over_s: f64,
        arrivals: Arrivals,
    },
}

impl From<Load> for LoadJson {
    fn from(l: Load) -> Self {
        match l {
            Load::Closed { concurrency } => LoadJson::Closed { concurrency },
            Load::Open { rate, arrivals } => LoadJson::Open { rate, arrivals },
            Load::Scheduled {
                schedule: Schedule::Steps { rates, step },
                arrivals,
            } => LoadJson::Steps {
                rates: rates.to_vec(),
                step_s: step.as_secs_f64(),
                arrivals,
            },
            Load::Scheduled {
                schedule: Schedule::Ramp { from, to, over },
                arrivals,
            } => LoadJson::Ramp {
                from,
                to,
                over_s: over.as_secs_f64(),
                arrivals,
            },
        }
    }
}

impl TryFrom<LoadJson> for Load {
    type Error = BadSeconds;

    fn try_from(j: LoadJson) -> Result<Self, BadSeconds> {
        Ok(match j {
            LoadJson::Closed { concurrency } => Load::Closed { concurrency },
            LoadJson::Open { rate, arrivals } => Load::Open { rate, arrivals },
            LoadJson::Steps {
                rates,
                step_s,
                arrivals,
            } => Load::Scheduled {
                schedule: Schedule::Steps {
                    rates: rates.into(),
                    step: seconds(step_s, "step_s")?,
                },
                arrivals,
            },
            LoadJson::Ramp {
                from,
                to,
                over_s,
                arrivals,
            } => Load::Scheduled {
                schedule: Schedule::Ramp {
                    from,
                    to,
                    over: seconds(over_s, "over_s")?,
                },
                arrivals,
            },
        })
    }
}

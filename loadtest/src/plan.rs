//! A load test as typed values: which loads, how each run goes, what every
//! request sends, how the server is reached and what the report must meet.
//! [`TestArgs::plan`] checks the flags and builds one; [`crate::session`]
//! carries it out.

use std::path::PathBuf;
use std::time::Duration;

use rir_client::connect::ConnectOptions;

use crate::args::{BoundArgs, Protocol, TestArgs};
use crate::load::{
    BadConcurrency, BadSeconds, Load, RateSpec, RunOptions, Schedule, Stability, Stop,
    concurrencies, seconds,
};
use crate::search::Goal;
use crate::thresholds::{Percentile, Thresholds};
use crate::workload::{InputData, WorkloadOptions};

/// A flag that cannot be carried out, named as the user typed it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A number that must be finite and at least 0.
    #[error("{flag} must be a non-negative number, not {value}")]
    Negative { flag: &'static str, value: f64 },
    /// A number of seconds that must be more than 0.
    #[error("{flag} must be a positive number of seconds")]
    NotPositiveSeconds { flag: &'static str },
    /// Seconds that are not a duration.
    #[error(transparent)]
    Seconds(#[from] BadSeconds),
    /// `--concurrency` is not a list or a range of counts.
    #[error(transparent)]
    Concurrency(#[from] BadConcurrency),
    /// A share outside 0 to 1.
    #[error("--max-error-rate is a share between 0 and 1, not {0}")]
    ErrorRate(f64),
    /// `--requests 0`.
    #[error("--requests must be at least 1")]
    NoRequests,
    /// `--stability` is not a positive percentage.
    #[error("--stability is a positive percentage, not {0}")]
    Stability(f64),
    /// A range of rates without a ramp length.
    #[error("--rate A..B is a ramp: give its length with --ramp SECONDS")]
    RangeWithoutRamp,
    /// A ramp over a list of rates.
    #[error("--ramp needs a --rate range A..B (a list steps with --step-seconds)")]
    RampWithoutRange,
    /// Steps over a range of rates.
    #[error("--step-seconds needs a --rate list (a range ramps with --ramp)")]
    StepsWithoutList,
    /// Steps and a ramp at once.
    #[error("--step-seconds and --ramp cannot be combined")]
    StepsAndRamp,
    /// The search steps by one rate.
    #[error("--latency-threshold steps by one --rate, not a list or a range")]
    SearchRates,
}

/// The loads a test runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Levels {
    /// Each load in turn, one report each.
    Fixed(Vec<Load>),
    /// The highest level meeting `goal`: concurrencies, or multiples of
    /// the open loop's rate `step`.
    Search { goal: Goal, step: Option<Step> },
}

/// The open-loop rate a search multiplies, and its arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Requests per second at level 1.
    pub rate: f64,
    /// Constant or Poisson.
    pub arrivals: crate::load::Arrivals,
}

impl Levels {
    /// The load of search level `level` (a concurrency, or that multiple
    /// of the step's rate).
    pub fn at(step: Option<Step>, level: u64) -> Load {
        match step {
            Some(s) => Load::Open {
                rate: s.rate * level as f64,
                arrivals: s.arrivals,
            },
            None => Load::Closed {
                concurrency: level as usize,
            },
        }
    }
}

/// Where the server's own figures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFigures {
    /// Its KServe statistics (the default).
    Statistics,
    /// These Prometheus pages, one per replica.
    Metrics(Vec<String>),
    /// None (`--no-server-stats`).
    Off,
}

/// Files the reports are written to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--csv`.
    pub csv: Option<PathBuf>,
    /// `--plot`.
    pub plot: Option<PathBuf>,
    /// `--html`.
    pub html: Option<PathBuf>,
}

/// Everything a load test does, checked.
#[derive(Debug, Clone)]
pub struct TestPlan {
    /// The server's addresses (replicas), as given or the default.
    pub urls: Vec<String>,
    /// gRPC or REST.
    pub protocol: Protocol,
    /// How gRPC connections are made (the URL is each replica's).
    pub connect: ConnectOptions,
    /// The bearer token REST requests carry.
    pub token: Option<String>,
    /// What every request sends.
    pub workload: WorkloadOptions,
    /// The server's account of each run.
    pub figures: ServerFigures,
    /// Share of bad requests mixed in.
    pub bad_fraction: f64,
    /// The loads.
    pub levels: Levels,
    /// How each run goes.
    pub run: RunOptions,
    /// What the reports must meet.
    pub thresholds: Thresholds,
    /// Where the reports go.
    pub outputs: Outputs,
}

impl TestArgs {
    /// The plan these flags describe, or the first flag that cannot be
    /// carried out.
    pub fn plan(&self) -> Result<TestPlan, PlanError> {
        let default_url = match self.protocol {
            Protocol::Grpc => "127.0.0.1:8001",
            Protocol::Http => "127.0.0.1:8000",
        };
        Ok(TestPlan {
            urls: match self.url.is_empty() {
                true => vec![default_url.to_string()],
                false => self.url.clone(),
            },
            protocol: self.protocol,
            connect: self.auth.apply(ConnectOptions {
                url: String::new(),
                tls: self.tls,
                tls_domain: self.tls_domain.clone(),
                connections: self.connections,
                connect_timeout: Duration::from_secs(5),
                ..Default::default()
            }),
            token: self.auth.token.clone(),
            workload: self.workload_options()?,
            figures: match (self.no_server_stats, self.metrics_url.is_empty()) {
                (true, _) => ServerFigures::Off,
                (false, false) => ServerFigures::Metrics(self.metrics_url.clone()),
                (false, true) => ServerFigures::Statistics,
            },
            bad_fraction: self.bad_fraction,
            levels: self.levels()?,
            run: self.run_options()?,
            thresholds: self.bounds.thresholds()?,
            outputs: Outputs {
                json: self.json.clone(),
                csv: self.csv.clone(),
                plot: self.plot.clone(),
                html: self.html.clone(),
            },
        })
    }

    /// The search, or the fixed loads.
    fn levels(&self) -> Result<Levels, PlanError> {
        let Some(bound_ms) = self.latency_threshold else {
            return Ok(Levels::Fixed(self.loads()?));
        };
        let step = match &self.rate {
            None => None,
            Some(RateSpec::List(r)) if r.len() == 1 => Some(Step {
                rate: r[0],
                arrivals: self.arrivals,
            }),
            Some(_) => return Err(PlanError::SearchRates),
        };
        let goal = Goal {
            percentile: self.percentile,
            bound_ms: non_negative(bound_ms, "--latency-threshold")?,
            max_level: self.search_max,
        };
        Ok(Levels::Search { goal, step })
    }

    /// The open-loop rates or schedule, or the closed-loop concurrencies.
    fn loads(&self) -> Result<Vec<Load>, PlanError> {
        let arrivals = self.arrivals;
        let scheduled = |schedule| vec![Load::Scheduled { schedule, arrivals }];
        Ok(match (&self.rate, self.step_seconds, self.ramp) {
            (None, ..) => concurrencies(&self.concurrency)?
                .into_iter()
                .map(|concurrency| Load::Closed { concurrency })
                .collect(),
            (Some(RateSpec::List(rates)), None, None) => rates
                .iter()
                .map(|&rate| Load::Open { rate, arrivals })
                .collect(),
            (Some(RateSpec::List(rates)), Some(s), None) => scheduled(Schedule::Steps {
                rates: rates.as_slice().into(),
                step: positive_seconds(s, "--step-seconds")?,
            }),
            (Some(RateSpec::Range(from, to)), None, Some(s)) => scheduled(Schedule::Ramp {
                from: *from,
                to: *to,
                over: positive_seconds(s, "--ramp")?,
            }),
            (Some(RateSpec::Range(..)), _, None) => return Err(PlanError::RangeWithoutRamp),
            (Some(RateSpec::List(_)), None, Some(_)) => return Err(PlanError::RampWithoutRange),
            (Some(RateSpec::Range(..)), Some(_), _) => return Err(PlanError::StepsWithoutList),
            (Some(_), Some(_), Some(_)) => return Err(PlanError::StepsAndRamp),
        })
    }

    /// Warm-up, the stop, stability windows, intervals.
    fn run_options(&self) -> Result<RunOptions, PlanError> {
        let stop = match self.requests {
            Some(0) => return Err(PlanError::NoRequests),
            Some(n) => Stop::Requests(n),
            None => Stop::Duration(seconds(self.duration, "--duration")?),
        };
        let stability = match self.stability {
            Some(p) if !(p > 0.0 && p.is_finite()) => return Err(PlanError::Stability(p)),
            Some(p) => Some(Stability {
                window: seconds(self.window, "--window")?,
                tolerance: p / 100.0,
                max_windows: self.max_windows.max(3),
            }),
            None => None,
        };
        let interval = match self.interval {
            Some(v) if v <= 0.0 => {
                return Err(PlanError::NotPositiveSeconds { flag: "--interval" });
            }
            Some(v) => Some(seconds(v, "--interval")?),
            None => None,
        };
        // The HTML report draws a run over time: without --interval, it is
        // split about 120 times (every 1 to 60 s) into its timeline.
        let timeline = match (&self.html, interval, &stop) {
            (Some(_), None, Stop::Duration(d)) => Some(
                d.div_f64(120.0)
                    .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            ),
            (Some(_), None, Stop::Requests(_)) => Some(Duration::from_secs(1)),
            _ => None,
        };
        Ok(RunOptions {
            warmup: seconds(self.warmup, "--warmup")?,
            stop,
            stability,
            interval,
            timeline,
            max_in_flight: self.max_in_flight,
            seed: self.seed,
            progress: !self.quiet,
        })
    }

    /// What every request sends.
    fn workload_options(&self) -> Result<WorkloadOptions, PlanError> {
        let timeout = seconds(self.timeout, "--timeout")?;
        Ok(WorkloadOptions {
            api: self.api,
            model: self.model.clone(),
            version: self.model_version.clone(),
            batch: self.batch,
            input: match self.input_data.as_str() {
                "random" => InputData::Random,
                dir => InputData::Dir(PathBuf::from(dir)),
            },
            seed: self.seed,
            top_k: self.top_k,
            timeout: (!timeout.is_zero()).then_some(timeout),
            shapes: self.shape.clone(),
            json_tensors: self.json_tensors,
        })
    }
}

impl BoundArgs {
    /// The bounds, each checked to be a number that can be met.
    pub fn thresholds(&self) -> Result<Thresholds, PlanError> {
        let mut max_latency_ms = vec![];
        for (value, p, flag) in [
            (self.max_p50_ms, Percentile::P50, "--max-p50-ms"),
            (self.max_p90_ms, Percentile::P90, "--max-p90-ms"),
            (self.max_p95_ms, Percentile::P95, "--max-p95-ms"),
            (self.max_p99_ms, Percentile::P99, "--max-p99-ms"),
            (self.max_p999_ms, Percentile::P999, "--max-p999-ms"),
        ] {
            if let Some(v) = value {
                max_latency_ms.push((p, non_negative(v, flag)?));
            }
        }
        let max_error_rate = match self.max_error_rate {
            Some(v) if !(0.0..=1.0).contains(&v) => return Err(PlanError::ErrorRate(v)),
            v => v,
        };
        Ok(Thresholds {
            max_latency_ms,
            max_error_rate,
            min_throughput: self
                .min_throughput
                .map(|v| non_negative(v, "--min-throughput"))
                .transpose()?,
        })
    }
}

/// `value` when it is a finite number at least 0.
fn non_negative(value: f64, flag: &'static str) -> Result<f64, PlanError> {
    match value.is_finite() && value >= 0.0 {
        true => Ok(value),
        false => Err(PlanError::Negative { flag, value }),
    }
}

/// `value` seconds, which must be more than zero.
fn positive_seconds(value: f64, flag: &'static str) -> Result<Duration, PlanError> {
    match seconds(value, flag)? {
        d if d.is_zero() => Err(PlanError::NotPositiveSeconds { flag }),
        d => Ok(d),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;
    use crate::load::Arrivals;

    /// The plan of `rir-loadtest FLAGS` (other modules' tests use it too).
    pub(crate) fn plan(flags: &[&str]) -> Result<TestPlan, PlanError> {
        let cli = Cli::try_parse_from([&["rir-loadtest"][..], flags].concat()).unwrap();
        cli.test.plan()
    }

    #[test]
    fn a_concurrency_range_doubles_and_the_default_url_follows_the_protocol() {
        let p = plan(&["-c", "1..8"]).unwrap();
        let expected: Vec<Load> = [1, 2, 4, 8]
            .map(|concurrency| Load::Closed { concurrency })
            .into();
        assert_eq!(p.levels, Levels::Fixed(expected));
        assert_eq!(p.urls, ["127.0.0.1:8001"]);
        assert_eq!(plan(&["-i", "http"]).unwrap().urls, ["127.0.0.1:8000"]);
        assert_eq!(p.figures, ServerFigures::Statistics);
        assert_eq!(
            plan(&["--no-server-stats"]).unwrap().figures,
            ServerFigures::Off
        );
    }

    #[test]
    fn schedules_and_the_server_s_figures_come_from_the_command_line() {
        let steps = plan(&["--rate", "100,200", "--step-seconds", "2"]).unwrap();
        let want = Load::Scheduled {
            schedule: Schedule::Steps {
                rates: [100.0, 200.0].as_slice().into(),
                step: Duration::from_secs(2),
            },
            arrivals: Arrivals::Constant,
        };
        assert_eq!(steps.levels, Levels::Fixed(vec![want]));
        let ramp = plan(&["--rate", "100..300", "--ramp", "5", "--arrivals", "poisson"]).unwrap();
        let want = Load::Scheduled {
            schedule: Schedule::Ramp {
                from: 100.0,
                to: 300.0,
                over: Duration::from_secs(5),
            },
            arrivals: Arrivals::Poisson,
        };
        assert_eq!(ramp.levels, Levels::Fixed(vec![want]));
        let pages = plan(&["--metrics-url", "http://a:9090,http://b:9090/m"]).unwrap();
        assert_eq!(
            pages.figures,
            ServerFigures::Metrics(vec!["http://a:9090".into(), "http://b:9090/m".into()])
        );
    }

    #[test]
    fn a_search_over_one_rate_steps_by_it() {
        let p = plan(&[
            "--rate",
            "50",
            "--latency-threshold",
            "20",
            "--percentile",
            "90",
        ])
        .unwrap();
        let Levels::Search { goal, step } = p.levels else {
            panic!("{:?}", p.levels);
        };
        assert_eq!((goal.bound_ms, goal.percentile), (20.0, Percentile::P90));
        let step = step.unwrap();
        assert_eq!(
            Levels::at(Some(step), 3),
            Load::Open {
                rate: 150.0,
                arrivals: Arrivals::Constant
            }
        );
        assert_eq!(Levels::at(None, 3), Load::Closed { concurrency: 3 });
        assert_eq!(
            plan(&["--rate", "1,2", "--latency-threshold", "20"]).unwrap_err(),
            PlanError::SearchRates
        );
    }

    #[test]
    fn flags_that_cannot_be_carried_out_are_refused_by_name() {
        let err = |flags: &[&str]| plan(flags).unwrap_err();
        assert_eq!(err(&["--rate", "1..9"]), PlanError::RangeWithoutRamp);
        assert_eq!(
            err(&["--rate", "1", "--ramp", "3"]),
            PlanError::RampWithoutRange
        );
        // Steps over a range: the range asks for its ramp first.
        assert_eq!(
            err(&["--rate", "1..9", "--step-seconds", "3"]),
            PlanError::RangeWithoutRamp
        );
        assert_eq!(
            err(&["--rate", "1,2", "--step-seconds", "0"]),
            PlanError::NotPositiveSeconds {
                flag: "--step-seconds"
            }
        );
        assert_eq!(err(&["-n", "0"]), PlanError::NoRequests);
        assert_eq!(err(&["--stability=-1"]), PlanError::Stability(-1.0));
        assert_eq!(err(&["--max-error-rate", "2"]), PlanError::ErrorRate(2.0));
        assert_eq!(
            err(&["--max-p99-ms=-1"]),
            PlanError::Negative {
                flag: "--max-p99-ms",
                value: -1.0
            }
        );
    }

    #[test]
    fn connection_run_and_request_flags_reach_the_plan() {
        let p = plan(&[
            "--tls",
            "--tls-domain",
            "serve.example",
            "--connections",
            "4",
            "--stability",
            "5",
            "--window",
            "2",
            "--timeout",
            "0",
            "-q",
            "--max-error-rate",
            "0.5",
        ])
        .unwrap();
        let c = &p.connect;
        assert!(c.tls);
        assert_eq!(c.tls_domain.as_deref(), Some("serve.example"));
        assert_eq!(c.connections, 4);
        // 5 % is a tolerance of 0.05, over windows of 2 s.
        let s = p.run.stability.unwrap();
        assert_eq!((s.tolerance, s.window), (0.05, Duration::from_secs(2)));
        assert!(!p.run.progress, "-q turns the progress bars off");
        assert_eq!(p.workload.timeout, None, "--timeout 0: no deadline");
        assert_eq!(p.thresholds.max_error_rate, Some(0.5));
        let p = plan(&["--timeout", "2", "--interval", "0.5"]).unwrap();
        assert_eq!(p.workload.timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.run.interval, Some(Duration::from_millis(500)));
        assert!(p.run.progress);
        let err = |flags: &[&str]| plan(flags).unwrap_err();
        assert_eq!(err(&["--stability", "0"]), PlanError::Stability(0.0));
        assert_eq!(
            err(&["--interval", "0"]),
            PlanError::NotPositiveSeconds { flag: "--interval" }
        );
    }

    #[test]
    fn every_bound_is_carried_to_its_percentile() {
        let p = plan(&[
            "--max-p50-ms",
            "1",
            "--max-p90-ms",
            "2",
            "--max-p95-ms",
            "3",
            "--max-p99-ms",
            "4",
            "--max-p999-ms",
            "5",
        ])
        .unwrap();
        assert_eq!(
            p.thresholds.max_latency_ms,
            [
                (Percentile::P50, 1.0),
                (Percentile::P90, 2.0),
                (Percentile::P95, 3.0),
                (Percentile::P99, 4.0),
                (Percentile::P999, 5.0)
            ]
        );
    }
}

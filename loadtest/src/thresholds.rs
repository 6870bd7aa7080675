//! Bounds a run must meet, for CI: a latency percentile at most so many
//! milliseconds, an error rate at most a share, a throughput at least so
//! many requests per second. The command exits with [`MISSED`] naming each
//! bound a report missed, as k6's thresholds and ghz's are used.

use std::fmt;

use crate::report::{Latency, Report};

/// The exit status of a run that missed a bound (1 is a run that could
/// not be made, 2 bad use).
pub const MISSED: u8 = 3;

/// A latency figure a bound can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Percentile {
    /// The median.
    #[value(name = "50")]
    P50,
    /// 90th.
    #[value(name = "90")]
    P90,
    /// 95th.
    #[value(name = "95")]
    P95,
    /// 99th.
    #[value(name = "99")]
    P99,
    /// 99.9th.
    #[value(name = "99.9")]
    P999,
}

impl Percentile {
    /// The figure in `l`.
    pub fn of(self, l: &Latency) -> f64 {
        match self {
            Percentile::P50 => l.p50,
            Percentile::P90 => l.p90,
            Percentile::P95 => l.p95,
            Percentile::P99 => l.p99,
            Percentile::P999 => l.p999,
        }
    }

    /// As the flags and the table name it.
    pub fn name(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P95 => "p95",
            Percentile::P99 => "p99",
            Percentile::P999 => "p99.9",
        }
    }
}

/// The bounds of a run; empty: none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Latency percentiles and their bounds, milliseconds.
    pub max_latency_ms: Vec<(Percentile, f64)>,
    /// Failed requests over all requests, at most.
    pub max_error_rate: Option<f64>,
    /// Successful requests per second, at least.
    pub min_throughput: Option<f64>,
}

/// One bound one report missed.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    /// The report's load (`concurrency 8`, `rate 200/s constant`).
    pub load: String,
    /// The bound, as its flag names it.
    pub bound: String,
    /// What was measured, with its unit.
    pub measured: String,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} missed {}", self.load, self.measured, self.bound)
    }
}

impl Thresholds {
    /// Whether any bound is set.
    pub fn is_empty(&self) -> bool {
        self.max_latency_ms.is_empty()
            && self.max_error_rate.is_none()
            && self.min_throughput.is_none()
    }

    /// Every bound `r` missed. Latency bounds judge successful requests;
    /// a report with none misses every latency bound.
    pub fn missed(&self, r: &Report) -> Vec<Miss> {
        let miss = |bound: String, measured: String| Miss {
            load: r.label(),
            bound,
            measured,
        };
        let mut out = vec![];
        for &(p, bound) in &self.max_latency_ms {
            let got = p.of(&r.latency_ms);
            if r.ok == 0 || got > bound {
                out.push(miss(
                    format!("--max-{}-ms {bound}", p.name().replace('.', "")),
                    match r.ok {
                        0 => format!("{} (no successful request)", p.name()),
                        _ => format!("{} {got:.3} ms", p.name()),
                    },
                ));
            }
        }
        if let Some(bound) = self.max_error_rate {
            let rate = match r.requests {
                0 => 0.0,
                n => r.failed() as f64 / n as f64,
            };
            if rate > bound {
                out.push(miss(
                    format!("--max-error-rate {bound}"),
                    format!("error rate {rate:.4} ({} of {})", r.failed(), r.requests),
                ));
            }
        }
        if let Some(bound) = self.min_throughput
            && r.requests_per_s < bound
        {
            out.push(miss(
                format!("--min-throughput {bound}"),
                format!("{:.1} requests/s", r.requests_per_s),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: u64, failed: u64, p99: f64, rps: f64) -> Report {
        let mut r = Report {
            load: crate::load::Load::Closed { concurrency: 4 },
            requests: ok + failed,
            ok,
            requests_per_s: rps,
            ..Report::default()
        };
        r.latency_ms.p50 = p99 / 2.0;
        r.latency_ms.p99 = p99;
        r.latency_ms.p999 = p99;
        if failed > 0 {
            r.errors.insert("UNAVAILABLE".into(), failed);
        }
        r
    }

    #[test]
    fn bounds_hold_at_their_edge_and_none_set_is_empty() {
        assert!(Thresholds::default().is_empty());
        let one = |t: Thresholds| assert!(!t.is_empty(), "{t:?}");
        one(Thresholds {
            max_latency_ms: vec![(Percentile::P99, 1.0)],
            ..Thresholds::default()
        });
        one(Thresholds {
            max_error_rate: Some(0.0),
            ..Thresholds::default()
        });
        one(Thresholds {
            min_throughput: Some(0.0),
            ..Thresholds::default()
        });
        // Exactly at a bound is within it: 10 of 1,000 failed against 0.01,
        // 100 requests/s against a minimum of 100.
        let t = Thresholds {
            max_latency_ms: vec![],
            max_error_rate: Some(0.01),
            min_throughput: Some(100.0),
        };
        assert!(t.missed(&report(990, 10, 1.0, 100.0)).is_empty());
        // No successful request misses every latency bound, and says so.
        let t = Thresholds {
            max_latency_ms: vec![(Percentile::P99, 1000.0)],
            ..Thresholds::default()
        };
        let m = t.missed(&report(0, 5, 0.0, 0.0));
        assert_eq!(m[0].measured, "p99 (no successful request)");
    }

    #[test]
    fn each_percentile_bound_reads_its_own_percentile() {
        // Every percentile a different value: a bound judged on a
        // neighbour's figure would pass or miss at the wrong place.
        let mut r = report(1000, 0, 0.0, 1.0);
        let l = &mut r.latency_ms;
        (l.p50, l.p90, l.p95, l.p99, l.p999) = (1.0, 2.0, 3.0, 4.0, 5.0);
        for (p, at) in [
            (Percentile::P50, 1.0),
            (Percentile::P90, 2.0),
            (Percentile::P95, 3.0),
            (Percentile::P99, 4.0),
            (Percentile::P999, 5.0),
        ] {
            let bound = |ms| Thresholds {
                max_latency_ms: vec![(p, ms)],
                ..Thresholds::default()
            };
            assert!(bound(at).missed(&r).is_empty(), "{p:?} at its figure");
            assert_eq!(bound(at - 0.5).missed(&r).len(), 1, "{p:?} just under");
        }
    }

    #[test]
    fn each_bound_is_judged_on_its_own_figure() {
        let t = Thresholds {
            max_latency_ms: vec![(Percentile::P99, 10.0), (Percentile::P50, 10.0)],
            max_error_rate: Some(0.01),
            min_throughput: Some(100.0),
        };
        assert!(t.missed(&report(1000, 0, 9.9, 150.0)).is_empty());
        let m = t.missed(&report(1000, 0, 10.5, 150.0));
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].to_string(),
            "concurrency 4: p99 10.500 ms missed --max-p99-ms 10"
        );
        let m = t.missed(&report(980, 20, 5.0, 150.0));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].to_string()
                .contains("error rate 0.0200 (20 of 1000) missed --max-error-rate 0.01")
        );
        let m = t.missed(&report(1000, 0, 5.0, 99.0));
        assert_eq!(m[0].bound, "--min-throughput 100");
        // Nothing succeeded: every latency bound is missed, not passed.
        assert_eq!(t.missed(&report(0, 10, 0.0, 0.0)).len(), 4);
        assert!(
            Thresholds::default()
                .missed(&report(0, 10, 0.0, 0.0))
                .is_empty()
        );
    }

    #[test]
    fn the_flag_of_p999_has_no_dot() {
        let t = Thresholds {
            max_latency_ms: vec![(Percentile::P999, 1.0)],
            ..Thresholds::default()
        };
        assert_eq!(
            t.missed(&report(10, 0, 2.0, 1.0))[0].bound.as_str(),
            "--max-p999-ms 1"
        );
    }
}

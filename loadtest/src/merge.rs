//! Reports of several generator hosts made into one, for loads that one
//! machine cannot generate. Their latency histograms are added, never their
//! percentiles averaged (the p99 of two runs is not the mean of their p99s),
//! and their counts and throughputs summed: the generators ran at the same
//! time against the same server.

use std::collections::BTreeMap;

use rir_client::balance::{ReplicaCount, Tally};

use crate::load::Load;
use crate::recorder::{HistogramTextError, Recorder, histogram_from_text};
use crate::report::{Latency, Report};

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Fewer than two runs to merge.
    #[error("merge needs the reports of at least two runs, got {0}")]
    TooFew(usize),
    /// The runs measured different numbers of load levels.
    #[error("run {run} has {got} load levels, run 1 has {want}: merge the runs of one sweep")]
    Levels {
        /// The run (1-based) that differs.
        run: usize,
        /// Its levels.
        got: usize,
        /// The first run's levels.
        want: usize,
    },
    /// Two runs differ in something that must be the same to add them.
    #[error("level {level}: run {run} has {what} {got}, run 1 has {want}")]
    Mismatch {
        /// The load level (1-based).
        level: usize,
        /// The run (1-based).
        run: usize,
        /// What differs (`loop`, `batch`).
        what: &'static str,
        /// Its value in that run.
        got: String,
        /// Its value in the first run.
        want: String,
    },
    /// A report without the histogram (written by an older rir-loadtest),
    /// or with one that does not read.
    #[error("level {level} of run {run}: {reason}")]
    Histogram {
        /// The load level (1-based).
        level: usize,
        /// The run (1-based).
        run: usize,
        /// What is wrong with it.
        #[source]
        reason: crate::recorder::HistogramTextError,
    },
}

/// Merges `runs` (each the reports of one generator, one per load level,
/// as `--json` writes them) level by level.
pub fn merge(runs: &[Vec<Report>]) -> Result<Vec<Report>, MergeError> {
    let first = match runs {
        [first, _, ..] => first,
        _ => return Err(MergeError::TooFew(runs.len())),
    };
    for (i, run) in runs.iter().enumerate() {
        if run.len() != first.len() {
            return Err(MergeError::Levels {
                run: i + 1,
                got: run.len(),
                want: first.len(),
            });
        }
    }
    (0..first.len())
        .map(|level| {
            let parts: Vec<&Report> = runs.iter().map(|run| &run[level]).collect();
            merge_level(level + 1, &parts)
        })
        .collect()
}

/// The loop a report ran.
fn loop_of(r: &Report) -> &'static str {
    match r.rate {
        Some(_) => "open",
        None => "closed",
    }
}

/// Checks that `parts` can be added: the same loop and batch.
fn check_alike(level: usize, parts: &[&Report]) -> Result<(), MergeError> {
    let first = parts[0];
    for (i, r) in parts.iter().enumerate().skip(1) {
        let mismatch = |what, got: String, want: String| MergeError::Mismatch {
            level,
            run: i + 1,
            what,
            got,
            want,
        };
        if loop_of(r) != loop_of(first) {
            return Err(mismatch("loop", loop_of(r).into(), loop_of(first).into()));
        }
        if r.batch != first.batch {
            return Err(mismatch(
                "batch",
                r.batch.to_string(),
                first.batch.to_string(),
            ));
        }
    }
    Ok(())
}

/// The load of the generators together, or why they cannot be added.
fn merged_load(level: usize, parts: &[&Report]) -> Result<Load, MergeError> {
    Load::sum(parts.iter().map(|r| &r.load)).ok_or_else(|| {
        let other = parts
            .iter()
            .position(|r| Load::sum([&parts[0].load, &r.load]).is_none());
        MergeError::Mismatch {
            level,
            run: other.map_or(2, |i| i + 1),
            what: "load",
            got: other.map_or_else(String::new, |i| parts[i].load.label()),
            want: parts[0].load.label(),
        }
    })
}

/// The record of every part's successes and failures added together: the
/// same addition as a run's windows get, on what the reports kept.
fn merged_record(level: usize, parts: &[&Report]) -> Result<Recorder, MergeError> {
    let mut record = Recorder::new();
    for (i, r) in parts.iter().enumerate() {
        let bad = |reason| MergeError::Histogram {
            level,
            run: i + 1,
            reason,
        };
        let histogram = histogram_from_text(&r.histogram).map_err(bad)?;
        if histogram.len() != r.ok {
            return Err(bad(HistogramTextError::Count {
                held: histogram.len(),
                ok: r.ok,
            }));
        }
        record.merge(&Recorder {
            latency: histogram,
            errors: r.errors.clone(),
            messages: r.error_messages.clone(),
            replicas: Tally::default(),
            hostile: r.bad_requests.clone(),
            late: r.late_sends,
            not_sent: r.not_sent,
        });
    }
    Ok(record)
}

/// Each replica's counts over every part.
fn merged_replicas(parts: &[&Report]) -> Vec<ReplicaCount> {
    let mut replicas: BTreeMap<String, ReplicaCount> = BTreeMap::new();
    for c in parts.iter().flat_map(|r| &r.replicas) {
        let m = replicas.entry(c.address.clone()).or_default();
        m.address.clone_from(&c.address);
        m.ok += c.ok;
        m.failed += c.failed;
        m.retried_elsewhere += c.retried_elsewhere;
    }
    replicas.into_values().collect()
}

/// The k-th intervals (or timeline splits) of every part merged, for as
/// many as every part has: runs made at the same time split at about the
/// same moments.
fn merged_splits(
    level: usize,
    parts: &[&Report],
    pick: fn(&Report) -> &Vec<Report>,
) -> Result<Vec<Report>, MergeError> {
    let n = parts.iter().map(|r| pick(r).len()).min().unwrap_or(0);
    (0..n)
        .map(|k| {
            let split: Vec<&Report> = parts.iter().map(|r| &pick(r)[k]).collect();
            let mut merged = merge_level(level, &split)?;
            merged.span.clone_from(&split[0].span);
            merged.start_s = split[0].start_s;
            Ok(merged)
        })
        .collect()
}

fn merge_level(level: usize, parts: &[&Report]) -> Result<Report, MergeError> {
    check_alike(level, parts)?;
    let record = merged_record(level, parts)?;
    let sum = |f: fn(&Report) -> u64| parts.iter().map(|r| f(r)).sum::<u64>();
    let concurrency = parts.iter().map(|r| r.concurrency).sum::<Option<usize>>();
    let rate = parts.iter().map(|r| r.rate).sum::<Option<f64>>();
    let requests_per_s: f64 = parts.iter().map(|r| r.requests_per_s).sum();
    let stable = parts
        .iter()
        .map(|r| r.stable)
        .reduce(|a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        })
        .flatten();
    Ok(Report {
        load: merged_load(level, parts)?,
        span: None,
        concurrency,
        rate,
        batch: parts[0].batch,
        seconds: parts.iter().map(|r| r.seconds).fold(0.0, f64::max),
        requests: sum(|r| r.requests),
        ok: sum(|r| r.ok),
        errors: record.errors,
        error_messages: record.messages,
        requests_per_s,
        inferences_per_s: requests_per_s * parts[0].batch as f64,
        latency_ms: Latency::of(&record.latency),
        late_sends: record.late,
        not_sent: record.not_sent,
        stable,
        windows: parts.iter().map(|r| r.windows).max().unwrap_or(1),
        retried: sum(|r| r.retried),
        replicas: merged_replicas(parts),
        bad_requests: record.hostile,
        intervals: merged_splits(level, parts, |r| &r.intervals)?,
        timeline: merged_splits(level, parts, |r| &r.timeline)?,
        start_s: None,
        // Each generator's server figures already cover every generator's
        // requests: the server saw them all. They stay in the parts.
        server: None,
        generators: Some(parts.iter().map(|r| r.generators.unwrap_or(1)).sum()),
        histogram: crate::recorder::histogram_text(&record.latency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;

    /// The report of `n` successes of `micros` each at concurrency `c`,
    /// through JSON as `--json` writes and `merge` reads it.
    fn run(c: usize, latencies: &[(u64, u64)], seconds: f64) -> Report {
        let mut record = Recorder::new();
        for &(micros, n) in latencies {
            record.latency.record_n(micros, n).unwrap();
        }
        let r = Report::new(
            &Load::Closed { concurrency: c },
            1,
            seconds,
            &record,
            None,
            1,
        );
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap()
    }

    #[test]
    fn histograms_add_where_percentiles_would_average_wrong() {
        // 900 requests at 1 ms on one host, 100 at 20 ms on another: the
        // merged p50 is 1 ms and p95 20 ms (by hand: ranks 500 and 950 of
        // 1,000), where averaging each host's figures gives 10.5 and 10.5.
        let a = run(4, &[(1_000, 900)], 10.0);
        let b = run(2, &[(20_000, 100)], 9.0);
        let m = merge(&[vec![a.clone()], vec![b.clone()]])
            .unwrap()
            .remove(0);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        assert!(near(m.latency_ms.p50, 1.0), "{:?}", m.latency_ms);
        assert!(near(m.latency_ms.p95, 20.0), "{:?}", m.latency_ms);
        assert!(near(m.latency_ms.min, 1.0) && near(m.latency_ms.max, 20.0));
        // Mean by hand: (900 x 1 + 100 x 20) / 1,000 = 2.9 ms.
        assert!(near(m.latency_ms.avg, 2.9), "{:?}", m.latency_ms);
        assert_eq!((m.requests, m.ok, m.concurrency), (1_000, 1_000, Some(6)));
        assert_eq!(m.load, Load::Closed { concurrency: 6 });
        assert_eq!(m.label(), "concurrency 6");
        assert!(near(m.requests_per_s, 90.0 + 100.0 / 9.0));
        assert_eq!((m.seconds, m.generators), (10.0, Some(2)));
        // A merged report merges again, counting the generators inside it.
        let again = merge(&[vec![m], vec![a]]).unwrap().remove(0);
        assert_eq!((again.ok, again.generators), (1_900, Some(3)));
    }

    #[test]
    fn open_loop_reports_add_their_rates_errors_and_late_sends() {
        use crate::load::Arrivals;
        let open = |rate: f64, failed: u64, late: u64, not_sent: u64| {
            let mut record = Recorder::new();
            record.latency.record_n(2_000, 100).unwrap();
            record.errors.insert("UNAVAILABLE".into(), failed);
            record.messages.insert("UNAVAILABLE".into(), "down".into());
            (record.late, record.not_sent) = (late, not_sent);
            let load = Load::Open {
                rate,
                arrivals: Arrivals::Poisson,
            };
            let r = Report::new(&load, 1, 10.0, &record, None, 1);
            serde_json::from_str::<Report>(&serde_json::to_string(&r).unwrap()).unwrap()
        };
        let m = merge(&[vec![open(100.0, 3, 5, 1)], vec![open(50.0, 4, 0, 2)]])
            .unwrap()
            .remove(0);
        let poisson = Load::Open {
            rate: 150.0,
            arrivals: Arrivals::Poisson,
        };
        assert_eq!(m.load, poisson);
        assert_eq!(m.label(), "rate 150/s poisson");
        assert_eq!((m.ok, m.requests, m.failed()), (200, 207, 7));
        assert_eq!(m.errors["UNAVAILABLE"], 7);
        assert_eq!((m.late_sends, m.not_sent), (5, 3));
        assert_eq!(m.rate, Some(150.0));
    }

    #[test]
    fn replicas_stability_and_throughput_add_level_by_level() {
        let at = |c: usize, ok: u64, stable: Option<bool>, replicas: &[(&str, u64, u64, u64)]| {
            let mut r = run(c, &[(1_000, ok)], 10.0);
            r.stable = stable;
            r.batch = 2;
            r.replicas = replicas
                .iter()
                .map(|&(a, ok, failed, retried)| ReplicaCount {
                    address: a.into(),
                    ok,
                    failed,
                    retried_elsewhere: retried,
                })
                .collect();
            r
        };
        // Two levels per run; the second run's levels differ from the first's.
        let a = vec![
            at(1, 10, Some(true), &[("x", 6, 1, 0), ("y", 4, 0, 2)]),
            at(4, 40, Some(true), &[]),
        ];
        let b = vec![
            at(2, 20, Some(false), &[("x", 20, 2, 1)]),
            at(8, 80, None, &[]),
        ];
        let m = merge(&[a, b]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].concurrency, m[1].concurrency), (Some(3), Some(12)));
        assert_eq!((m[0].ok, m[1].ok), (30, 120));
        let x = m[0].replicas.iter().find(|r| r.address == "x").unwrap();
        assert_eq!((x.ok, x.failed, x.retried_elsewhere), (26, 3, 1));
        assert_eq!(m[0].replicas.len(), 2);
        // Stable only when both say so; one run's word where the other has none.
        assert_eq!((m[0].stable, m[1].stable), (Some(false), Some(true)));
        // Images per second: requests per second times the batch of 2.
        assert!((m[0].inferences_per_s - 2.0 * m[0].requests_per_s).abs() < 1e-9);
        assert!(
            (m[0].requests_per_s - 3.0).abs() < 1e-9,
            "{}",
            m[0].requests_per_s
        );
    }

    #[test]
    fn a_bad_histogram_or_load_names_its_level_and_run() {
        let a = run(1, &[(1_000, 10)], 1.0);
        let mut bad = a.clone();
        bad.histogram.clear();
        let err = merge(&[vec![a.clone(), a.clone()], vec![a.clone(), bad]]).unwrap_err();
        assert!(err.to_string().starts_with("level 2 of run 2:"), "{err}");
        let mut ramp = a.clone();
        ramp.load = Load::Scheduled {
            schedule: crate::load::Schedule::Ramp {
                from: 1.0,
                to: 2.0,
                over: std::time::Duration::from_secs(1),
            },
            arrivals: crate::load::Arrivals::Constant,
        };
        let err = merge(&[vec![a.clone()], vec![a.clone()], vec![ramp]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "level 1: run 3 has load rate 1..2/s over 1 s constant, run 1 has concurrency 1"
        );
    }

    #[test]
    fn runs_that_cannot_be_added_are_refused_with_the_reason() {
        let a = run(1, &[(1_000, 10)], 1.0);
        let mut open = a.clone();
        open.rate = Some(100.0);
        let mut no_histogram = a.clone();
        no_histogram.histogram.clear();
        let mut spoiled = a.clone();
        spoiled.ok = 11;
        let one = |r: &Report| vec![r.clone()];
        let err = |runs: &[Vec<Report>]| merge(runs).unwrap_err().to_string();
        assert!(err(&[one(&a)]).contains("at least two runs"));
        assert!(err(&[one(&a), vec![a.clone(), a.clone()]]).contains("run 2 has 2 load levels"));
        assert!(err(&[one(&a), one(&open)]).contains("run 2 has loop open, run 1 has closed"));
        assert!(err(&[one(&a), one(&no_histogram)]).contains("no histogram"));
        assert!(err(&[one(&a), one(&spoiled)]).contains("10 latencies for 11 successes"));
        let mut garbage = a.clone();
        garbage.histogram = "not a histogram".into();
        assert!(err(&[one(&a), one(&garbage)]).contains("not base64"));
    }
}

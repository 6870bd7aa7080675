//! The server's cumulative counters sampled at one instant, and what it
//! did between two samples: one point of the live view's charts.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::latency;
use crate::stats::Snapshot;

/// One model version's cumulative counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) images: u64,
    pub(crate) padded: u64,
    pub(crate) request_ns: u64,
    pub(crate) queue_ns: u64,
    pub(crate) infer_ns: u64,
    /// Executions by real batch size.
    pub(crate) batches: BTreeMap<usize, u64>,
    /// Successful requests per latency bucket.
    pub(crate) latency: Vec<u64>,
    /// Failed requests by gRPC code name.
    pub(crate) failures: BTreeMap<String, u64>,
}

impl Counters {
    /// The counters of a statistics snapshot.
    pub(crate) fn of(s: &Snapshot) -> Self {
        let r = &s.requests;
        Counters {
            ok: r.success.count,
            failed: r.fail.count,
            images: s.inference_count,
            padded: s.padded_count,
            request_ns: r.success.ns,
            queue_ns: r.queue.ns,
            infer_ns: r.compute_infer.ns,
            batches: s.batches.iter().map(|(k, d)| (*k, d.count)).collect(),
            latency: s.latency.clone(),
            failures: s.failures.clone(),
        }
    }
}

/// Which statistics a model version's counters came from: its name, its
/// version and the identity of its statistics object (a reload makes a new
/// one that counts from zero).
pub(crate) type VersionKey = (String, u64, usize);

/// Every counter the live view reads, at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Seconds since the server started.
    pub(crate) at_s: f64,
    /// Each served version's counters.
    pub(crate) models: HashMap<VersionKey, Counters>,
    /// Requests the front ends refused or cut before any model saw them,
    /// by kind (`shed: memory`, `stalled: http`, ...).
    pub(crate) refused: BTreeMap<String, u64>,
}

/// What the server did between two samples: one point of each chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Its end, seconds since the server started.
    pub t: f64,
    /// Its length, seconds.
    pub seconds: f64,
    /// Requests answered successfully.
    pub ok: u64,
    /// Requests answered with an error (by a model; refusals are in `errors`).
    pub failed: u64,
    /// Images inferred.
    pub images: u64,
    /// Requests answered (both outcomes) per second.
    pub requests_per_s: f64,
    /// Images inferred per second.
    pub images_per_s: f64,
    /// Latency percentiles of successful requests, arrival to answer,
    /// milliseconds (none when none finished).
    pub p50_ms: Option<f64>,
    /// The same, 90th percentile.
    pub p90_ms: Option<f64>,
    /// The same, 99th percentile.
    pub p99_ms: Option<f64>,
    /// Mean time a successful request waited in the batching queue, ms.
    pub queue_ms: Option<f64>,
    /// Mean time of the engine run a successful request was part of, ms.
    pub compute_ms: Option<f64>,
    /// The rest of its time in the server (decoding, encoding, hand-offs), ms.
    pub rest_ms: Option<f64>,
    /// Engine runs by batch size (real images).
    pub batches: BTreeMap<usize, u64>,
    /// Zero images added to fill batches up to their bucket.
    pub padded: u64,
    /// Errors by gRPC code name, and refusals by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Window {
    /// What happened between `before` and `after`. A version absent from
    /// `before` (loaded since) counts from zero.
    pub(crate) fn between(before: &Sample, after: &Sample) -> Window {
        let zero = Counters::default();
        let mut d = Counters {
            latency: vec![0; latency::BUCKETS],
            ..Counters::default()
        };
        for (key, now) in &after.models {
            add_difference(&mut d, now, before.models.get(key).unwrap_or(&zero));
        }
        let mut errors = d.failures;
        for (kind, n) in &after.refused {
            let was = before.refused.get(kind).copied().unwrap_or(0);
            if *n > was {
                *errors.entry(kind.clone()).or_default() += n - was;
            }
        }
        let seconds = (after.at_s - before.at_s).max(1e-9);
        let per_ok = |ns: u64| (d.ok > 0).then(|| ns as f64 / d.ok as f64 / 1e6);
        let (queue, compute) = (per_ok(d.queue_ns), per_ok(d.infer_ns));
        Window {
            t: after.at_s,
            seconds,
            ok: d.ok,
            failed: d.failed,
            images: d.images,
            requests_per_s: (d.ok + d.failed) as f64 / seconds,
            images_per_s: d.images as f64 / seconds,
            p50_ms: latency::quantile_ms(&d.latency, 0.50),
            p90_ms: latency::quantile_ms(&d.latency, 0.90),
            p99_ms: latency::quantile_ms(&d.latency, 0.99),
            queue_ms: queue,
            compute_ms: compute,
            rest_ms: per_ok(d.request_ns)
                .map(|total| (total - queue.unwrap_or(0.0) - compute.unwrap_or(0.0)).max(0.0)),
            batches: d.batches,
            padded: d.padded,
            errors,
        }
    }
}

/// Adds `now - before` to `sum`, counter by counter.
fn add_difference(sum: &mut Counters, now: &Counters, before: &Counters) {
    let diff = |a: u64, b: u64| a.saturating_sub(b);
    sum.ok += diff(now.ok, before.ok);
    sum.failed += diff(now.failed, before.failed);
    sum.images += diff(now.images, before.images);
    sum.padded += diff(now.padded, before.padded);
    sum.request_ns += diff(now.request_ns, before.request_ns);
    sum.queue_ns += diff(now.queue_ns, before.queue_ns);
    sum.infer_ns += diff(now.infer_ns, before.infer_ns);
    for (size, n) in &now.batches {
        let n = diff(*n, before.batches.get(size).copied().unwrap_or(0));
        if n > 0 {
            *sum.batches.entry(*size).or_default() += n;
        }
    }
    for (i, n) in now.latency.iter().enumerate() {
        if let Some(s) = sum.latency.get_mut(i) {
            *s += diff(*n, before.latency.get(i).copied().unwrap_or(0));
        }
    }
    for (code, n) in &now.failures {
        let n = diff(*n, before.failures.get(code).copied().unwrap_or(0));
        if n > 0 {
            *sum.failures.entry(code.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counters(ok: u64, failed: u64, images: u64) -> Counters {
        Counters {
            ok,
            failed,
            images,
            latency: vec![0; latency::BUCKETS],
            ..Counters::default()
        }
    }

    fn key(name: &str, identity: usize) -> VersionKey {
        (name.to_string(), 1, identity)
    }

    #[test]
    fn a_window_is_the_difference_of_two_samples_per_second() {
        let mut a = counters(100, 2, 400);
        a.queue_ns = 10_000_000;
        a.infer_ns = 50_000_000;
        a.request_ns = 100_000_000;
        a.batches = [(4, 100)].into();
        a.failures = [("InvalidArgument".to_string(), 2)].into();
        let mut b = a.clone();
        // 50 more successes: 30 in 1 ms, 20 in 5 ms; 3 more failures.
        b.ok += 50;
        b.failed += 3;
        b.images += 200;
        b.padded += 6;
        b.queue_ns += 50 * 200_000; // 0.2 ms each
        b.infer_ns += 50 * 1_000_000; // 1 ms each
        b.request_ns += 50 * 1_500_000; // 1.5 ms each
        b.batches = [(4, 140), (2, 5)].into();
        b.latency[latency::bucket(Duration::from_micros(1000))] += 30;
        b.latency[latency::bucket(Duration::from_micros(5000))] += 20;
        b.failures = [
            ("InvalidArgument".to_string(), 3),
            ("Unavailable".to_string(), 2),
        ]
        .into();
        let before = Sample {
            at_s: 10.0,
            models: [(key("m", 1), a)].into(),
            refused: [("shed: memory".to_string(), 4)].into(),
        };
        let after = Sample {
            at_s: 12.0,
            models: [(key("m", 1), b)].into(),
            refused: [
                ("shed: memory".to_string(), 4),
                ("stalled: http".to_string(), 1),
            ]
            .into(),
        };
        let w = Window::between(&before, &after);
        assert_eq!((w.t, w.seconds), (12.0, 2.0));
        assert_eq!((w.ok, w.failed, w.images, w.padded), (50, 3, 200, 6));
        assert_eq!(w.requests_per_s, 26.5);
        assert_eq!(w.images_per_s, 100.0);
        assert!((w.queue_ms.unwrap() - 0.2).abs() < 1e-12);
        assert!((w.compute_ms.unwrap() - 1.0).abs() < 1e-12);
        assert!((w.rest_ms.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(w.batches, [(2, 5), (4, 40)].into());
        // 30 of 50 at 1 ms, 20 at 5 ms: rank 25 is 25/30 through 1 ms's
        // bucket (0.9051 to 1.0763 ms), rank 45 15/20 through 5 ms's
        // (4.3054 to 5.12 ms), rank 50 its top.
        assert!((w.p50_ms.unwrap() - 1.04571).abs() < 1e-4);
        assert!((w.p90_ms.unwrap() - 4.90293).abs() < 1e-4);
        assert!((w.p99_ms.unwrap() - 5.12).abs() < 1e-9);
        let errors: BTreeMap<String, u64> = [
            ("InvalidArgument".to_string(), 1),
            ("Unavailable".to_string(), 2),
            ("stalled: http".to_string(), 1),
        ]
        .into();
        assert_eq!(w.errors, errors, "no new memory shedding");
    }

    #[test]
    fn a_reloaded_version_counts_from_zero_and_a_quiet_window_has_no_latency() {
        let before = Sample {
            at_s: 1.0,
            models: [(key("m", 1), counters(500, 0, 500))].into(),
            refused: BTreeMap::new(),
        };
        // The reload's statistics object is new: its 7 requests are all new.
        let after = Sample {
            at_s: 1.5,
            models: [(key("m", 2), counters(7, 1, 14))].into(),
            refused: BTreeMap::new(),
        };
        let w = Window::between(&before, &after);
        assert_eq!((w.ok, w.failed, w.images), (7, 1, 14));
        assert_eq!(w.requests_per_s, 16.0);
        let quiet = Window::between(&after, &after);
        assert_eq!((quiet.ok, quiet.requests_per_s), (0, 0.0));
        assert_eq!(
            (quiet.p50_ms, quiet.queue_ms, quiet.rest_ms),
            (None, None, None)
        );
        assert!(quiet.errors.is_empty() && quiet.batches.is_empty());
    }
}

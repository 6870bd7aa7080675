//! Request latencies in fine logarithmic buckets, four per doubling from
//! 10 µs to about 10 s: what the live view reads its percentiles from. The
//! Prometheus histograms double per bucket, which is right for a scrape
//! every 15 s over many series but too coarse to read a p50 off (a bucket
//! from 0.4 to 0.8 ms); here a bucket is 19 % wide, so a percentile read
//! at its geometric middle is within 9 %. Recording one is an index
//! computation and an add under the statistics lock already taken.

use std::time::Duration;

/// Buckets per doubling.
const PER_OCTAVE: i32 = 4;

/// The upper bound of the first bucket, microseconds (everything faster
/// falls in it).
const FIRST_US: f64 = 10.0;

/// How many buckets: 20 doublings above 10 µs (about 10.5 s), plus one for
/// everything slower.
pub(crate) const BUCKETS: usize = 20 * PER_OCTAVE as usize + 2;

/// The bucket of latency `d`: bucket `i > 0` holds latencies in
/// `(upper(i - 1), upper(i)]`.
pub(crate) fn bucket(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    let i = ((us / FIRST_US).log2() * f64::from(PER_OCTAVE)).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, milliseconds (the last bucket has none:
/// infinity).
pub(crate) fn upper_ms(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        return f64::INFINITY;
    }
    FIRST_US * 2f64.powf(i as f64 / f64::from(PER_OCTAVE)) / 1e3
}

/// The `q` quantile (0 < q ≤ 1) of the latencies counted per bucket in
/// `counts`, milliseconds. Within the bucket that holds it, latencies are
/// taken as spread evenly on a log scale: the quantile whose rank is a
/// fraction f through the bucket's count reads `lower * (upper/lower)^f`
/// (10 µs in the first bucket, the lower bound in the overflow bucket).
/// None when nothing was counted.
pub(crate) fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest latency with at
    // least q of all at or below it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        if seen + c >= rank {
            let f = (rank - seen) as f64 / c as f64;
            return Some(within_ms(i, f));
        }
        seen += c;
    }
    None
}

/// The latency a fraction `f` through bucket `i`, milliseconds.
fn within_ms(i: usize, f: f64) -> f64 {
    match i {
        0 => FIRST_US / 1e3,
        _ if i + 1 >= BUCKETS => upper_ms(i - 1),
        _ => upper_ms(i - 1) * (upper_ms(i) / upper_ms(i - 1)).powf(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: f64) -> Duration {
        Duration::from_secs_f64(n * 1e-6)
    }

    #[test]
    fn buckets_are_a_quarter_doubling_wide_from_ten_microseconds() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(us(10.0)), 0);
        assert_eq!(bucket(us(10.5)), 1, "just past 10 µs");
        // 2^(1/4) * 10 µs = 11.892 µs is bucket 1's upper bound.
        assert_eq!(bucket(us(11.89)), 1);
        assert_eq!(bucket(us(11.90)), 2);
        // 1 ms = 10 µs * 2^6.644: ceil(26.58) = 27.
        assert_eq!(bucket(us(1000.0)), 27);
        assert!((upper_ms(27) - 0.010 * 2f64.powf(6.75)).abs() < 1e-12);
        assert!((upper_ms(27) - 1.0764).abs() < 1e-4);
        assert!(upper_ms(26) < 1.0 && 1.0 <= upper_ms(27));
        // 20 doublings: 10.486 s; past it, the overflow bucket.
        assert_eq!(bucket(Duration::from_secs(10)), 80);
        assert_eq!(bucket(Duration::from_secs(11)), 81);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(upper_ms(BUCKETS - 1), f64::INFINITY);
    }

    #[test]
    fn quantiles_are_read_on_a_log_scale_through_their_bucket() {
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.5), None);
        let mut counts = [0u64; BUCKETS];
        // 90 requests at 1 ms (bucket 27: 0.9051 to 1.0763 ms) and 10 at
        // 5 ms (bucket 36: 4.3054 to 5.12 ms).
        counts[bucket(us(1000.0))] = 90;
        counts[bucket(us(5000.0))] = 10;
        assert_eq!(bucket(us(5000.0)), 36);
        let q = |p| quantile_ms(&counts, p).unwrap();
        // Rank 50 of bucket 27's 90: 0.9051 * (1.0763 / 0.9051)^(50/90).
        assert!((q(0.5) - 0.99656).abs() < 1e-4, "{}", q(0.5));
        // Rank 90: the bucket's top.
        assert!((q(0.9) - 1.07635).abs() < 1e-4, "{}", q(0.9));
        // Ranks 91 and 99: 1/10 and 9/10 through bucket 36.
        assert!((q(0.91) - 4.38065).abs() < 1e-4, "{}", q(0.91));
        assert!((q(0.99) - 5.03204).abs() < 1e-4, "{}", q(0.99));
        // The fastest bucket reads 10 µs; the overflow its lower bound.
        let mut edges = [0u64; BUCKETS];
        edges[0] = 1;
        edges[BUCKETS - 1] = 1;
        assert_eq!(quantile_ms(&edges, 0.5), Some(0.010));
        assert!((quantile_ms(&edges, 1.0).unwrap() - 10_485.76).abs() < 1e-6);
    }
}

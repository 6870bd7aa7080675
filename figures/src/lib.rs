//! How rir's tools present what they measure: the median of rounds
//! measured in turn (what every benchmark prints, since these machines'
//! speed drifts by more than the differences measured), and, with the
//! `plot` feature, the font their pictures are drawn with.

#![forbid(unsafe_code)]

#[cfg(feature = "plot")]
pub mod font;

/// The median of `values` (the mean of the middle two for an even count;
/// 0 for none): what the benchmarks report of rounds measured in turn,
/// since the machine's speed drifts by more than the differences.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_odd_even_and_no_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}

//! Calibration: the range of every quantized activation, measured on real
//! images by running the float32 model in ONNX Runtime with those tensors
//! made outputs of the graph.
//!
//! Three ways to turn what was seen into a range:
//! - `minmax`: the smallest and largest value seen (no value clipped; a
//!   rare outlier widens the step for all the others);
//! - `percentile`: the 99.99th percentile of the values (and the 0.01th for
//!   a signed tensor), from a 2048-bin histogram;
//! - `entropy`: the clipping threshold whose 8-bit histogram is closest to
//!   the float one in Kullback-Leibler divergence (TensorRT's method).
//!
//! The histograms take a second pass over the images, on bins laid out by
//! the first pass's extremes.

use std::path::Path;

use prost::Message;
use rir_infer::{Engine, OrtEngine, OrtOptions};
use tract_onnx::pb::{ModelProto, TypeProto, ValueInfoProto, tensor_proto::DataType, type_proto};

use crate::error::{ExportError, QuantizeError};

/// How a range is chosen from the calibration images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Smallest and largest value (the default: the most accurate measured
    /// on the default model).
    #[default]
    MinMax,
    /// The 99.99th percentile.
    Percentile,
    /// Least Kullback-Leibler divergence.
    Entropy,
}

impl Method {
    /// The name in `--calibration` and in the model's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minmax" => Ok(Method::MinMax),
            "percentile" => Ok(Method::Percentile),
            "entropy" => Ok(Method::Entropy),
            other => Err(format!(
                "unknown calibration `{other}` (minmax, percentile, entropy)"
            )),
        }
    }
}

/// Bins of the calibration histograms.
pub const BINS: usize = 2048;
/// The share of values a `percentile` range keeps.
pub const PERCENTILE: f64 = 0.9999;

/// What was seen of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Counts of |x| in [`BINS`] equal bins over `[0, max(|min|, |max|)]`
    /// (empty after the first pass).
    pub abs_histogram: Vec<u64>,
    /// Counts of x in [`BINS`] equal bins over `[min, max]`.
    pub histogram: Vec<u64>,
}

impl Observed {
    fn new() -> Self {
        Observed {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            abs_histogram: vec![],
            histogram: vec![],
        }
    }

    fn extreme(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    fn record(&mut self, values: &[f32]) {
        if self.histogram.is_empty() {
            for &v in values {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
            return;
        }
        let span = (self.max - self.min).max(f32::MIN_POSITIVE);
        let extreme = self.extreme().max(f32::MIN_POSITIVE);
        let bin = |x: f32| ((x * BINS as f32) as usize).min(BINS - 1);
        for &v in values {
            self.histogram[bin((v - self.min) / span)] += 1;
            self.abs_histogram[bin(v.abs() / extreme)] += 1;
        }
    }

    /// The range `method` keeps of what was seen.
    pub fn range(&self, method: Method, non_negative: bool) -> (f32, f32) {
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        match method {
            Method::MinMax => (lo, hi),
            Method::Percentile => {
                let span = self.max - self.min;
                let at = |bin: usize| self.min + span * bin as f32 / BINS as f32;
                let total: u64 = self.histogram.iter().sum();
                let cut = ((1.0 - PERCENTILE) * total as f64).round() as u64;
                let (mut below, mut upper) = (0u64, BINS);
                for (i, &c) in self.histogram.iter().enumerate().rev() {
                    below += c;
                    if below > cut {
                        upper = i + 1;
                        break;
                    }
                }
                let mut lower = 0;
                let mut above = 0u64;
                for (i, &c) in self.histogram.iter().enumerate() {
                    above += c;
                    if above > cut {
                        lower = i;
                        break;
                    }
                }
                let lo = if non_negative { 0.0 } else { at(lower) };
                (lo.min(0.0), at(upper).max(0.0))
            }
            Method::Entropy => {
                let levels = if non_negative { 256 } else { 128 };
                let t = self.extreme() * entropy_threshold(&self.abs_histogram, levels) as f32
                    / BINS as f32;
                (lo.max(-t), hi.min(t))
            }
        }
    }
}

/// The number of leading bins of `hist` to keep so that quantizing them to
/// `levels` codes loses the least information (values beyond the last
/// bin kept are clipped into it).
pub fn entropy_threshold(hist: &[u64], levels: usize) -> usize {
    let n = hist.len();
    if n <= levels {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    let tail: Vec<u64> = {
        let mut t = vec![0u64; n + 1];
        for i in (0..n).rev() {
            t[i] = t[i + 1] + hist[i];
        }
        t
    };
    for keep in levels..=n {
        // P: the kept bins, the clipped tail added to the last one.
        let mut p: Vec<f64> = hist[..keep].iter().map(|&c| c as f64).collect();
        p[keep - 1] += tail[keep] as f64;
        // Q: the kept bins merged into `levels` codes, each code's count
        // spread evenly over the bins of it that were not empty.
        let mut q = vec![0f64; keep];
        for l in 0..levels {
            let (a, b) = (
                l * keep / levels,
                ((l + 1) * keep / levels).max(l * keep / levels + 1),
            );
            let sum: u64 = hist[a..b].iter().sum();
            let nonzero = hist[a..b].iter().filter(|&&c| c > 0).count();
            if nonzero > 0 {
                for (j, &c) in hist[a..b].iter().enumerate() {
                    if c > 0 {
                        q[a + j] = sum as f64 / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(pi, _)| **pi > 0.0)
            .map(|(pi, qi)| {
                let (pi, qi) = (pi / ps, (qi / qs).max(1e-12));
                pi * (pi / qi).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, keep);
        }
    }
    best.1
}

/// A copy of `model` that also returns `tensors` (as float32 of any shape).
fn with_outputs(model: &ModelProto, tensors: &[&str]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        for &name in tensors {
            g.output.push(ValueInfoProto {
                name: name.to_string(),
                r#type: Some(TypeProto {
                    denotation: String::new(),
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: None,
                    })),
                }),
                doc_string: String::new(),
            });
        }
    }
    m
}

/// Observes `tensors` of `model` on `images` (`n` images of `chw` floats in
/// [0, 1]), in batches of `batch`, in two passes.
pub fn observe(
    model: &ModelProto,
    tensors: &[&str],
    images: &[f32],
    chw: [usize; 3],
    ort: &OrtOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Observed>, ExportError> {
    let dir = tempfile::tempdir().map_err(|e| ExportError::Io(std::env::temp_dir(), e))?;
    let path = dir.path().join("calibration.onnx");
    std::fs::write(&path, with_outputs(model, tensors).encode_to_vec())
        .map_err(|e| ExportError::Io(path.clone(), e))?;
    run_passes(&path, tensors, images, chw, ort, &mut progress)
}

fn run_passes(
    path: &Path,
    tensors: &[&str],
    images: &[f32],
    chw: [usize; 3],
    ort: &OrtOptions,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<Observed>, ExportError> {
    const BATCH: usize = 32;
    let mut engine = OrtEngine::load(path, ort)?;
    let per = chw.iter().product::<usize>();
    let n = images.len() / per.max(1);
    let mut seen: Vec<Observed> = tensors.iter().map(|_| Observed::new()).collect();
    let steps = n.div_ceil(BATCH);
    for pass in 0..2 {
        if pass == 1 {
            for o in &mut seen {
                o.histogram = vec![0; BINS];
                o.abs_histogram = vec![0; BINS];
            }
        }
        for (step, start) in (0..n).step_by(BATCH).enumerate() {
            let m = BATCH.min(n - start);
            let x = &images[start * per..(start + m) * per];
            let outs = engine.run(x, &[m, chw[0], chw[1], chw[2]])?;
            for (name, o) in tensors.iter().zip(seen.iter_mut()) {
                let t = rir_infer::engine::output(&outs, name)
                    .ok_or_else(|| ExportError::from(QuantizeError::NoOutput(name.to_string())))?;
                o.record(&t.data);
            }
            progress(pass * steps + step + 1, 2 * steps);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_percentile_range_clips_exactly_the_share_beyond_it_on_each_side() {
        // 100,000 values over [-1, 1]: 10 at -1 (bin 0), 10 at +1 (bin
        // 2047), the rest in bins 512 and 1535. The 0.01 % cut is 10
        // values: the 10 on each side go, the next bin is kept. Bin k
        // starts at -1 + 2k/2048: bin 512 at -0.5; the top of bin 1535
        // (the start of 1536) at 0.5.
        let mut histogram = vec![0u64; BINS];
        histogram[0] = 10;
        histogram[512] = 50_000;
        histogram[1535] = 49_980;
        histogram[BINS - 1] = 10;
        let o = Observed {
            min: -1.0,
            max: 1.0,
            abs_histogram: vec![],
            histogram,
        };
        assert_eq!(o.range(Method::Percentile, false), (-0.5, 0.5));
        assert_eq!(
            o.range(Method::Percentile, true),
            (0.0, 0.5),
            "a Relu's floor is 0"
        );
        assert_eq!(o.range(Method::MinMax, false), (-1.0, 1.0));
        // One more value at -1 than the cut: the lower range keeps it.
        let mut wider = o.clone();
        wider.histogram[0] = 11;
        wider.histogram[512] -= 1;
        assert_eq!(wider.range(Method::Percentile, false), (-1.0, 0.5));
    }

    fn observed(values: &[f32]) -> Observed {
        let mut o = Observed::new();
        o.record(values);
        o.histogram = vec![0; BINS];
        o.abs_histogram = vec![0; BINS];
        o.record(values);
        o
    }

    #[test]
    fn the_second_pass_bins_values_over_the_first_passs_extremes() {
        // Over [-1, 1]: x lands in bin (x + 1) / 2 * 2048 (the top one
        // kept in the last bin); |x| in |x| / 1 * 2048.
        let o = observed(&[-1.0, 0.0, 0.5, 1.0, 0.5]);
        let nonzero = |h: &[u64]| -> Vec<(usize, u64)> {
            h.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i, *c))
                .collect()
        };
        assert_eq!((o.min, o.max), (-1.0, 1.0));
        assert_eq!(
            nonzero(&o.histogram),
            [(0, 1), (1024, 1), (1536, 2), (2047, 1)]
        );
        assert_eq!(nonzero(&o.abs_histogram), [(0, 1), (1024, 2), (2047, 2)]);
    }

    #[test]
    fn entropy_keeps_the_bins_whose_two_codes_lose_least_worked_by_hand() {
        // [4, 4, 0, 1] on 2 codes. Keep 2: P = [4, 4 + 1 clipped], Q =
        // [4, 4]: KL = 4/9 ln(8/9) + 5/9 ln(10/9) = 0.0062. Keep 3: P =
        // [4, 4, 1], Q = [4, 4, 0]: the 1 has no code, KL about 2.8.
        // Keep 4: codes {0, 1} and {2, 3}, Q = [4, 4, 0, 1] = P: KL 0.
        assert_eq!(entropy_threshold(&[4, 4, 0, 1], 2), 4);
        // Doubling the mass at the far end only makes keeping it better;
        // an empty tail beyond the codes changes nothing.
        assert_eq!(entropy_threshold(&[4, 4, 0, 2], 2), 4);
        assert_eq!(entropy_threshold(&[4, 4], 2), 2);
        // Longer ones, the divergence of each keep worked out apart (a
        // Python transcription of the method as the module describes it):
        // keeps 2..8 of [8, 0, 6, 3, 0, 0, 1, 1] on 2 codes: 15.32, 0.0455,
        // 0.0073, 2.60, 2.58, 0.0175, 0.0628: keep 4, the tail clipped.
        assert_eq!(entropy_threshold(&[8, 0, 6, 3, 0, 0, 1, 1], 2), 4);
        // Keeps 3..10 of [10, 9, 1, 0, 0, 0, 0, 1, 0, 1] on 3 codes: 0.0545,
        // 2.21, 2.37, 2.21, 2.21, 0.0177, 1.29, 0.221: keep 8.
        assert_eq!(entropy_threshold(&[10, 9, 1, 0, 0, 0, 0, 1, 0, 1], 3), 8);
    }

    #[test]
    fn an_entropy_range_clips_at_its_threshold_bin() {
        // |x| over [0, 2048] in 2048 bins: 100 and 10 alternating in the
        // first 300, one outlier in the last. Worked out apart (a Python
        // transcription of the method): keep 298 bins on 256 codes
        // (divergence 0.109), so the range ends at 2048 x 298 / 2048.
        let mut abs_histogram = vec![0u64; BINS];
        for (i, c) in abs_histogram.iter_mut().take(300).enumerate() {
            *c = if i % 2 == 0 { 100 } else { 10 };
        }
        abs_histogram[BINS - 1] = 1;
        assert_eq!(entropy_threshold(&abs_histogram, 256), 298);
        let o = Observed {
            min: 0.0,
            max: 2048.0,
            abs_histogram,
            histogram: vec![],
        };
        assert_eq!(o.range(Method::Entropy, true), (0.0, 298.0));
    }

    #[test]
    fn the_second_pass_scales_by_the_extreme() {
        // Over [-2, 2]: x in bin (x + 2) / 4 * 2048, |x| in |x| / 2 * 2048.
        let o = observed(&[-2.0, 0.0, 1.0, 2.0]);
        let at = |h: &[u64]| -> Vec<usize> {
            h.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(at(&o.histogram), [0, 1024, 1536, 2047]);
        assert_eq!(at(&o.abs_histogram), [0, 1024, 2047]);
    }

    #[test]
    fn methods_read_back_from_their_names() {
        for (m, name) in [
            (Method::MinMax, "minmax"),
            (Method::Percentile, "percentile"),
            (Method::Entropy, "entropy"),
        ] {
            assert_eq!(m.as_str(), name);
            assert_eq!(name.parse::<Method>(), Ok(m));
        }
        let e = "kl".parse::<Method>().unwrap_err();
        assert!(e.contains("unknown calibration `kl`"), "{e}");
    }

    #[test]
    fn ranges_of_each_method() {
        // 0..=9999 hundredths, plus one outlier at 1000.
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 100.0).collect();
        v.push(1000.0);
        let o = observed(&v);
        assert_eq!(o.range(Method::MinMax, true), (0.0, 1000.0));
        // The percentile drops the outlier: 10,001 values, 1 may go.
        let (lo, hi) = o.range(Method::Percentile, true);
        assert_eq!(lo, 0.0);
        assert!((99.0..=100.5).contains(&hi), "{hi}");
        // Entropy keeps all the mass and at most the outlier: merging the
        // uniform bins loses nothing, so Kullback-Leibler does not ask to
        // clip them (why it suits bell-shaped, not flat, distributions).
        let (lo, t) = o.range(Method::Entropy, true);
        assert!(lo == 0.0 && (99.0..=1000.0).contains(&t), "{t}");
    }

    #[test]
    fn entropy_thresholds_of_exact_cases() {
        // Fewer bins than codes: nothing to clip.
        assert_eq!(entropy_threshold(&[5u64; 200], 256), 200);
        // All the mass in the first 128 bins: 128 codes copy them exactly
        // (divergence 0), the first and so the chosen candidate.
        let mut h: Vec<u64> = (0..128).map(|i| 1 + (i * 7 % 13)).collect();
        h.extend(std::iter::repeat_n(0, 1920));
        assert_eq!(entropy_threshold(&h, 128), 128);
        // An outlier far out is clipped when the mass below is bell-shaped.
        let mut g: Vec<u64> = (0..2048)
            .map(|i| (1e6 * (-((i as f64) / 40.0).powi(2)).exp()) as u64)
            .collect();
        g[2047] = 1;
        assert!(entropy_threshold(&g, 128) < 2048);
    }

    /// `image` [batch, 1, 2, 2] -> Relu -> `r` -> Neg -> `y`, the graph's
    /// only output.
    fn relu_neg() -> ModelProto {
        use crate::graph::{GraphBuilder, value_info};
        let mut g = GraphBuilder::default();
        g.node("Relu", &["image"], vec![], Some("r"));
        g.node("Neg", &["r"], vec![], Some("y"));
        let dims = [None, Some(1), Some(2), Some(2)];
        let graph = g.finish(
            "t",
            vec![value_info("image", &dims)],
            vec![value_info("y", &dims)],
        );
        crate::export::model_of(graph)
    }

    #[test]
    fn onnx_runtime_shows_every_image_of_an_inner_tensor_once_per_pass() {
        // 72 images of 4 pixels, pixel k of all 288 = k / 288 - 0.5: the
        // Relu's output `r` is 0 for k <= 144 (145 values) and k / 288 - 0.5
        // above, up to 143 / 288. Batches of 32, 32 and 8; two passes.
        let images: Vec<f32> = (0..288).map(|k| k as f32 / 288.0 - 0.5).collect();
        let mut steps = Vec::new();
        let seen = observe(
            &relu_neg(),
            &["r", "y"],
            &images,
            [1, 2, 2],
            &OrtOptions::default(),
            |done, of| steps.push((done, of)),
        )
        .unwrap();
        assert_eq!(steps, (1..=6).map(|k| (k, 6)).collect::<Vec<_>>());
        let top = 287f32 / 288.0 - 0.5;
        let (r, y) = (&seen[0], &seen[1]);
        assert_eq!((r.min, r.max), (0.0, top));
        assert_eq!((y.min, y.max), (-top, 0.0));
        for o in [r, y] {
            assert_eq!(o.histogram.iter().sum::<u64>(), 288, "each value once");
            assert_eq!(o.abs_histogram.iter().sum::<u64>(), 288);
            assert_eq!((o.abs_histogram[0], o.abs_histogram[BINS - 1]), (145, 1));
        }
        // The zeros are the bottom of r's range and the top of y's; the
        // extreme is the other end of each.
        assert_eq!((r.histogram[0], r.histogram[BINS - 1]), (145, 1));
        assert_eq!((y.histogram[0], y.histogram[BINS - 1]), (1, 145));
        // The graph given is not changed; a tensor it lacks is an error.
        assert_eq!(relu_neg().graph.unwrap().output.len(), 1);
        let absent = observe(
            &relu_neg(),
            &["nowhere"],
            &images,
            [1, 2, 2],
            &OrtOptions::default(),
            |_, _| {},
        );
        assert!(absent.is_err());
    }

    #[test]
    fn a_tensor_made_an_output_is_named_float32_of_any_shape() {
        let m = with_outputs(&relu_neg(), &["r", "image"]);
        let outputs = &m.graph.as_ref().unwrap().output;
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["y", "r", "image"]);
        for o in &outputs[1..] {
            let Some(type_proto::Value::TensorType(t)) =
                o.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                panic!("{o:?} is not a tensor");
            };
            assert_eq!((t.elem_type, &t.shape), (DataType::Float as i32, &None));
        }
        assert_eq!(m.graph.unwrap().node, relu_neg().graph.unwrap().node);
    }
}

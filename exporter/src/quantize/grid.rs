//! The 8-bit grids: how float tensors map onto integers and back.
//!
//! Every mapping follows ONNX's `QuantizeLinear`:
//! `q = saturate(round_half_even(x / scale) + zero_point)`, and
//! `DequantizeLinear`: `x = (q - zero_point) * scale`.

/// The parameters of one uint8 activation tensor (per tensor, asymmetric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationGrid {
    /// Float step between two neighbouring codes.
    pub scale: f32,
    /// The code of 0.0.
    pub zero_point: u8,
}

impl ActivationGrid {
    /// The grid that spans `[lo, hi]` with 256 codes. The range is widened to
    /// hold 0, so that zero padding and a Relu's floor land on a code exactly;
    /// for a range that starts at 0 (the output of a Relu) the zero point is
    /// 0 and every code lies in the range.
    pub fn spanning(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let span = hi - lo;
        if !span.is_finite() || span <= 0.0 {
            // A tensor that was 0 on every calibration image.
            return ActivationGrid {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        ActivationGrid { scale, zero_point }
    }

    /// The code of `x`.
    pub fn quantize(self, x: f32) -> u8 {
        ((x / self.scale).round_ties_even() + f32::from(self.zero_point)).clamp(0.0, 255.0) as u8
    }

    /// The value of code `q`.
    pub fn dequantize(self, q: u8) -> f32 {
        (f32::from(q) - f32::from(self.zero_point)) * self.scale
    }
}

/// A convolution kernel on a symmetric int8 grid, one scale per output
/// channel (or one for the whole kernel).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightGrid {
    /// Codes in `[-max_code, max_code]`, in the kernel's layout.
    pub codes: Vec<i8>,
    /// One scale per output channel (length 1 when per tensor).
    pub scales: Vec<f32>,
}

/// How kernels are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightScheme {
    /// One scale per output channel (true) or one per kernel.
    pub per_channel: bool,
    /// The largest code: 127 (full int8), or 63 (7 bits, ONNX Runtime's
    /// `reduce_range`: no product pair can overflow the 16-bit sums of
    /// AVX2's `vpmaddubsw`, at the price of one bit of precision).
    pub max_code: i8,
}

impl Default for WeightScheme {
    fn default() -> Self {
        WeightScheme {
            per_channel: true,
            max_code: 127,
        }
    }
}

/// Quantizes the kernel `w` of `out_channels` rows: symmetric, so the zero
/// point is 0 and the scale is the largest |w| over `max_code`.
pub fn quantize_weights(w: &[f32], out_channels: usize, scheme: WeightScheme) -> WeightGrid {
    let groups = if scheme.per_channel {
        out_channels.max(1)
    } else {
        1
    };
    let per = w.len() / groups;
    let max_code = f32::from(scheme.max_code);
    let mut codes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(groups);
    for row in w.chunks(per.max(1)).take(groups) {
        let largest = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 {
            largest / max_code
        } else {
            1.0
        };
        scales.push(scale);
        codes.extend(
            row.iter()
                .map(|v| (v / scale).round_ties_even().clamp(-max_code, max_code) as i8),
        );
    }
    WeightGrid { codes, scales }
}

impl WeightGrid {
    /// The scale of output channel `c`.
    pub fn scale(&self, c: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[c]
        }
    }

    /// The float kernel the codes stand for.
    pub fn dequantize(&self, out_channels: usize) -> Vec<f32> {
        let per = self.codes.len() / out_channels.max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * self.scale(i / per.max(1)))
            .collect()
    }
}

/// A convolution bias on the int32 grid of its accumulator: channel `c`'s
/// scale is the input's scale times the kernel's scale of `c`, so the
/// integer kernel adds it to the sum of products as it is.
pub fn quantize_bias(bias: &[f32], input_scale: f32, w: &WeightGrid) -> (Vec<i32>, Vec<f32>) {
    let scales: Vec<f32> = (0..bias.len()).map(|c| input_scale * w.scale(c)).collect();
    let codes = bias
        .iter()
        .zip(&scales)
        .map(|(b, s)| (f64::from(*b) / f64::from(*s)).round_ties_even() as i32)
        .collect();
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_already_on_the_grid_round_trips_exactly() {
        // Channel 0 on steps of 1/64 reaching 127/64; channel 1 on steps of 1/8.
        let row0: Vec<f32> = [-127, -3, 0, 5, 64, 127]
            .iter()
            .map(|&k| k as f32 / 64.0)
            .collect();
        let row1: Vec<f32> = [127, -127, 1, 0, -1, 2]
            .iter()
            .map(|&k| k as f32 / 8.0)
            .collect();
        let w: Vec<f32> = row0.iter().chain(&row1).copied().collect();
        let g = quantize_weights(&w, 2, WeightScheme::default());
        assert_eq!(g.scales, vec![1.0 / 64.0, 1.0 / 8.0]);
        assert_eq!(
            g.codes,
            vec![-127, -3, 0, 5, 64, 127, 127, -127, 1, 0, -1, 2]
        );
        assert_eq!(g.dequantize(2), w, "bit for bit");
    }

    #[test]
    fn scales_and_zero_points_of_a_two_channel_example() {
        // Hand-computed: channel 0 max |w| = 2.54 -> scale 0.02, 1.0 -> code 50;
        // channel 1 max |w| = 0.127 -> scale 0.001, -0.063 -> -63.
        let w = [2.54, -1.0, 1.0, 0.0, 0.127, -0.063, 0.001, 0.0];
        let g = quantize_weights(&w, 2, WeightScheme::default());
        assert!((g.scales[0] - 0.02).abs() < 1e-7 && (g.scales[1] - 0.001).abs() < 1e-9);
        assert_eq!(g.codes, vec![127, -50, 50, 0, 127, -63, 1, 0]);
        // Per tensor: one scale, 0.02, and channel 1 mostly rounds to 0.
        let t = quantize_weights(
            &w,
            2,
            WeightScheme {
                per_channel: false,
                max_code: 127,
            },
        );
        assert_eq!(t.scales.len(), 1);
        assert_eq!(t.codes[4..], [6, -3, 0, 0]);
        // Seven bits: max |w| maps to 63.
        let r = quantize_weights(
            &w,
            2,
            WeightScheme {
                per_channel: true,
                max_code: 63,
            },
        );
        assert_eq!((r.codes[0], r.codes[4]), (63, 63));

        // Activations: [-1, 3] -> scale 4/255, zero point round(255/4) = 64;
        // a Relu's [0, 5.1] -> scale 0.02, zero point 0.
        let a = ActivationGrid::spanning(-1.0, 3.0);
        assert_eq!(a.zero_point, 64);
        assert!((a.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(a.quantize(0.0), 64, "0 is a code");
        assert_eq!(a.quantize(-5.0), 0, "saturates");
        let r = ActivationGrid::spanning(0.0, 5.1);
        assert_eq!(
            (r.zero_point, r.quantize(5.1), r.quantize(-1.0)),
            (0, 255, 0)
        );
        assert!((r.dequantize(50) - 1.0).abs() < 1e-6);
        // Back from codes on the signed grid: (q - 64) * 4/255.
        assert_eq!(a.dequantize(64), 0.0);
        assert!((a.dequantize(0) + 256.0 / 255.0).abs() < 1e-6);
        assert!((a.dequantize(255) - 764.0 / 255.0).abs() < 1e-6);
        // A kernel row of zeros keeps scale 1 (not 0, which would make
        // every later division by it infinite) and codes 0.
        let z = quantize_weights(&[0.0, 0.0, 1.27, 0.0], 2, WeightScheme::default());
        assert_eq!(z.scales, [1.0, 0.01]);
        assert_eq!(z.codes, [0, 0, 127, 0]);
        // A range that excludes 0 is widened to hold it.
        assert_eq!(ActivationGrid::spanning(2.0, 5.1), r);
        assert_eq!(ActivationGrid::spanning(0.0, 0.0).scale, 1.0);

        // The bias lands on the accumulator's grid: scale 0.02 * s_w[c].
        let (codes, scales) = quantize_bias(&[0.5, -0.001], 0.02, &g);
        assert!((scales[0] - 0.0004).abs() < 1e-9 && (scales[1] - 0.00002).abs() < 1e-10);
        assert_eq!(codes, vec![1250, -50]);
    }
}

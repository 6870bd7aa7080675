//! Turning u8 images into normalized f32 batches, with the standard CIFAR
//! augmentation: zero-pad, random crop back to size, random horizontal flip.

use rir_arch::DatasetInfo;

use crate::dataset::Split;
use crate::rng::Rng;

/// Training-time augmentation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Pixels of zero padding on each side before the random crop (0: no crop).
    pub pad: usize,
    /// Whether to flip half of the images left-right.
    pub flip: bool,
}

impl Augment {
    /// No augmentation (evaluation).
    pub const NONE: Augment = Augment {
        pad: 0,
        flip: false,
    };
}

/// Writes the images `indices` of `split` into `out` as normalized f32 NCHW,
/// and their labels into `labels`. With `aug`, each image gets a random crop
/// offset and flip drawn from `rng`, in index order.
pub fn fill_batch(
    info: &DatasetInfo,
    split: &Split,
    indices: &[usize],
    aug: Augment,
    rng: &mut Rng,
    out: &mut Vec<f32>,
    labels: &mut Vec<i64>,
) {
    let (c, h, w) = (info.input.channels, info.input.height, info.input.width);
    let plane = h * w;
    out.clear();
    out.resize(indices.len() * c * plane, 0.0);
    labels.clear();
    let scale: Vec<f32> = info.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let shift: Vec<f32> = info
        .mean
        .iter()
        .zip(&info.std)
        .map(|(m, s)| -m / s)
        .collect();
    for (b, &idx) in indices.iter().enumerate() {
        labels.push(split.labels[idx] as i64);
        let img = split.image(idx, c * plane);
        let (dy, dx, flip) = if aug.pad > 0 || aug.flip {
            let span = 2 * aug.pad + 1;
            let dy = if aug.pad > 0 {
                rng.below(span) as isize - aug.pad as isize
            } else {
                0
            };
            let dx = if aug.pad > 0 {
                rng.below(span) as isize - aug.pad as isize
            } else {
                0
            };
            (dy, dx, aug.flip && rng.below(2) == 1)
        } else {
            (0, 0, false)
        };
        let dst = &mut out[b * c * plane..(b + 1) * c * plane];
        for ch in 0..c {
            let src = &img[ch * plane..(ch + 1) * plane];
            let d = &mut dst[ch * plane..(ch + 1) * plane];
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    let p = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        src[sy as usize * w + sx as usize]
                    } else {
                        0
                    };
                    d[y * w + x] = p as f32 * scale[ch] + shift[ch];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_arch::InputSpec;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "t".into(),
            class_names: vec!["a".into(), "b".into()],
            mean: vec![0.5],
            std: vec![0.25],
            input: InputSpec::new(1, 2, 3),
        }
    }

    #[test]
    fn plain_batch_is_normalized_in_order() {
        let split = Split {
            images: vec![0, 51, 102, 153, 204, 255],
            labels: vec![1],
        };
        let (mut out, mut labels) = (vec![], vec![]);
        fill_batch(
            &info(),
            &split,
            &[0],
            Augment::NONE,
            &mut Rng::new(0),
            &mut out,
            &mut labels,
        );
        let want: Vec<f32> = [0.0f32, 0.2, 0.4, 0.6, 0.8, 1.0]
            .iter()
            .map(|v| (v - 0.5) / 0.25)
            .collect();
        assert_eq!(out.len(), want.len(), "{out:?}");
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {want:?}");
        }
        assert_eq!(labels, vec![1]);
    }

    #[test]
    fn flip_only_mirrors_rows() {
        let split = Split {
            images: vec![0, 51, 102, 153, 204, 255],
            labels: vec![0],
        };
        let aug = Augment { pad: 0, flip: true };
        let mut rng = Rng::new(3);
        let (mut out, mut labels) = (vec![], vec![]);
        let mut flipped = 0;
        for _ in 0..50 {
            fill_batch(&info(), &split, &[0], aug, &mut rng, &mut out, &mut labels);
            let px: Vec<u8> = out
                .iter()
                .map(|v| ((v * 0.25 + 0.5) * 255.0).round() as u8)
                .collect();
            if px == vec![102, 51, 0, 255, 204, 153] {
                flipped += 1;
            } else {
                assert_eq!(px, vec![0, 51, 102, 153, 204, 255]);
            }
        }
        assert!((10..40).contains(&flipped), "{flipped}");
    }
}

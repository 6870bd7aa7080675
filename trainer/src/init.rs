//! The initializations of the paper's search for the convolution kernels
//! (He-normal, the default; He-uniform; Xavier-normal; orthogonal), drawn
//! from generators seeded by the run's seed and each variable's name.
//! Unlike libtorch's global generator, these cannot be disturbed by other
//! threads drawing random numbers at the same time, so a seed always gives
//! the same network. BatchNorm starts at scale 1 and shift 0 whichever is
//! chosen, and the masked-out blocks of a kernel stay out of the network
//! (the mask multiplies the kernel in the forward pass).

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How convolution kernels start (`--init`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Normal, std √(2 / fan_in) (He et al.; the paper's).
    #[default]
    HeNormal,
    /// Uniform on ±√(6 / fan_in): He's variance from a uniform draw.
    HeUniform,
    /// Normal, std √(2 / (fan_in + fan_out)) (Glorot and Bengio).
    XavierNormal,
    /// Rows (output channels) orthonormal over the flattened fan-in, or
    /// columns when there are more rows (Saxe et al.; gain 1).
    Orthogonal,
}

/// Re-initializes every convolution kernel (4-D variable) of `vs` with
/// `init`, from generators seeded by `seed` and the variable's name.
pub fn init_kernels(vs: &tch::nn::VarStore, init: Init, seed: u64) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let shape = t.size();
            if shape.len() != 4 {
                continue;
            }
            let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            let mut rng = rir_data::rng::Rng::new(seed ^ name_hash);
            let src = kernel(&shape, init, &mut rng).to_device(t.device());
            t.copy_(&src);
        }
    });
}

/// A kernel of `shape` (out, in, kh, kw) drawn by `init`.
pub fn kernel(shape: &[i64], init: Init, rng: &mut rir_data::rng::Rng) -> Tensor {
    let n = shape.iter().product::<i64>() as usize;
    let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
    let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
    let normal = |rng: &mut rir_data::rng::Rng, std: f64| -> Vec<f32> {
        (0..n).map(|_| (rng.normal() * std) as f32).collect()
    };
    let values = match init {
        Init::HeNormal => normal(rng, (2.0 / fan_in).sqrt()),
        Init::HeUniform => {
            let bound = (6.0 / fan_in).sqrt();
            (0..n)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                .collect()
        }
        Init::XavierNormal => normal(rng, (2.0 / (fan_in + fan_out)).sqrt()),
        Init::Orthogonal => normal(rng, 1.0),
    };
    let t = Tensor::from_slice(&values);
    match init {
        Init::Orthogonal => orthogonal(&t.view([shape[0], fan_in as i64])).view(shape),
        _ => t.view(shape),
    }
}

/// The orthonormal factor of the QR decomposition of `a` (rows x cols), or
/// of its transpose when it is wide, with the signs that make it unique.
fn orthogonal(a: &Tensor) -> Tensor {
    let (rows, cols) = (a.size()[0], a.size()[1]);
    let tall = if rows < cols {
        a.tr()
    } else {
        a.shallow_clone()
    };
    let (q, r) = Tensor::linalg_qr(&tall, "reduced");
    let q = q * r.diagonal(0, 0, 1).sign().unsqueeze(0);
    if rows < cols { q.tr() } else { q }.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn std_of(t: &Tensor) -> f64 {
        t.std(true).double_value(&[])
    }

    #[test]
    fn each_init_has_its_distribution() {
        let shape = [128, 64, 3, 3];
        let (fan_in, fan_out) = (64.0 * 9.0, 128.0 * 9.0);
        let mut rng = rir_data::rng::Rng::new(3);
        let near = |got: f64, want: f64| {
            assert!((got / want - 1.0).abs() < 0.02, "{got} vs {want}");
        };
        near(
            std_of(&kernel(&shape, Init::HeNormal, &mut rng)),
            (2.0f64 / fan_in).sqrt(),
        );
        let u = kernel(&shape, Init::HeUniform, &mut rng);
        let bound = (6.0f64 / fan_in).sqrt();
        assert!(u.abs().max().double_value(&[]) <= bound);
        // A uniform on ±b has std b/√3: He's √(2 / fan_in) again.
        near(std_of(&u), (2.0f64 / fan_in).sqrt());
        near(
            std_of(&kernel(&shape, Init::XavierNormal, &mut rng)),
            (2.0f64 / (fan_in + fan_out)).sqrt(),
        );
    }

    #[test]
    fn orthogonal_kernels_have_orthonormal_rows_or_columns() {
        let mut rng = rir_data::rng::Rng::new(5);
        // 32 rows over a fan-in of 144: the rows are orthonormal.
        let w = kernel(&[32, 16, 3, 3], Init::Orthogonal, &mut rng).view([32, 144]);
        let gram = w.matmul(&w.tr());
        let eye = Tensor::eye(32, (Kind::Float, tch::Device::Cpu));
        assert!(gram.allclose(&eye, 1e-4, 1e-5, false));
        // 64 rows over a fan-in of 16 (1x1): the columns are.
        let w = kernel(&[64, 16, 1, 1], Init::Orthogonal, &mut rng).view([64, 16]);
        let gram = w.tr().matmul(&w);
        let eye = Tensor::eye(16, (Kind::Float, tch::Device::Cpu));
        assert!(gram.allclose(&eye, 1e-4, 1e-5, false));
    }

    #[test]
    fn a_seed_gives_the_same_kernel_and_he_normal_is_unchanged() {
        let draw = |seed| {
            kernel(
                &[4, 2, 3, 3],
                Init::HeNormal,
                &mut rir_data::rng::Rng::new(seed),
            )
        };
        assert!(draw(1).equal(&draw(1)));
        assert!(!draw(1).equal(&draw(2)));
        // The first value is the generator's first normal times √(2/18),
        // as the He-normal initialization has always drawn it.
        let first = rir_data::rng::Rng::new(1).normal() * (2.0f64 / 18.0).sqrt();
        assert!((draw(1).view([-1]).double_value(&[0]) - first).abs() < 1e-6);
    }
}

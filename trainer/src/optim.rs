//! The optimizers of the paper's search (SGD with momentum, optionally
//! Nesterov; Adam; RMSprop), with L2 weight decay on the convolution
//! kernels only, written out so that their state (the per-tensor buffers)
//! is ours to checkpoint and restore exactly.
//!
//! Each follows its PyTorch counterpart with the defaults noted, the decay
//! added to the gradient first (`g ← ∇ + λ·w`, decayed tensors only):
//! - SGD (`torch.optim.SGD`, `dampening = 0`): `b ← μ·b + g`, then
//!   `w ← w − η·(g + μ·b)` with Nesterov or `w ← w − η·b` without.
//! - Adam (`torch.optim.Adam`, `amsgrad = false`): `m ← β₁·m + (1−β₁)·g`,
//!   `v ← β₂·v + (1−β₂)·g²`, `w ← w − η·m̂ / (√v̂ + ε)` with the bias
//!   corrections `m̂ = m / (1−β₁ᵗ)`, `v̂ = v / (1−β₂ᵗ)` at step t.
//! - RMSprop (`torch.optim.RMSprop`, no momentum, not centered):
//!   `s ← α·s + (1−α)·g²`, `w ← w − η·g / (√s + ε)`.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn::VarStore};

use crate::model::decays;

/// Which update rule, by name (`--optimizer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (the paper's and the default).
    #[default]
    Sgd,
    /// Adam.
    Adam,
    /// RMSprop.
    Rmsprop,
}

/// An update rule and its coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// SGD with momentum μ, optionally Nesterov.
    Sgd {
        /// Momentum coefficient μ.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam.
    Adam {
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the root of the second moment.
        eps: f64,
    },
    /// RMSprop.
    RmsProp {
        /// Decay of the mean square.
        alpha: f64,
        /// Added to its root.
        eps: f64,
    },
}

impl Rule {
    /// SGD with momentum μ (the form most callers use).
    pub fn sgd(momentum: f64, nesterov: bool) -> Rule {
        Rule::Sgd { momentum, nesterov }
    }

    /// The names of the buffers it keeps per tensor, as the checkpoint
    /// stores them (`momentum` is the name checkpoints have always had).
    pub fn buffers(&self) -> &'static [&'static str] {
        match self {
            Rule::Sgd { .. } => &["momentum"],
            Rule::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            Rule::RmsProp { .. } => &["square_avg"],
        }
    }
}

/// One trainable tensor and the rule's buffers for it.
#[derive(Debug)]
pub struct Param {
    /// Variable name in the store (and in the checkpoint).
    pub name: String,
    /// The variable itself (shares storage with the store).
    pub tensor: Tensor,
    /// The rule's buffers, in the order of [`Rule::buffers`], same shape.
    pub state: Vec<Tensor>,
    /// Whether L2 applies.
    pub decay: bool,
}

/// The optimizer.
#[derive(Debug)]
pub struct Optimizer {
    /// Trainable tensors, sorted by name.
    pub params: Vec<Param>,
    /// The update rule.
    pub rule: Rule,
    /// L2 coefficient λ.
    pub weight_decay: f64,
    /// Updates applied so far (Adam's bias correction counts them; a
    /// resumed run sets it from the checkpoint's step).
    pub steps: u64,
}

impl Optimizer {
    /// Collects the trainable variables of `vs`, sorted by name.
    pub fn new(vs: &VarStore, rule: Rule, weight_decay: f64) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_named(named, rule, weight_decay)
    }

    /// An optimizer over explicitly named tensors (the benchmark's
    /// four-convolution form, which lives outside a store).
    pub fn from_named(named: Vec<(String, Tensor)>, rule: Rule, weight_decay: f64) -> Self {
        let params = named
            .into_iter()
            .map(|(name, tensor)| Param {
                decay: decays(&name, &tensor.size()),
                state: rule.buffers().iter().map(|_| tensor.zeros_like()).collect(),
                name,
                tensor,
            })
            .collect();
        Optimizer {
            params,
            rule,
            weight_decay,
            steps: 0,
        }
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Applies one update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if p.decay && self.weight_decay > 0.0 {
                    &grad + &p.tensor * self.weight_decay
                } else {
                    grad
                };
                let update = match self.rule {
                    Rule::Sgd { momentum, nesterov } => {
                        let b = &mut p.state[0];
                        let _ = b.g_mul_scalar_(momentum).g_add_(&g);
                        match nesterov {
                            true => &g + &*b * momentum,
                            false => b.shallow_clone(),
                        }
                    }
                    Rule::Adam { beta1, beta2, eps } => {
                        let _ = p.state[0]
                            .g_mul_scalar_(beta1)
                            .g_add_(&(&g * (1.0 - beta1)));
                        let _ = p.state[1]
                            .g_mul_scalar_(beta2)
                            .g_add_(&(&g * &g * (1.0 - beta2)));
                        let m_hat = &p.state[0] / (1.0 - beta1.powi(t));
                        let v_hat = &p.state[1] / (1.0 - beta2.powi(t));
                        m_hat / (v_hat.sqrt() + eps)
                    }
                    Rule::RmsProp { alpha, eps } => {
                        let s = &mut p.state[0];
                        let _ = s.g_mul_scalar_(alpha).g_add_(&(&g * &g * (1.0 - alpha)));
                        &g / (s.sqrt() + eps)
                    }
                };
                let _ = p.tensor.g_sub_(&(update * lr));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tensor w = [1, -2] (not decayed: 1-D), loss Σ c·w with c =
    /// [0.5, 3], so the gradient is c at every step; two steps of `rule`
    /// at lr 0.1. The weights after each step.
    fn two_steps(rule: Rule) -> [[f64; 2]; 2] {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let c = Tensor::from_slice(&[0.5f32, 3.0]);
        let mut opt = Optimizer::from_named(vec![("w".into(), w.shallow_clone())], rule, 0.0);
        let mut after = [[0.0; 2]; 2];
        for a in &mut after {
            opt.zero_grad();
            (&w * &c).sum(tch::Kind::Float).backward();
            opt.step(0.1);
            *a = [w.double_value(&[0]), w.double_value(&[1])];
        }
        after
    }

    fn close(got: [[f64; 2]; 2], want: [[f64; 2]; 2]) {
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_large_eps_is_added_to_the_denominator() {
        // eps = 1, which the defaults' 1e-8 hides. Adam with a constant
        // gradient: m̂ = g, v̂ = g², each step g / (|g| + 1): 1/3 and 3/4.
        close(
            two_steps(Rule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1.0,
            }),
            [[0.966_667, -2.075], [0.933_333, -2.15]],
        );
        // RMSprop: s1 = 0.01 g², step g / (0.1 |g| + 1); s2 = 0.0199 g².
        close(
            two_steps(Rule::RmsProp {
                alpha: 0.99,
                eps: 1.0,
            }),
            [[0.952_381, -2.230_769], [0.905_675, -2.441_562]],
        );
    }

    #[test]
    fn sgd_steps_match_the_hand_computed_updates() {
        // b1 = g; w1 = w0 - 0.1 g. b2 = 0.9 g + g = 1.9 g; w2 = w1 - 0.19 g.
        close(
            two_steps(Rule::sgd(0.9, false)),
            [[0.95, -2.3], [0.855, -2.87]],
        );
        // Nesterov: w1 = w0 - 0.1 (g + 0.9 g); w2 = w1 - 0.1 (g + 0.9 · 1.9 g).
        close(
            two_steps(Rule::sgd(0.9, true)),
            [[0.905, -2.57], [0.7695, -3.383]],
        );
    }

    #[test]
    fn adam_steps_match_the_hand_computed_updates() {
        // With a constant gradient the bias-corrected moments are g and g²
        // at every step, so each step moves w by lr · g / (|g| + ε) ≈ lr.
        let eps = 1e-8;
        let d = |g: f64| 0.1 * g / (g.abs() + eps);
        close(
            two_steps(Rule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps,
            }),
            [
                [1.0 - d(0.5), -2.0 - d(3.0)],
                [1.0 - 2.0 * d(0.5), -2.0 - 2.0 * d(3.0)],
            ],
        );
    }

    #[test]
    fn rmsprop_steps_match_the_hand_computed_updates() {
        // s1 = 0.01 g², s2 = (0.99 · 0.01 + 0.01) g² = 0.0199 g²; the step
        // is lr · g / √s: 0.1 / √0.01 = 1 then 0.1 / √0.0199 each way by sign.
        let eps = 1e-8;
        let s2 = 0.0199f64.sqrt();
        close(
            two_steps(Rule::RmsProp { alpha: 0.99, eps }),
            [[0.0, -3.0], [-0.1 / s2, -3.0 - 0.1 / s2]],
        );
    }

    #[test]
    fn adam_keeps_its_betas_apart_under_a_changing_gradient() {
        // Gradients g1 = [0.5, 3] then g2 = [1, -1]: the moments differ from
        // the gradients, so swapping beta1 and beta2 changes the second step.
        // By hand: m2 = b1 (1 - b1) g1 + (1 - b1) g2, v2 = b2 (1 - b2) g1^2
        // + (1 - b2) g2^2, each bias-corrected by 1 - b^2.
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let (b1, b2, eps, lr) = (0.9, 0.999, 1e-8, 0.1);
        let rule = Rule::Adam {
            beta1: b1,
            beta2: b2,
            eps,
        };
        let mut opt = Optimizer::from_named(vec![("w".into(), w.shallow_clone())], rule, 0.0);
        let grads = [[0.5f32, 3.0], [1.0, -1.0]];
        for g in &grads {
            opt.zero_grad();
            (&w * &Tensor::from_slice(g))
                .sum(tch::Kind::Float)
                .backward();
            opt.step(lr);
        }
        for k in 0..2 {
            let (g1, g2) = (f64::from(grads[0][k]), f64::from(grads[1][k]));
            let w1 = [1.0, -2.0][k] - lr * g1 / (g1.abs() + eps);
            let m2 = (b1 * (1.0 - b1) * g1 + (1.0 - b1) * g2) / (1.0 - b1 * b1);
            let v2 = (b2 * (1.0 - b2) * g1 * g1 + (1.0 - b2) * g2 * g2) / (1.0 - b2 * b2);
            let want = w1 - lr * m2 / (v2.sqrt() + eps);
            let got = w.double_value(&[k as i64]);
            assert!((got - want).abs() < 1e-5, "w[{k}] = {got}, by hand {want}");
        }
    }

    #[test]
    fn l2_decays_convolution_kernels_and_nothing_else() {
        // Plain SGD at lr 0.1 and weight decay 0.5, zero gradient: a kernel
        // (4-D, named *weight) shrinks by lr x wd x w; a BN scale (1-D) and a
        // bias do not move.
        let kernel = Tensor::full([1, 1, 1, 2], 2.0, (tch::Kind::Float, tch::Device::Cpu))
            .set_requires_grad(true);
        let bn =
            Tensor::full([2], 2.0, (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let bias = Tensor::full([1, 1, 1, 2], 2.0, (tch::Kind::Float, tch::Device::Cpu))
            .set_requires_grad(true);
        let named = vec![
            ("u.conv.weight".to_string(), kernel.shallow_clone()),
            ("u.bn.weight".to_string(), bn.shallow_clone()),
            ("u.conv.bias".to_string(), bias.shallow_clone()),
        ];
        let mut opt = Optimizer::from_named(named, Rule::sgd(0.0, false), 0.5);
        opt.zero_grad();
        ((&kernel + &bn + &bias).sum(tch::Kind::Float) * 0.0).backward();
        opt.step(0.1);
        // 2 - 0.1 x 0.5 x 2 = 1.9.
        assert!((kernel.double_value(&[0, 0, 0, 0]) - 1.9).abs() < 1e-6);
        assert_eq!(bn.double_value(&[0]), 2.0);
        assert_eq!(bias.double_value(&[0, 0, 0, 1]), 2.0);
    }

    #[test]
    fn each_rule_keeps_its_named_buffers() {
        let w = Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu));
        for (rule, n) in [
            (Rule::sgd(0.9, false), 1),
            (
                Rule::Adam {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                2,
            ),
            (
                Rule::RmsProp {
                    alpha: 0.99,
                    eps: 1e-8,
                },
                1,
            ),
        ] {
            let opt = Optimizer::from_named(vec![("w".into(), w.shallow_clone())], rule, 0.0);
            assert_eq!(opt.params[0].state.len(), n);
            assert_eq!(rule.buffers().len(), n);
        }
    }
}

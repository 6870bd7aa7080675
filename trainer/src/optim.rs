//! SGD with momentum (optionally Nesterov) and L2 weight decay on the
//! convolution kernels only, written out so that its state (the momentum
//! buffers) is ours to checkpoint and restore exactly.
//!
//! It follows PyTorch's `torch.optim.SGD` with `dampening = 0`:
//! `g ← ∇ + λ·w` (decayed tensors only), `b ← μ·b + g`,
//! `w ← w − η·(g + μ·b)` with Nesterov or `w ← w − η·b` without.

use tch::{Tensor, nn::VarStore};

use crate::model::decays;

/// One trainable tensor and its momentum buffer.
#[derive(Debug)]
pub struct Param {
    /// Variable name in the store (and in the checkpoint).
    pub name: String,
    /// The variable itself (shares storage with the store).
    pub tensor: Tensor,
    /// Momentum buffer, same shape.
    pub momentum: Tensor,
    /// Whether L2 applies.
    pub decay: bool,
}

/// The optimizer.
#[derive(Debug)]
pub struct Sgd {
    /// Trainable tensors, sorted by name.
    pub params: Vec<Param>,
    /// Momentum coefficient μ.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 coefficient λ.
    pub weight_decay: f64,
}

impl Sgd {
    /// Collects the trainable variables of `vs`, sorted by name.
    pub fn new(vs: &VarStore, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_named(named, momentum, nesterov, weight_decay)
    }

    /// An optimizer over explicitly named tensors (the benchmark's
    /// four-convolution form, which lives outside a store).
    pub fn from_named(
        named: Vec<(String, Tensor)>,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Self {
        let params = named
            .into_iter()
            .map(|(name, tensor)| Param {
                decay: decays(&name, &tensor.size()),
                momentum: tensor.zeros_like(),
                name,
                tensor,
            })
            .collect();
        Sgd {
            params,
            momentum,
            nesterov,
            weight_decay,
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
                let _ = p.momentum.g_mul_scalar_(self.momentum).g_add_(&g);
                let update = if self.nesterov {
                    &g + &p.momentum * self.momentum
                } else {
                    p.momentum.shallow_clone()
                };
                let _ = p.tensor.g_sub_(&(update * lr));
            }
        });
    }
}

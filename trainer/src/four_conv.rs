//! The RiR network written the way public implementations write it: two
//! stream tensors `r` and `t`, four separate convolutions per unit
//! (`W_rr`, `W_tr`, `W_rt`, `W_tt`), BatchNorm per stream.
//!
//! It exists for two reasons: tests check that the one-convolution
//! [`RirNet`](crate::model::RirNet) computes exactly this, and the throughput
//! benchmark measures what the one-convolution form saves over it.

use rir_arch::ModelSpec;
use tch::{Kind, Tensor};

use crate::model::{BatchNorm, Precision, RirNet, ShortcutOp, conv};

/// Weights of one unit, split into streams.
#[derive(Debug)]
pub struct FourConvUnit {
    /// `W_rr`, `W_tr`, `W_rt`, `W_tt`; `None` where the block is empty or masked.
    pub w: [Option<Tensor>; 4],
    /// BN parameters for the residual stream (γ, β, μ, σ²).
    pub bn_r: Option<[Tensor; 4]>,
    /// BN parameters for the transient stream.
    pub bn_t: Option<[Tensor; 4]>,
    /// Output residual channels.
    pub out_res: usize,
    /// Stride.
    pub stride: usize,
}

/// The whole network in stream form. It reads its weights from a [`RirNet`]
/// (copied, so training it leaves the original alone).
#[derive(Debug)]
pub struct FourConvNet<'a> {
    /// The source network (stem, shortcuts and head are shared in form).
    pub net: &'a RirNet,
    /// Per-unit split weights, in order.
    pub units: Vec<FourConvUnit>,
}

fn split_bn(bn: &BatchNorm, from: usize, len: usize) -> Option<[Tensor; 4]> {
    (len > 0).then(|| {
        [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var].map(|t| {
            let s = t.narrow(0, from as i64, len as i64).detach().copy();
            if t.requires_grad() {
                s.set_requires_grad(true)
            } else {
                s
            }
        })
    })
}

fn bn_apply(x: &Tensor, p: &[Tensor; 4], train: bool, spec: &ModelSpec) -> Tensor {
    x.batch_norm(
        Some(&p[0]),
        Some(&p[1]),
        Some(&p[2]),
        Some(&p[3]),
        train,
        spec.bn_momentum,
        spec.bn_eps,
        true,
    )
}

fn cat_streams(r: &Option<Tensor>, t: &Option<Tensor>) -> Tensor {
    match (r, t) {
        (Some(r), Some(t)) => Tensor::cat(&[r, t], 1),
        (Some(r), None) => r.shallow_clone(),
        (None, Some(t)) => t.shallow_clone(),
        (None, None) => unreachable!("a unit has at least one stream"),
    }
}

fn add_opt(a: Option<Tensor>, b: Option<Tensor>) -> Option<Tensor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<'a> FourConvNet<'a> {
    /// Splits every unit kernel of `net` into its four blocks.
    pub fn from_rir(net: &'a RirNet) -> Self {
        let spec = &net.spec;
        let units = net
            .blocks
            .iter()
            .flat_map(|b| b.units.iter())
            .map(|u| {
                let s = &u.spec;
                let live = [spec.mask.rr, spec.mask.tr, spec.mask.rt, spec.mask.tt];
                // (out range, in range) of each block.
                let ranges = [
                    ((0, s.out_res), (0, s.in_res)),
                    ((0, s.out_res), (s.in_res, s.in_ch - s.in_res)),
                    ((s.out_res, s.out_ch - s.out_res), (0, s.in_res)),
                    (
                        (s.out_res, s.out_ch - s.out_res),
                        (s.in_res, s.in_ch - s.in_res),
                    ),
                ];
                let w = std::array::from_fn(|k| {
                    let ((o0, on), (i0, inn)) = ranges[k];
                    (live[k] && on > 0 && inn > 0).then(|| {
                        u.weight
                            .narrow(0, o0 as i64, on as i64)
                            .narrow(1, i0 as i64, inn as i64)
                            .detach()
                            .copy()
                            .set_requires_grad(true)
                    })
                });
                FourConvUnit {
                    w,
                    bn_r: split_bn(&u.bn, 0, s.out_res),
                    bn_t: split_bn(&u.bn, s.out_res, s.out_ch - s.out_res),
                    out_res: s.out_res,
                    stride: s.stride,
                }
            })
            .collect();
        FourConvNet { net, units }
    }

    /// Every tensor this form trains (for the benchmark's optimizer).
    pub fn trainable(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for u in &self.units {
            out.extend(u.w.iter().flatten().map(Tensor::shallow_clone));
            for bn in [&u.bn_r, &u.bn_t].into_iter().flatten() {
                out.push(bn[0].shallow_clone());
                out.push(bn[1].shallow_clone());
            }
        }
        out
    }

    fn unit(
        &self,
        k: usize,
        r: &Option<Tensor>,
        t: &Option<Tensor>,
        shortcut: Option<&ShortcutOp>,
        train: bool,
    ) -> (Option<Tensor>, Option<Tensor>) {
        let u = &self.units[k];
        let p: Precision = self.net.precision;
        let c = |x: &Option<Tensor>, w: &Option<Tensor>| match (x, w) {
            (Some(x), Some(w)) => Some(conv(x, w, u.stride, 1, p)),
            _ => None,
        };
        let mut r_out = add_opt(c(r, &u.w[0]), c(t, &u.w[1]));
        let t_out = add_opt(c(r, &u.w[2]), c(t, &u.w[3]));
        if let (Some(s), Some(r_in)) = (shortcut, r) {
            let sc = s.forward(r_in, u.out_res, p);
            r_out = add_opt(r_out, Some(sc));
        }
        let spec = &self.net.spec;
        let r_out = r_out.map(|x| bn_apply(&x, u.bn_r.as_ref().expect("residual BN"), train, spec));
        let t_out =
            t_out.map(|x| bn_apply(&x, u.bn_t.as_ref().expect("transient BN"), train, spec));
        (r_out, t_out)
    }

    /// Logits of a normalized NCHW batch.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let net = self.net;
        let spec = &net.spec;
        let h = net.stem_forward(x, train);
        let split = |h: &Tensor, res: usize| {
            let ch = h.size()[1] as usize;
            let r = (res > 0).then(|| h.narrow(1, 0, res as i64));
            let t = (ch > res).then(|| h.narrow(1, res as i64, (ch - res) as i64));
            (r, t)
        };
        let (mut r, mut t) = split(&h, spec.stem_residual());
        let mut k = 0;
        for block in &net.blocks {
            let r_block = r.as_ref().map(Tensor::shallow_clone);
            let (r1, t1) = self.unit(k, &r, &t, block.units[0].shortcut.as_ref(), train);
            let (r1, t1) = (r1.map(|v| v.relu()), t1.map(|v| v.relu()));
            let (mut r2, t2) = self.unit(k + 1, &r1, &t1, block.units[1].shortcut.as_ref(), train);
            if let (Some(s), Some(rb)) = (&block.outer, &r_block) {
                let out_res = self.units[k + 1].out_res;
                r2 = add_opt(r2, Some(s.forward(rb, out_res, net.precision)));
            }
            r = r2.map(|v| v.relu());
            t = t2.map(|v| v.relu());
            k += 2;
        }
        let h = cat_streams(&r, &t);
        net.head_forward(&h.to_kind(Kind::Float), train)
    }
}

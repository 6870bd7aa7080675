//! Moving model variables and optimizer state between libtorch and the
//! on-disk [`Checkpoint`].

use std::collections::BTreeMap;

use rir_arch::CheckpointMeta;
use rir_arch::meta::OPTIMIZER_PREFIX;
use rir_checkpoint::{Checkpoint, CheckpointError, Tensor as CkTensor};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::optim::Optimizer;

/// Copies a tensor to host float32.
pub fn to_host(t: &Tensor) -> CkTensor {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let n = shape.iter().product();
    let mut data = vec![0f32; n];
    t.copy_data(&mut data, n);
    CkTensor { shape, data }
}

/// Captures the variables of `vs` and, if given, the optimizer's buffers.
pub fn snapshot(vs: &VarStore, opt: Option<&Optimizer>, meta: CheckpointMeta) -> Checkpoint {
    let mut tensors: BTreeMap<String, CkTensor> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, to_host(&t)))
        .collect();
    if let Some(opt) = opt {
        for p in &opt.params {
            for (buffer, t) in opt.rule.buffers().iter().zip(&p.state) {
                tensors.insert(format!("{OPTIMIZER_PREFIX}{}.{buffer}", p.name), to_host(t));
            }
        }
    }
    Checkpoint { meta, tensors }
}

fn copy_into(dst: &mut Tensor, name: &str, src: &CkTensor) -> Result<(), CheckpointError> {
    let want: Vec<usize> = dst.size().iter().map(|&d| d as usize).collect();
    if want != src.shape {
        return Err(CheckpointError::Shape {
            name: name.to_string(),
            expected: want,
            found: src.shape.clone(),
        });
    }
    let t = Tensor::from_slice(&src.data)
        .view(dst.size().as_slice())
        .to_device(dst.device());
    tch::no_grad(|| dst.copy_(&t));
    Ok(())
}

/// Loads every variable of `vs` (and the buffers of `opt`, with its step
/// count: the run's) from `ck`.
pub fn restore(
    ck: &Checkpoint,
    vs: &VarStore,
    opt: Option<&mut Optimizer>,
) -> Result<(), CheckpointError> {
    for (name, mut var) in vs.variables() {
        copy_into(&mut var, &name, ck.get(&name)?)?;
    }
    if let Some(opt) = opt {
        let buffers = opt.rule.buffers();
        for p in &mut opt.params {
            for (buffer, t) in buffers.iter().zip(&mut p.state) {
                let key = format!("{OPTIMIZER_PREFIX}{}.{buffer}", p.name);
                copy_into(t, &key, ck.get(&key)?)?;
            }
        }
        opt.steps = ck.meta.training.step as u64;
    }
    Ok(())
}

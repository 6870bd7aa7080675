//! Moving model variables and optimizer state between libtorch and the
//! on-disk [`Checkpoint`].

use std::collections::BTreeMap;

use rir_arch::CheckpointMeta;
use rir_arch::meta::OPTIMIZER_PREFIX;
use rir_checkpoint::{Checkpoint, CheckpointError, Tensor as CkTensor};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::optim::Sgd;

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

/// Captures the variables of `vs` and, if given, the optimizer's momentum.
pub fn snapshot(vs: &VarStore, opt: Option<&Sgd>, meta: CheckpointMeta) -> Checkpoint {
    let mut tensors: BTreeMap<String, CkTensor> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, to_host(&t)))
        .collect();
    if let Some(opt) = opt {
        for p in &opt.params {
            tensors.insert(
                format!("{OPTIMIZER_PREFIX}{}.momentum", p.name),
                to_host(&p.momentum),
            );
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

/// Loads every variable of `vs` (and the momentum of `opt`) from `ck`.
pub fn restore(
    ck: &Checkpoint,
    vs: &VarStore,
    opt: Option<&mut Sgd>,
) -> Result<(), CheckpointError> {
    for (name, mut var) in vs.variables() {
        copy_into(&mut var, &name, ck.get(&name)?)?;
    }
    if let Some(opt) = opt {
        for p in &mut opt.params {
            let key = format!("{OPTIMIZER_PREFIX}{}.momentum", p.name);
            copy_into(&mut p.momentum, &key, ck.get(&key)?)?;
        }
    }
    Ok(())
}

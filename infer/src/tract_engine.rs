//! tract, the pure-Rust engine. Either the batch dimension stays symbolic,
//! so one plan serves every batch size, or it is fixed before optimization,
//! so the plan is specialised (and faster) for that one size; a server
//! with batch buckets keeps one fixed plan per bucket.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::engine::{Engine, Output};
use crate::error::InferError;
use rir_contract::ModelInfo;

type Plan = Arc<TypedRunnableModel>;

/// A tract plan with the names of its outputs.
pub struct TractEngine {
    plan: Plan,
    outputs: Vec<String>,
}

impl TractEngine {
    /// Loads and optimizes `path` for any batch size.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        Self::load_batch(path, None)
    }

    /// Loads `path` and optimizes it for batch size `batch` alone (`None`:
    /// any batch size).
    pub fn load_batch(path: &Path, batch: Option<usize>) -> Result<Self, InferError> {
        let err = |e: TractError| InferError::Model {
            path: path.to_path_buf(),
            detail: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
        if let Some(n) = batch {
            let info = ModelInfo::read(path)?;
            let dims: Vec<usize> = info
                .inputs
                .first()
                .map(|i| i.dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect())
                .unwrap_or_default();
            if dims.is_empty() || dims.contains(&0) {
                return Err(InferError::Model {
                    path: path.to_path_buf(),
                    detail: format!(
                        "the input's dimensions after the batch are not fixed: {dims:?}"
                    ),
                });
            }
            let shape: Vec<usize> = std::iter::once(n).chain(dims).collect();
            model
                .set_input_fact(0, f32::fact(&shape).into())
                .map_err(err)?;
        }
        let typed = model.into_optimized().map_err(err)?;
        let outputs = typed
            .output_outlets()
            .map_err(err)?
            .iter()
            .map(|o| typed.node(o.node).name.clone())
            .collect::<Vec<_>>();
        let outputs = typed
            .outputs
            .iter()
            .zip(outputs)
            .map(|(o, fallback)| {
                typed
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or(fallback)
            })
            .collect();
        let plan = typed.into_runnable().map_err(err)?;
        Ok(TractEngine { plan, outputs })
    }
}

impl Engine for TractEngine {
    fn name(&self) -> String {
        "tract".into()
    }

    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>, InferError> {
        let fail = |e: TractError| InferError::Run {
            engine: "tract",
            detail: format!("{e:#}"),
        };
        let tensor = Tensor::from_shape(shape, input).map_err(fail)?;
        let result = self.plan.run(tvec!(tensor.into())).map_err(fail)?;
        result
            .iter()
            .zip(&self.outputs)
            .map(|(t, name)| {
                let view = t.to_plain_array_view::<f32>().map_err(fail)?;
                Ok(Output {
                    name: name.clone(),
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
    }
}

//! tract, the pure-Rust engine. The batch dimension stays symbolic, so one
//! optimized plan serves every batch size.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::engine::{Engine, Output};
use crate::error::InferError;

type Plan = Arc<TypedRunnableModel>;

/// A tract plan with the names of its outputs.
pub struct TractEngine {
    plan: Plan,
    outputs: Vec<String>,
}

impl TractEngine {
    /// Loads and optimizes `path`.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let err = |e: TractError| InferError::Model {
            path: path.to_path_buf(),
            detail: format!("{e:#}"),
        };
        let model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
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

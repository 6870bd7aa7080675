//! The Triton model configuration an export comes with, so that a
//! repository laid out as `<name>/<version>/model.onnx` serves unchanged in
//! Triton as in rir-serve.

use std::path::{Path, PathBuf};

use rir_contract::ModelInfo;
use rir_contract::model_file::TensorInfo;
use rir_contract::repository::{DEFAULT_MAX_BATCH, PLATFORM, locate};
use rir_infer::Buckets;
use rir_proto::inference::{
    DataType, ModelConfig, ModelDynamicBatching, ModelInput, ModelOutput,
    model_config::SchedulingChoice,
};

use crate::ExportError;

/// The configuration for the ONNX model at `model`, served as `name`:
/// platform, batch size, tensors, dynamic batching at powers of two.
pub fn config_for(model: &Path, name: &str) -> Result<ModelConfig, ExportError> {
    let info = ModelInfo::read(model)?;
    let item_dims = |t: &TensorInfo| -> Vec<i64> {
        t.dims
            .iter()
            .skip(1)
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect()
    };
    let data_type = |t: &TensorInfo| {
        t.datatype()
            .and_then(|d| DataType::from_str_name(d.config_name()))
            .unwrap_or(DataType::TypeInvalid) as i32
    };
    let preferred = Buckets::powers_of_two(DEFAULT_MAX_BATCH).sizes().to_vec();
    Ok(ModelConfig {
        name: name.to_string(),
        platform: PLATFORM.into(),
        max_batch_size: Some(DEFAULT_MAX_BATCH as i32),
        input: info
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: item_dims(t),
                ..Default::default()
            })
            .collect(),
        output: info
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: item_dims(t),
                ..Default::default()
            })
            .collect(),
        scheduling_choice: Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
            preferred_batch_size: preferred.into_iter().map(|s| s as i32).collect(),
            max_queue_delay_microseconds: Some(0),
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// What [`write_config`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWritten {
    /// Wrote this file.
    Wrote(PathBuf),
    /// A configuration was already there and was left as it is.
    Kept(PathBuf),
    /// `output` is not inside a `<name>/<version>/` layout.
    NotARepository,
}

/// Writes `config.pbtxt` for the model at `output` when it sits in a model
/// repository layout and no configuration is there yet (one a person wrote
/// or tuned is never overwritten).
pub fn write_config(output: &Path) -> Result<ConfigWritten, ExportError> {
    let Some(at) = locate(output) else {
        return Ok(ConfigWritten::NotARepository);
    };
    if at.config.exists() {
        return Ok(ConfigWritten::Kept(at.config));
    }
    let text = rir_proto::config_text::format(&config_for(output, &at.name)?);
    rir_checkpoint::write_atomic(&at.config, text.as_bytes())?;
    Ok(ConfigWritten::Wrote(at.config))
}

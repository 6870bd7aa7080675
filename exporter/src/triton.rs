//! The Triton model configuration an export comes with, so that a
//! repository laid out as `<name>/<version>/model.onnx` serves unchanged in
//! Triton as in rir-serve.

use std::path::{Path, PathBuf};

use rir_infer::triton_config::{DynamicBatching, TensorConfig};
use rir_infer::{Buckets, ModelInfo, TritonConfig, VersionPolicy};

use crate::ExportError;

/// Largest batch written into the configuration: rir-serve's default.
pub const MAX_BATCH: usize = 64;

/// Where `config.pbtxt` belongs for a model written at `output`: beside the
/// version folders, when `output` is `<...>/<name>/<number>/<file>.onnx`.
/// The model name is the folder's.
pub fn config_path(output: &Path) -> Option<(PathBuf, String)> {
    let version_dir = output.parent()?;
    version_dir.file_name()?.to_str()?.parse::<u64>().ok()?;
    let model_dir = version_dir.parent()?;
    let name = model_dir.file_name()?.to_str()?.to_string();
    Some((model_dir.join("config.pbtxt"), name))
}

/// The configuration for the ONNX model at `model`, served as `name`:
/// platform, batch size, tensors, dynamic batching at powers of two.
pub fn config_for(model: &Path, name: &str) -> Result<TritonConfig, ExportError> {
    let info = ModelInfo::read(model)?;
    let dims = |t: &rir_infer::model_info::TensorInfo| -> Vec<i64> {
        t.dims
            .iter()
            .skip(1)
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect()
    };
    let tensor = |t: &rir_infer::model_info::TensorInfo| TensorConfig {
        name: t.name.clone(),
        data_type: "TYPE_FP32".into(),
        dims: dims(t),
    };
    Ok(TritonConfig {
        name: Some(name.to_string()),
        platform: Some("onnxruntime_onnx".into()),
        backend: None,
        max_batch_size: Some(MAX_BATCH),
        input: info.inputs.iter().map(tensor).collect(),
        output: info.outputs.iter().map(tensor).collect(),
        dynamic_batching: Some(DynamicBatching {
            preferred_batch_size: Buckets::powers_of_two(MAX_BATCH).sizes().to_vec(),
            max_queue_delay_microseconds: Some(0),
        }),
        instance_count: None,
        version_policy: VersionPolicy::Latest(1),
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
    let Some((path, name)) = config_path(output) else {
        return Ok(ConfigWritten::NotARepository);
    };
    if path.exists() {
        return Ok(ConfigWritten::Kept(path));
    }
    let text = config_for(output, &name)?.to_pbtxt();
    rir_checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(ConfigWritten::Wrote(path))
}

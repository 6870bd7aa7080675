//! The data set a model records in its metadata, which verification scores
//! it on and quantization calibrates it on.

use std::path::Path;

use rir_contract::ModelInfo;
use rir_contract::onnx::keys;
use rir_data::{Dataset, Source, load};

/// Why the model's data set cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The metadata names no data set this build reads.
    #[error("unknown data set `{0}` in the model's metadata")]
    UnknownDataset(String),
    /// The data set's files are missing or unreadable.
    #[error(transparent)]
    Unreadable(#[from] rir_data::DataError),
}

/// Loads the data set `info` records, from `dir` or its usual place.
pub fn dataset(info: &ModelInfo, dir: Option<&Path>) -> Result<Dataset, Unavailable> {
    let name = info
        .metadata
        .get(keys::DATASET)
        .cloned()
        .unwrap_or_default();
    let source = name
        .parse::<Source>()
        .map_err(|_| Unavailable::UnknownDataset(name.clone()))?;
    let dir = dir.map_or_else(|| source.default_dir(), Path::to_path_buf);
    Ok(load(source, &dir)?)
}

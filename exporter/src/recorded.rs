//! The data set a model records in its metadata, which verification scores
//! it on and quantization calibrates it on.

use std::path::Path;

use rir_contract::ModelInfo;

pub use crate::error::Unavailable;
use rir_contract::onnx::keys;
use rir_data::{Dataset, Source, load};

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

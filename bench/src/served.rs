//! The rir-serve a benchmark starts, and the model it loads.

use std::path::PathBuf;

use rir_contract::repository;

use crate::BenchError;

/// The rir-serve a benchmark starts, and the model it loads.
#[derive(Debug, Clone)]
pub struct Served {
    /// Model repository.
    pub models: PathBuf,
    /// Model name.
    pub model: String,
    /// The rir-serve binary.
    pub serve_bin: PathBuf,
}

impl Served {
    /// The latest version's model file: what the in-process engine loads.
    pub fn latest_model(&self) -> Result<PathBuf, BenchError> {
        let versions = repository::versions(&self.models, &self.model).map_err(|e| {
            let dir = repository::model_dir(&self.models, &self.model);
            BenchError::io(format!("reading {}", dir.display()), e)
        })?;
        let latest = versions.last().ok_or_else(|| {
            BenchError::Setup(format!(
                "{} has no version folder with a {}",
                repository::model_dir(&self.models, &self.model).display(),
                repository::MODEL_FILE
            ))
        })?;
        Ok(repository::model_file(&self.models, &self.model, *latest))
    }
}

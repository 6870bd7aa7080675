//! Errors raised while reading or fetching a data set.

use std::path::PathBuf;

/// Why a data set could not be read or fetched. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is shorter than its format requires.
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    /// A file's contents contradict its format.
    #[error("{path} is not a valid {format} file: {detail}")]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    /// An expected file is absent, with a hint where it comes from.
    #[error("{path} not found. {hint}")]
    Missing { path: PathBuf, hint: String },
    /// A download failed or did not match its checksum.
    #[error("fetching {url} failed: {detail}")]
    Fetch { url: String, detail: String },
    /// The train and test splits disagree (shape or class count).
    #[error("inconsistent data set: {0}")]
    Inconsistent(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }
}

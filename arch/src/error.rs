//! Errors raised while building or reading a model specification.

/// Why a specification or a checkpoint's metadata was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A named preset does not exist.
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    /// A variant name could not be parsed.
    #[error("unknown variant `{0}` (known: rir, resnet, cnn, resnet-init)")]
    UnknownVariant(String),
    /// The specification is internally inconsistent.
    #[error("invalid model specification: {0}")]
    Invalid(String),
    /// Checkpoint metadata lacks a key the format requires.
    #[error("checkpoint metadata has no `{0}` entry")]
    MissingMeta(&'static str),
    /// Checkpoint metadata holds a value that does not parse.
    #[error("checkpoint metadata `{key}` does not parse: {source}")]
    BadMeta {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The checkpoint was written by an incompatible format version.
    #[error("checkpoint format version {found} is not supported (expected {expected})")]
    Version {
        found: String,
        expected: &'static str,
    },
}

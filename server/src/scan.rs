//! Reading the model repository from disk: which models and versions are
//! there (`<root>/<name>/<version>/model.onnx`, numeric versions), what each
//! model takes and returns (read from the ONNX file itself: inputs, outputs,
//! class names in its metadata, never configured by hand), and the model's
//! Triton `config.pbtxt` when there is one. Each version carries a
//! [`Fingerprint`] of its files, so a rescan can tell what changed without
//! reading the models again. Nothing here holds state: the loader and the
//! reload controller call it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rir_contract::ModelInfo;
use rir_contract::repository::{self, CONFIG_FILE, PLATFORM};
use rir_contract::{Datatype, onnx};
use rir_infer::InferError;
use rir_proto::config_text::{self, ConfigTextError};
use rir_proto::inference::{ModelConfig, ModelVersionPolicy, model_version_policy::PolicyChoice};

/// Everything the server needs to know about one model version.
#[derive(Debug, Clone)]
pub struct ModelDescriptor {
    /// Model name (the folder name).
    pub name: String,
    /// Version number (the sub-folder name).
    pub version: u64,
    /// The ONNX file.
    pub path: PathBuf,
    /// Name of the single input.
    pub input: String,
    /// Channels, height and width of one input image (NCHW, batch excluded).
    pub chw: [usize; 3],
    /// Output names in graph order.
    pub outputs: Vec<String>,
    /// Width of each output (`[batch, k]` tensors).
    pub output_widths: Vec<usize>,
    /// Class names from the model's metadata, if any.
    pub class_names: Vec<String>,
}

/// Why the repository's folder cannot be listed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("model repository {}: {source}", path.display())]
pub struct RepositoryError {
    /// The repository root.
    pub(crate) path: PathBuf,
    /// What the file system said.
    #[source]
    pub(crate) source: Arc<std::io::Error>,
}

/// Why a model's `config.pbtxt` cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file exists and cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The text is not a Triton model configuration.
    #[error("{}: {source}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and what.
        #[source]
        source: ConfigTextError,
    },
    /// `name` is not the folder's.
    #[error("{}: name `{found}` differs from the folder name `{folder}`", path.display())]
    Name {
        /// The file.
        path: PathBuf,
        /// The name in the file.
        found: String,
        /// The folder's name.
        folder: String,
    },
    /// A platform other than ONNX Runtime's.
    #[error("{}: platform `{found}`; rir-serve serves {PLATFORM} models", path.display())]
    Platform {
        /// The file.
        path: PathBuf,
        /// The platform in the file.
        found: String,
    },
    /// `max_batch_size: 0`, Triton's way of saying the model has no batch dimension.
    #[error("{}: max_batch_size 0 (no batch dimension); RiR models take a batch", path.display())]
    NoBatch {
        /// The file.
        path: PathBuf,
    },
    /// A negative `max_batch_size`.
    #[error("{}: max_batch_size {value} must be positive", path.display())]
    NegativeBatch {
        /// The file.
        path: PathBuf,
        /// The value in the file.
        value: i32,
    },
    /// `version_policy { latest { num_versions: 0 } }`.
    #[error("{}: version_policy latest needs num_versions of at least 1", path.display())]
    NoVersions {
        /// The file.
        path: PathBuf,
    },
    /// The configured input is not the model's.
    #[error("{CONFIG_FILE} input `{name}` {dims:?} does not match the model's `{input}` {chw:?}")]
    Input {
        /// The configured name.
        name: String,
        /// The configured dimensions.
        dims: Vec<i64>,
        /// The model's input name.
        input: String,
        /// The model's `[C, H, W]`.
        chw: [usize; 3],
    },
    /// A configured output the model does not have.
    #[error("{CONFIG_FILE} output `{name}` is not an output of the model ({})", outputs.join(", "))]
    UnknownOutput {
        /// The configured name.
        name: String,
        /// The model's outputs.
        outputs: Vec<String>,
    },
    /// A configured output of another width than the model's.
    #[error("{CONFIG_FILE} output `{name}` {dims:?} does not match the model's [{width}]")]
    Output {
        /// The output.
        name: String,
        /// The configured dimensions.
        dims: Vec<i64>,
        /// The model's width.
        width: usize,
    },
    /// Preferred batch sizes that cannot be buckets.
    #[error("{CONFIG_FILE}: {0}")]
    Buckets(#[from] rir_infer::BucketError),
}

/// Why a model version found on disk cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The version folder has no model file.
    #[error("{} not found", .0.display())]
    Missing(PathBuf),
    /// The file cannot be read or is not ONNX.
    #[error(transparent)]
    Unreadable(InferError),
    /// Not exactly one input.
    #[error("expected exactly one input, found {0}")]
    Inputs(usize),
    /// An input that is not float32.
    #[error("input `{name}` is {found}, expected FLOAT")]
    InputType {
        /// The input.
        name: String,
        /// Its ONNX element type.
        found: String,
    },
    /// An input that is not `[batch, C, H, W]` with fixed C, H, W.
    #[error("input `{name}` must be [batch, C, H, W] with fixed C, H, W; it is {dims:?}")]
    InputShape {
        /// The input.
        name: String,
        /// Its dimensions (None: symbolic).
        dims: Vec<Option<usize>>,
    },
    /// An output that is not float32 `[batch, k]`.
    #[error("output `{name}` must be FLOAT [batch, k]; it is {found} {dims:?}")]
    Output {
        /// The output.
        name: String,
        /// Its ONNX element type.
        found: String,
        /// Its dimensions.
        dims: Vec<Option<usize>>,
    },
    /// The model's `config.pbtxt` cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Its engines could not be made or warmed up.
    #[error(transparent)]
    Engine(InferError),
}

/// A file's size and modification time: a file replaced or rewritten
/// changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Bytes.
    pub(crate) len: u64,
    /// Last modification.
    pub(crate) modified: std::time::SystemTime,
}

impl FileStamp {
    /// The stamp of `path`, or None when it cannot be read.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }
}

/// What identifies a version on disk between scans: its model file, and
/// the model's `config.pbtxt` when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// The version's `model.onnx`.
    pub(crate) model: FileStamp,
    /// The model's `config.pbtxt`.
    pub(crate) config: Option<FileStamp>,
}

/// The model's Triton configuration, `<root>/<name>/config.pbtxt`, when
/// there is one, checked for what rir-serve cannot serve.
pub fn read_config(root: &Path, name: &str) -> Result<Option<ModelConfig>, ConfigError> {
    let path = repository::config_file(root, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::Read {
                path,
                source: Arc::new(e),
            });
        }
    };
    let config = config_text::parse(&text).map_err(|source| ConfigError::Syntax {
        path: path.clone(),
        source,
    })?;
    if !config.name.is_empty() && config.name != name {
        return Err(ConfigError::Name {
            path,
            found: config.name,
            folder: name.to_string(),
        });
    }
    if !config.platform.is_empty() && config.platform != PLATFORM {
        return Err(ConfigError::Platform {
            path,
            found: config.platform,
        });
    }
    match config.max_batch_size {
        Some(0) => return Err(ConfigError::NoBatch { path }),
        Some(value) if value < 0 => return Err(ConfigError::NegativeBatch { path, value }),
        _ => {}
    }
    if let Some(PolicyChoice::Latest(l)) = policy(&config)
        && l.num_versions == Some(0)
    {
        return Err(ConfigError::NoVersions { path });
    }
    Ok(Some(config))
}

fn policy(config: &ModelConfig) -> Option<&PolicyChoice> {
    config
        .version_policy
        .as_ref()
        .and_then(|p: &ModelVersionPolicy| p.policy_choice.as_ref())
}

/// The versions of `available` (ascending) that serve: every one without a
/// `config.pbtxt`; with one, those its version policy names (the latest
/// when it names none, as in Triton).
pub(crate) fn chosen_versions(config: Option<&ModelConfig>, available: &[u64]) -> Vec<u64> {
    let Some(config) = config else {
        return available.to_vec();
    };
    let latest = |n: usize| available[available.len().saturating_sub(n)..].to_vec();
    match policy(config) {
        None => latest(1),
        Some(PolicyChoice::Latest(l)) => latest(l.num_versions.unwrap_or(1) as usize),
        Some(PolicyChoice::All(_)) => available.to_vec(),
        Some(PolicyChoice::Specific(s)) => available
            .iter()
            .copied()
            .filter(|v| s.versions.contains(&(*v as i64)))
            .collect(),
    }
}

/// Checks what a `config.pbtxt` says about tensors against the ONNX file.
pub(crate) fn check_config(config: &ModelConfig, d: &ModelDescriptor) -> Result<(), ConfigError> {
    let [c, h, w] = d.chw;
    for t in &config.input {
        if t.name != d.input || (!t.dims.is_empty() && t.dims != [c as i64, h as i64, w as i64]) {
            return Err(ConfigError::Input {
                name: t.name.clone(),
                dims: t.dims.clone(),
                input: d.input.clone(),
                chw: d.chw,
            });
        }
    }
    for t in &config.output {
        let Some(k) = d.outputs.iter().position(|o| *o == t.name) else {
            return Err(ConfigError::UnknownOutput {
                name: t.name.clone(),
                outputs: d.outputs.clone(),
            });
        };
        if !t.dims.is_empty() && t.dims != [d.output_widths[k] as i64] {
            return Err(ConfigError::Output {
                name: t.name.clone(),
                dims: t.dims.clone(),
                width: d.output_widths[k],
            });
        }
    }
    Ok(())
}

/// A model version found on disk, loadable or not.
#[derive(Debug, Clone)]
pub struct Found {
    /// Model name (the folder name).
    pub name: String,
    /// Version number (the sub-folder name).
    pub(crate) version: u64,
    /// The file's fingerprint when it exists.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// What the model takes and returns, or why it cannot be served.
    pub(crate) model: Result<ModelDescriptor, ModelError>,
}

/// Describes one ONNX file, or says why it cannot be served.
pub fn describe(name: &str, version: u64, path: &Path) -> Result<ModelDescriptor, ModelError> {
    let info = ModelInfo::read(path).map_err(|e| ModelError::Unreadable(e.into()))?;
    let [input] = info.inputs.as_slice() else {
        return Err(ModelError::Inputs(info.inputs.len()));
    };
    if input.datatype() != Some(Datatype::Fp32) {
        return Err(ModelError::InputType {
            name: input.name.clone(),
            found: input.type_name(),
        });
    }
    let chw: Vec<usize> = input.dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect();
    if input.dims.len() != 4 || chw.contains(&0) {
        return Err(ModelError::InputShape {
            name: input.name.clone(),
            dims: input.dims.clone(),
        });
    }
    let mut output_widths = vec![];
    for o in &info.outputs {
        match o.dims.as_slice() {
            [_, Some(k)] if o.datatype() == Some(Datatype::Fp32) => output_widths.push(*k),
            _ => {
                return Err(ModelError::Output {
                    name: o.name.clone(),
                    found: o.type_name(),
                    dims: o.dims.clone(),
                });
            }
        }
    }
    let class_names = info
        .metadata_json(onnx::keys::CLASS_NAMES)
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default();
    Ok(ModelDescriptor {
        name: name.to_string(),
        version,
        path: path.to_path_buf(),
        input: input.name.clone(),
        chw: [chw[0], chw[1], chw[2]],
        outputs: info.outputs.iter().map(|o| o.name.clone()).collect(),
        output_widths,
        class_names,
    })
}

/// The model names under `root`: its sub-folders, sorted.
pub fn model_names(root: &Path) -> Result<Vec<String>, RepositoryError> {
    let entries = std::fs::read_dir(root).map_err(|e| RepositoryError {
        path: root.to_path_buf(),
        source: Arc::new(e),
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The fingerprint of each version of `name` (None where the version has
/// no model file), without reading the models: what a poll compares.
pub fn fingerprints(root: &Path, name: &str) -> BTreeMap<u64, Option<Fingerprint>> {
    let Ok(versions) = std::fs::read_dir(repository::model_dir(root, name)) else {
        return BTreeMap::new();
    };
    let config = FileStamp::of(&repository::config_file(root, name));
    versions
        .flatten()
        .filter_map(|v| {
            let version = repository::parse_version(&v.file_name().to_string_lossy())?;
            let model = FileStamp::of(&repository::model_file(root, name, version));
            Some((version, model.map(|model| Fingerprint { model, config })))
        })
        .collect()
}

/// Reads every version of model `name` under `root`, sorted by version.
/// Folders that are not numeric versions are ignored; a version folder
/// without a usable model is reported with the reason.
pub fn scan_model(root: &Path, name: &str) -> Vec<Found> {
    fingerprints(root, name)
        .into_iter()
        .map(|(version, fingerprint)| {
            let path = repository::model_file(root, name, version);
            let model = match fingerprint {
                Some(_) => describe(name, version, &path),
                None => Err(ModelError::Missing(path)),
            };
            Found {
                name: name.to_string(),
                version,
                fingerprint,
                model,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_proto::inference::model_version_policy::{All, Latest, Specific};

    fn with_policy(choice: PolicyChoice) -> ModelConfig {
        ModelConfig {
            version_policy: Some(ModelVersionPolicy {
                policy_choice: Some(choice),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn version_policies_choose_as_in_triton() {
        let available = [1, 2, 5];
        assert_eq!(chosen_versions(None, &available), vec![1, 2, 5]);
        assert_eq!(
            chosen_versions(Some(&ModelConfig::default()), &available),
            vec![5]
        );
        let latest = |n| with_policy(PolicyChoice::Latest(Latest { num_versions: n }));
        assert_eq!(
            chosen_versions(Some(&latest(Some(2))), &available),
            vec![2, 5]
        );
        assert_eq!(chosen_versions(Some(&latest(None)), &available), vec![5]);
        assert_eq!(
            chosen_versions(Some(&latest(Some(9))), &available),
            vec![1, 2, 5]
        );
        let all = with_policy(PolicyChoice::All(All {}));
        assert_eq!(chosen_versions(Some(&all), &available), vec![1, 2, 5]);
        let specific = with_policy(PolicyChoice::Specific(Specific {
            versions: vec![1, 3],
        }));
        assert_eq!(chosen_versions(Some(&specific), &available), vec![1]);
    }
}

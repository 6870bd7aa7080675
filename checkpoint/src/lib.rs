//! RiR checkpoints on disk.
//!
//! A checkpoint is one safetensors file: float32 tensors named as in
//! `rir_arch` (model variables, plus optimizer state under
//! [`OPTIMIZER_PREFIX`]) and the [`CheckpointMeta`] JSON in the header's
//! metadata. The trainer writes it; the exporter reads it without libtorch.
//!
//! Writes are atomic: the bytes go to a temporary file in the same folder,
//! which is flushed to disk and then renamed over the target, so a crash at
//! any moment leaves either the old or the new checkpoint, never a torn one.

#![forbid(unsafe_code)]

pub mod synthetic;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rir_arch::meta::OPTIMIZER_PREFIX;
use rir_arch::{CheckpointMeta, SpecError};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated or corrupt).
    #[error("{path} is not a valid safetensors checkpoint (truncated or corrupt?): {detail}")]
    Format { path: PathBuf, detail: String },
    /// The file has no RiR metadata, or it does not parse.
    #[error("{path}: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: SpecError,
    },
    /// A tensor the model needs is absent.
    #[error("checkpoint has no tensor `{0}`")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor is not float32.
    #[error("tensor `{name}` is {found}, expected F32")]
    Dtype { name: String, found: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A dense float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

/// A checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Network, data set and training progress.
    pub meta: CheckpointMeta,
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads and validates a checkpoint file.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses checkpoint bytes; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let format = |detail: String| CheckpointError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format(e.to_string()))?;
        let map = header.metadata().clone().unwrap_or_default();
        let meta = CheckpointMeta::from_map(&map).map_err(|source| CheckpointError::Meta {
            path: path.to_path_buf(),
            source,
        })?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(CheckpointError::Dtype {
                    name,
                    found: format!("{:?}", view.dtype()),
                });
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let raw: Vec<(&String, Vec<u8>, &Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    &t.shape,
                )
            })
            .collect();
        let views = raw
            .iter()
            .map(|(n, bytes, shape)| {
                TensorView::new(Dtype::F32, shape.to_vec(), bytes).map(|v| (n.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CheckpointError::Format {
                path: PathBuf::from("<memory>"),
                detail: e.to_string(),
            })?;
        safetensors::serialize(views, Some(self.meta.to_map())).map_err(|e| {
            CheckpointError::Format {
                path: PathBuf::from("<memory>"),
                detail: e.to_string(),
            }
        })
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    pub fn write_atomic(&self, path: &Path) -> Result<(), CheckpointError> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// A model tensor by name.
    pub fn get(&self, name: &str) -> Result<&Tensor, CheckpointError> {
        self.tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor(name.to_string()))
    }

    /// A model tensor by name, checked against the shape the spec implies.
    pub fn shaped(&self, name: &str, shape: &[usize]) -> Result<&Tensor, CheckpointError> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(CheckpointError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t)
    }

    /// Names of the model tensors (optimizer state left out).
    pub fn model_tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with(OPTIMIZER_PREFIX))
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one: temporary file in the same folder, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_arch::{DatasetInfo, InputSpec, TrainingState, Variant, preset};

    fn sample() -> Checkpoint {
        let input = InputSpec::new(1, 28, 28);
        let meta = CheckpointMeta {
            spec: preset::build("micro", Variant::Rir, input, 10).unwrap(),
            dataset: DatasetInfo {
                name: "fashion-mnist".into(),
                class_names: (0..10).map(|i| i.to_string()).collect(),
                mean: vec![0.3],
                std: vec![0.35],
                input,
            },
            training: TrainingState {
                epoch: 1,
                next_batch: 0,
                partial: None,
                step: 10,
                config: serde_json_value(),
                history: vec![],
            },
        };
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "stem.conv.weight".to_string(),
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 7.0],
            },
        );
        Checkpoint { meta, tensors }
    }

    fn serde_json_value() -> rir_arch::meta::JsonValue {
        rir_arch::meta::JsonValue::Null
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let c = sample();
        c.write_atomic(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), c);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn truncation_and_shape_errors_name_the_culprit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.safetensors");
        let bytes = sample().to_bytes().unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let e = Checkpoint::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("b.safetensors") && e.contains("truncated"),
            "{e}"
        );
        let c = sample();
        let e = c
            .shaped("stem.conv.weight", &[3, 2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stem.conv.weight") && e.contains("[3, 2]"),
            "{e}"
        );
        assert!(
            c.get("head.bn.weight")
                .unwrap_err()
                .to_string()
                .contains("head.bn.weight")
        );
    }

    #[test]
    fn file_without_metadata_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let data = [0u8; 8];
        let v = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        std::fs::write(&path, safetensors::serialize([("x", v)], None).unwrap()).unwrap();
        let e = Checkpoint::read(&path).unwrap_err().to_string();
        assert!(e.contains("rir.format_version"), "{e}");
    }
}

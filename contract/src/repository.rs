//! The model repository, as Triton lays it out: `<root>/<name>/<version>/model.onnx`
//! with numeric versions, and an optional `<root>/<name>/config.pbtxt`. The
//! exporter writes this layout, the server scans it and the benchmarks find
//! the latest version in it.

use std::path::{Path, PathBuf};

/// The file name of every version's model.
pub const MODEL_FILE: &str = "model.onnx";

/// The file name of a model's Triton configuration, beside its versions.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// The platform of every served model: Triton's name for ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Most images in one request and one engine run unless configured
/// otherwise: rir-serve's `--max-batch` default, and the `max_batch_size`
/// the exporter writes into `config.pbtxt`.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// A version folder's number, when the name is one (`1`, `12`); other
/// folders in a model's directory are not versions.
pub fn parse_version(folder: &str) -> Option<u64> {
    folder.parse().ok()
}

/// `<root>/<name>`.
pub fn model_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// `<root>/<name>/<version>/model.onnx`.
pub fn model_file(root: &Path, name: &str, version: u64) -> PathBuf {
    model_dir(root, name)
        .join(version.to_string())
        .join(MODEL_FILE)
}

/// `<root>/<name>/config.pbtxt`.
pub fn config_file(root: &Path, name: &str) -> PathBuf {
    model_dir(root, name).join(CONFIG_FILE)
}

/// Where a model file sits in a repository: `<root>/<name>/<version>/<file>`
/// gives the model's name and its `config.pbtxt`; None when the folder
/// holding the file is not a version folder.
pub fn locate(model: &Path) -> Option<Located> {
    let version_dir = model.parent()?;
    let version = parse_version(version_dir.file_name()?.to_str()?)?;
    let model_dir = version_dir.parent()?;
    let name = model_dir.file_name()?.to_str()?.to_string();
    Some(Located {
        config: model_dir.join(CONFIG_FILE),
        name,
        version,
    })
}

/// A model file's place in a repository (see [`locate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The model's name: its folder's.
    pub name: String,
    /// The version: the number of the folder the file is in.
    pub version: u64,
    /// The model's `config.pbtxt`.
    pub config: PathBuf,
}

/// The versions of model `name` that have a model file, ascending.
pub fn versions(root: &Path, name: &str) -> std::io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(model_dir(root, name))?
        .flatten()
        .filter_map(|e| parse_version(e.file_name().to_str()?))
        .filter(|v| model_file(root, name, *v).is_file())
        .collect();
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let root = Path::new("/r");
        assert_eq!(model_file(root, "m", 3), Path::new("/r/m/3/model.onnx"));
        assert_eq!(config_file(root, "m"), Path::new("/r/m/config.pbtxt"));
        let at = locate(Path::new("/r/m/3/model.onnx")).unwrap();
        assert_eq!((at.name.as_str(), at.version), ("m", 3));
        assert_eq!(at.config, Path::new("/r/m/config.pbtxt"));
        assert!(locate(Path::new("/r/m/latest/model.onnx")).is_none());
        assert!(locate(Path::new("model.onnx")).is_none());
    }

    #[test]
    fn versions_are_numeric_folders_with_a_model() {
        let dir = std::env::temp_dir().join(format!("rir-contract-{}", std::process::id()));
        for v in ["1", "10", "2", "notes"] {
            std::fs::create_dir_all(dir.join("m").join(v)).unwrap();
        }
        for v in ["1", "10", "notes"] {
            std::fs::write(dir.join("m").join(v).join(MODEL_FILE), b"x").unwrap();
        }
        assert_eq!(versions(&dir, "m").unwrap(), vec![1, 10]);
        assert!(versions(&dir, "absent").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

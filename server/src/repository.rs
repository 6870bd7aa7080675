//! The model repository: `<root>/<name>/<version>/model.onnx`, numeric
//! versions. What each model expects and returns is read from the ONNX file
//! itself (inputs, outputs, class names in its metadata), never configured
//! by hand. A Triton `config.pbtxt` beside the versions, when present, sets
//! batching, instances and the version policy. Each version carries a
//! [`Fingerprint`] of its files, so a rescan can tell what changed without
//! reading the models again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rir_infer::{ModelInfo, TritonConfig};

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
    /// Class names from the model's metadata (`rir.class_names`), if any.
    pub class_names: Vec<String>,
}

/// A file's size and modification time: a file replaced or rewritten
/// changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Bytes.
    pub len: u64,
    /// Last modification.
    pub modified: std::time::SystemTime,
}

impl FileStamp {
    /// The stamp of `path`, or None when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
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
    pub model: FileStamp,
    /// The model's `config.pbtxt`.
    pub config: Option<FileStamp>,
}

/// The model's Triton configuration, `<root>/<name>/config.pbtxt`, when
/// there is one.
pub fn read_config(root: &Path, name: &str) -> Result<Option<TritonConfig>, String> {
    let path = root.join(name).join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let config = TritonConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(n) = config.name.as_deref()
        && n != name
    {
        return Err(format!(
            "{}: name `{n}` differs from the folder name `{name}`",
            path.display()
        ));
    }
    if let Some(p) = config.platform.as_deref()
        && p != "onnxruntime_onnx"
    {
        return Err(format!(
            "{}: platform `{p}`; rir-serve serves onnxruntime_onnx models",
            path.display()
        ));
    }
    if config.max_batch_size == Some(0) {
        return Err(format!(
            "{}: max_batch_size 0 (no batch dimension); RiR models take a batch",
            path.display()
        ));
    }
    Ok(Some(config))
}

/// Checks what a `config.pbtxt` says about tensors against the ONNX file.
pub fn check_config(config: &TritonConfig, d: &ModelDescriptor) -> Result<(), String> {
    for t in &config.input {
        let [c, h, w] = d.chw;
        if t.name != d.input || (!t.dims.is_empty() && t.dims != [c as i64, h as i64, w as i64]) {
            return Err(format!(
                "{CONFIG_FILE} input `{}` {:?} does not match the model's `{}` [{c}, {h}, {w}]",
                t.name, t.dims, d.input
            ));
        }
    }
    for t in &config.output {
        let Some(k) = d.outputs.iter().position(|o| *o == t.name) else {
            return Err(format!(
                "{CONFIG_FILE} output `{}` is not an output of the model ({})",
                t.name,
                d.outputs.join(", ")
            ));
        };
        if !t.dims.is_empty() && t.dims != [d.output_widths[k] as i64] {
            return Err(format!(
                "{CONFIG_FILE} output `{}` {:?} does not match the model's [{}]",
                t.name, t.dims, d.output_widths[k]
            ));
        }
    }
    Ok(())
}

/// The name of a model's Triton configuration file.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// A model version found on disk, loadable or not.
#[derive(Debug, Clone)]
pub struct Found {
    /// Model name (the folder name).
    pub name: String,
    /// Version number (the sub-folder name).
    pub version: u64,
    /// The file's fingerprint when it exists.
    pub fingerprint: Option<Fingerprint>,
    /// What the model takes and returns, or why it cannot be served.
    pub model: Result<ModelDescriptor, String>,
}

/// Describes one ONNX file, or says why it cannot be served.
pub fn describe(name: &str, version: u64, path: &Path) -> Result<ModelDescriptor, String> {
    let info = ModelInfo::read(path).map_err(|e| e.to_string())?;
    let [input] = info.inputs.as_slice() else {
        return Err(format!(
            "expected exactly one input, found {}",
            info.inputs.len()
        ));
    };
    if input.dtype != "FLOAT" {
        return Err(format!(
            "input `{}` is {}, expected FLOAT",
            input.name, input.dtype
        ));
    }
    let chw: Vec<usize> = input.dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect();
    if input.dims.len() != 4 || chw.contains(&0) {
        return Err(format!(
            "input `{}` must be [batch, C, H, W] with fixed C, H, W; it is {:?}",
            input.name, input.dims
        ));
    }
    let mut output_widths = vec![];
    for o in &info.outputs {
        match o.dims.as_slice() {
            [_, Some(k)] if o.dtype == "FLOAT" => output_widths.push(*k),
            _ => {
                return Err(format!(
                    "output `{}` must be FLOAT [batch, k]; it is {} {:?}",
                    o.name, o.dtype, o.dims
                ));
            }
        }
    }
    let class_names = info
        .metadata_json("rir.class_names")
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
pub fn model_names(root: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("model repository {}: {e}", root.display()))?;
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
    let Ok(versions) = std::fs::read_dir(root.join(name)) else {
        return BTreeMap::new();
    };
    let config = FileStamp::of(&root.join(name).join(CONFIG_FILE));
    versions
        .flatten()
        .filter_map(|v| {
            let version = v.file_name().to_string_lossy().parse::<u64>().ok()?;
            let model = FileStamp::of(&v.path().join("model.onnx"));
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
            let path = root.join(name).join(version.to_string()).join("model.onnx");
            let model = if fingerprint.is_some() {
                describe(name, version, &path)
            } else {
                Err(format!("{} not found", path.display()))
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

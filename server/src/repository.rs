//! The model repository: `<root>/<name>/<version>/model.onnx`, numeric
//! versions, read once at start-up. What each model expects and returns is
//! read from the ONNX file itself (inputs, outputs, class names in its
//! metadata), never configured by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rir_infer::ModelInfo;

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

/// A model version found on disk, loadable or not.
#[derive(Debug, Clone)]
pub enum Found {
    /// Parsed and shaped as the server can serve it.
    Ok(ModelDescriptor),
    /// Present but unusable, with the reason.
    Broken {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Why it cannot be served.
        reason: String,
    },
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

/// Scans `root` for `<name>/<version>/model.onnx`. Folders that are not
/// numeric versions are ignored; a version folder without a usable model is
/// reported as broken. The result is sorted by name, then version.
pub fn scan(root: &Path) -> Result<Vec<Found>, String> {
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("model repository {}: {e}", root.display()))?;
    let mut found = BTreeMap::new();
    for model in entries.flatten() {
        if !model.path().is_dir() {
            continue;
        }
        let name = model.file_name().to_string_lossy().into_owned();
        let Ok(versions) = std::fs::read_dir(model.path()) else {
            continue;
        };
        for v in versions.flatten() {
            let Ok(version) = v.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            let path = v.path().join("model.onnx");
            let entry = if path.is_file() {
                match describe(&name, version, &path) {
                    Ok(d) => Found::Ok(d),
                    Err(reason) => Found::Broken {
                        name: name.clone(),
                        version,
                        reason,
                    },
                }
            } else {
                Found::Broken {
                    name: name.clone(),
                    version,
                    reason: format!("{} not found", path.display()),
                }
            };
            found.insert((name.clone(), version), entry);
        }
    }
    Ok(found.into_values().collect())
}

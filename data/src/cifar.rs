//! CIFAR-10 and CIFAR-100 in the official binary format.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin`
//! and `test_batch.bin`, records of 1 label byte + 3072 pixel bytes (the red,
//! green and blue 32x32 planes); class names in `batches.meta.txt`.
//! CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`, records of a
//! coarse label byte, a fine label byte and 3072 pixel bytes; class names in
//! `coarse_label_names.txt` and `fine_label_names.txt`.

use std::path::Path;

use crate::error::DataError;

/// Bytes of one 3x32x32 image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR and, for CIFAR-100, which labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// CIFAR-10: 10 classes, one label byte.
    Ten,
    /// CIFAR-100 with its 100 fine labels.
    HundredFine,
    /// CIFAR-100 with its 20 coarse (superclass) labels.
    HundredCoarse,
}

impl Flavour {
    /// Label bytes before each image.
    pub fn label_bytes(self) -> usize {
        match self {
            Flavour::Ten => 1,
            _ => 2,
        }
    }

    /// Index of the label used, inside the label bytes.
    fn label_index(self) -> usize {
        match self {
            Flavour::Ten | Flavour::HundredCoarse => 0,
            Flavour::HundredFine => 1,
        }
    }

    /// Record size in bytes.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// The training files, relative to the data directory.
    pub fn train_files(self) -> Vec<String> {
        match self {
            Flavour::Ten => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            _ => vec!["train.bin".into()],
        }
    }

    /// The test file, relative to the data directory.
    pub fn test_file(self) -> &'static str {
        match self {
            Flavour::Ten => "test_batch.bin",
            _ => "test.bin",
        }
    }

    /// The class-name file, relative to the data directory.
    pub fn names_file(self) -> &'static str {
        match self {
            Flavour::Ten => "batches.meta.txt",
            Flavour::HundredFine => "fine_label_names.txt",
            Flavour::HundredCoarse => "coarse_label_names.txt",
        }
    }

    /// The folder the official archive unpacks into.
    pub fn folder(self) -> &'static str {
        match self {
            Flavour::Ten => "cifar-10-batches-bin",
            _ => "cifar-100-binary",
        }
    }
}

/// Reads the class names, one per non-empty line.
pub fn read_names(dir: &Path, flavour: Flavour) -> Result<Vec<String>, DataError> {
    let path = dir.join(flavour.names_file());
    let text = std::fs::read_to_string(&path).map_err(DataError::io(&path))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(DataError::Corrupt {
            path,
            format: "class-name list",
            detail: "no names".into(),
        });
    }
    Ok(names)
}

/// Reads one binary batch file, appending images (CHW) and labels.
pub fn read_batch(
    path: &Path,
    flavour: Flavour,
    num_classes: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<usize, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io(path))?;
    let rec = flavour.record_bytes();
    if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes is not a whole number of {rec}-byte records ({} label byte(s) + {IMAGE_BYTES} pixels)",
                bytes.len(),
                flavour.label_bytes()
            ),
        });
    }
    let n = bytes.len() / rec;
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[flavour.label_index()];
        if label as usize >= num_classes {
            return Err(DataError::Corrupt {
                path: path.to_path_buf(),
                format: "CIFAR binary",
                detail: format!(
                    "record {i} has label {label}, but there are {num_classes} classes"
                ),
            });
        }
        labels.push(label);
        images.extend_from_slice(&r[flavour.label_bytes()..]);
    }
    Ok(n)
}

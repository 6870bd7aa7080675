//! The in-memory data set and the choice of reader.

use std::path::{Path, PathBuf};

use rir_arch::{DatasetInfo, InputSpec};

use crate::cifar::{self, Flavour};
use crate::error::DataError;
use crate::idx;

/// Fashion-MNIST's labels, as its README's label table lists them (the IDX
/// files themselves carry no names).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Which data set to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fashion-MNIST, 1x28x28, 10 classes, IDX files.
    FashionMnist,
    /// CIFAR-10 or CIFAR-100, 3x32x32, official binary files.
    Cifar(Flavour),
}

impl Source {
    /// The name used on the command line and in checkpoint metadata.
    pub fn name(self) -> &'static str {
        match self {
            Source::FashionMnist => "fashion-mnist",
            Source::Cifar(Flavour::Ten) => "cifar10",
            Source::Cifar(Flavour::HundredFine) => "cifar100",
            Source::Cifar(Flavour::HundredCoarse) => "cifar100-coarse",
        }
    }

    /// The directory read when none is given.
    pub fn default_dir(self) -> PathBuf {
        match self {
            Source::FashionMnist => PathBuf::from(FASHION_MNIST_DEBIAN_DIR),
            Source::Cifar(f) => PathBuf::from("data").join(f.folder()),
        }
    }

    /// Image shape and class count, known without reading any file: what a
    /// network for this data set is built for (benchmarks, layer plans).
    pub fn shape(self) -> (InputSpec, usize) {
        match self {
            Source::FashionMnist => (InputSpec::new(1, 28, 28), FASHION_MNIST_CLASSES.len()),
            Source::Cifar(Flavour::Ten) => (InputSpec::new(3, 32, 32), 10),
            Source::Cifar(Flavour::HundredFine) => (InputSpec::new(3, 32, 32), 100),
            Source::Cifar(Flavour::HundredCoarse) => (InputSpec::new(3, 32, 32), 20),
        }
    }

    /// Images in the official training split, known without reading any
    /// file: what an epoch costs in a time estimate.
    pub fn train_images(self) -> usize {
        match self {
            Source::FashionMnist => 60_000,
            Source::Cifar(_) => 50_000,
        }
    }
}

/// A name that is not a data set this crate reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data set `{0}` (known: fashion-mnist, cifar10, cifar100, cifar100-coarse)")]
pub struct UnknownSource(pub String);

impl std::str::FromStr for Source {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, UnknownSource> {
        Ok(match s {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => Source::FashionMnist,
            "cifar10" | "cifar-10" => Source::Cifar(Flavour::Ten),
            "cifar100" | "cifar-100" => Source::Cifar(Flavour::HundredFine),
            "cifar100-coarse" => Source::Cifar(Flavour::HundredCoarse),
            _ => return Err(UnknownSource(s.to_string())),
        })
    }
}

/// One split: images as u8 in CHW order, one after another, and labels.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// `len * C * H * W` bytes.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The bytes of image `i`, given the size of one image.
    pub fn image(&self, i: usize, image_bytes: usize) -> &[u8] {
        &self.images[i * image_bytes..(i + 1) * image_bytes]
    }

    /// Keeps only the first `n` images.
    pub fn truncate(&mut self, n: usize, image_bytes: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * image_bytes);
        }
    }
}

/// A data set in memory, with what inference must know about it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name, class names, normalization and image shape.
    pub info: DatasetInfo,
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

impl Dataset {
    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        let i = self.info.input;
        i.channels * i.height * i.width
    }
}

/// Reads a data set from `dir` and computes its normalization from the
/// training split.
pub fn load(source: Source, dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: match source {
                Source::FashionMnist => {
                    "Install Debian's dataset-fashion-mnist package or pass --data-dir with the four IDX files.".into()
                }
                Source::Cifar(_) => format!(
                    "Run `rir-train fetch {}` or unpack the official archive so that this folder exists.",
                    source.name()
                ),
            },
        });
    }
    let (input, class_names, train, test) = match source {
        Source::FashionMnist => {
            let (train, shape) = read_idx_split(dir, "train")?;
            let (test, test_shape) = read_idx_split(dir, "t10k")?;
            if shape != test_shape {
                return Err(DataError::Inconsistent(format!(
                    "train images are {shape:?}, test images {test_shape:?}"
                )));
            }
            let names = FASHION_MNIST_CLASSES.map(String::from).to_vec();
            (InputSpec::new(1, shape.0, shape.1), names, train, test)
        }
        Source::Cifar(flavour) => {
            let names = cifar::read_names(dir, flavour)?;
            let classes = names.len();
            let mut train = Split::default();
            for f in flavour.train_files() {
                cifar::read_batch(
                    &dir.join(f),
                    flavour,
                    classes,
                    &mut train.images,
                    &mut train.labels,
                )?;
            }
            let mut test = Split::default();
            cifar::read_batch(
                &dir.join(flavour.test_file()),
                flavour,
                classes,
                &mut test.images,
                &mut test.labels,
            )?;
            (InputSpec::new(3, 32, 32), names, train, test)
        }
    };
    let classes = class_names.len();
    if let Some(bad) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= classes)
    {
        return Err(DataError::Inconsistent(format!(
            "label {bad} found but only {classes} class names"
        )));
    }
    let (mean, std) = channel_stats(&train, input);
    Ok(Dataset {
        info: DatasetInfo {
            name: source.name().to_string(),
            class_names,
            mean,
            std,
            input,
        },
        train,
        test,
    })
}

/// Finds `NAME` or `NAME.gz` in `dir`.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(DataError::Missing {
            path: gz,
            hint: format!("Neither {name} nor {name}.gz is in {}.", dir.display()),
        })
    }
}

/// Reads one Fashion-MNIST split (`train` or `t10k`).
fn read_idx_split(dir: &Path, prefix: &str) -> Result<(Split, (usize, usize)), DataError> {
    let img_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lbl_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = idx::read(&img_path, 3)?;
    let labels = idx::read(&lbl_path, 1)?;
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::Inconsistent(format!(
            "{} holds {} images but {} holds {} labels",
            img_path.display(),
            images.dims[0],
            lbl_path.display(),
            labels.dims[0]
        )));
    }
    Ok((
        Split {
            images: images.data,
            labels: labels.data,
        },
        (images.dims[1], images.dims[2]),
    ))
}

/// Per-channel mean and standard deviation of the [0, 1] pixels.
pub fn channel_stats(split: &Split, input: InputSpec) -> (Vec<f32>, Vec<f32>) {
    let plane = input.height * input.width;
    let mut sum = vec![0f64; input.channels];
    let mut sq = vec![0f64; input.channels];
    for img in split.images.chunks_exact(plane * input.channels) {
        for c in 0..input.channels {
            for &p in &img[c * plane..(c + 1) * plane] {
                let v = p as f64 / 255.0;
                sum[c] += v;
                sq[c] += v * v;
            }
        }
    }
    let n = (split.len() * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(1e-12)).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

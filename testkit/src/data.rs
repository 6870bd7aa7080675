//! Small data sets written in the official file formats, for tests on
//! machines without the real files. Each class has its own bright stripe
//! over noise, so a network can learn them quickly.
//!
//! The formats are written here from their published descriptions (the
//! CIFAR page's binary version, LeCun's IDX), not through `rir-data`, so
//! the readers are tested against a second implementation of the layout.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Pixels of one CIFAR image: 3 planes of 32 x 32, red, green, blue.
const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR binary version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    /// `cifar-10-batches-bin`: five `data_batch_N.bin`, `test_batch.bin`,
    /// records of one label byte and the pixels.
    Ten,
    /// `cifar-100-binary`: `train.bin`, `test.bin`, records of a coarse
    /// and a fine label byte and the pixels; the stripes follow the fine
    /// label.
    Hundred,
}

/// A small seeded generator (SplitMix64), so fixtures repeat exactly.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// An IDX file: magic `0x0000_08NN` (unsigned bytes, NN dimensions), each
/// dimension as a big-endian u32, then the data.
pub fn idx_bytes(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend((*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A learnable synthetic image of class `label` (CHW, `c` x `h` x `w`).
pub fn synthetic_image(
    rng: &mut Rng,
    label: usize,
    classes: usize,
    c: usize,
    h: usize,
    w: usize,
) -> Vec<u8> {
    let mut img = vec![0u8; c * h * w];
    let row = label * h / classes;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let noise = rng.below(96) as u8;
                let stripe = if y == row || (label % 2 == 1 && x == row * w / h) {
                    150
                } else {
                    0
                };
                img[(ch * h + y) * w + x] = noise.saturating_add(stripe);
            }
        }
    }
    img
}

fn io(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes a CIFAR folder (`cifar-10-batches-bin` or `cifar-100-binary`)
/// under `root` with `per_file` records in each training file and `test`
/// records in the test file. Returns the folder.
pub fn write_cifar(
    root: &Path,
    kind: Cifar,
    per_file: usize,
    test: usize,
    seed: u64,
) -> std::io::Result<PathBuf> {
    let folder = match kind {
        Cifar::Ten => "cifar-10-batches-bin",
        Cifar::Hundred => "cifar-100-binary",
    };
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::new(seed);
    let mut write = |name: &str, n: usize| -> std::io::Result<()> {
        let path = dir.join(name);
        let mut bytes = Vec::with_capacity(n * (2 + IMAGE_BYTES));
        for _ in 0..n {
            let (labels, classes) = match kind {
                Cifar::Ten => (vec![rng.below(10)], 10),
                Cifar::Hundred => {
                    let fine = rng.below(100);
                    (vec![fine % 20, fine], 100)
                }
            };
            bytes.extend(labels.iter().map(|l| *l as u8));
            let stripe = *labels.last().unwrap_or(&0);
            bytes.extend(synthetic_image(&mut rng, stripe, classes, 3, 32, 32));
        }
        std::fs::write(&path, bytes).map_err(|e| io(&path, e))
    };
    match kind {
        Cifar::Ten => {
            for i in 1..=5 {
                write(&format!("data_batch_{i}.bin"), per_file)?;
            }
            write("test_batch.bin", test)?;
            let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
            std::fs::write(dir.join("batches.meta.txt"), names)?;
        }
        Cifar::Hundred => {
            write("train.bin", per_file)?;
            write("test.bin", test)?;
            let fine: String = (0..100).map(|i| format!("fine_{i}\n")).collect();
            let coarse: String = (0..20).map(|i| format!("coarse_{i}\n")).collect();
            std::fs::write(dir.join("fine_label_names.txt"), fine)?;
            std::fs::write(dir.join("coarse_label_names.txt"), coarse)?;
        }
    }
    Ok(dir)
}

/// Writes the four Fashion-MNIST IDX files (gzip-compressed when `gz`) with
/// `train` and `test` images of `side` x `side` into `dir`.
pub fn write_fashion_mnist(
    dir: &Path,
    train: usize,
    test: usize,
    side: usize,
    gz: bool,
    seed: u64,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(seed);
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let mut images = Vec::with_capacity(n * side * side);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let l = rng.below(10);
            labels.push(l as u8);
            images.extend(synthetic_image(&mut rng, l, 10, 1, side, side));
        }
        let files = [
            (
                format!("{prefix}-images-idx3-ubyte"),
                idx_bytes(&[n, side, side], &images),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                idx_bytes(&[n], &labels),
            ),
        ];
        for (name, bytes) in files {
            let path = if gz {
                dir.join(format!("{name}.gz"))
            } else {
                dir.join(name)
            };
            let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            if gz {
                let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                enc.write_all(&bytes)?;
                enc.finish()?;
            } else {
                let mut file = file;
                file.write_all(&bytes)?;
            }
        }
    }
    Ok(())
}

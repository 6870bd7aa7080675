//! Small data sets written in the official file formats, for tests on
//! machines without the real files. Each class has its own bright stripe
//! over noise, so a network can learn them quickly.

use std::io::Write;
use std::path::{Path, PathBuf};

use rir_data::cifar::{Flavour, IMAGE_BYTES};
use rir_data::idx;
use rir_data::rng::Rng;

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
    flavour: Flavour,
    per_file: usize,
    test: usize,
    seed: u64,
) -> std::io::Result<PathBuf> {
    let dir = root.join(flavour.folder());
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::new(seed);
    let fine = 100;
    let coarse = 20;
    let mut write = |name: &str, n: usize| -> std::io::Result<()> {
        let path = dir.join(name);
        let mut bytes = Vec::with_capacity(n * flavour.record_bytes());
        for _ in 0..n {
            match flavour {
                Flavour::Ten => {
                    let l = rng.below(10);
                    bytes.push(l as u8);
                    bytes.extend(synthetic_image(&mut rng, l, 10, 3, 32, 32));
                }
                Flavour::HundredFine | Flavour::HundredCoarse => {
                    let f = rng.below(fine);
                    bytes.push((f % coarse) as u8);
                    bytes.push(f as u8);
                    let l = if flavour == Flavour::HundredFine {
                        f
                    } else {
                        f % coarse
                    };
                    let classes = if flavour == Flavour::HundredFine {
                        fine
                    } else {
                        coarse
                    };
                    bytes.extend(synthetic_image(&mut rng, l, classes, 3, 32, 32));
                }
            }
        }
        debug_assert_eq!(bytes.len(), n * (flavour.label_bytes() + IMAGE_BYTES));
        std::fs::write(&path, bytes).map_err(|e| io(&path, e))
    };
    for f in flavour.train_files() {
        write(&f, per_file)?;
    }
    write(flavour.test_file(), test)?;
    match flavour {
        Flavour::Ten => {
            let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
            std::fs::write(dir.join("batches.meta.txt"), names)?;
        }
        _ => {
            let fine: String = (0..fine).map(|i| format!("fine_{i}\n")).collect();
            let coarse: String = (0..coarse).map(|i| format!("coarse_{i}\n")).collect();
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
                idx::encode(&[n, side, side], &images),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                idx::encode(&[n], &labels),
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

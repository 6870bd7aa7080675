//! Fetching CIFAR from its official site, with the published md5 checked
//! before anything is unpacked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::cifar::Flavour;
use crate::error::DataError;

/// An official archive: where it lives and its published md5.
#[derive(Debug, Clone, Copy)]
pub struct Archive {
    /// Download address on the data set's home page.
    pub url: &'static str,
    /// md5 published next to the link.
    pub md5: &'static str,
    /// Approximate size in bytes, for the progress bar when the server sends none.
    pub bytes: u64,
}

/// The official binary archive of a CIFAR flavour.
pub fn archive(flavour: Flavour) -> Archive {
    match flavour {
        Flavour::Ten => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            bytes: 170_052_171,
        },
        Flavour::HundredFine | Flavour::HundredCoarse => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            bytes: 168_513_733,
        },
    }
}

/// Downloads the archive of `flavour` into `dest`, checks its md5 and
/// unpacks it there. `progress(done, total)` is called as bytes arrive.
/// Returns the folder holding the data files.
pub fn fetch_cifar(
    flavour: Flavour,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, DataError> {
    let a = archive(flavour);
    let fail = |detail: String| DataError::Fetch {
        url: a.url.to_string(),
        detail,
    };
    std::fs::create_dir_all(dest).map_err(DataError::io(dest))?;
    let tarball = dest.join(a.url.rsplit('/').next().unwrap_or("cifar.tar.gz"));
    let partial = tarball.with_extension("gz.part");
    let response = ureq::get(a.url).call().map_err(|e| {
        fail(format!(
            "{e}. Without network access, download the archive elsewhere and unpack it so that {} exists",
            dest.join(flavour.folder()).display()
        ))
    })?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(a.bytes);
    let mut body = response.into_body().into_reader();
    let mut file = std::fs::File::create(&partial).map_err(DataError::io(&partial))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(DataError::io(&partial))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(DataError::io(&partial))?;
    let got = hex::encode(hasher.finalize());
    if got != a.md5 {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!(
            "md5 {got} does not match the published {}",
            a.md5
        )));
    }
    std::fs::rename(&partial, &tarball).map_err(DataError::io(&tarball))?;
    unpack(&tarball, dest)?;
    Ok(dest.join(flavour.folder()))
}

/// Unpacks a `.tar.gz` into `dest` (the tar crate refuses paths that escape it).
pub fn unpack(tarball: &Path, dest: &Path) -> Result<(), DataError> {
    let file = std::fs::File::open(tarball).map_err(DataError::io(tarball))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dest)
        .map_err(|e| DataError::Corrupt {
            path: tarball.to_path_buf(),
            format: "tar.gz",
            detail: e.to_string(),
        })
}

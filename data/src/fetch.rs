//! Fetching CIFAR from its official site, with the published md5 checked
//! before anything is unpacked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::cifar::Flavour;
use crate::error::DataError;

/// An archive to fetch: where it lives and its published md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Download address (the data set's home page, or a mirror).
    pub url: String,
    /// md5 published next to the link.
    pub md5: String,
    /// Approximate size in bytes, for the progress bar when the server sends none.
    pub bytes: u64,
}

/// Where the official archives live.
pub const OFFICIAL_SITE: &str = "https://www.cs.toronto.edu/~kriz/";

/// The official binary archive of a CIFAR flavour.
pub fn archive(flavour: Flavour) -> Archive {
    let (file, md5, bytes) = match flavour {
        Flavour::Ten => (
            "cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            170_052_171,
        ),
        Flavour::HundredFine | Flavour::HundredCoarse => (
            "cifar-100-binary.tar.gz",
            "03b5dce01913d631647c71ecec9e9cb8",
            168_513_733,
        ),
    };
    Archive {
        url: format!("{OFFICIAL_SITE}{file}"),
        md5: md5.into(),
        bytes,
    }
}

impl Archive {
    /// The same file from the site at `base` (a mirror: the published md5
    /// is still checked).
    pub fn from_mirror(&self, base: &str) -> Archive {
        let file = self.url.rsplit('/').next().unwrap_or_default();
        Archive {
            url: format!("{}/{file}", base.trim_end_matches('/')),
            ..self.clone()
        }
    }
}

/// Downloads the archive of `flavour` into `dest` (from `mirror` when
/// given, else the official site), checks its md5 and unpacks it there.
/// `progress(done, total)` is called as bytes arrive. Returns the folder
/// holding the data files.
pub fn fetch_cifar(
    flavour: Flavour,
    dest: &Path,
    mirror: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, DataError> {
    let official = archive(flavour);
    let a = mirror.map_or_else(|| official.clone(), |m| official.from_mirror(m));
    fetch(&a, dest, progress)?;
    Ok(dest.join(flavour.folder()))
}

/// Downloads `a` into `dest`, checks its md5 (a mismatch leaves nothing
/// behind) and unpacks it there.
pub fn fetch(
    a: &Archive,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), DataError> {
    let fail = |detail: String| DataError::Fetch {
        url: a.url.clone(),
        detail,
    };
    std::fs::create_dir_all(dest).map_err(DataError::io(dest))?;
    let tarball = dest.join(a.url.rsplit('/').next().unwrap_or("cifar.tar.gz"));
    let partial = tarball.with_extension("gz.part");
    let response = ureq::get(&a.url).call().map_err(|e| {
        fail(format!(
            "{e}. Without network access, download the archive elsewhere and unpack it into {}",
            dest.display()
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
    unpack(&tarball, dest)
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

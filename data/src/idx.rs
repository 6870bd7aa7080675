//! IDX files, the format of MNIST and Fashion-MNIST: a big-endian header of
//! magic (`0 0 type ndim`) and `ndim` u32 sizes, then the u8 data. Files may
//! be gzip-compressed; the reader looks at the first bytes, not the name.

use std::io::Read;
use std::path::Path;

use crate::error::DataError;

/// Reads a whole file, transparently un-gzipping it.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(DataError::io(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Corrupt {
                path: path.to_path_buf(),
                format: "gzip",
                detail: e.to_string(),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of u8 elements with `ndim` dimensions.
pub fn read(path: &Path, ndim: usize) -> Result<IdxArray, DataError> {
    let bytes = read_maybe_gz(path)?;
    parse(&bytes, ndim).map_err(|(truncated, detail)| {
        if truncated {
            DataError::Truncated {
                path: path.to_path_buf(),
                detail,
            }
        } else {
            DataError::Corrupt {
                path: path.to_path_buf(),
                format: "IDX",
                detail,
            }
        }
    })
}

/// Parses IDX bytes; the error says whether the data was cut short.
fn parse(bytes: &[u8], ndim: usize) -> Result<IdxArray, (bool, String)> {
    if bytes.len() < 4 {
        return Err((
            true,
            format!("{} bytes, shorter than the header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err((false, format!("bad magic {:02x?}", &bytes[..4])));
    }
    if bytes[2] != 0x08 {
        return Err((
            false,
            format!("element type 0x{:02x}, expected 0x08 (u8)", bytes[2]),
        ));
    }
    if bytes[3] as usize != ndim {
        return Err((false, format!("{} dimensions, expected {ndim}", bytes[3])));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err((
            true,
            format!("{} bytes, header needs {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().product::<usize>();
    let got = bytes.len() - header;
    if got < expected {
        return Err((
            true,
            format!("header {dims:?} promises {expected} bytes of data, found {got}"),
        ));
    }
    if got > expected {
        return Err((
            false,
            format!(
                "{} trailing bytes after the {expected} promised by {dims:?}",
                got - expected
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes an array as IDX bytes (uncompressed): the inverse of the reader,
/// for files written in the official format.
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let bytes = encode(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let a = parse(&bytes, 2).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        assert!(parse(&bytes[..bytes.len() - 1], 2).unwrap_err().0);
        assert!(!parse(&bytes, 3).unwrap_err().0);
        let mut bad = bytes.clone();
        bad[2] = 0x0d;
        assert!(parse(&bad, 2).unwrap_err().1.contains("element type"));
    }
}

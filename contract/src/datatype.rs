//! The tensor datatypes of the KServe v2 protocol (`"FP32"`, `"UINT8"`,
//! `"BYTES"`, ...): what requests and metadata carry, how wide an element
//! is, and the same type's name in Triton's model configuration
//! (`TYPE_FP32`) and in ONNX (`FLOAT`, element type 1).

use std::fmt;
use std::str::FromStr;

/// A KServe v2 tensor datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`, one byte.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half precision.
    Fp16,
    /// `FP32`: what RiR models take and return.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BF16`: bfloat16.
    Bf16,
    /// `BYTES`: strings, each a 4-byte little-endian length and its bytes
    /// in raw contents (the classification extension's answers).
    Bytes,
}

/// Each datatype with its KServe, Triton-configuration and ONNX names and
/// the ONNX element type number: one table, read both ways.
const TABLE: [(Datatype, &str, &str, &str, i32); 14] = [
    (Datatype::Bool, "BOOL", "TYPE_BOOL", "BOOL", 9),
    (Datatype::Uint8, "UINT8", "TYPE_UINT8", "UINT8", 2),
    (Datatype::Uint16, "UINT16", "TYPE_UINT16", "UINT16", 4),
    (Datatype::Uint32, "UINT32", "TYPE_UINT32", "UINT32", 12),
    (Datatype::Uint64, "UINT64", "TYPE_UINT64", "UINT64", 13),
    (Datatype::Int8, "INT8", "TYPE_INT8", "INT8", 3),
    (Datatype::Int16, "INT16", "TYPE_INT16", "INT16", 5),
    (Datatype::Int32, "INT32", "TYPE_INT32", "INT32", 6),
    (Datatype::Int64, "INT64", "TYPE_INT64", "INT64", 7),
    (Datatype::Fp16, "FP16", "TYPE_FP16", "FLOAT16", 10),
    (Datatype::Fp32, "FP32", "TYPE_FP32", "FLOAT", 1),
    (Datatype::Fp64, "FP64", "TYPE_FP64", "DOUBLE", 11),
    (Datatype::Bf16, "BF16", "TYPE_BF16", "BFLOAT16", 16),
    (Datatype::Bytes, "BYTES", "TYPE_STRING", "STRING", 8),
];

impl Datatype {
    fn row(self) -> &'static (Datatype, &'static str, &'static str, &'static str, i32) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every datatype has a row")
    }

    /// The KServe v2 name (`FP32`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The name in Triton's model configuration (`TYPE_FP32`; `TYPE_STRING` for BYTES).
    pub fn config_name(self) -> &'static str {
        self.row().2
    }

    /// The ONNX element type's name (`FLOAT`).
    pub fn onnx_name(self) -> &'static str {
        self.row().3
    }

    /// The datatype of a KServe v2 name.
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
    }

    /// The datatype of a Triton configuration name.
    pub fn from_config_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.2 == name).map(|r| r.0)
    }

    /// The datatype of an ONNX `TensorProto.DataType` number.
    pub fn from_onnx(elem_type: i32) -> Option<Self> {
        TABLE.iter().find(|r| r.4 == elem_type).map(|r| r.0)
    }

    /// Bytes per element; None for BYTES, whose elements vary.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
            Datatype::Bytes => return None,
        })
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a KServe v2 datatype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDatatype(pub String);

impl fmt::Display for UnknownDatatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = TABLE.iter().map(|r| r.1).collect();
        write!(
            f,
            "unknown datatype `{}`; KServe v2 has {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownDatatype {}

impl FromStr for Datatype {
    type Err = UnknownDatatype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Datatype::from_name(s).ok_or_else(|| UnknownDatatype(s.to_string()))
    }
}

impl serde::Serialize for Datatype {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_to_its_datatype() {
        for (d, kserve, config, onnx, number) in TABLE {
            assert_eq!(Datatype::from_name(kserve), Some(d));
            assert_eq!(Datatype::from_config_name(config), Some(d));
            assert_eq!(Datatype::from_onnx(number), Some(d));
            assert_eq!(d.onnx_name(), onnx);
            assert_eq!(d.to_string().parse::<Datatype>(), Ok(d));
        }
        assert_eq!(Datatype::Bytes.config_name(), "TYPE_STRING");
        assert_eq!(Datatype::Fp32.size(), Some(4));
        assert_eq!(Datatype::Bytes.size(), None);
        let e = "FLOAT".parse::<Datatype>().unwrap_err().to_string();
        assert!(
            e.contains("unknown datatype `FLOAT`") && e.contains("FP32"),
            "{e}"
        );
    }
}

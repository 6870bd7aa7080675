//! What a request message may make its receiver hold, checked on its wire
//! bytes before prost builds anything.
//!
//! prost decodes a message in full: a 16 MB ModelInferRequest whose
//! `inputs` holds 8 M empty entries (2 bytes each on the wire) becomes 8 M
//! structs of a few hundred bytes, gigabytes for one request, before any
//! handler could look at how many inputs the model takes. [`GuardedCodec`]
//! is the codec of every generated service: before decoding a request
//! type that has a [`Schema`] here, it walks the wire bytes once (no
//! allocation), refuses a repeated field with more entries than any model
//! takes (INVALID_ARGUMENT), and refuses a message whose decoded form would
//! cost more than [`EXPANSION`] times its wire size (RESOURCE_EXHAUSTED).
//! Types without a schema (responses, small requests) decode as prost
//! decodes them.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::{classify, inference};

/// Input, output and raw-content entries one inference request may carry:
/// more than any served model takes (the models have one input and at most
/// a few outputs), few enough that building them costs nothing.
pub const MAX_TENSORS: usize = 16;

/// Parameters one request, tensor or load call may carry.
pub const MAX_PARAMETERS: usize = 64;

/// Dimensions of one tensor's shape.
pub const MAX_DIMS: usize = 16;

/// Images one Classify call may carry (the core holds them to the model's
/// batch size after this).
pub const MAX_IMAGES: usize = 1024;

/// How much larger than its wire bytes a checked message may be once
/// decoded, plus [`EXPANSION_SLACK`]: packed UINT8 values as `uint32`
/// varints take 1 byte on the wire and 4 decoded, so 8 leaves room for
/// every legal request while 150x (empty repeated entries) is refused.
pub const EXPANSION: usize = 8;

/// Bytes a checked message may cost beyond [`EXPANSION`] times its size.
pub const EXPANSION_SLACK: usize = 64 << 10;

/// How a field is held once decoded, for the cost estimate.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string or bytes (an allocation of its length) or a map entry.
    Bytes,
    /// A nested message, checked by its own schema.
    Message(&'static Schema),
    /// A repeated varint scalar (packed or not), 8 bytes per value decoded.
    Varints,
    /// A repeated fixed-width scalar, as many bytes decoded as on the wire.
    Fixed,
}

/// One field of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its protobuf field number.
    pub number: u32,
    /// Its name, for the error.
    pub name: &'static str,
    /// Entries (values, for varints) it may hold.
    pub max: usize,
    /// How it is held.
    pub kind: Kind,
}

/// The fields of a message that can grow; the others are skipped over.
#[derive(Debug)]
pub struct Schema {
    /// The message's name, for the error.
    pub name: &'static str,
    /// Its fields.
    pub fields: &'static [Field],
}

const fn field(number: u32, name: &'static str, max: usize, kind: Kind) -> Field {
    Field {
        number,
        name,
        max,
        kind,
    }
}

/// No tensor has more values than this many (4 M images of 1x28x28 ...):
/// the cost estimate, not this, bounds them.
const VALUES: usize = usize::MAX;

static CONTENTS: Schema = Schema {
    name: "InferTensorContents",
    fields: &[
        field(1, "bool_contents", VALUES, Kind::Fixed),
        field(2, "int_contents", VALUES, Kind::Varints),
        field(3, "int64_contents", VALUES, Kind::Varints),
        field(4, "uint_contents", VALUES, Kind::Varints),
        field(5, "uint64_contents", VALUES, Kind::Varints),
        field(6, "fp32_contents", VALUES, Kind::Fixed),
        field(7, "fp64_contents", VALUES, Kind::Fixed),
        field(8, "bytes_contents", MAX_IMAGES, Kind::Bytes),
    ],
};

static INPUT: Schema = Schema {
    name: "InferInputTensor",
    fields: &[
        field(1, "name", 1, Kind::Bytes),
        field(2, "datatype", 1, Kind::Bytes),
        field(3, "shape", MAX_DIMS, Kind::Varints),
        field(4, "parameters", MAX_PARAMETERS, Kind::Bytes),
        field(5, "contents", 1, Kind::Message(&CONTENTS)),
    ],
};

static OUTPUT: Schema = Schema {
    name: "InferRequestedOutputTensor",
    fields: &[
        field(1, "name", 1, Kind::Bytes),
        field(2, "parameters", MAX_PARAMETERS, Kind::Bytes),
    ],
};

/// `inference.ModelInferRequest`.
pub static MODEL_INFER: Schema = Schema {
    name: "ModelInferRequest",
    fields: &[
        field(1, "model_name", 1, Kind::Bytes),
        field(2, "model_version", 1, Kind::Bytes),
        field(3, "id", 1, Kind::Bytes),
        field(4, "parameters", MAX_PARAMETERS, Kind::Bytes),
        field(5, "inputs", MAX_TENSORS, Kind::Message(&INPUT)),
        field(6, "outputs", MAX_TENSORS, Kind::Message(&OUTPUT)),
        field(7, "raw_input_contents", MAX_TENSORS, Kind::Bytes),
    ],
};

/// `rir.v1.ClassifyRequest`.
pub static CLASSIFY: Schema = Schema {
    name: "ClassifyRequest",
    fields: &[
        field(1, "model_name", 1, Kind::Bytes),
        field(2, "model_version", 1, Kind::Bytes),
        field(3, "images", MAX_IMAGES, Kind::Bytes),
    ],
};

/// `inference.RepositoryModelLoadRequest` (its `parameters` map).
pub static MODEL_LOAD: Schema = Schema {
    name: "RepositoryModelLoadRequest",
    fields: &[field(3, "parameters", MAX_PARAMETERS, Kind::Bytes)],
};

/// The schema a decoded type `U` is checked by, if any.
pub fn schema_of<U: 'static>() -> Option<&'static Schema> {
    let t = TypeId::of::<U>();
    if t == TypeId::of::<inference::ModelInferRequest>() {
        Some(&MODEL_INFER)
    } else if t == TypeId::of::<classify::ClassifyRequest>() {
        Some(&CLASSIFY)
    } else if t == TypeId::of::<inference::RepositoryModelLoadRequest>() {
        Some(&MODEL_LOAD)
    } else {
        None
    }
}

/// Why a message was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A repeated field with more entries than allowed.
    TooMany {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The most it may hold.
        max: usize,
    },
    /// The decoded message would cost too much for its size.
    Expands {
        /// The message.
        message: &'static str,
        /// Its wire size.
        wire: usize,
        /// The estimated decoded cost.
        decoded: usize,
    },
    /// Bytes that are not protobuf (prost would refuse them too).
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooMany {
                message,
                field,
                max,
            } => write!(
                f,
                "{message}.{field} has more than {max} entries, more than any model takes"
            ),
            WireError::Expands {
                message,
                wire,
                decoded,
            } => write!(
                f,
                "{message} of {wire} bytes would take about {decoded} bytes decoded \
                 (more than {EXPANSION}x its size); refused before decoding"
            ),
            WireError::Malformed(what) => write!(f, "the message is not protobuf: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        match e {
            WireError::Expands { .. } => Status::resource_exhausted(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Bytes of a decoded struct or map entry, for the estimate (the largest
/// of the checked types is about this size).
const ENTRY: usize = 160;

/// Checks `bytes` against `schema`: every count within its bound, and the
/// estimated decoded cost within [`EXPANSION`] times the size.
pub fn check(bytes: &[u8], schema: &'static Schema) -> Result<(), WireError> {
    let decoded = walk(bytes, schema)?;
    if decoded > bytes.len().saturating_mul(EXPANSION) + EXPANSION_SLACK {
        return Err(WireError::Expands {
            message: schema.name,
            wire: bytes.len(),
            decoded,
        });
    }
    Ok(())
}

/// The estimated decoded cost of one message's `bytes`.
/// (The schemas nest three deep and never into themselves, so the
/// recursion is bounded by them, not by the bytes.)
fn walk(mut bytes: &[u8], schema: &'static Schema) -> Result<usize, WireError> {
    let mut counts = [0usize; 8];
    let mut cost = ENTRY;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = value(&mut bytes, wire_type)?;
        let Some((i, f)) = schema
            .fields
            .iter()
            .enumerate()
            .find(|(_, f)| u64::from(f.number) == number)
        else {
            continue;
        };
        let (entries, c) = field_cost(f, wire_type, value)?;
        counts[i] = counts[i].saturating_add(entries);
        if counts[i] > f.max {
            return Err(WireError::TooMany {
                message: schema.name,
                field: f.name,
                max: f.max,
            });
        }
        cost = cost.saturating_add(c);
    }
    Ok(cost)
}

/// How many entries one occurrence of field `f` adds, and their cost.
fn field_cost(f: &Field, wire_type: u64, value: &[u8]) -> Result<(usize, usize), WireError> {
    let packed = wire_type == 2;
    Ok(match f.kind {
        Kind::Bytes => (1, ENTRY.saturating_add(value.len())),
        Kind::Message(s) => (1, walk(value, s)?),
        Kind::Varints if packed => {
            let n = value.iter().filter(|b| **b < 0x80).count();
            (n, n.saturating_mul(8))
        }
        Kind::Varints | Kind::Fixed if !packed => (1, 8),
        Kind::Fixed => (1, value.len()),
        Kind::Varints => unreachable!("matched above"),
    })
}

/// Reads a base-128 varint.
fn varint(bytes: &mut &[u8]) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes
            .split_first()
            .ok_or(WireError::Malformed("a varint runs past the end"))?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::Malformed("a varint longer than 10 bytes"))
}

/// Skips one value of `wire_type`, returning its payload (length-delimited)
/// or its bytes.
fn value<'a>(bytes: &mut &'a [u8], wire_type: u64) -> Result<&'a [u8], WireError> {
    let len = match wire_type {
        0 => {
            let start = *bytes;
            varint(bytes)?;
            return Ok(&start[..start.len() - bytes.len()]);
        }
        1 => 8,
        5 => 4,
        2 => usize::try_from(varint(bytes)?).map_err(|_| WireError::Malformed("length"))?,
        _ => return Err(WireError::Malformed("a group or an unknown wire type")),
    };
    if len > bytes.len() {
        return Err(WireError::Malformed("a field runs past the end"));
    }
    let (v, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(v)
}

/// The codec of every generated service: prost's, with requests that have
/// a [`Schema`] checked by [`check`] first.
#[derive(Debug, Clone)]
pub struct GuardedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for GuardedCodec<T, U> {
    fn default() -> Self {
        GuardedCodec(PhantomData)
    }
}

impl<T, U> Codec for GuardedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = GuardedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        GuardedDecoder(PhantomData)
    }
}

/// Decodes `U` after [`check`]ing it against its schema.
#[derive(Debug, Clone)]
pub struct GuardedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for GuardedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        if let Some(schema) = schema_of::<U>() {
            // tonic hands over one contiguous buffer per message.
            let bytes = buf.chunk();
            if bytes.len() == buf.remaining() {
                check(bytes, schema)?;
            }
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

    fn request(inputs: usize, outputs: usize, values: usize) -> inference::ModelInferRequest {
        inference::ModelInferRequest {
            model_name: "m".into(),
            inputs: (0..inputs)
                .map(|_| InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 1, 28, 28],
                    contents: Some(inference::InferTensorContents {
                        fp32_contents: vec![0.5; values],
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            outputs: (0..outputs)
                .map(|_| InferRequestedOutputTensor::default())
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_legal_request_passes_and_counts_over_the_bound_are_refused() {
        let ok = request(1, 2, 784).encode_to_vec();
        assert_eq!(check(&ok, &MODEL_INFER), Ok(()));
        let many = request(MAX_TENSORS + 1, 0, 1).encode_to_vec();
        assert_eq!(
            check(&many, &MODEL_INFER),
            Err(WireError::TooMany {
                message: "ModelInferRequest",
                field: "inputs",
                max: 16
            })
        );
        let outputs = request(1, MAX_TENSORS + 1, 1).encode_to_vec();
        assert!(matches!(
            check(&outputs, &MODEL_INFER),
            Err(WireError::TooMany {
                field: "outputs",
                ..
            })
        ));
        let mut dims = request(1, 0, 1);
        dims.inputs[0].shape = vec![1; MAX_DIMS + 1];
        assert!(matches!(
            check(&dims.encode_to_vec(), &MODEL_INFER),
            Err(WireError::TooMany { field: "shape", .. })
        ));
    }

    #[test]
    fn legal_uint8_values_pass_and_too_many_images_are_refused() {
        // UINT8 images as packed uint32: 4x, legal.
        let mut u = request(1, 0, 0);
        u.inputs[0].contents = Some(inference::InferTensorContents {
            uint_contents: vec![7; 200_000],
            ..Default::default()
        });
        assert_eq!(check(&u.encode_to_vec(), &MODEL_INFER), Ok(()));
        // 100,000 empty images: 2 bytes each on the wire, an allocation each.
        let mut bomb = Vec::new();
        for _ in 0..(MAX_IMAGES + 1) {
            bomb.extend_from_slice(&[0x1a, 0]);
        }
        assert!(matches!(
            check(&bomb, &CLASSIFY),
            Err(WireError::TooMany {
                field: "images",
                ..
            })
        ));
    }

    #[test]
    fn the_expansion_bound_sits_between_legal_uint8_and_empty_entries() {
        // By hand: 1,000 empty bytes_contents entries, 2 bytes each =
        // 2,000 wire bytes; decoded, 160 bytes each (and the struct) =
        // 160,160, above 8 x 2,000 + 64 KiB = 81,536.
        let empty = |n: usize| [0x42u8, 0].repeat(n);
        assert_eq!(walk(&empty(1_000), &CONTENTS), Ok(160_160));
        assert_eq!(
            check(&empty(1_000), &CONTENTS),
            Err(WireError::Expands {
                message: "InferTensorContents",
                wire: 2_000,
                decoded: 160_160
            })
        );
        // 100 of them are within it; 1,025 are too many to count further.
        assert_eq!(check(&empty(100), &CONTENTS), Ok(()));
        assert!(matches!(
            check(&empty(MAX_IMAGES + 1), &CONTENTS),
            Err(WireError::TooMany {
                field: "bytes_contents",
                ..
            })
        ));
        // Packed int64 zeros: 8 bytes decoded per wire byte, by hand.
        let mut packed = vec![0x1a];
        let n = 1usize << 20;
        let mut len = Vec::new();
        let mut v = n;
        while v >= 0x80 {
            len.push((v as u8) | 0x80);
            v >>= 7;
        }
        len.push(v as u8);
        packed.extend_from_slice(&len);
        packed.extend(std::iter::repeat_n(0u8, n));
        let cost = walk(&packed, &CONTENTS).unwrap();
        assert_eq!(cost, 8 * n + ENTRY);
        // That is within 8x + 64 KiB of its size: int64 values pass.
        assert_eq!(check(&packed, &CONTENTS), Ok(()));
    }

    #[test]
    fn broken_wire_bytes_are_refused_not_read_past_their_end() {
        for bad in [
            &[0x2a, 0x05, 0x00][..],
            &[0x2a][..],
            &[0xff; 11][..],
            &[0x2b][..],
        ] {
            assert!(
                matches!(check(bad, &MODEL_INFER), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_request_type_has_its_schema_and_others_none() {
        let name = |s: Option<&'static Schema>| s.map(|s| s.name);
        assert_eq!(
            name(schema_of::<inference::ModelInferRequest>()),
            Some("ModelInferRequest")
        );
        assert_eq!(
            name(schema_of::<classify::ClassifyRequest>()),
            Some("ClassifyRequest")
        );
        assert_eq!(
            name(schema_of::<inference::RepositoryModelLoadRequest>()),
            Some("RepositoryModelLoadRequest")
        );
        assert_eq!(name(schema_of::<inference::ModelInferResponse>()), None);
        assert_eq!(name(schema_of::<inference::ServerLiveRequest>()), None);
    }

    #[test]
    fn refusals_carry_their_status_and_say_why() {
        let many = WireError::TooMany {
            message: "M",
            field: "f",
            max: 3,
        };
        let status = Status::from(many);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "M.f has more than 3 entries, more than any model takes"
        );
        let big = Status::from(WireError::Expands {
            message: "M",
            wire: 10,
            decoded: 900,
        });
        assert_eq!(big.code(), tonic::Code::ResourceExhausted);
        assert!(
            big.message()
                .contains("M of 10 bytes would take about 900 bytes")
        );
        let bad = Status::from(WireError::Malformed("x"));
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert_eq!(bad.message(), "the message is not protobuf: x");
    }

    #[test]
    fn the_expansion_bound_is_exact_at_its_edge() {
        // k empty bytes entries cost 160 k + 160 (and the struct) for 2 k
        // wire bytes: over 8 x 2 k + 65,536 exactly when 144 k > 65,376,
        // k > 454.0 by hand: 454 pass, 455 do not.
        let empty = |k: usize| [0x42u8, 0].repeat(k);
        assert_eq!(check(&empty(454), &CONTENTS), Ok(()));
        assert!(matches!(
            check(&empty(455), &CONTENTS),
            Err(WireError::Expands {
                decoded: 72_960,
                ..
            })
        ));
        assert_eq!(check(&[], &CONTENTS), Ok(()));
    }

    #[test]
    fn packed_and_unpacked_values_count_alike_and_other_wire_types_are_skipped() {
        // shape [1, 300] packed: 300 takes two bytes, still one value; and
        // 128 (0x80 0x01) is one value, not two.
        assert_eq!(walk(&[0x1a, 2, 0x80, 0x01], &INPUT), Ok(ENTRY + 8));
        let mut input = vec![0x1a, 3, 1, 0xac, 0x02];
        assert_eq!(walk(&input, &INPUT), Ok(ENTRY + 16));
        // 15 unpacked dims (tag 0x18, one varint each) beside the packed
        // two: 17, over the bound of 16.
        for _ in 0..15 {
            input.extend_from_slice(&[0x18, 1]);
        }
        assert!(matches!(
            walk(&input, &INPUT),
            Err(WireError::TooMany { field: "shape", .. })
        ));
        // Unknown fields of every wire type are skipped, then a known one
        // still counts: field 9 as varint, 64-bit, 32-bit and bytes.
        let mut m = vec![0x48, 0x96, 0x01, 0x49];
        m.extend_from_slice(&[0; 8]);
        m.push(0x4d);
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&[0x4a, 2, 7, 7]);
        m.extend_from_slice(&[0x0a, 1, b'x']);
        assert_eq!(walk(&m, &INPUT), Ok(ENTRY + ENTRY + 1));
        // Unpacked fp32 values (wire type 5) count 8 each.
        let mut f = Vec::new();
        for _ in 0..3 {
            f.push(0x35);
            f.extend_from_slice(&1f32.to_le_bytes());
        }
        assert_eq!(walk(&f, &CONTENTS), Ok(ENTRY + 3 * 8));
        // Packed fp32 values cost their bytes: 1,000 of them 4,000.
        let mut packed = vec![0x32, 0xa0, 0x1f];
        packed.extend(std::iter::repeat_n(0u8, 4_000));
        assert_eq!(walk(&packed, &CONTENTS), Ok(ENTRY + 4_000));
    }

    /// `message` decoded by the guarded codec as tonic decodes a request:
    /// framed, from a body.
    async fn decoded<U: Message + Default + Send + 'static>(message: Vec<u8>) -> Result<U, Status> {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let body = http_body_util::Full::new(prost::bytes::Bytes::from(framed));
        let mut codec = GuardedCodec::<U, U>::default();
        let mut stream =
            tonic::codec::Streaming::new_request(codec.decoder(), body, None, Some(64 << 20));
        stream
            .message()
            .await?
            .ok_or_else(|| Status::internal("no message"))
    }

    #[tokio::test]
    async fn the_codec_refuses_before_decoding_and_decodes_the_rest_as_prost_does() {
        let ok = request(1, 1, 784);
        let back: inference::ModelInferRequest = decoded(ok.encode_to_vec()).await.unwrap();
        assert_eq!(back, ok);
        let e = decoded::<inference::ModelInferRequest>(request(17, 0, 1).encode_to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().contains("inputs has more than 16"),
            "{}",
            e.message()
        );
        // A type without a schema is prost's alone: a response of 2,000
        // raw outputs decodes.
        let response = inference::ModelInferResponse {
            raw_output_contents: vec![vec![]; 2_000],
            ..Default::default()
        };
        let back: inference::ModelInferResponse = decoded(response.encode_to_vec()).await.unwrap();
        assert_eq!(back.raw_output_contents.len(), 2_000);
    }
}

//! The KServe v2 REST inference body, both ways: JSON tensors, and Triton's
//! binary tensor data extension (a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary input's bytes
//! in input order; outputs asked for as `binary_data` come back the same
//! way). This module only reads and writes bodies; the checks of shapes and
//! values are the core's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use rir_contract::Datatype;
use rir_proto::wire::{MAX_DIMS, MAX_TENSORS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bounded::{Numbers, Scalar, at_most};

use crate::core::{InferResult, OutputData, RequestedOutput};
use crate::tensors::{TensorData, TensorInput};

/// Why a request body is not a KServe v2 inference request this server can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The JSON header is declared longer than the body.
    #[error("Inference-Header-Content-Length is {declared} but the body has {body} bytes")]
    HeaderLength {
        /// The declared length.
        declared: usize,
        /// The body's length.
        body: usize,
    },
    /// The JSON does not parse as a request.
    #[error("the request is not a KServe v2 inference request: {0}")]
    Json(String),
    /// A parameter of the wrong type or value.
    #[error("parameter `{key}` must be {expected}, got {got}")]
    Parameter {
        /// The parameter.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
        /// The value sent.
        got: String,
    },
    /// A value in `data` that is not a number of the input's datatype.
    #[error("input `{input}`: {value} is not a valid value")]
    Value {
        /// The input.
        input: String,
        /// The value sent.
        value: String,
    },
    /// Both `data` and `binary_data_size`.
    #[error("input `{0}` has both `data` and `binary_data_size`")]
    BothData(String),
    /// Neither `data` nor `binary_data_size`.
    #[error("input `{0}` has neither `data` nor `binary_data_size`")]
    NoData(String),
    /// Binary data declared past the end of the body.
    #[error(
        "input `{input}` declares {size} bytes of binary data; the body has {left} after the header and earlier inputs"
    )]
    BinaryShort {
        /// The input.
        input: String,
        /// Bytes declared.
        size: u64,
        /// Bytes left in the body.
        left: usize,
    },
    /// Bytes that no input declared.
    #[error("{0} bytes after the last input's binary data")]
    Trailing(usize),
}

/// A response that could not be written as JSON.
#[derive(Debug, thiserror::Error)]
#[error("encoding the response: {0}")]
pub(crate) struct EncodeError(#[from] serde_json::Error);

/// An inference request body as JSON, read with every list bounded
/// ([`bounded`]): no `serde_json::Value` is built from a request.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestJson {
    /// Echoed in the response.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// Request parameters (`binary_data_output`; others are skipped).
    #[serde(default)]
    pub(crate) parameters: RequestParameters,
    /// Input tensors.
    #[serde(deserialize_with = "at_most::<_, InputJson, MAX_TENSORS>")]
    pub(crate) inputs: Vec<InputJson>,
    /// Requested outputs (none: all).
    #[serde(
        default,
        deserialize_with = "at_most::<_, OutputRequestJson, MAX_TENSORS>"
    )]
    pub(crate) outputs: Vec<OutputRequestJson>,
}

/// The request parameters this server reads; any other is skipped unread.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestParameters {
    /// Outputs not named otherwise go back as binary data.
    pub(crate) binary_data_output: Option<Scalar>,
}

/// One input tensor of a JSON request.
#[derive(Debug, Deserialize)]
pub(crate) struct InputJson {
    /// Input name.
    pub(crate) name: String,
    /// Shape, batch first.
    #[serde(deserialize_with = "at_most::<_, i64, MAX_DIMS>")]
    pub(crate) shape: Vec<i64>,
    /// KServe datatype.
    pub(crate) datatype: String,
    /// `binary_data_size` when the values follow the JSON as bytes.
    #[serde(default)]
    pub(crate) parameters: InputParameters,
    /// The values (flat or nested row-major), when not binary.
    #[serde(default)]
    pub(crate) data: Option<Numbers>,
}

/// The input parameters this server reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InputParameters {
    /// Bytes of this input's binary data after the JSON.
    pub(crate) binary_data_size: Option<Scalar>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub(crate) struct OutputRequestJson {
    /// Output name.
    pub(crate) name: String,
    /// `classification` (top k as strings) and `binary_data`.
    #[serde(default)]
    pub(crate) parameters: OutputParameters,
}

/// The output parameters this server reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct OutputParameters {
    /// The classification extension: the top this many as strings.
    pub(crate) classification: Option<Scalar>,
    /// This output goes back as binary data.
    pub(crate) binary_data: Option<Scalar>,
}

/// Where an input's values are: a range of the body, or parsed JSON values.
#[derive(Debug)]
enum Values {
    Binary(Range<usize>),
    Fp32(Vec<f32>),
    Uint(Vec<u32>),
}

/// A request body read but not yet checked against a model.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The JSON part.
    pub(crate) json: RequestJson,
    values: Vec<Values>,
    /// The requested outputs, with their classification counts.
    outputs: Vec<RequestedOutput>,
    /// Outputs whose own `binary_data` parameter says how they go back.
    binary_named: HashMap<String, bool>,
    /// The request's `binary_data_output`: how the other outputs go back.
    binary_default: bool,
}

/// Parameter `key`, if given, read by `read`, which holds it to `expected`.
fn param<T>(
    value: Option<&Scalar>,
    key: &'static str,
    expected: &'static str,
    read: impl Fn(&Scalar) -> Option<T>,
) -> Result<Option<T>, DecodeError> {
    match value {
        None => Ok(None),
        Some(v) => read(v).map(Some).ok_or_else(|| DecodeError::Parameter {
            key,
            expected,
            got: v.to_string(),
        }),
    }
}

fn param_bool(value: Option<&Scalar>, key: &'static str) -> Result<Option<bool>, DecodeError> {
    param(value, key, "true or false", Scalar::as_bool)
}

/// Reads a request body. `header_length` is the value of
/// `Inference-Header-Content-Length`: the JSON's length when binary data
/// Where `input`'s values are: a range of the binary part after
/// `offset` (moved past it), or the JSON `data` read as its datatype.
fn input_values(
    input: &mut InputJson,
    body: &[u8],
    offset: &mut usize,
) -> Result<Values, DecodeError> {
    let size = param(
        input.parameters.binary_data_size.as_ref(),
        "binary_data_size",
        "a non-negative integer",
        Scalar::as_u64,
    )?;
    Ok(match (size, input.data.take()) {
        (Some(_), Some(_)) => return Err(DecodeError::BothData(input.name.clone())),
        (Some(size), None) => {
            let end = usize::try_from(size)
                .ok()
                .and_then(|s| offset.checked_add(s))
                .filter(|end| *end <= body.len())
                .ok_or_else(|| DecodeError::BinaryShort {
                    input: input.name.clone(),
                    size,
                    left: body.len() - *offset,
                })?;
            let r = *offset..end;
            *offset = end;
            Values::Binary(r)
        }
        (None, None) => return Err(DecodeError::NoData(input.name.clone())),
        (None, Some(data)) if input.datatype == Datatype::Uint8.name() => Values::Uint(
            data.unsigned()
                .map_err(|super::bounded::NotUnsigned(value)| DecodeError::Value {
                    input: input.name.clone(),
                    value,
                })?,
        ),
        (None, Some(data)) => Values::Fp32(data.values),
    })
}

/// The outputs asked for (with their classification extension), and the
/// ones whose `binary_data` is set either way.
fn requested_outputs(
    asked: &[OutputRequestJson],
) -> Result<(Vec<RequestedOutput>, HashMap<String, bool>), DecodeError> {
    let mut outputs = Vec::with_capacity(asked.len());
    let mut binary_named = HashMap::new();
    for o in asked {
        let positive = |v: &Scalar| v.as_u64().filter(|k| *k > 0);
        let classification = param(
            o.parameters.classification.as_ref(),
            "classification",
            "a positive integer",
            positive,
        )?
        .map(|k| k as usize);
        outputs.push(RequestedOutput {
            name: o.name.clone(),
            classification,
        });
        if let Some(b) = param_bool(o.parameters.binary_data.as_ref(), "binary_data")? {
            binary_named.insert(o.name.clone(), b);
        }
    }
    Ok((outputs, binary_named))
}

/// follows it, or None when the whole body is JSON.
pub(crate) fn decode(body: &[u8], header_length: Option<usize>) -> Result<Decoded, DecodeError> {
    let json_len = header_length.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(DecodeError::HeaderLength {
            declared: json_len,
            body: body.len(),
        });
    }
    let mut json: RequestJson =
        serde_json::from_slice(&body[..json_len]).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut offset = json_len;
    let mut values = Vec::with_capacity(json.inputs.len());
    for input in &mut json.inputs {
        values.push(input_values(input, body, &mut offset)?);
    }
    if offset != body.len() {
        return Err(DecodeError::Trailing(body.len() - offset));
    }
    let (outputs, binary_named) = requested_outputs(&json.outputs)?;
    let binary_default = param_bool(
        json.parameters.binary_data_output.as_ref(),
        "binary_data_output",
    )?
    .unwrap_or(false);
    Ok(Decoded {
        json,
        values,
        outputs,
        binary_named,
        binary_default,
    })
}

impl Decoded {
    /// The inputs as the core takes them; binary values borrow `body`,
    /// which must be the body [`decode`] read.
    pub(crate) fn inputs<'a>(&'a self, body: &'a [u8]) -> Vec<TensorInput<'a>> {
        self.json
            .inputs
            .iter()
            .zip(&self.values)
            .map(|(i, v)| TensorInput {
                name: &i.name,
                datatype: &i.datatype,
                shape: &i.shape,
                data: match v {
                    Values::Binary(r) => TensorData::Raw(&body[r.clone()]),
                    Values::Fp32(f) => TensorData::Fp32(Cow::Borrowed(f)),
                    Values::Uint(u) => TensorData::Uint(Cow::Borrowed(u)),
                },
            })
            .collect()
    }

    /// The requested outputs (none: all), with their classification counts.
    pub(crate) fn outputs(&self) -> Vec<RequestedOutput> {
        self.outputs.clone()
    }

    /// Whether output `name` goes back as binary data: its own
    /// `binary_data` parameter, else the request's `binary_data_output`.
    fn binary(&self, name: &str) -> bool {
        self.binary_named
            .get(name)
            .copied()
            .unwrap_or(self.binary_default)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataJson {
    Fp32(Vec<f32>),
    Strings(Vec<String>),
}

#[derive(Serialize)]
struct OutputJson {
    name: String,
    datatype: Datatype,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataJson>,
}

#[derive(Serialize)]
struct ResponseJson {
    model_name: String,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputJson>,
}

/// A response body, and the JSON header's length when binary data follows it.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The body.
    pub(crate) body: Vec<u8>,
    /// Length of the JSON part when outputs follow as binary data.
    pub(crate) header_length: Option<usize>,
}

/// Writes the response body for `result` to the request `decoded`.
pub(crate) fn encode(decoded: &Decoded, result: InferResult) -> Result<Encoded, EncodeError> {
    let mut binary = vec![];
    let mut outputs = vec![];
    for o in result.outputs {
        let mut parameters = Map::new();
        let data = if decoded.binary(&o.name) {
            let bytes = o.data.to_bytes();
            parameters.insert("binary_data_size".into(), bytes.len().into());
            binary.push(bytes);
            None
        } else {
            Some(match &o.data {
                OutputData::Fp32(v) => DataJson::Fp32(v.clone()),
                OutputData::Bytes(items) => DataJson::Strings(
                    items
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect(),
                ),
            })
        };
        outputs.push(OutputJson {
            name: o.name,
            datatype: o.data.datatype(),
            shape: o.shape,
            parameters,
            data,
        });
    }
    let mut body = serde_json::to_vec(&ResponseJson {
        model_name: result.model_name,
        model_version: result.model_version,
        id: decoded.json.id.clone(),
        outputs,
    })?;
    let header_length = (!binary.is_empty()).then_some(body.len());
    for b in binary {
        body.extend_from_slice(&b);
    }
    Ok(Encoded {
        body,
        header_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::OutputTensor;

    fn result() -> InferResult {
        InferResult {
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: vec![
                OutputTensor {
                    name: "logits".into(),
                    shape: vec![1, 2],
                    data: OutputData::Fp32(vec![0.5, -1.0]),
                },
                OutputTensor {
                    name: "top".into(),
                    shape: vec![1, 1],
                    data: OutputData::Bytes(vec![b"0.5:0:a".to_vec()]),
                },
            ],
        }
    }

    #[test]
    fn json_values_nested_or_flat_read_the_same() {
        let flat =
            br#"{"inputs":[{"name":"x","shape":[1,2,2],"datatype":"FP32","data":[1,2,3.5,4]}]}"#;
        let nested = br#"{"inputs":[{"name":"x","shape":[1,2,2],"datatype":"FP32","data":[[[1,2],[3.5,4]]]}]}"#;
        for body in [&flat[..], &nested[..]] {
            let d = decode(body, None).unwrap();
            match &d.inputs(body)[0].data {
                TensorData::Fp32(v) => assert_eq!(v.as_ref(), &[1.0, 2.0, 3.5, 4.0]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn binary_inputs_are_cut_from_the_body_in_order() {
        let header = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}},{"name":"b","shape":[2],"datatype":"UINT8","parameters":{"binary_data_size":2}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&[7, 9]);
        let d = decode(&body, Some(header.len())).unwrap();
        let inputs = d.inputs(&body);
        assert!(matches!(inputs[0].data, TensorData::Raw(b) if b == 1.5f32.to_le_bytes()));
        assert!(matches!(inputs[1].data, TensorData::Raw(b) if b == [7, 9]));
        // One byte short, one byte over, a header longer than the body.
        assert!(decode(&body[..body.len() - 1], Some(header.len())).is_err());
        let mut over = body.clone();
        over.push(0);
        assert_eq!(
            decode(&over, Some(header.len())).unwrap_err(),
            DecodeError::Trailing(1)
        );
        assert!(decode(&body, Some(body.len() + 1)).is_err());
        assert!(decode(&body, Some(usize::MAX)).is_err());
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"outputs":[]}"#, "missing field `inputs`"),
            (b"{", "not a KServe v2 inference request"),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "neither",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
                "not a valid value",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[-1]}]}"#,
                "not a valid value",
            ),
        ];
        for (body, needle) in cases {
            let e = decode(body, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let huge = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":18446744073709551615}}]}"#;
        assert!(decode(huge, Some(huge.len())).is_err());
    }

    #[test]
    fn outputs_go_back_binary_when_asked_per_output_or_per_request() {
        let body = br#"{"inputs":[],"outputs":[{"name":"logits","parameters":{"binary_data":true}},{"name":"top","parameters":{"classification":1}}]}"#;
        let d = decode(body, None).unwrap();
        let e = encode(&d, result()).unwrap();
        let n = e.header_length.unwrap();
        let json: Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"][0], "0.5:0:a");
        assert_eq!(&e.body[n..n + 4], &0.5f32.to_le_bytes());
        assert_eq!(e.body.len(), n + 8);

        let all = br#"{"inputs":[],"parameters":{"binary_data_output":true}}"#;
        let e = encode(&decode(all, None).unwrap(), result()).unwrap();
        let n = e.header_length.unwrap();
        // 8 bytes of floats, then one string: 4-byte length and 7 bytes.
        assert_eq!(e.body.len(), n + 8 + 4 + 7);

        let none = br#"{"inputs":[],"id":"r1"}"#;
        let e = encode(&decode(none, None).unwrap(), result()).unwrap();
        assert!(e.header_length.is_none());
        let json: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(json["id"], "r1");
        assert_eq!(json["outputs"][0]["data"][1], -1.0);
    }
}

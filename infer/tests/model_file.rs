//! rir-contract's model-file reader decodes only the ONNX fields it
//! reports, with its own field numbers; here it reads a model written by a
//! second implementation of the schema (tract's full `onnx.proto`), and
//! every value is checked against what was written by hand.

use prost::Message;
use rir_contract::ModelInfo;
use tract_onnx::pb;

fn tensor(name: &str, elem_type: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model() -> pb::ModelProto {
    let node = |op: &str| pb::NodeProto {
        op_type: op.into(),
        input: vec!["x".into()],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        producer_name: "hand".into(),
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: "com.microsoft".into(),
                version: 1,
            },
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
        ],
        metadata_props: vec![pb::StringStringEntryProto {
            key: "rir.precision".into(),
            value: "int8".into(),
        }],
        graph: Some(pb::GraphProto {
            node: vec![node("Conv"), node("Relu"), node("Conv")],
            initializer: vec![pb::TensorProto {
                name: "w".into(),
                dims: vec![2, 2],
                data_type: 1,
                raw_data: vec![0; 16],
                ..Default::default()
            }],
            // `w` is both an initializer and a graph input (older exporters
            // list them so); only `x` is an input to feed.
            input: vec![
                tensor("x", 1, &[None, Some(1), Some(28), Some(28)]),
                tensor("w", 1, &[Some(2), Some(2)]),
            ],
            output: vec![tensor("logits", 10, &[None, Some(-3)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_reader_agrees_with_tracts_schema_on_every_field_it_reports() {
    let info = ModelInfo::from_bytes(&model().encode_to_vec()).unwrap();
    assert_eq!(info.inputs.len(), 1);
    assert_eq!(info.inputs[0].name, "x");
    assert_eq!(info.inputs[0].elem_type, 1);
    assert_eq!(info.inputs[0].dims, vec![None, Some(1), Some(28), Some(28)]);
    assert_eq!(info.inputs[0].type_name(), "FLOAT");
    assert_eq!(info.outputs[0].name, "logits");
    assert_eq!(info.outputs[0].type_name(), "FLOAT16");
    // A negative size is not a size.
    assert_eq!(info.outputs[0].dims, vec![None, None]);
    assert_eq!(info.op_types, ["Conv", "Relu", "Conv"]);
    assert_eq!(info.count("Conv"), 2);
    assert_eq!(info.opset, 17);
    assert_eq!(info.metadata["rir.precision"], "int8");
}

#[test]
fn bytes_that_are_not_a_model_are_refused_with_the_reason() {
    let no_graph = pb::ModelProto {
        ir_version: 8,
        ..Default::default()
    };
    let err = ModelInfo::from_bytes(&no_graph.encode_to_vec()).unwrap_err();
    assert_eq!(err.to_string(), "the model has no graph");
    // A field 7 (graph) whose length runs past the end.
    let err = ModelInfo::from_bytes(&[0x3a, 0x10, 0x00]).unwrap_err();
    assert!(err.to_string().starts_with("not an ONNX model"), "{err}");
}

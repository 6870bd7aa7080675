//! Triton's `config.pbtxt`: what rir-export writes is read by Triton's own
//! schema (the `model_config.proto` shipped in NVIDIA's tritonclient, read
//! with protobuf's text format) and by rir-serve, which applies its batch
//! size, dynamic batching, instance count and version policy.

mod common;

use common::{Options, start, write_model};
use rir_exporter::triton::{ConfigWritten, write_config};
use rir_infer::{TritonConfig, VersionPolicy};
use rir_proto::inference::{self as pb, model_infer_request::InferInputTensor};
use rir_spec::InputSpec;
use tonic::Code;

fn request(model: &str, version: &str, n: usize) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: vec![n as i64, 1, 28, 28],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0; n * 784 * 4]],
        ..Default::default()
    }
}

/// The file as Triton's schema reads it, as JSON (protobuf's own text
/// format parser and JSON printer, in Python).
fn triton_reads(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from google.protobuf import text_format, json_format\n\
             from tritonclient.grpc import model_config_pb2\n\
             c = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())\n\
             print(json_format.MessageToJson(c, preserving_proto_field_name=True))",
        ])
        .arg(path)
        .env("PYTHONPATH", common::python_path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "Triton's schema refuses {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_configs_read_in_triton_and_steer_rir_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_model(root, "gray", 1, InputSpec::new(1, 28, 28), 1);
    write_model(root, "gray", 2, InputSpec::new(1, 28, 28), 2);
    let written = write_config(&root.join("gray/2/model.onnx")).unwrap();
    let path = root.join("gray/config.pbtxt");
    assert_eq!(written, ConfigWritten::Wrote(path.clone()));
    assert_eq!(
        write_config(&root.join("gray/1/model.onnx")).unwrap(),
        ConfigWritten::Kept(path.clone()),
        "an existing configuration is never overwritten"
    );
    let triton = triton_reads(&path);
    assert_eq!(triton["name"], "gray");
    assert_eq!(triton["platform"], "onnxruntime_onnx");
    assert_eq!(triton["max_batch_size"], 64);
    assert_eq!(
        triton["input"][0]["dims"],
        serde_json::json!(["1", "28", "28"])
    );
    assert_eq!(triton["output"][1]["name"], "probabilities");
    assert_eq!(
        triton["dynamic_batching"]["preferred_batch_size"],
        serde_json::json!([1, 2, 4, 8, 16, 32, 64])
    );

    // A person edits it: smaller batches, two instances, version 1 only.
    let mut config = TritonConfig::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.max_batch_size = Some(8);
    config
        .dynamic_batching
        .as_mut()
        .unwrap()
        .preferred_batch_size = vec![2, 8];
    config.instance_count = Some(2);
    config.version_policy = VersionPolicy::Specific(vec![1]);
    std::fs::write(&path, config.to_pbtxt()).unwrap();
    let edited = triton_reads(&path);
    assert_eq!(edited["instance_group"][0]["count"], 2);
    assert_eq!(
        edited["version_policy"]["specific"]["versions"],
        serde_json::json!(["1"])
    );
    // Two broken configurations beside it.
    write_model(root, "zero", 1, InputSpec::new(1, 28, 28), 3);
    std::fs::write(root.join("zero/config.pbtxt"), "max_batch_size: 0\n").unwrap();
    write_model(root, "wrong", 1, InputSpec::new(1, 28, 28), 4);
    std::fs::write(
        root.join("wrong/config.pbtxt"),
        "input [ { name: \"image\" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]\n",
    )
    .unwrap();

    let s = start(Some(root), Options::default()).await;
    let mut c = s.kserve().await;
    let cfg = c
        .model_config(pb::ModelConfigRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.max_batch_size, 8);
    let meta = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, vec!["1"], "version_policy specific [1]");
    let r = c
        .model_infer(request("gray", "", 8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "1");
    let e = c.model_infer(request("gray", "", 9)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max batch size 8"), "{}", e.message());
    assert_eq!(
        c.model_infer(request("gray", "2", 1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let index = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let reason = |name: &str| {
        index
            .models
            .iter()
            .find(|m| m.name == name)
            .map(|m| (m.state.clone(), m.reason.clone()))
            .unwrap()
    };
    let (state, why) = reason("zero");
    assert_eq!(state, "UNAVAILABLE");
    assert!(why.contains("max_batch_size 0"), "{why}");
    let (state, why) = reason("wrong");
    assert_eq!(state, "UNAVAILABLE");
    assert!(why.contains("does not match"), "{why}");
    s.shutdown().await.unwrap();
}

//! Triton's `config.pbtxt`: rir's schema of it is Triton's (compared field
//! by field with the `model_config.proto` NVIDIA's tritonclient ships),
//! what rir-export writes is read by Triton's own parser (protobuf's text
//! format, in Python), and rir-serve applies its batch size, dynamic
//! batching, instance count and version policy.

use rir_arch::InputSpec;
use rir_exporter::triton::{ConfigWritten, write_config};
use rir_proto::config_text;
use rir_proto::inference::{self as pb, model_infer_request::InferInputTensor};
use rir_proto::inference::{
    ModelInstanceGroup, model_config::SchedulingChoice, model_version_policy,
};
use rir_testserver::models::write_model;
use rir_testserver::server::TestServer;
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
        .env("PYTHONPATH", rir_testkit::python::python_path())
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

    // A person edits it: smaller batches, a queue delay, two instances,
    // version 1 only.
    let mut config = config_text::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.max_batch_size = Some(8);
    let Some(SchedulingChoice::DynamicBatching(d)) = &mut config.scheduling_choice else {
        panic!("the export configures dynamic batching");
    };
    d.preferred_batch_size = vec![2, 8];
    d.max_queue_delay_microseconds = Some(500);
    config.instance_group = vec![ModelInstanceGroup {
        count: 2,
        ..Default::default()
    }];
    config.version_policy = Some(pb::ModelVersionPolicy {
        policy_choice: Some(model_version_policy::PolicyChoice::Specific(
            model_version_policy::Specific { versions: vec![1] },
        )),
    });
    std::fs::write(&path, config_text::format(&config)).unwrap();
    let edited = triton_reads(&path);
    assert_eq!(edited["instance_group"][0]["count"], 2);
    assert_eq!(
        edited["dynamic_batching"]["max_queue_delay_microseconds"],
        "500"
    );
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

    let s = TestServer::start(Some(root), &["--max-batch", "64"]).await;
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
    // What rir-serve serves the model with, as its ModelConfig answers:
    // the config's batch size, buckets, queue delay and instances, not the
    // server's own (64, powers of two, no delay, one instance).
    assert_eq!(cfg.max_batch_size, Some(8));
    let Some(SchedulingChoice::DynamicBatching(served)) = &cfg.scheduling_choice else {
        panic!("ModelConfig reports the dynamic batching served: {cfg:?}");
    };
    assert_eq!(served.preferred_batch_size, vec![2, 8]);
    assert_eq!(served.max_queue_delay_microseconds, Some(500));
    assert_eq!(cfg.instance_group.len(), 1);
    assert_eq!(cfg.instance_group[0].count, 2);
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

/// Triton's schema of the model configuration, as NVIDIA's tritonclient
/// ships it: its `model_config.proto` descriptor, read in Python.
fn triton_schema() -> prost_reflect::DescriptorPool {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from google.protobuf import descriptor_pb2\n\
             from tritonclient.grpc import model_config_pb2\n\
             s = descriptor_pb2.FileDescriptorSet()\n\
             model_config_pb2.DESCRIPTOR.CopyToProto(s.file.add())\n\
             sys.stdout.buffer.write(s.SerializeToString())",
        ])
        .env("PYTHONPATH", rir_testkit::python::python_path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "tritonclient's schema (scripts/setup.sh installs tritonclient): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prost_reflect::DescriptorPool::decode(out.stdout.as_slice()).unwrap()
}

/// A field's type: the full name of its message or enum, else its scalar kind.
fn kind_of(f: &prost_reflect::FieldDescriptor) -> String {
    match f.kind() {
        prost_reflect::Kind::Message(m) => m.full_name().to_string(),
        prost_reflect::Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn the_config_schema_is_tritons_field_for_field() {
    let ours = prost_reflect::DescriptorPool::decode(rir_proto::FILE_DESCRIPTOR_SET).unwrap();
    let theirs = triton_schema();
    let mut fields = 0;
    for m in theirs.all_messages() {
        let mine = ours
            .get_message_by_name(m.full_name())
            .unwrap_or_else(|| panic!("{} is missing", m.full_name()));
        assert_eq!(mine.fields().len(), m.fields().len(), "{}", m.full_name());
        for f in m.fields() {
            let g = mine
                .get_field(f.number())
                .unwrap_or_else(|| panic!("{} has no field {}", m.full_name(), f.number()));
            let at = format!("{}.{}", m.full_name(), f.name());
            assert_eq!(g.name(), f.name(), "{at}");
            assert_eq!(g.cardinality(), f.cardinality(), "{at}");
            assert_eq!(kind_of(&g), kind_of(&f), "{at}");
            let real_oneof = |f: &prost_reflect::FieldDescriptor| {
                f.containing_oneof()
                    .filter(|o| !o.is_synthetic())
                    .map(|o| o.name().to_string())
            };
            assert_eq!(real_oneof(&g), real_oneof(&f), "{at}");
            fields += 1;
        }
    }
    for e in theirs.all_enums() {
        let mine = ours.get_enum_by_name(e.full_name()).unwrap();
        let values = |e: &prost_reflect::EnumDescriptor| -> Vec<(String, i32)> {
            e.values()
                .map(|v| (v.name().to_string(), v.number()))
                .collect()
        };
        assert_eq!(values(&mine), values(&e), "{}", e.full_name());
    }
    assert!(fields > 150, "only {fields} fields compared");
    // Where ours differs on purpose: explicit presence on three fields.
    let explicit: Vec<String> = ours
        .all_messages()
        .filter(|m| m.full_name().starts_with("inference.Model"))
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .filter(|f| f.containing_oneof().is_some_and(|o| o.is_synthetic()))
        .map(|f| f.full_name().to_string())
        .collect();
    assert_eq!(
        explicit,
        [
            "inference.ModelVersionPolicy.Latest.num_versions",
            "inference.ModelDynamicBatching.max_queue_delay_microseconds",
            "inference.ModelConfig.max_batch_size",
        ]
    );
}

//! Model repositories of exported random RiR networks: real ONNX files from
//! the real exporter, laid out as the server reads them.

use std::path::Path;

use rir_arch::{InputSpec, Variant, preset};
use rir_checkpoint::synthetic::random_checkpoint;
use rir_contract::repository;
use rir_exporter::{Form, Precision, export_file};

/// Writes `<root>/<name>/<version>/model.onnx`: a random micro RiR on `input`.
pub fn write_model(root: &Path, name: &str, version: u64, input: InputSpec, seed: u64) {
    write_preset(root, name, version, input, "micro", seed);
}

/// Writes `<root>/<name>/<version>/model.onnx`: a random RiR of `preset_name`.
pub fn write_preset(
    root: &Path,
    name: &str,
    version: u64,
    input: InputSpec,
    preset_name: &str,
    seed: u64,
) {
    let spec = preset::build(preset_name, Variant::Rir, input, 10).expect("a known preset");
    let model = repository::model_file(root, name, version);
    let dir = model.parent().expect("a version folder");
    std::fs::create_dir_all(dir).expect("creating the version folder");
    let ck = dir.join("ck.safetensors");
    random_checkpoint(&spec, seed)
        .write_atomic(&ck)
        .expect("writing the checkpoint");
    export_file(&ck, &model, Form::Folded, Precision::Fp32).expect("exporting");
    std::fs::remove_file(ck).expect("removing the checkpoint");
}

/// The standard test repository: `gray` (1x28x28, versions 1 and 2), `rgb`
/// (3x32x32) and `broken` (a version whose model.onnx is garbage).
pub fn repository(root: &Path) {
    write_model(root, "gray", 1, InputSpec::new(1, 28, 28), 1);
    write_model(root, "gray", 2, InputSpec::new(1, 28, 28), 2);
    write_model(root, "rgb", 1, InputSpec::new(3, 32, 32), 3);
    let broken = repository::model_file(root, "broken", 1);
    std::fs::create_dir_all(broken.parent().expect("a version folder")).expect("mkdir");
    std::fs::write(broken, b"this is not onnx").expect("writing the broken model");
}

/// Writes version `version` of model `name`, a 1x28x28 classifier of ten
/// classes that ONNX Runtime fails to run on an image whose brightest pixel
/// is 4 or more: its logits are row `max pixel` of a 4-row table
/// (`ReduceMax`, `Cast`, `Gather`), and a row past the table is an error
/// in the engine, not in the request's shape or type. Images in [0, 1]
/// (and the zeros of the warm-up) run.
pub fn write_failing_on_bright_pixels(root: &Path, name: &str, version: u64) {
    use prost::Message;
    use rir_exporter::export::model_of;
    use rir_exporter::graph::{GraphBuilder, int, ints, value_info};
    use tract_onnx::pb::tensor_proto::DataType;

    let mut g = GraphBuilder::new(Precision::Fp32);
    let table: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let table = g.f32("table", &[4, 10], &table);
    let max = g.node(
        "ReduceMax",
        &["image"],
        vec![ints("axes", &[1, 2, 3]), int("keepdims", 0)],
        None,
    );
    let row = g.node(
        "Cast",
        &[&max],
        vec![int("to", DataType::Int64 as i64)],
        None,
    );
    g.node(
        "Gather",
        &[&table, &row],
        vec![int("axis", 0)],
        Some("logits"),
    );
    let graph = g.finish(
        name,
        vec![value_info("image", &[None, Some(1), Some(28), Some(28)])],
        vec![value_info("logits", &[None, Some(10)])],
    );
    let model = model_of(graph);
    let path = repository::model_file(root, name, version);
    std::fs::create_dir_all(path.parent().expect("a version folder")).expect("mkdir");
    std::fs::write(path, model.encode_to_vec()).expect("writing the model");
}

/// The shipped model (`models/rir-fashion-mnist/1`) and its int8
/// quantization side by side in `root`, as versions 1 and 2 of
/// `rir-fashion-mnist`, with a configuration that serves both; returns the
/// int8 file. Calibrated on 128 training images and scored on the real test
/// split (scripts/setup.sh installs it), as `rir-export quantize` does.
pub fn shipped_with_int8(root: &Path) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rir-fashion-mnist");
    let fp32 = repository::model_file(root, "rir-fashion-mnist", 1);
    let int8 = repository::model_file(root, "rir-fashion-mnist", 2);
    std::fs::create_dir_all(fp32.parent().expect("a version folder")).expect("mkdir");
    std::fs::create_dir_all(int8.parent().expect("a version folder")).expect("mkdir");
    std::fs::copy(shipped.join("1/model.onnx"), &fp32).expect("copying the shipped model");
    let config = std::fs::read_to_string(shipped.join("config.pbtxt")).expect("its config");
    std::fs::write(
        root.join("rir-fashion-mnist/config.pbtxt"),
        format!("{config}version_policy {{ all {{ }} }}\n"),
    )
    .expect("writing the config");
    let opts = rir_exporter::quantize::QuantizeOptions {
        images: 128,
        ..Default::default()
    };
    rir_exporter::quantize::quantize_file(&fp32, &int8, &opts, |_, _| {}).expect("quantizing");
    int8
}

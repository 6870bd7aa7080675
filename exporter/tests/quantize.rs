//! int8 quantization as a user runs it: the shipped model quantized and
//! held to the bound on the real test split, a spoiled model caught, the
//! calibration reproducible, and the checkpoint path with its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use tract_onnx::pb::ModelProto;

use std::collections::BTreeMap;

use crate::common::{micro, python_with_onnx, write_random};
use rir_arch::Variant;
use rir_contract::ModelInfo;
use rir_exporter::quantize::{Method, QuantizeOptions, calibration_images, quantize_model};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rir-export"));
    c.env("RUST_LOG", "warn");
    c
}

/// The trained model the repository ships (Fashion-MNIST, scored on the
/// real images scripts/setup.sh installs).
fn shipped() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rir-fashion-mnist/1/model.onnx");
    assert!(
        Path::new(rir_data::dataset::FASHION_MNIST_DEBIAN_DIR).is_dir(),
        "the real Fashion-MNIST images are missing: run scripts/setup.sh"
    );
    m
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn quantize(source: &Path, output: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("quantize")
        .arg(source)
        .arg("-o")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_shipped_model_quantized_meets_the_bound_and_the_onnx_checker_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let int8 = dir.path().join("int8.onnx");
    let out = quantize(&shipped(), &int8, &["--verify"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("test accuracy on 10000 images: int8"), "{all}");
    assert!(
        all.contains("OK: max rel within 5.0e-2 and the int8 bound met"),
        "{all}"
    );

    let out = bin().arg("inspect").arg(&int8).output().unwrap();
    let shown = text(&out);
    assert!(shown.contains("meta   rir.precision = int8"), "{shown}");
    assert!(shown.contains("\"method\":\"minmax\""), "{shown}");
    // Only the stem's Relu is left: the others are the zero points of
    // their QuantizeLinear; the stem and head convolutions stay float.
    assert!(shown.contains("Relu x1,"), "{shown}");
    let model = ModelProto::decode(std::fs::read(&int8).unwrap().as_slice()).unwrap();
    let g = model.graph.unwrap();
    let int8_kernels = g
        .initializer
        .iter()
        .filter(|t| t.name.ends_with("_int8"))
        .count();
    let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
    assert_eq!(
        int8_kernels,
        convs - 2,
        "every Conv but the stem and the head"
    );

    let check = python_with_onnx()
        .args(["-c", "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')"])
        .arg(&int8)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn verify_fails_on_a_spoiled_scale_and_on_a_wrong_or_missing_source() {
    let dir = tempfile::tempdir().unwrap();
    let int8 = dir.path().join("int8.onnx");
    let out = quantize(&shipped(), &int8, &["--calibration-images", "128"]);
    assert!(out.status.success(), "{}", text(&out));

    // One activation grid's scale 16 times too small, in the middle of the
    // body: its range clipped to a sixteenth (a 4x coarser step still passes).
    let mut model = ModelProto::decode(std::fs::read(&int8).unwrap().as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    let scales: Vec<usize> = (0..g.initializer.len())
        .filter(|&i| g.initializer[i].name.ends_with("_grid_scale"))
        .collect();
    let t = &mut g.initializer[scales[scales.len() / 2]];
    let s = f32::from_le_bytes(t.raw_data[..4].try_into().unwrap());
    t.raw_data = (s / 16.0).to_le_bytes().to_vec();
    let spoiled = dir.path().join("spoiled.onnx");
    std::fs::write(&spoiled, model.encode_to_vec()).unwrap();
    // Through the library: the verdict and the errors are typed.
    use rir_exporter::ExportError;
    use rir_exporter::error::SourceError;
    use rir_exporter::pipeline::{Check, verify_file};
    use rir_exporter::verdict::Failure;
    let verify = |model: &Path, source: Option<&Path>| {
        let check = Check {
            verify: rir_exporter::verify::VerifyOptions {
                images: 2000,
                source: source.map(Path::to_path_buf),
                ..Default::default()
            },
            ..Check::default()
        };
        verify_file(model, &check)
    };
    let v = verify(&spoiled, Some(&shipped())).unwrap();
    assert!(
        matches!(v.verdict.failures[..], [Failure::Agreement { min, .. }, ..] if min == 99.5),
        "{:?}",
        v.verdict.failures
    );
    // The untouched model passes on the same images.
    let v = verify(&int8, Some(&shipped())).unwrap();
    assert!(v.verdict.passed(), "{:?}", v.verdict.failures);

    let e = verify(&int8, None).unwrap_err();
    assert!(
        matches!(e, ExportError::Source(SourceError::Missing)),
        "{e}"
    );
    let other = dir.path().join("other.onnx");
    let mut bytes = std::fs::read(shipped()).unwrap();
    bytes.extend_from_slice(&[0xa0, 0x06, 0]); // an unknown field 100 appended: same model, other file
    std::fs::write(&other, bytes).unwrap();
    let e = verify(&int8, Some(&other)).unwrap_err();
    assert!(
        matches!(&e, ExportError::Source(SourceError::Mismatch { path, .. }) if *path == other),
        "{e}"
    );
}

/// The shipped model quantized through the library with `opts` over 64
/// calibration images: the rewrite alone, without the test split scored
/// (what `quantize_file` adds to record the int8 accuracy).
fn quantized(opts: impl FnOnce(&mut QuantizeOptions)) -> ModelProto {
    static SOURCE: std::sync::OnceLock<(ModelProto, rir_data::Dataset)> =
        std::sync::OnceLock::new();
    let (model, data) = SOURCE.get_or_init(|| {
        let bytes = std::fs::read(shipped()).unwrap();
        let info = ModelInfo::from_bytes(&bytes).unwrap();
        let data = rir_exporter::recorded::dataset(&info, None).unwrap();
        (ModelProto::decode(bytes.as_slice()).unwrap(), data)
    });
    let mut o = QuantizeOptions {
        images: 64,
        ..QuantizeOptions::default()
    };
    opts(&mut o);
    let images = calibration_images(data, &o).unwrap();
    quantize_model(model, &images, "", &o, |_, _| {}).unwrap().0
}

/// The graph's initializers (the metadata, which records the options,
/// left out): what the options actually changed.
fn weights(m: &ModelProto) -> Vec<(String, Vec<u8>)> {
    let g = m.graph.as_ref().unwrap();
    g.initializer
        .iter()
        .map(|t| (t.name.clone(), t.raw_data.clone()))
        .collect()
}

/// Each activation grid's scale, by name.
fn grid_scales(m: &ModelProto) -> Vec<(String, f32)> {
    weights(m)
        .into_iter()
        .filter(|(n, _)| n.ends_with("_grid_scale"))
        .map(|(n, b)| (n, f32::from_le_bytes(b[..4].try_into().unwrap())))
        .collect()
}

/// Every int8 kernel code.
fn kernel_codes(m: &ModelProto) -> Vec<i8> {
    weights(m)
        .into_iter()
        .filter(|(n, _)| n.ends_with("_int8"))
        .flat_map(|(_, b)| b.into_iter().map(|c| c as i8))
        .collect()
}

#[test]
fn calibration_is_reproducible_from_its_seed() {
    // Compared on the graph alone: the metadata records the seed, so whole
    // files would differ even if the seed were ignored.
    let seeded = |seed| weights(&quantized(|o| o.seed = seed));
    let (a, b, c) = (seeded(3), seeded(3), seeded(4));
    assert!(a == b, "the same seed gives the same graph");
    assert!(a != c, "another seed draws other images, so other ranges");
}

#[test]
fn each_calibration_method_and_kernel_grid_reaches_the_graph() {
    let minmax = quantized(|_| {});
    let by_name = |m: &ModelProto| grid_scales(m).into_iter().collect::<BTreeMap<_, _>>();
    let widest = by_name(&minmax);
    for method in [Method::Percentile, Method::Entropy] {
        let m = quantized(|o| o.method = method);
        let ranges = by_name(&m);
        // Both clip: no range is wider than all the values seen, and some
        // are narrower.
        assert!(
            ranges.iter().all(|(n, s)| *s <= widest[n] * 1.0001),
            "{method:?}"
        );
        assert!(
            ranges.iter().any(|(n, s)| *s < widest[n] * 0.999),
            "{method:?}"
        );
        let q = ModelInfo::from_bytes(&m.encode_to_vec())
            .unwrap()
            .quantization()
            .unwrap();
        assert_eq!(q.method, method.as_str());
    }
    // Per channel, the largest |code| of each kernel row is 127; one scale
    // per kernel leaves most rows short of it, and its scales are scalars.
    let per_tensor = quantized(|o| o.weights.per_channel = false);
    let scales = |m: &ModelProto| -> Vec<usize> {
        let g = m.graph.as_ref().unwrap();
        g.initializer
            .iter()
            .filter(|t| t.name.ends_with("weight_scale"))
            .map(|t| t.dims.len())
            .collect()
    };
    assert!(
        scales(&minmax).iter().all(|d| *d == 1),
        "vectors per channel"
    );
    assert!(
        scales(&per_tensor).iter().all(|d| *d == 0),
        "scalars per kernel"
    );
    // 7-bit kernels: every code within -63..=63, and the extremes reached.
    let reduced = kernel_codes(&quantized(|o| o.weights.max_code = 63));
    assert_eq!(reduced.iter().map(|c| c.unsigned_abs()).max(), Some(63));
    assert_eq!(
        kernel_codes(&minmax).iter().map(|c| c.unsigned_abs()).max(),
        Some(127)
    );
}

#[test]
fn int8_straight_from_a_checkpoint_calibrated_on_the_data_it_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    rir_testkit::data::write_fashion_mnist(&data, 64, 20, 28, true, 5).unwrap();
    let ck = write_random(dir.path(), &micro(Variant::Rir), 4);
    let model = dir.path().join("repo/rir/2/model.onnx");
    // Through the library, verified on the 20 test images of the data set
    // the checkpoint records: the int8 bound is judged, not skipped.
    use rir_exporter::pipeline::{self, Check, ExportJob};
    use rir_exporter::verdict::{Bounds, Confirmed};
    let job = |min_agreement: f64| ExportJob {
        checkpoint: ck.clone(),
        output: model.clone(),
        form: rir_exporter::Form::Folded,
        precision: rir_exporter::Precision::Int8,
        quantize: QuantizeOptions {
            images: 32,
            data_dir: Some(data.clone()),
            ..QuantizeOptions::default()
        },
        triton_config: true,
        check: Some(Check {
            verify: rir_exporter::verify::VerifyOptions {
                images: 20,
                data_dir: Some(data.clone()),
                ..Default::default()
            },
            bounds: Bounds {
                min_agreement,
                max_accuracy_drop: 100.0,
                ..Bounds::default()
            },
        }),
    };
    // Random weights agree with their float32 source on some images: a bound
    // of 0 % is met, one over 100 % never is.
    let placed = pipeline::export(&job(0.0), |_, _| {}).unwrap();
    let v = placed.verified.as_ref().unwrap();
    assert!(v.verdict.passed(), "{:?}", v.verdict.failures);
    assert_eq!(v.verdict.confirmed, Confirmed::Int8Bound);
    assert_eq!(v.report.accuracy.unwrap().n, 20);
    assert!(placed.placed() && model.is_file());
    assert!(dir.path().join("repo/rir/config.pbtxt").is_file());
    let placed = pipeline::export(&job(100.01), |_, _| {}).unwrap();
    assert!(!placed.placed(), "{:?}", placed.verified.unwrap().verdict);

    let out = bin()
        .arg(&ck)
        .arg("-o")
        .arg(dir.path().join("x.onnx"))
        .args(["--precision", "int8", "--no-fold"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("drop --no-fold"), "{}", text(&out));
    // Without the data set to calibrate on, it says which and where.
    let out = bin()
        .arg(&ck)
        .arg("-o")
        .arg(dir.path().join("y.onnx"))
        .args(["--precision", "int8", "--data-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("calibration images"), "{}", text(&out));
    assert!(!dir.path().join("y.onnx").exists(), "nothing written");
}

//! The export pipeline as a library call: a model that fails its
//! verification is never where a server loads it, and an older model at
//! the output stays. "Where a server loads it" is judged by
//! `rir_contract::repository::versions`, the listing rir-serve polls.

use std::path::Path;

use rir_arch::Variant;
use rir_contract::repository;
use rir_exporter::pipeline::{self, Check, ExportJob};
use rir_exporter::verdict::{Bounds, Failure};
use rir_exporter::verify::VerifyOptions;
use rir_exporter::{Form, Precision};

use crate::common::{micro, random_checkpoint};

fn job(ck: &Path, output: &Path, data: &Path, precision: Precision, tolerance: f32) -> ExportJob {
    ExportJob {
        checkpoint: ck.to_path_buf(),
        output: output.to_path_buf(),
        form: Form::Folded,
        precision,
        quantize: Default::default(),
        triton_config: true,
        check: Some(Check {
            verify: VerifyOptions {
                random: 4,
                images: 20,
                data_dir: Some(data.to_path_buf()),
                ..VerifyOptions::default()
            },
            bounds: Bounds {
                tolerance: Some(tolerance),
                ..Bounds::default()
            },
        }),
    }
}

#[test]
fn a_failed_verification_leaves_no_model_a_server_loads_and_keeps_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    rir_testkit::data::write_fashion_mnist(&data, 10, 20, 28, true, 3).unwrap();
    let ck = dir.path().join("ck.safetensors");
    random_checkpoint(&micro(Variant::Rir), 4)
        .write_atomic(&ck)
        .unwrap();
    let models = dir.path().join("models");
    let v1 = repository::model_file(&models, "mine", 1);
    let v2 = repository::model_file(&models, "mine", 2);

    // Version 1 passes: it is placed, with its configuration.
    let placed = pipeline::export(&job(&ck, &v1, &data, Precision::Fp32, 1e-3), |_, _| {}).unwrap();
    let verdict = &placed.verified.as_ref().unwrap().verdict;
    assert!(verdict.passed(), "{:?}", verdict.failures);
    assert_eq!(placed.path, v1);
    assert_eq!(repository::versions(&models, "mine").unwrap(), [1]);
    assert!(repository::config_file(&models, "mine").is_file());

    // Version 2 is float16 held to a bound no float16 model meets: it fails,
    // and is kept under the rejected name, which no listing takes.
    let placed = pipeline::export(&job(&ck, &v2, &data, Precision::Fp16, 1e-9), |_, _| {}).unwrap();
    let verdict = &placed.verified.as_ref().unwrap().verdict;
    assert!(
        matches!(verdict.failures[..], [Failure::Tolerance { tolerance, .. }] if tolerance == 1e-9),
        "{:?}",
        verdict.failures
    );
    assert!(!placed.placed());
    assert_eq!(placed.path, v2.with_file_name("model.onnx.rejected"));
    assert!(placed.path.is_file() && !v2.exists());
    assert!(!pipeline::staged_path(&v2).exists(), "no staged file left");
    assert_eq!(repository::versions(&models, "mine").unwrap(), [1]);

    // Over an existing model, a failed export leaves the older bytes as
    // they were.
    let before = std::fs::read(&v1).unwrap();
    let placed = pipeline::export(&job(&ck, &v1, &data, Precision::Fp16, 1e-9), |_, _| {}).unwrap();
    assert!(!placed.placed());
    assert_eq!(std::fs::read(&v1).unwrap(), before);
}

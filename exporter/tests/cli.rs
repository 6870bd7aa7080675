//! `rir-export` as a user runs it: exit codes, messages, files left behind.

use crate::common;

use std::process::Command;

use common::{micro, random_checkpoint, write_random};
use rir_arch::Variant;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rir-export"));
    c.env("RUST_LOG", "warn");
    c
}

/// Exports `ck` to `model` and runs `rir-export verify` on it with `data`.
/// Exports `ck` with the binary, then verifies the file through the
/// library (the whole test split of `data`): the typed verdict.
fn export_and_verify(
    ck: &std::path::Path,
    model: &std::path::Path,
    data: &std::path::Path,
) -> rir_exporter::pipeline::Verified {
    assert!(
        bin()
            .arg(ck)
            .arg("-o")
            .arg(model)
            .status()
            .unwrap()
            .success()
    );
    let check = rir_exporter::pipeline::Check {
        verify: rir_exporter::verify::VerifyOptions {
            images: 10_000,
            data_dir: Some(data.to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    };
    rir_exporter::pipeline::verify_file(model, &check).unwrap()
}

#[test]
fn export_verify_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let ck = write_random(dir.path(), &micro(Variant::Rir), 1);
    let model = dir.path().join("models/rir/1/model.onnx");
    let out = bin()
        .arg(&ck)
        .arg("-o")
        .arg(&model)
        .args(["--verify", "--images", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Conv") && stdout.contains("OK"), "{stdout}");
    let out = bin().arg("inspect").arg(&model).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("input  image FLOAT [None, Some(1), Some(28), Some(28)]"),
        "{stdout}"
    );
    assert!(stdout.contains("rir.class_names"), "{stdout}");
}

#[test]
fn verify_scores_real_images_when_the_data_set_is_at_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    rir_testkit::data::write_fashion_mnist(&data, 10, 50, 28, true, 3).unwrap();
    let ck = write_random(dir.path(), &micro(Variant::Resnet), 2);
    let v = export_and_verify(&ck, &dir.path().join("m.onnx"), &data);
    assert!(v.verdict.passed(), "{:?}", v.verdict.failures);
    let (real, acc) = (v.report.real.unwrap(), v.report.accuracy.unwrap());
    assert_eq!((acc.n, acc.full_split), (50, true));
    assert_eq!(real.top1_agreement, 1.0);
}

#[test]
fn truncated_checkpoint_fails_cleanly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ck = write_random(dir.path(), &micro(Variant::Rir), 1);
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let model = dir.path().join("out.onnx");
    let out = bin().arg(&ck).arg("-o").arg(&model).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ck-1.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert!(!model.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("onnx"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_or_misshaped_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let mut ck = random_checkpoint(&spec, 5);
    ck.tensors.remove("s2.b0.u1.bn.running_var");
    let path = dir.path().join("a.safetensors");
    ck.write_atomic(&path).unwrap();
    let out = bin()
        .arg(&path)
        .arg("-o")
        .arg(dir.path().join("a.onnx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s2.b0.u1.bn.running_var"));

    let mut ck = random_checkpoint(&spec, 5);
    ck.tensors.get_mut("head.conv.weight").unwrap().shape = vec![5, 32, 2, 1];
    ck.write_atomic(&path).unwrap();
    let out = bin()
        .arg(&path)
        .arg("-o")
        .arg(dir.path().join("b.onnx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("head.conv.weight") && err.contains("[5, 32, 2, 1]"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ck = random_checkpoint(&micro(Variant::Rir), 5);
    let mut map = ck.meta.to_map();
    let spec = map["rir.spec"].replace("\"rir\"", "\"densenet\"");
    map.insert("rir.spec".into(), spec);
    // Rewrite the header by hand: same tensors, altered metadata.
    let views: Vec<(String, Vec<u8>, Vec<usize>)> = ck
        .tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(n, b, s)| {
            (
                n.as_str(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let path = dir.path().join("x.safetensors");
    std::fs::write(&path, safetensors::serialize(views, Some(map)).unwrap()).unwrap();
    let out = bin()
        .arg(&path)
        .arg("-o")
        .arg(dir.path().join("x.onnx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("rir.spec") && err.contains("densenet"),
        "{err}"
    );
}

#[test]
fn missing_arguments_explain_themselves() {
    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rir-export --help"));
    let out = bin().arg("nope.safetensors").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("-o MODEL.onnx"));
}

#[test]
fn verify_fails_when_the_export_loses_the_trainers_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    rir_testkit::data::write_fashion_mnist(&data, 10, 40, 28, true, 3).unwrap();
    let mut ck = random_checkpoint(&micro(Variant::Rir), 8);
    // Claim an accuracy that random weights cannot have.
    ck.meta.training.history.push(rir_arch::meta::EpochMetrics {
        epoch: 1,
        lr: 0.1,
        train_loss: 0.1,
        train_acc: 0.99,
        test_loss: 0.1,
        test_acc_bf16: None,
        test_acc: 0.99,
        train_img_per_s: 1.0,
        seconds: 1.0,
    });
    let path = dir.path().join("claim.safetensors");
    ck.write_atomic(&path).unwrap();
    let v = export_and_verify(&path, &dir.path().join("claim.onnx"), &data);
    assert!(
        matches!(
            v.verdict.failures[..],
            [rir_exporter::verdict::Failure::TrainerNotReproduced { recorded, .. }] if recorded == 0.99
        ),
        "{:?}",
        v.verdict.failures
    );
}

#[test]
fn a_full_disk_keeps_the_previous_model_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_random(dir.path(), &micro(Variant::Rir), 1);
    let version = dir.path().join("models/m/1");
    let model = version.join("model.onnx");
    let run = |ck: &std::path::Path| {
        let mut c = bin();
        c.arg(ck).arg("-o").arg(&model).arg("--no-triton-config");
        c
    };
    assert!(run(&first).status().unwrap().success());
    let before = std::fs::read(&model).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let second = write_random(&other, &micro(Variant::Rir), 2);
    // The new model does not fit in the 4 KiB left beside the old one.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/with-full-disk.sh");
    let cmd = run(&second);
    let o = Command::new("bash")
        .arg(script)
        .arg(&version)
        .arg("4")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("model.onnx"), "names the file: {stderr}");
    let after = dir.path().join("models/m/1.after");
    assert_eq!(std::fs::read(after.join("model.onnx")).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(&after)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["model.onnx"], "nothing else left behind");
}

#[test]
fn fp16_export_verifies_against_its_float32_twin_and_bf16_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    rir_testkit::data::write_fashion_mnist(&data, 10, 50, 28, true, 3).unwrap();
    let ck = write_random(dir.path(), &micro(Variant::Rir), 4);
    let model = dir.path().join("half.onnx");
    let export = |precision: &str, extra: &[&str]| {
        bin()
            .arg(&ck)
            .arg("-o")
            .arg(&model)
            .args(["--precision", precision, "--verify", "--random", "4"])
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = export("fp16", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(Folded, fp16)"), "{stdout}");
    assert!(stdout.contains("fp16 model in ONNX Runtime"), "{stdout}");
    assert!(
        stdout.contains("float32 twin, real test images") && stdout.contains("OK: max rel"),
        "{stdout}"
    );
    // Half precision does move the logits: a bound no float16 model meets fails it.
    // The model that passed stays; the rejected one is kept beside it,
    // under a name no server loads, and the message says where.
    let passed = std::fs::read(&model).unwrap();
    let out = export("fp16", &["--tolerance", "1e-7"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FAILED: max rel"), "{err}");
    assert!(err.contains("half.onnx.rejected"), "{err}");
    assert_eq!(std::fs::read(&model).unwrap(), passed);
    // bfloat16 is refused by the argument parser, with the choices.
    let out = export("bf16", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown precision `bf16` (fp32, fp16, int8)"),
        "{err}"
    );
}

fn stdout_of(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn no_fold_and_triton_config_from_the_command_line() {
    use rir_infer::{Engine, OrtEngine, OrtOptions};
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let ck = write_random(dir.path(), &spec, 4);
    let (literal, folded) = (
        dir.path().join("repo/m/1/model.onnx"),
        dir.path().join("repo/m/2/model.onnx"),
    );
    // --no-fold keeps each unit's four convolutions and its BatchNorm.
    let out = bin()
        .arg(&ck)
        .arg("-o")
        .arg(&literal)
        .args(["--no-fold", "--no-triton-config"])
        .output()
        .unwrap();
    let said = stdout_of(&out);
    assert!(
        said.contains("Unfolded") && !said.contains(" 0 BatchNormalization"),
        "{said}"
    );
    let config = dir.path().join("repo/m/config.pbtxt");
    assert!(!config.exists(), "--no-triton-config wrote one");
    let said = stdout_of(
        &bin()
            .arg(&ck)
            .arg("-o")
            .arg(&folded)
            .args(["--no-triton-config"])
            .output()
            .unwrap(),
    );
    assert!(
        said.contains("Folded") && said.contains(" 0 BatchNormalization"),
        "{said}"
    );
    // The two files compute the same function.
    let x = common::pixels(3, &spec, 9);
    let shape = [3, spec.input.channels, spec.input.height, spec.input.width];
    let run = |path: &std::path::Path| {
        let mut e = OrtEngine::load(path, &OrtOptions::default()).unwrap();
        e.run(&x, &shape).unwrap()
    };
    let (a, b) = (run(&literal), run(&folded));
    let diff = rir_infer::engine::max_abs_diff(&a[0].data, &b[0].data);
    assert!(diff < 1e-4, "folded and literal differ by {diff}");

    // triton-config: writes the configuration, then keeps it.
    let said = stdout_of(&bin().arg("triton-config").arg(&literal).output().unwrap());
    assert!(said.starts_with("wrote"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed = rir_proto::config_text::parse(&text).unwrap();
    assert_eq!(parsed.name, "m");
    assert_eq!(parsed.max_batch_size, Some(64));
    std::fs::write(&config, format!("{text}\n# edited by hand\n")).unwrap();
    let said = stdout_of(&bin().arg("triton-config").arg(&literal).output().unwrap());
    assert!(said.starts_with("kept the existing"), "{said}");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("edited by hand")
    );
    // Outside a repository layout: exit 1 and why.
    let loose = dir.path().join("loose.onnx");
    std::fs::copy(&folded, &loose).unwrap();
    let out = bin().arg("triton-config").arg(&loose).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is not at <repository>/<name>/<version>/model.onnx")
    );
}

#[test]
fn bench_prints_the_three_forms_and_the_speed_ups() {
    let out = bin()
        .args([
            "bench",
            "--presets",
            "micro",
            "--shape",
            "fashion-mnist",
            "--threads",
            "1",
        ])
        .args([
            "--rounds",
            "1",
            "--latency-runs",
            "2",
            "--throughput-runs",
            "1",
        ])
        .output()
        .unwrap();
    let said = stdout_of(&out);
    for want in [
        "micro   folded",
        "micro   unfolded",
        "micro   speed-up of folding:",
        "micro   int8 ",
        "micro   int8 against folded fp32:",
    ] {
        assert!(said.contains(want), "{want:?} missing:\n{said}");
    }
    // The folded form has fewer convolutions: one per unit.
    let convs = |form: &str| -> usize {
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("micro   {form} ")))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert!(convs("folded") < convs("unfolded"), "{said}");
    assert_eq!(convs("int8"), convs("folded"), "{said}");
    let bad = bin().args(["bench", "--shape", "mnist"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown --shape mnist"));
}

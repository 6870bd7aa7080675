//! The folded export computes what the literal network computes, in ONNX
//! Runtime and in tract, and is a valid, standard ONNX file.

use crate::common;

use common::{micro, pixels, python_with_onnx, write_random};
use rir_arch::{ModelSpec, Projection, Shortcut, Variant};
use rir_contract::ModelInfo;
use rir_contract::onnx::{LOGITS, PROBABILITIES, keys};
use rir_exporter::{Form, Precision, export_file};
use rir_infer::engine::{max_abs_diff as max_diff, output};
use rir_infer::{Engine, OrtEngine, OrtOptions, TractEngine};

fn run(engine: &mut dyn Engine, x: &[f32], n: usize, spec: &ModelSpec) -> (Vec<f32>, Vec<f32>) {
    let i = spec.input;
    let outs = engine.run(x, &[n, i.channels, i.height, i.width]).unwrap();
    (
        output(&outs, LOGITS).unwrap().data.clone(),
        output(&outs, PROBABILITIES).unwrap().data.clone(),
    )
}

/// Every variant, both projections, outer shortcut on and off, two masks.
fn configurations() -> Vec<(String, ModelSpec)> {
    let mut out = vec![];
    for v in Variant::ALL {
        for proj in [Projection::Conv, Projection::ZeroPad] {
            for outer in [true, false] {
                for mask in ["1111", "1001"] {
                    let mut s = micro(v);
                    s.projection = proj;
                    if v == Variant::Rir {
                        s.outer_shortcut = outer;
                    } else if outer != v.default_outer_shortcut() {
                        continue;
                    }
                    s.mask = mask.parse().unwrap();
                    if s.validate().is_err() || (mask != "1111" && v != Variant::Rir) {
                        continue;
                    }
                    out.push((format!("{v} {proj:?} outer={outer} mask={mask}"), s));
                }
            }
        }
    }
    // RiR: 2 projections x outer on/off x 2 masks; each other variant: 2
    // projections at its own outer shortcut and the full mask. A spec change
    // that made configurations invalid would otherwise shrink the tests
    // silently.
    assert_eq!(
        out.len(),
        CONFIGURATIONS,
        "{:?}",
        out.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    out
}

/// How many configurations [`configurations`] yields: 2 x 2 x 2 for RiR,
/// 2 for each other variant.
const CONFIGURATIONS: usize = 2 * 2 * 2 + (Variant::ALL.len() - 1) * 2;

#[test]
fn folded_equals_unfolded_in_onnx_runtime_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (name, spec)) in configurations().into_iter().enumerate() {
        let ck = write_random(dir.path(), &spec, 100 + k as u64);
        let folded = dir.path().join(format!("f{k}.onnx"));
        let unfolded = dir.path().join(format!("u{k}.onnx"));
        export_file(&ck, &folded, Form::Folded, Precision::Fp32).unwrap();
        export_file(&ck, &unfolded, Form::Unfolded, Precision::Fp32).unwrap();
        let x = pixels(5, &spec, k as u64);
        let opts = OrtOptions::default();
        let (lu, _) = run(
            &mut OrtEngine::load(&unfolded, &opts).unwrap(),
            &x,
            5,
            &spec,
        );
        let (lf, pf) = run(&mut OrtEngine::load(&folded, &opts).unwrap(), &x, 5, &spec);
        let (lt, _) = run(&mut TractEngine::load(&folded).unwrap(), &x, 5, &spec);
        let (lut, _) = run(&mut TractEngine::load(&unfolded).unwrap(), &x, 5, &spec);
        assert!(
            max_diff(&lf, &lu) < 1e-4,
            "{name}: folded vs unfolded {}",
            max_diff(&lf, &lu)
        );
        assert!(
            max_diff(&lf, &lt) < 1e-4,
            "{name}: ORT vs tract {}",
            max_diff(&lf, &lt)
        );
        assert!(
            max_diff(&lu, &lut) < 1e-4,
            "{name}: unfolded ORT vs tract {}",
            max_diff(&lu, &lut)
        );
        for row in pf.chunks(10) {
            assert!(
                (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                "{name}: probabilities do not sum to 1"
            );
        }
        assert!(
            lf.iter().any(|v| v.abs() > 1e-3),
            "{name}: degenerate logits"
        );
    }
}

#[test]
fn folded_graph_has_one_conv_per_unit_and_no_batchnorm() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (name, spec)) in configurations().into_iter().enumerate() {
        let ck = write_random(dir.path(), &spec, k as u64);
        let path = dir.path().join(format!("m{k}.onnx"));
        export_file(&ck, &path, Form::Folded, Precision::Fp32).unwrap();
        let info = ModelInfo::read(&path).unwrap();
        let projections = spec
            .blocks()
            .iter()
            .filter(|b| matches!(b.outer, Some(Shortcut::Conv { .. })))
            .count();
        let units = spec.units().len();
        assert_eq!(info.count("Conv"), 1 + units + 1 + projections, "{name}");
        assert_eq!(info.count("Relu"), 1 + units, "{name}");
        assert_eq!(info.count("BatchNormalization"), 0, "{name}");
        let unfolded = dir.path().join(format!("u{k}.onnx"));
        export_file(&ck, &unfolded, Form::Unfolded, Precision::Fp32).unwrap();
        assert_eq!(
            ModelInfo::read(&unfolded)
                .unwrap()
                .count("BatchNormalization"),
            units + 2,
            "{name}"
        );
    }
}

#[test]
fn paper_preset_folds_to_eighteen_convolutions() {
    // The fold (README, "Folding"): 1 stem + 16 units + 1 head, plus one 1x1 Conv per projected
    // outer shortcut (the two stride-2 blocks).
    let dir = tempfile::tempdir().unwrap();
    let spec = rir_arch::preset::build(
        "paper",
        Variant::Rir,
        rir_arch::InputSpec::new(3, 32, 32),
        10,
    )
    .unwrap();
    let ck = write_random(dir.path(), &spec, 1);
    let path = dir.path().join("paper.onnx");
    export_file(&ck, &path, Form::Folded, Precision::Fp32).unwrap();
    assert_eq!(ModelInfo::read(&path).unwrap().count("Conv"), 18 + 2);
    let mut no_outer = spec.clone();
    no_outer.outer_shortcut = false;
    let ck = write_random(dir.path(), &no_outer, 2);
    export_file(&ck, &path, Form::Folded, Precision::Fp32).unwrap();
    assert_eq!(ModelInfo::read(&path).unwrap().count("Conv"), 18);
}

#[test]
fn the_official_onnx_checker_accepts_both_forms_in_both_precisions() {
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let ck = write_random(dir.path(), &spec, 7);
    for (form, precision) in [Form::Folded, Form::Unfolded]
        .into_iter()
        .flat_map(|f| [(f, Precision::Fp32), (f, Precision::Fp16)])
    {
        let path = dir
            .path()
            .join(format!("{form:?}-{}.onnx", precision.as_str()));
        export_file(&ck, &path, form, precision).unwrap();
        let out = python_with_onnx()
            .args(["-c", "import onnx, sys; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); print('ok', m.opset_import[0].version)"])
            .arg(&path)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "onnx checker rejected {form:?} {precision:?} (is onnx installed? scripts/setup.sh puts it in .deps/py): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok 13"));
    }
}

#[test]
fn metadata_describes_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let ck = write_random(dir.path(), &spec, 3);
    let path = dir.path().join("m.onnx");
    export_file(&ck, &path, Form::Folded, Precision::Fp32).unwrap();
    let info = ModelInfo::read(&path).unwrap();
    assert_eq!(info.inputs.len(), 1);
    assert_eq!(info.inputs[0].name, "image");
    assert_eq!(info.inputs[0].dims, vec![None, Some(1), Some(28), Some(28)]);
    assert_eq!(
        info.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["logits", "probabilities"]
    );
    let names: Vec<String> =
        serde_json::from_value(info.metadata_json(keys::CLASS_NAMES).unwrap()).unwrap();
    assert_eq!(names.len(), 10);
    assert_eq!(info.metadata[keys::DATASET], "fashion-mnist");
    let sha = &info.metadata[keys::CHECKPOINT_SHA256];
    // Against coreutils' sha256sum, not the exporter's own digest.
    let out = std::process::Command::new("sha256sum")
        .arg(&ck)
        .output()
        .unwrap();
    let coreutils = String::from_utf8_lossy(&out.stdout);
    assert_eq!(Some(sha.as_str()), coreutils.split_whitespace().next());
    let stored: ModelSpec =
        serde_json::from_value(info.metadata_json(keys::SPEC).unwrap()).unwrap();
    assert_eq!(stored, spec);
    assert!(info.metadata.contains_key(keys::NORMALIZATION));
    assert!(info.metadata.contains_key(keys::EXPORTER_VERSION));
}

#[test]
fn batch_dimension_is_symbolic() {
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let ck = write_random(dir.path(), &spec, 4);
    let path = dir.path().join("m.onnx");
    export_file(&ck, &path, Form::Folded, Precision::Fp32).unwrap();
    let mut ort = OrtEngine::load(&path, &OrtOptions::default()).unwrap();
    let mut tract = TractEngine::load(&path).unwrap();
    let x = pixels(7, &spec, 1);
    let (l7, _) = run(&mut ort, &x, 7, &spec);
    let (l1, _) = run(&mut ort, &x[..784], 1, &spec);
    assert!(max_diff(&l7[..10], &l1) < 1e-5);
    let (t3, _) = run(&mut tract, &x[..3 * 784], 3, &spec);
    assert!(max_diff(&l7[..30], &t3) < 1e-4);
}

#[test]
fn half_precision_export_rounds_inside_and_keeps_float32_at_its_edges() {
    let dir = tempfile::tempdir().unwrap();
    let spec = micro(Variant::Rir);
    let ck = write_random(dir.path(), &spec, 11);
    let n = 8;
    let x = pixels(n, &spec, 12);
    for form in [Form::Folded, Form::Unfolded] {
        let full = dir.path().join(format!("{form:?}-fp32.onnx"));
        let half = dir.path().join(format!("{form:?}-fp16.onnx"));
        export_file(&ck, &full, form, Precision::Fp32).unwrap();
        export_file(&ck, &half, form, Precision::Fp16).unwrap();
        let info = ModelInfo::read(&half).unwrap();
        // Clients, the server and Triton's configuration see float32 tensors.
        assert_eq!(info.inputs[0].type_name(), "FLOAT");
        assert!(info.outputs.iter().all(|o| o.type_name() == "FLOAT"));
        assert_eq!(info.count("Cast"), 2, "{form:?}");
        assert_eq!(info.metadata[keys::PRECISION], "fp16");
        assert_eq!(
            ModelInfo::read(&full).unwrap().metadata[keys::PRECISION],
            "fp32"
        );
        let (size_full, size_half) = (
            std::fs::metadata(&full).unwrap().len() as f64,
            std::fs::metadata(&half).unwrap().len() as f64,
        );
        assert!(
            size_half < 0.6 * size_full,
            "{size_half} vs {size_full} bytes"
        );

        let ort = OrtOptions::default();
        let (want, _) = run(&mut OrtEngine::load(&full, &ort).unwrap(), &x, n, &spec);
        let (got, probs) = run(&mut OrtEngine::load(&half, &ort).unwrap(), &x, n, &spec);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rel = max_diff(&got, &want) / scale;
        // float16 keeps 11 significant bits (4.9e-4 relative): the outputs
        // must move (or the body was not half precision) but not far.
        assert!(
            rel > 1e-6 && rel < 1e-2,
            "{form:?}: relative difference {rel}"
        );
        for row in probs.chunks_exact(spec.num_classes) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        // tract computes float16 itself, and agrees.
        let (t, _) = run(
            &mut TractEngine::load(&half).unwrap(),
            &x[..x.len() / n * 2],
            2,
            &spec,
        );
        let rel = max_diff(&t, &got[..t.len()]) / scale;
        assert!(rel < 1e-2, "{form:?}: tract vs ONNX Runtime {rel}");
    }
}

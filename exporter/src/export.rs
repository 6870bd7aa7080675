//! Turning a checkpoint into an ONNX model, folded or literal.
//!
//! The graph takes `image`: float32 NCHW pixels in [0, 1], and normalizes
//! them itself (`Sub` mean, `Div` std). Clients then never need the data
//! set's statistics, and the server can feed decoded images as they are.
//! It returns `logits` and `probabilities` (`Softmax`), both `[batch, classes]`.

use std::path::Path;

use prost::Message;
use rir_arch::{ModelSpec, Shortcut, UnitSpec};
use rir_checkpoint::Checkpoint;
use rir_contract::onnx::{INPUT, LOGITS, PROBABILITIES, RecordedMetrics, keys};
use tract_onnx::pb::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

use crate::digest::sha256_hex;
use crate::error::{ExportError, GraphError, MetadataError};
use crate::fold::{Bn, ConvBias, OuterShortcut, fold};
use crate::graph::{GraphBuilder, float, int, value_info};
use crate::precision::Precision;

/// The default-domain opset written; ONNX Runtime 1.31 and tract both load it.
pub const OPSET: i64 = 13;
/// ONNX IR version written (IR 8 covers opsets up to 15).
pub const IR_VERSION: i64 = 8;
/// How to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One Conv + Relu per unit (the point of the project).
    Folded,
    /// The literal network: four convolutions, adds and BN per unit.
    Unfolded,
}

/// Builds the ONNX model of `ck`; `sha256` is the checkpoint file's digest.
pub fn build_model(
    ck: &Checkpoint,
    form: Form,
    precision: Precision,
    sha256: &str,
) -> Result<ModelProto, ExportError> {
    if precision == Precision::Int8 {
        return Err(MetadataError::Int8NotBuilt.into());
    }
    let spec = &ck.meta.spec;
    let ds = &ck.meta.dataset;
    let graph = build_graph(ck, form, precision)?;
    Ok(ModelProto {
        producer_name: "rir-export".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: 1,
        doc_string: format!(
            "{} trained on {}; input `image` float32 NCHW in [0, 1], normalized in the graph; {} arithmetic",
            spec.describe(),
            ds.name,
            precision.as_str()
        ),
        metadata_props: metadata(ck, form, precision, sha256)?,
        ..model_of(graph)
    })
}

/// A model of `graph` alone, in the IR version and opset every export
/// writes.
pub fn model_of(graph: tract_onnx::pb::GraphProto) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// The graph: normalization in float32, the body in `precision` (folded or
/// literal), the logits and their softmax in float32.
fn build_graph(
    ck: &Checkpoint,
    form: Form,
    precision: Precision,
) -> Result<tract_onnx::pb::GraphProto, ExportError> {
    let spec = &ck.meta.spec;
    let ds = &ck.meta.dataset;
    let c = spec.input.channels;
    if ds.mean.len() != c || ds.std.len() != c {
        return Err(ExportError::from(MetadataError::Normalization {
            means: ds.mean.len(),
            stds: ds.std.len(),
            channels: c,
        }));
    }
    let mut g = GraphBuilder::new(precision);
    let mean = g.f32("mean", &[1, c, 1, 1], &ds.mean);
    let std = g.f32("std", &[1, c, 1, 1], &ds.std);
    let centred = g.node("Sub", &[INPUT, &mean], vec![], None);
    let mut x = g.node("Div", &[&centred, &std], vec![], None);
    if precision != Precision::Fp32 {
        x = g.cast(&x, precision, None);
    }
    // The body's last node writes the logits, or a value cast to them.
    let body_out = match precision {
        Precision::Fp32 => LOGITS.to_string(),
        half => format!("{LOGITS}_{}", half.as_str()),
    };
    match form {
        Form::Folded => folded_body(&mut g, ck, &x, &body_out)?,
        Form::Unfolded => unfolded_body(&mut g, ck, &x, &body_out)?,
    }
    if precision != Precision::Fp32 {
        g.cast(&body_out, Precision::Fp32, Some(LOGITS));
    }
    let softmax = vec![int("axis", 1)];
    g.node("Softmax", &[LOGITS], softmax, Some(PROBABILITIES));
    let (k, h, w) = (spec.num_classes, spec.input.height, spec.input.width);
    Ok(g.finish(
        &format!("rir_{}", spec.variant),
        vec![value_info(INPUT, &[None, Some(c), Some(h), Some(w)])],
        vec![
            value_info(LOGITS, &[None, Some(k)]),
            value_info(PROBABILITIES, &[None, Some(k)]),
        ],
    ))
}

/// The `metadata_props` that describe the model without running it.
fn metadata(
    ck: &Checkpoint,
    form: Form,
    precision: Precision,
    sha256: &str,
) -> Result<Vec<StringStringEntryProto>, ExportError> {
    let spec = &ck.meta.spec;
    let ds = &ck.meta.dataset;
    let t = &ck.meta.training;
    let c = spec.input.channels;
    let metrics = RecordedMetrics {
        epochs: t.epoch,
        best_test_acc: t.best_test_acc(),
        last: t.history.last().and_then(|m| serde_json::to_value(m).ok()),
    };
    let input = serde_json::json!({
        "name": INPUT, "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
        "channels": c, "height": spec.input.height, "width": spec.input.width,
        "color": if c == 1 { "grayscale" } else { "RGB" },
    });
    let norm = serde_json::json!({"mean": ds.mean, "std": ds.std, "in_graph": true});
    let form = match form {
        Form::Folded => "folded",
        Form::Unfolded => "unfolded",
    };
    let meta = [
        (keys::CLASS_NAMES, serde_json::to_string(&ds.class_names)),
        (keys::DATASET, Ok(ds.name.clone())),
        (keys::INPUT, Ok(input.to_string())),
        (keys::NORMALIZATION, Ok(norm.to_string())),
        (keys::SPEC, serde_json::to_string(spec)),
        (keys::METRICS, serde_json::to_string(&metrics)),
        (keys::CHECKPOINT_SHA256, Ok(sha256.to_string())),
        (keys::EXPORTER_VERSION, Ok(env!("CARGO_PKG_VERSION").into())),
        (keys::FORM, Ok(form.to_string())),
        (keys::PRECISION, Ok(precision.as_str().to_string())),
    ];
    meta.into_iter()
        .map(|(key, value)| {
            let value = value.map_err(|source| MetadataError::Json { key, source })?;
            Ok(StringStringEntryProto {
                key: key.into(),
                value,
            })
        })
        .collect()
}

fn outer_value(g: &mut GraphBuilder, block_in: &str, o: &OuterShortcut, hint: &str) -> String {
    match o {
        OuterShortcut::SliceAndPad {
            in_res,
            out_ch,
            stride,
        } => {
            if *stride == 1 && in_res == out_ch {
                block_in.to_string()
            } else {
                let s = g.slice_channels(block_in, 0, *in_res, *stride);
                g.pad_channels(&s, out_ch - in_res)
            }
        }
        OuterShortcut::Projection(c) => g.conv(block_in, hint, c),
    }
}

/// Stem, one Conv (+ Add) + Relu per unit, head; the logits are written to `out`.
fn folded_body(
    g: &mut GraphBuilder,
    ck: &Checkpoint,
    x: &str,
    out: &str,
) -> Result<(), ExportError> {
    let net = fold(ck)?;
    let stem = g.conv(x, "stem", &net.stem);
    let mut h = g.node("Relu", &[&stem], vec![], None);
    let mut block_in = h.clone();
    for u in &net.units {
        if u.name.ends_with(".u0") {
            block_in = h.clone();
        }
        let mut y = g.conv(&h, &u.name, &u.conv);
        if let Some(o) = &u.outer {
            let s = outer_value(g, &block_in, o, &format!("{}.outer", u.name));
            y = g.node("Add", &[&y, &s], vec![], None);
        }
        h = g.node("Relu", &[&y], vec![], None);
    }
    // Average pooling commutes with the 1x1 head: pool first, it is cheaper.
    let pooled = g.node("GlobalAveragePool", &[&h], vec![], None);
    let head = g.conv(&pooled, "head", &net.head);
    g.node("Flatten", &[&head], vec![int("axis", 1)], Some(out));
    Ok(())
}

fn bn_node(g: &mut GraphBuilder, x: &str, bn: &Bn, hint: &str, eps: f64) -> String {
    let n = bn.gamma.len();
    let names = [
        g.param(&format!("{hint}.gamma"), &[n], &bn.gamma),
        g.param(&format!("{hint}.beta"), &[n], &bn.beta),
        g.param(&format!("{hint}.mean"), &[n], &bn.mean),
        g.param(&format!("{hint}.var"), &[n], &bn.var),
    ];
    g.node(
        "BatchNormalization",
        &[x, &names[0], &names[1], &names[2], &names[3]],
        vec![float("epsilon", eps as f32)],
        None,
    )
}

fn raw_conv(
    ck: &Checkpoint,
    name: &str,
    shape: [usize; 4],
    stride: usize,
    pad: usize,
) -> Result<ConvBias, ExportError> {
    Ok(ConvBias {
        weight: ck.shaped(name, &shape)?.data.clone(),
        shape,
        bias: vec![],
        stride,
        pad,
    })
}

/// Block `(rows, cols)` of a unit's kernel, with the mask applied.
fn sub_kernel(w: &[f32], u: &UnitSpec, rows: (usize, usize), cols: (usize, usize)) -> ConvBias {
    let mut out = Vec::with_capacity(rows.1 * cols.1 * 9);
    for o in rows.0..rows.0 + rows.1 {
        for i in cols.0..cols.0 + cols.1 {
            let at = (o * u.in_ch + i) * 9;
            out.extend_from_slice(&w[at..at + 9]);
        }
    }
    ConvBias {
        weight: out,
        shape: [rows.1, cols.1, 3, 3],
        bias: vec![],
        stride: u.stride,
        pad: 1,
    }
}

fn add_all(g: &mut GraphBuilder, terms: Vec<String>) -> Option<String> {
    let mut it = terms.into_iter();
    let first = it.next()?;
    Some(it.fold(first, |acc, t| g.node("Add", &[&acc, &t], vec![], None)))
}

/// The literal network: per unit the streams sliced apart, four
/// convolutions, the shortcut, `Concat`, `BatchNormalization` and `Relu`;
/// the block shortcut added after the second unit's BatchNorm; the logits
/// are written to `out`.
fn unfolded_body(
    g: &mut GraphBuilder,
    ck: &Checkpoint,
    x: &str,
    out: &str,
) -> Result<(), ExportError> {
    let spec: &ModelSpec = &ck.meta.spec;
    let eps = spec.bn_eps;
    let stem = raw_conv(
        ck,
        "stem.conv.weight",
        [spec.stem_channels(), spec.input.channels, 3, 3],
        1,
        1,
    )?;
    let s = g.conv(x, "stem", &stem);
    let bn = Bn::read(ck, "stem.bn", spec.stem_channels())?;
    let s = bn_node(g, &s, &bn, "stem.bn", eps);
    let mut h = g.node("Relu", &[&s], vec![], None);
    let folded = fold(ck)?; // only for the outer shortcuts, which are not folded anyway
    let mut k = 0;
    for block in spec.blocks() {
        let block_in = h.clone();
        for (j, u) in block.units.iter().enumerate() {
            let sum = literal_unit(g, ck, u, &h)?;
            let bn = Bn::read(ck, &format!("{}.bn", u.name), u.out_ch)?;
            let mut y = bn_node(g, &sum, &bn, &format!("{}.bn", u.name), eps);
            if j == 1
                && let Some(o) = &folded.units[k].outer
            {
                let s = outer_value(g, &block_in, o, &format!("{}.outer", block.name));
                y = g.node("Add", &[&y, &s], vec![], None);
            }
            h = g.node("Relu", &[&y], vec![], None);
            k += 1;
        }
    }
    let head = raw_conv(
        ck,
        "head.conv.weight",
        [spec.num_classes, spec.head_channels(), 1, 1],
        1,
        0,
    )?;
    let y = g.conv(&h, "head", &head);
    let bn = Bn::read(ck, "head.bn", spec.num_classes)?;
    let y = bn_node(g, &y, &bn, "head.bn", eps);
    let pooled = g.node("GlobalAveragePool", &[&y], vec![], None);
    g.node("Flatten", &[&pooled], vec![int("axis", 1)], Some(out));
    Ok(())
}

/// One unit before its BatchNorm: the live sub-kernels of each stream, the
/// unit's shortcut on the residual rows, and the two streams concatenated.
fn literal_unit(
    g: &mut GraphBuilder,
    ck: &Checkpoint,
    u: &UnitSpec,
    h: &str,
) -> Result<String, ExportError> {
    let mask = &ck.meta.spec.mask;
    let w = &ck
        .shaped(
            &format!("{}.conv.weight", u.name),
            &[u.out_ch, u.in_ch, 3, 3],
        )?
        .data;
    let (ir, or) = (u.in_res, u.out_res);
    let r = (ir > 0).then(|| g.slice_channels(h, 0, ir, 1));
    let t = (u.in_ch > ir).then(|| g.slice_channels(h, ir, u.in_ch, 1));
    let live = [mask.rr, mask.tr, mask.rt, mask.tt];
    let blocks = [
        ((0, or), (0, ir), &r),
        ((0, or), (ir, u.in_ch - ir), &t),
        ((or, u.out_ch - or), (0, ir), &r),
        ((or, u.out_ch - or), (ir, u.in_ch - ir), &t),
    ];
    let (mut r_terms, mut t_terms) = (vec![], vec![]);
    for (b, (rows, cols, src)) in blocks.into_iter().enumerate() {
        let Some(src) = src else { continue };
        if !live[b] || rows.1 == 0 || cols.1 == 0 {
            continue;
        }
        let name = format!("{}.w{b}", u.name);
        let y = g.conv(src, &name, &sub_kernel(w, u, rows, cols));
        match b < 2 {
            true => r_terms.push(y),
            false => t_terms.push(y),
        }
    }
    if let (Some(sc), Some(r)) = (u.shortcut, &r) {
        r_terms.push(unit_shortcut(g, ck, u, sc, r)?);
    }
    let parts: Vec<String> = [add_all(g, r_terms), add_all(g, t_terms)]
        .into_iter()
        .flatten()
        .collect();
    match parts.as_slice() {
        [r, t] => Ok(g.node("Concat", &[r, t], vec![int("axis", 1)], None)),
        [one] => Ok(one.clone()),
        _ => Err(GraphError::NoLiveWeights(u.name.clone()).into()),
    }
}

/// The unit's own shortcut of the residual stream `r`, as graph nodes.
fn unit_shortcut(
    g: &mut GraphBuilder,
    ck: &Checkpoint,
    u: &UnitSpec,
    sc: Shortcut,
    r: &str,
) -> Result<String, ExportError> {
    Ok(match sc {
        Shortcut::Identity => r.to_string(),
        Shortcut::ZeroPad {
            in_res,
            out_res,
            stride,
        } => {
            let sub = g.slice_channels(r, 0, in_res, stride);
            g.pad_channels(&sub, out_res - in_res)
        }
        Shortcut::Conv {
            in_res,
            out_res,
            stride,
        } => {
            let name = format!("{}.proj.weight", u.name);
            let p = raw_conv(ck, &name, [out_res, in_res, 1, 1], stride, 0)?;
            g.conv(r, &format!("{}.proj", u.name), &p)
        }
    })
}

/// Reads `checkpoint`, exports it and writes `output` atomically (a
/// temporary file renamed into place: no partial .onnx on failure).
pub fn export_file(
    checkpoint: &Path,
    output: &Path,
    form: Form,
    precision: Precision,
) -> Result<ModelProto, ExportError> {
    let bytes =
        std::fs::read(checkpoint).map_err(|e| ExportError::Io(checkpoint.to_path_buf(), e))?;
    let ck = Checkpoint::from_bytes(&bytes, checkpoint)?;
    let model = build_model(&ck, form, precision, &sha256_hex(&bytes))?;
    rir_checkpoint::write_atomic(output, &model.encode_to_vec())?;
    Ok(model)
}

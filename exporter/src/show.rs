//! How `rir-export` words its typed results for a person: what was
//! written, the comparison table, the accuracy lines and the verdict.
//! Nothing here decides anything; the decisions are [`crate::verdict`]'s.

use std::fmt::Write as _;

use rir_contract::ModelInfo;
use rir_contract::onnx::keys;

use crate::bench::BenchRow;
use crate::pipeline::Placed;
use crate::precision::Precision;
use crate::quantize::QuantizeOptions;
use crate::triton::ConfigWritten;
use crate::verdict::{Bounds, Confirmed, Verdict};
use crate::verify::{Comparison, Report};

/// `wrote model.onnx (Folded, fp32): 20 Conv, ...`; for a rejected model,
/// where it was kept instead.
pub fn written(p: &Placed, what: &str) -> String {
    let c = &p.counts;
    let ops = match p.precision {
        Precision::Int8 => format!(
            "{} QuantizeLinear, {} DequantizeLinear",
            c.quantize, c.dequantize
        ),
        _ => format!(
            "{} Conv, {} BatchNormalization, {} nodes",
            c.convs, c.batch_norms, c.nodes
        ),
    };
    match p.placed() {
        true => format!(
            "wrote {} ({what}): {ops}, {} bytes",
            p.path.display(),
            p.bytes
        ),
        false => format!(
            "rejected: {} was not put in place; the model is kept at {} (a name no server loads)",
            p.output.display(),
            p.path.display()
        ),
    }
}

/// `(int8, minmax calibration on 512 images, seed 0)`'s inside.
pub fn int8_what(q: &QuantizeOptions) -> String {
    format!(
        "int8, {} calibration on {} images, seed {}",
        q.method.as_str(),
        q.images,
        q.seed
    )
}

/// What happened to `config.pbtxt`, if anything worth a line.
pub fn config(c: &ConfigWritten) -> Option<String> {
    match c {
        ConfigWritten::Wrote(p) => Some(format!(
            "wrote {} (Triton model configuration)",
            p.display()
        )),
        ConfigWritten::Kept(p) => Some(format!("kept the existing {}", p.display())),
        ConfigWritten::NotARepository => None,
    }
}

/// The comparison table of a verification.
pub fn comparisons(r: &Report) -> String {
    let mut s = format!(
        "{} model in ONNX Runtime ({}), compared with\n{:<43} {:>8} {:>12} {:>12} {:>10}\n",
        r.precision.as_str(),
        r.engine,
        "",
        "inputs",
        "max |diff|",
        "max rel",
        "top-1 agree"
    );
    let mut row = |name: &str, c: &Comparison| {
        let _ = writeln!(
            s,
            "{:<43} {:>8} {:>12.3e} {:>12.3e} {:>10.2}%",
            name,
            c.n,
            c.max_abs,
            c.max_rel,
            100.0 * c.top1_agreement
        );
    };
    row("tract, random inputs", &r.random);
    if let Some(t) = &r.random_twin {
        row(&format!("{}, random inputs", r.reference), t);
    }
    if let Some(real) = &r.real {
        row(&format!("{}, real test images", r.reference), real);
    }
    s
}

/// The accuracy lines: against the reference, the trainer's figure, or
/// the int8 bound.
pub fn accuracy(r: &Report, b: &Bounds) -> String {
    let mut s = String::new();
    if let Some(why) = &r.real_skipped {
        let _ = writeln!(s, "real images skipped: {why}");
    }
    let Some(a) = &r.accuracy else {
        return s;
    };
    if r.precision != Precision::Int8 {
        let _ = writeln!(
            s,
            "test accuracy on {} images: ONNX Runtime {:.2}%, {} {:.2}%",
            a.n,
            100.0 * a.ort,
            r.reference,
            100.0 * a.reference
        );
        if let Some(rec) = a.recorded {
            let _ = writeln!(
                s,
                "the trainer recorded {:.2}% on the full test split for these weights",
                100.0 * rec
            );
        }
        return s;
    }
    let agree = r.real.map_or(0.0, |c| 100.0 * c.top1_agreement);
    let _ = writeln!(
        s,
        "test accuracy on {} images: int8 {:.2}%, float32 source {:.2}% ({:+.2} points); top-1 agreement {:.2}%",
        a.n,
        100.0 * a.ort,
        100.0 * a.reference,
        100.0 * (a.ort - a.reference),
        agree
    );
    let _ = writeln!(
        s,
        "bound: agreement at least {:.2}%, accuracy at most {:.2} points below the source",
        b.min_agreement, b.max_accuracy_drop
    );
    if let (Some(rec), true) = (r.int8_recorded, a.full_split) {
        let _ = writeln!(
            s,
            "recorded when it was quantized: {:.2}% on the full test split",
            100.0 * rec
        );
    }
    s
}

/// `OK: ...` for a pass; one `FAILED: ...` line per missed bound otherwise.
pub fn verdict(v: &Verdict) -> String {
    if !v.passed() {
        return v
            .failures
            .iter()
            .map(|f| format!("FAILED: {f}\n"))
            .collect();
    }
    let extra = match v.confirmed {
        Confirmed::Int8Bound => " and the int8 bound met",
        Confirmed::TrainerAccuracy => " and the trainer's accuracy reproduced",
        Confirmed::Tolerance => "",
    };
    format!(
        "OK: {} within {:.1e}{extra}\n",
        v.measure.label(),
        v.tolerance
    )
}

/// `rir-export inspect`: inputs, outputs, operator counts, metadata.
pub fn inspect(info: &ModelInfo) -> String {
    let mut s = format!("opset {}\n", info.opset);
    for i in &info.inputs {
        let _ = writeln!(s, "input  {} {} {:?}", i.name, i.type_name(), i.dims);
    }
    for o in &info.outputs {
        let _ = writeln!(s, "output {} {} {:?}", o.name, o.type_name(), o.dims);
    }
    let mut ops: Vec<&String> = info.op_types.iter().collect();
    ops.sort();
    ops.dedup();
    let counts: Vec<String> = ops
        .iter()
        .map(|op| format!("{op} x{}", info.count(op)))
        .collect();
    let _ = writeln!(s, "nodes  {}", counts.join(", "));
    for (k, v) in &info.metadata {
        let shown = match k == keys::SPEC && v.len() > 120 {
            true => format!("{}...", v.chars().take(120).collect::<String>()),
            false => v.clone(),
        };
        let _ = writeln!(s, "meta   {k} = {shown}");
    }
    s
}

/// The export benchmark's table.
pub fn bench(opts: &crate::bench::BenchOptions, rows: &[BenchRow]) -> String {
    let i = &opts.input;
    let mut s = format!(
        "ONNX Runtime CPU, {} threads, input {}x{}x{}, medians over {} alternating rounds\n{:<7} {:<9} {:>6} {:>6} {:>16} {:>18}\n",
        opts.threads,
        i.channels,
        i.height,
        i.width,
        opts.rounds,
        "preset",
        "form",
        "Conv",
        "nodes",
        "batch 1 µs/img",
        "batch 64 img/s"
    );
    for r in rows {
        for (name, f) in [
            ("folded", &r.folded),
            ("unfolded", &r.unfolded),
            ("int8", &r.int8),
        ] {
            let _ = writeln!(
                s,
                "{:<7} {:<9} {:>6} {:>6} {:>16.0} {:>18.0}",
                r.preset, name, f.convs, f.nodes, f.latency_us, f.throughput
            );
        }
        let _ = writeln!(
            s,
            "{:<7} speed-up of folding: {:.2}x at batch 1, {:.2}x at batch 64\n{:<7} int8 against folded fp32: {:.2}x at batch 1, {:.2}x at batch 64",
            r.preset,
            r.unfolded.latency_us / r.folded.latency_us,
            r.folded.throughput / r.unfolded.throughput,
            r.preset,
            r.folded.latency_us / r.int8.latency_us,
            r.int8.throughput / r.folded.throughput
        );
    }
    s
}

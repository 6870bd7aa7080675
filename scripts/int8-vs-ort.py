#!/usr/bin/env python3
"""int8 side by side: rir-export's quantizer against ONNX Runtime's own.

Usage: int8-vs-ort.py FP32.onnx [LABEL=]INT8.onnx... [--threads 2] [--rounds 5]
       [--opt-level basic|extended|all] [--ort-types] [--no-ort]

Quantizes FP32.onnx with onnxruntime.quantization.quantize_static (QDQ,
per-channel int8 weights, uint8 activations, 512 seeded training images,
the tool's defaults otherwise; also with the stem left in float32, as
rir-export does), checks every model with the ONNX checker, scores each on
the 10,000 Fashion-MNIST test images (accuracy, top-1 agreement with
FP32.onnx), and times them in one process in alternating rounds at batch 1
and batch 64 (images/s, median over rounds). Ratios are against fp32.
"""
import argparse, gzip, os, tempfile, time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat,
                                      QuantType, quantize_static)

DATA = "/usr/share/datasets/fashion-mnist/"


def idx(name, offset):
    return np.frombuffer(gzip.open(DATA + name).read(), np.uint8)[offset:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fp32")
    ap.add_argument("ours", nargs="+", help="rir-export int8 models, each as LABEL=PATH or PATH")
    ap.add_argument("--opt-level", choices=["basic", "extended", "all"], default="all",
                    help="ONNX Runtime graph optimization level (rir-serve uses all)")
    ap.add_argument("--ort-types", action="store_true",
                    help="also ONNX Runtime's quantizer with int8 activations (S8S8) and uint8 weights (U8U8)")
    ap.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime's quantizer out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()

    train = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    test = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    labels = idx("t10k-labels-idx1-ubyte.gz", 8)
    cal = train[np.random.default_rng(0).choice(len(train), 512, replace=False)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(cal):
                return None
            self.i += 32
            return {"image": cal[self.i - 32:self.i]}

    tmp = tempfile.mkdtemp()
    models = {"fp32": a.fp32}
    for o in a.ours:
        label, _, path = o.rpartition("=")
        models[label or "rir-export int8"] = path
    stem = next(n.name for n in onnx.load(a.fp32).graph.node if n.op_type == "Conv")
    u8, s8 = QuantType.QUInt8, QuantType.QInt8
    variants = [("ORT quantize_static", [], u8, s8), ("ORT, stem in fp32", [stem], u8, s8)]
    if a.ort_types:
        variants += [("ORT S8S8, stem fp32", [stem], s8, s8), ("ORT U8U8, stem fp32", [stem], u8, u8)]
    for name, exclude, act, weight in [] if a.no_ort else variants:
        out = os.path.join(tmp, name.replace(" ", "_").replace(",", "") + ".onnx")
        quantize_static(a.fp32, out, Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=act,
                        weight_type=weight, nodes_to_exclude=exclude)
        models[name] = out
    for path in models.values():
        onnx.checker.check_model(onnx.load(path))

    def session(path):
        o = ort.SessionOptions()
        o.intra_op_num_threads = a.threads
        o.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[a.opt_level]
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    sessions = {k: session(p) for k, p in models.items()}
    top1 = {k: np.concatenate([s.run(["logits"], {"image": test[i:i + 500]})[0]
                               for i in range(0, len(test), 500)]).argmax(1)
            for k, s in sessions.items()}
    speed = {k: {1: [], 64: []} for k in sessions}
    for _ in range(a.rounds):
        for bs, runs in ((1, 200), (64, 10)):
            x = test[:bs]
            for k, s in sessions.items():
                s.run(["logits"], {"image": x})
                t = time.perf_counter()
                for _ in range(runs):
                    s.run(["logits"], {"image": x})
                speed[k][bs].append(runs * bs / (time.perf_counter() - t))
    med = {k: {bs: float(np.median(v)) for bs, v in d.items()} for k, d in speed.items()}
    print(f"ONNX Runtime {ort.__version__} CPU, {a.threads} threads, optimization {a.opt_level}, {a.rounds} alternating rounds, "
          f"10,000 Fashion-MNIST test images")
    print(f"{'model':<22} {'accuracy':>9} {'agreement':>10} {'b1 img/s':>9} {'x fp32':>7} "
          f"{'b64 img/s':>10} {'x fp32':>7} {'bytes':>9}")
    for k in models:
        acc = (top1[k] == labels).mean() * 100
        agree = (top1[k] == top1["fp32"]).mean() * 100
        print(f"{k:<22} {acc:>8.2f}% {agree:>9.2f}% {med[k][1]:>9.0f} {med[k][1] / med['fp32'][1]:>6.2f}x "
              f"{med[k][64]:>10.0f} {med[k][64] / med['fp32'][64]:>6.2f}x {os.path.getsize(models[k]):>9}")


if __name__ == "__main__":
    main()

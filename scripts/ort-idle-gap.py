"""Batch-1 latency of ONNX Runtime back to back and after idle gaps.

A server at concurrency 1 runs its model once per round trip, with the
engine idle in between; an in-process loop runs it back to back. This
measures what the gap alone costs ONNX Runtime (its pool threads stop
spinning and must be woken), with the ONNX Runtime Python API of the
set-up (same library version as the server's), so the latency a server
adds can be split into what the runtime costs itself and what the request
path costs.

    PYTHONPATH=.deps/py python3 scripts/ort-idle-gap.py [--model M] [--threads N] [--rounds R]

Prints one line per gap: the median latency of a run after that gap.
Gaps under 1 ms are spent yielding (the thread stays runnable, as a server
thread between requests); longer ones sleep.
"""

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/rir-fashion-mnist/1/model.onnx")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the gaps")
    ap.add_argument("--gaps-us", default="0,200,1000,5000", help="comma-separated gaps in microseconds")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(200):
        s.run(None, {inp.name: x})

    def p50(gap_us, n):
        lat = []
        for _ in range(n):
            if gap_us >= 1000:
                time.sleep(gap_us * 1e-6)
            elif gap_us > 0:
                end = time.perf_counter() + gap_us * 1e-6
                while time.perf_counter() < end:
                    time.sleep(0)
            t = time.perf_counter()
            s.run(None, {inp.name: x})
            lat.append((time.perf_counter() - t) * 1e6)
        return statistics.median(lat)

    print(f"{a.model}, batch 1, {a.threads or 'default'} intra-op threads")
    for r in range(a.rounds):
        for gap in [int(g) for g in a.gaps_us.split(",")]:
            n = 2000 if gap < 5000 else 500
            print(f"round {r + 1}: gap {gap:>5} us: p50 {p50(gap, n):6.0f} us over {n} runs")


if __name__ == "__main__":
    main()

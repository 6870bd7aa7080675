"""Drives a running rir-serve with NVIDIA's official Python client.

Usage: triton_client.py HOST:PORT MODEL_NAME MODEL_ONNX_PATH

Checks that the stock `tritonclient.grpc` client can read the server's and
the model's metadata and configuration, run inference (raw tensors, the
client's default) and use the classification extension, and that the
outputs equal ONNX Runtime's Python API on the same model file. Exits
non-zero with a message on the first mismatch.
"""

import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient


def main():
    url, model, path = sys.argv[1:4]
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), f"{model} not ready"

    meta = client.get_model_metadata(model, as_json=True)
    assert meta["inputs"][0]["name"] == "image", meta
    c, h, w = (int(d) for d in meta["inputs"][0]["shape"][1:])
    config = client.get_model_config(model, as_json=True)["config"]
    assert config["platform"] == "onnxruntime_onnx", config
    assert int(config["max_batch_size"]) > 0, config
    server = client.get_server_metadata(as_json=True)
    assert "classification" in server["extensions"], server

    rng = np.random.default_rng(0)
    x = rng.random((4, c, h, w), dtype=np.float32)
    inp = grpcclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [grpcclient.InferRequestedOutput("logits"), grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer(model, [inp], outputs=outputs)
    logits = result.as_numpy("logits")
    probs = result.as_numpy("probabilities")

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want_logits, want_probs = session.run(["logits", "probabilities"], {"image": x})
    assert np.abs(logits - want_logits).max() < 1e-4, np.abs(logits - want_logits).max()
    assert np.abs(probs - want_probs).max() < 1e-5, np.abs(probs - want_probs).max()

    top = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    labels = top.as_numpy("probabilities")
    assert labels.shape == (4, 3), labels.shape
    best = int(labels[0][0].decode().split(":")[1])
    assert best == int(np.argmax(want_probs[0])), (labels[0], want_probs[0])

    stats = client.get_inference_statistics(model, as_json=True)
    assert int(stats["model_stats"][0]["inference_count"]) >= 8, stats
    print("tritonclient: metadata, config, inference, classification and statistics OK")


if __name__ == "__main__":
    main()

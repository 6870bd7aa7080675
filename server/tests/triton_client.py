"""Drives a running rir-serve with NVIDIA's official Python clients.

Usage: triton_client.py grpc|http HOST:PORT MODEL_NAME MODEL_ONNX_PATH

With the stock `tritonclient.grpc` or `tritonclient.http` client and its
defaults (raw tensors over gRPC; binary tensor data over HTTP), checks that
the server's and the model's metadata and configuration can be read,
inference runs (also with JSON outputs over HTTP), the classification
extension works and statistics count, and that the outputs equal ONNX
Runtime's Python API on the same model file. Exits non-zero with a message
on the first mismatch.
"""

import sys

import numpy as np
import onnxruntime as ort


def main():
    protocol, url, model, path = sys.argv[1:5]
    if protocol == "grpc":
        import tritonclient.grpc as client_module

        client = client_module.InferenceServerClient(url=url)
        meta = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
        server = client.get_server_metadata(as_json=True)
    else:
        import tritonclient.http as client_module

        client = client_module.InferenceServerClient(url=url)
        meta = client.get_model_metadata(model)
        config = client.get_model_config(model)
        server = client.get_server_metadata()
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), f"{model} not ready"
    assert not client.is_model_ready("no-such-model"), "an unknown model is ready"

    assert meta["inputs"][0]["name"] == "image", meta
    c, h, w = (int(d) for d in meta["inputs"][0]["shape"][1:])
    assert config["platform"] == "onnxruntime_onnx", config
    assert int(config["max_batch_size"]) > 0, config
    assert "classification" in server["extensions"], server

    rng = np.random.default_rng(0)
    x = rng.random((4, c, h, w), dtype=np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want_logits, want_probs = session.run(["logits", "probabilities"], {"image": x})

    def check(result):
        logits = result.as_numpy("logits")
        probs = result.as_numpy("probabilities")
        assert np.abs(logits - want_logits).max() < 1e-4, np.abs(logits - want_logits).max()
        assert np.abs(probs - want_probs).max() < 1e-5, np.abs(probs - want_probs).max()

    inp = client_module.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [client_module.InferRequestedOutput(n) for n in ("logits", "probabilities")]
    check(client.infer(model, [inp], outputs=outputs))
    # No outputs named: every output comes back.
    check(client.infer(model, [inp]))
    if protocol == "http":
        # JSON both ways instead of binary data.
        inp = client_module.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        outputs = [
            client_module.InferRequestedOutput(n, binary_data=False)
            for n in ("logits", "probabilities")
        ]
        check(client.infer(model, [inp], outputs=outputs))
        # A gzip-compressed request.
        check(client.infer(model, [inp], outputs=outputs, request_compression_algorithm="gzip"))

    top = client.infer(model, [inp], outputs=[client_module.InferRequestedOutput("probabilities", class_count=3)])
    labels = top.as_numpy("probabilities")
    assert labels.shape == (4, 3), labels.shape
    best = int(labels[0][0].decode().split(":")[1])
    assert best == int(np.argmax(want_probs[0])), (labels[0], want_probs[0])

    if protocol == "grpc":
        stats = client.get_inference_statistics(model, as_json=True)
    else:
        stats = client.get_inference_statistics(model)
    assert int(stats["model_stats"][0]["inference_count"]) >= 8, stats
    print(f"tritonclient.{protocol}: metadata, config, inference, classification and statistics OK")


if __name__ == "__main__":
    main()

//! The Python packages `scripts/setup.sh` installs for the tests
//! (tritonclient, onnx, onnxruntime), and NVIDIA's stock client run
//! against a server.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

/// PYTHONPATH of the packages scripts/setup.sh installs (`RIR_PYTHONPATH`
/// overrides).
pub fn python_path() -> String {
    std::env::var("RIR_PYTHONPATH")
        .unwrap_or_else(|_| root().join(".deps/py").display().to_string())
}

/// Runs `server/tests/triton_client.py` (tritonclient over `protocol`,
/// `grpc` or `http`, with its default settings) against `addr` and asserts
/// that it passed: metadata, config, inference against `model_file` run
/// locally, classification and statistics.
pub async fn run_triton_client(protocol: &str, addr: &str, model: &str, model_file: &Path) {
    let script = root().join("server/tests/triton_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([protocol, addr, model])
        .arg(model_file)
        .env("PYTHONPATH", python_path())
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "tritonclient.{protocol} run failed (scripts/setup.sh installs tritonclient[grpc,http] and onnxruntime into .deps/py):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("statistics OK"));
}

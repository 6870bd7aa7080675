//! scripts/setup.sh picks the CPU or the CUDA install from what the
//! machine has. Its plan mode (RIR_SETUP_PLAN=1) prints the choice and
//! installs nothing, so the GPU branch is checked here under a simulated
//! `nvidia-smi` on a machine without a GPU.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the set-up's plan with `fake_gpu` deciding whether a stand-in
/// `nvidia-smi` that lists an H200 comes first on PATH.
fn plan(fake_gpu: bool, device: Option<&str>) -> String {
    let bin = tempfile::tempdir().unwrap();
    let mut path = std::env::var("PATH").unwrap_or_default();
    if fake_gpu {
        let smi = bin.path().join("nvidia-smi");
        std::fs::write(
            &smi,
            "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000)'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        path = format!("{}:{path}", bin.path().display());
    }
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/setup.sh"))
        .env("RIR_SETUP_PLAN", "1")
        .env("PATH", path)
        .env_remove("RIR_DEVICE");
    if let Some(d) = device {
        cmd.env("RIR_DEVICE", d);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_gpu_gets_the_cuda_builds() {
    let p = plan(true, None);
    assert!(p.contains("device: cuda"), "{p}");
    assert!(p.contains("onnxruntime-gpu==1.31.1"), "{p}");
    assert!(p.contains("libonnxruntime_providers_cuda.so"), "{p}");
    // The full torch wheel with its CUDA 13 dependencies, not --no-deps.
    assert!(p.contains("pip install torch==2.11.0 into"), "{p}");
    assert!(!p.contains("--no-deps"), "{p}");
}

#[test]
fn rir_device_cpu_keeps_the_cpu_install_on_a_gpu_machine() {
    let p = plan(true, Some("cpu"));
    assert!(p.contains("device: cpu"), "{p}");
    assert!(p.contains("onnxruntime==1.31.1"), "{p}");
    assert!(!p.contains("onnxruntime-gpu"), "{p}");
}

#[test]
fn no_gpu_keeps_the_cpu_install() {
    if Path::new("/dev/nvidia0").exists() {
        return; // a real GPU: the CPU branch cannot be reached without RIR_DEVICE
    }
    let p = plan(false, None);
    assert!(p.contains("device: cpu"), "{p}");
    assert!(
        p.contains(
            "--no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85"
        ),
        "{p}"
    );
    assert!(!p.contains("onnxruntime-gpu"), "{p}");
}

#[test]
fn rir_torch_reference_adds_a_whole_torch_for_python_on_a_cpu_machine() {
    let with = |value: &str| {
        let out = Command::new("bash")
            .arg(root().join("scripts/setup.sh"))
            .env("RIR_SETUP_PLAN", "1")
            .env("RIR_DEVICE", "cpu")
            .env("RIR_TORCH_REFERENCE", value)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let p = with("1");
    assert!(
        p.contains("torch reference: pip install torch==2.11.0 into")
            && p.contains(".deps/torch-2.11.0-python"),
        "{p}"
    );
    // libtorch for the build stays the CPU part alone.
    assert!(p.contains("--no-deps torch==2.11.0"), "{p}");
    // Without the opt-in, only a reference installed before is kept.
    let installed = root().join(".deps/torch-2.11.0-python/torch/__init__.py");
    assert_eq!(with("0").contains("torch reference"), installed.exists());
    // A GPU machine's libtorch is a whole torch already: no second one.
    assert!(!plan(true, None).contains("torch reference"));
}

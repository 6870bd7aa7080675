//! The `rir-train` binary over real files and real signals.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rir_checkpoint::Checkpoint;
use rir_testkit::data as fixtures;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rir-train"));
    c.env("RUST_LOG", "warn");
    c
}

fn train_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--dataset",
        "fashion-mnist",
        "--preset",
        "micro",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--quiet",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--data-dir".into(), data.display().to_string()])
    .chain(["--out".into(), out.display().to_string()])
    .collect()
}

fn wait_for(path: &Path, what: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{what} never appeared in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_saves_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixtures::write_fashion_mnist(&data, 160, 32, 28, true, 1).unwrap();
    let out = dir.path().join("run");
    let child = bin()
        .args(train_args(&data, &out))
        .args(["--epochs", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&out.join("metrics.jsonl"), "\"event\":\"epoch\"");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("--resume"));
    let ck = Checkpoint::read(&out.join("last.safetensors")).unwrap();
    let done = ck.meta.training.epoch;
    assert!(done >= 1);

    let status = bin()
        .args(train_args(&data, &out))
        .args(["--resume", "--epochs", &(done + 1).to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let ck = Checkpoint::read(&out.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.training.epoch, done + 1);
    assert_eq!(ck.meta.training.next_batch, 0);
}

/// Epochs logged so far in a run's metrics.jsonl.
fn epochs_logged(metrics: &Path) -> usize {
    std::fs::read_to_string(metrics)
        .map(|s| s.matches("\"event\":\"epoch\"").count())
        .unwrap_or(0)
}

/// The temporary files a checkpoint write in progress leaves in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_at_any_moment_leaves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Tiny epochs, so that checkpoints are written every few milliseconds.
    fixtures::write_fashion_mnist(&data, 32, 8, 28, false, 2).unwrap();
    let out = dir.path().join("run");
    let metrics = out.join("metrics.jsonl");
    let (rounds, mut hits, mut last_epoch) = (16u64, 0, 0);
    for round in 0..rounds {
        let mut cmd = bin();
        cmd.args(train_args(&data, &out))
            .args(["--epochs", "100000"]);
        if out.join("last.safetensors").exists() {
            cmd.arg("--resume");
        }
        let (logged, stale) = (epochs_logged(&metrics), temporaries(&out));
        let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
        // A write of this process, not an earlier one's: a new epoch logged.
        let start = Instant::now();
        while epochs_logged(&metrics) <= logged {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "round {round}: no epoch"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if round % 2 == 0 {
            // Aim: kill the moment a checkpoint's temporary file appears,
            // which is in the middle of its write.
            let start = Instant::now();
            while temporaries(&out).len() <= stale.len()
                && start.elapsed() < Duration::from_secs(10)
            {
                std::hint::spin_loop();
            }
        } else {
            // At offsets spread over an epoch and its writes.
            std::thread::sleep(Duration::from_micros(1_700 * (round % 7) + 300 * round));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if temporaries(&out).len() > stale.len() {
            hits += 1;
        }
        // Before the first write there is no checkpoint yet, rightly.
        if last_epoch == 0 && !out.join("last.safetensors").exists() {
            continue;
        }
        let ck = Checkpoint::read(&out.join("last.safetensors"))
            .unwrap_or_else(|e| panic!("round {round}: checkpoint unreadable after kill -9: {e}"));
        assert!(
            ck.meta.training.epoch >= last_epoch.max(1),
            "round {round}: the checkpoint went back from epoch {last_epoch} to {}",
            ck.meta.training.epoch
        );
        last_epoch = ck.meta.training.epoch;
    }
    println!("{hits} of {rounds} kills landed while a checkpoint was being written");
    // The aimed half must mostly land mid-write, or the test proves little.
    assert!(
        hits >= rounds / 4,
        "only {hits} of {rounds} kills landed during a checkpoint write"
    );
}

#[test]
fn trains_on_cifar10_and_cifar100_files_in_the_official_format() {
    for (flavour, name) in [
        (fixtures::Cifar::Ten, "cifar10"),
        (fixtures::Cifar::Hundred, "cifar100"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let folder = fixtures::write_cifar(dir.path(), flavour, 20, 20, 3).unwrap();
        let out = dir.path().join("run");
        let output = bin()
            .args([
                "train",
                "--dataset",
                name,
                "--preset",
                "micro",
                "--epochs",
                "1",
                "--batch-size",
                "10",
                "--device",
                "cpu",
                "--quiet",
            ])
            .arg("--data-dir")
            .arg(&folder)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ck = Checkpoint::read(&out.join("best.safetensors")).unwrap();
        assert_eq!(ck.meta.dataset.name, name);
        assert_eq!(ck.meta.spec.input.channels, 3);
        let classes = if flavour == fixtures::Cifar::Ten {
            10
        } else {
            100
        };
        assert_eq!(ck.meta.spec.num_classes, classes);
        assert_eq!(ck.meta.dataset.class_names.len(), classes);
        let eval = bin()
            .arg("eval")
            .arg(out.join("best.safetensors"))
            .arg("--data-dir")
            .arg(&folder)
            .output()
            .unwrap();
        assert!(
            eval.status.success(),
            "{}",
            String::from_utf8_lossy(&eval.stderr)
        );
        assert!(String::from_utf8_lossy(&eval.stdout).contains("test accuracy"));
    }
}

#[test]
fn bad_input_is_a_clear_error_and_a_failure_status() {
    let dir = tempfile::tempdir().unwrap();
    // Missing data folder.
    let out = bin()
        .args([
            "train",
            "--dataset",
            "cifar10",
            "--data-dir",
            "/nonexistent/cifar",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/cifar") && err.contains("rir-train fetch"),
        "{err}"
    );
    // Truncated checkpoint.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let out = bin().arg("eval").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.safetensors"));
    // Unknown preset.
    let out = bin()
        .args(["train", "--preset", "huge", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset `huge`"));
}

/// `scripts/with-full-disk.sh DIR FREE_KIB` before `cmd`: DIR on a tmpfs
/// with FREE_KIB left, in a private mount namespace; DIR's files afterwards
/// land in DIR.after.
fn on_full_disk(dir: &Path, free_kib: u32, cmd: &mut Command) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/with-full-disk.sh");
    Command::new("bash")
        .arg(script)
        .arg(dir)
        .arg(free_kib.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixtures::write_fashion_mnist(&data, 64, 16, 28, false, 4).unwrap();
    let out = dir.path().join("run");
    let status = bin()
        .args(train_args(&data, &out))
        .args(["--epochs", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    // Epoch 2 runs; its checkpoint does not fit in the 4 KiB left.
    let o = on_full_disk(
        &out,
        4,
        bin()
            .args(train_args(&data, &out))
            .args(["--resume", "--epochs", "2"]),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("last.safetensors"),
        "names the file: {stderr}"
    );
    let after = dir.path().join("run.after");
    assert_eq!(
        std::fs::read(after.join("last.safetensors")).unwrap(),
        before,
        "the previous checkpoint is intact"
    );
    let ck = Checkpoint::read(&after.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.training.epoch, 1);
    let leftovers: Vec<_> = std::fs::read_dir(&after)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Whether this host can train on CUDA, judged without the trainer's code:
/// a CUDA build of libtorch (its `libtorch_cuda.so`) and an NVIDIA device
/// node.
fn host_has_cuda() -> bool {
    Path::new(env!("RIR_LIBTORCH_LIB"))
        .join("libtorch_cuda.so")
        .is_file()
        && Path::new("/dev/nvidiactl").exists()
}

#[test]
fn device_cuda_trains_on_cuda_where_there_is_one_and_fails_clearly_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixtures::write_fashion_mnist(&data, 32, 8, 28, false, 5).unwrap();
    let mut args = train_args(&data, &dir.path().join("run"));
    let at = args.iter().position(|a| a == "cpu").unwrap();
    args[at] = "cuda".into();
    let o = bin()
        .args(&args)
        .args(["--epochs", "1"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if host_has_cuda() {
        assert!(o.status.success(), "{stderr}");
        assert!(stderr.contains("training on Cuda(0)"), "{stderr}");
    } else {
        // No silent fall-back to the CPU: status 1 and the reason.
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--device cuda:"), "{stderr}");
        assert!(!stderr.contains("training on Cpu"), "{stderr}");
    }
}

#[test]
fn bench_measures_both_forms_in_child_processes_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = bin()
        .args(["bench", "--presets", "micro", "--dataset", "fashion-mnist"])
        .args([
            "--steps", "2", "--warmup", "1", "--batch", "8", "--device", "cpu",
        ])
        .arg("--json")
        .arg(&json)
        // Found without the set-up's variable, as in a shell that did not source it.
        .env_remove("RIR_TORCH_PYTHONPATH")
        .env_remove("RIR_TORCH_PYTHON")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "rir one-conv (ours)",
        "rir four-conv (tch)",
        "one-conv speed-up over four-conv",
    ] {
        assert!(stdout.contains(row), "no `{row}`: {stdout}");
    }
    // The PyTorch reference is measured where a torch Python is at hand and
    // otherwise skipped with the reason, never silently missing.
    let reference = stdout
        .lines()
        .find(|l| l.contains("one-conv (PyTorch)"))
        .unwrap_or_else(|| panic!("no PyTorch row: {stdout}"));
    assert!(
        reference.contains("1.00 (ref)") || reference.contains("skipped: "),
        "{reference}"
    );
    // A reference skipped for want of torch says how to install one.
    if reference.contains("skipped: ") {
        assert!(reference.contains("RIR_TORCH_REFERENCE=1"), "{reference}");
    }
    // Where the set-up installed the reference's whole torch
    // (RIR_TORCH_REFERENCE=1 on a CPU machine), the bench finds and runs it.
    let whole = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.deps/torch-2.11.0-python/torch/__init__.py");
    if whole.is_file() {
        assert!(
            reference.contains("1.00 (ref)") && reference.contains("[cpu]"),
            "{reference}"
        );
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rows[0]["preset"], "micro");
    for form in ["one_conv", "four_conv"] {
        let m = &rows[0][form];
        assert!(m["img_per_s"].as_f64().unwrap() > 0.0, "{rows}");
        assert!(m["peak_rss_mb"].as_f64().unwrap() > 10.0, "{rows}");
    }
}

/// The rows of `rir-train presets --dataset cifar10` for the rir variant:
/// (preset, params, MACs).
fn rir_presets() -> Vec<(String, f64, f64)> {
    let out = bin()
        .args(["presets", "--dataset", "cifar10"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[1] == "rir")
        .map(|f| {
            (
                f[0].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn presets_print_the_sizes_the_training_guide_states() {
    // docs/training.md's preset table: params in M, MACs in M or G.
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/training.md"))
            .unwrap();
    let stated: Vec<(String, f64, f64)> = guide
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let params = cells[4].strip_suffix(" M")?.parse::<f64>().ok()? * 1e6;
            let macs = match cells[5].split_once(' ')? {
                (v, "G") => v.parse::<f64>().ok()? * 1e9,
                (v, "M") => v.parse::<f64>().ok()? * 1e6,
                _ => return None,
            };
            Some((name, params, macs))
        })
        .collect();
    assert_eq!(stated.len(), 4, "the guide's table: {stated:?}");
    let printed = rir_presets();
    for (name, params, macs) in &stated {
        let (_, p, m) = printed
            .iter()
            .find(|r| &r.0 == name)
            .unwrap_or_else(|| panic!("{name} not printed"));
        // The guide rounds: two decimals of millions, three figures of MACs.
        assert!(
            (p - params).abs() <= 0.005e6 + 1.0,
            "{name}: {p} params printed, {params} stated"
        );
        assert!(
            (m - macs).abs() / macs < 0.02,
            "{name}: {m} MACs printed, {macs} stated"
        );
    }
}

#[test]
fn info_reports_the_libtorch_and_devices_it_finds() {
    let out = bin().arg("info").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lib = text
        .lines()
        .find_map(|l| l.strip_prefix("libtorch lib:"))
        .unwrap()
        .trim();
    assert!(Path::new(lib).join("libtorch_cpu.so").is_file(), "{text}");
    let available = host_has_cuda().to_string();
    assert!(
        text.contains(&format!("CUDA available: {available}")),
        "{text}"
    );
}

#[test]
fn fetch_from_a_mirror_checks_the_published_md5_and_leaves_nothing_on_a_mismatch() {
    let site = rir_testkit::web::serve_file(b"not the CIFAR-10 archive".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["fetch", "cifar10", "--mirror", &site, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{site}/cifar-10-binary.tar.gz")),
        "{stderr}"
    );
    assert!(stderr.contains("does not match the published"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Fashion-MNIST is not fetched: the reason, exit 1.
    let out = bin().args(["fetch", "fashion-mnist"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset-fashion-mnist"));
}

#[test]
fn a_second_signal_exits_at_once_without_saving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixtures::write_fashion_mnist(&data, 512, 32, 28, false, 2).unwrap();
    let out = dir.path().join("run");
    let mut args = train_args(&data, &out);
    // Steps long enough (the tiny network, batches of 256) that the second
    // signal arrives while the first is still finishing its step.
    let at = args.iter().position(|a| a == "micro").unwrap();
    args[at] = "tiny".into();
    let at = args.iter().position(|a| a == "16").unwrap();
    args[at] = "256".into();
    let child = bin()
        .args(&args)
        .args(["--epochs", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&out.join("metrics.jsonl"), "\"event\":\"epoch\"");
    // The epoch's checkpoint is written once its line is logged.
    std::thread::sleep(Duration::from_millis(300));
    let saved = std::fs::read(out.join("last.safetensors")).unwrap();
    for _ in 0..2 {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(30));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("second signal: exiting without saving"),
        "{stderr}"
    );
    // The checkpoint of the last finished epoch is intact.
    let now = std::fs::read(out.join("last.safetensors")).unwrap();
    assert_eq!(
        now, saved,
        "the last checkpoint changed after the forced exit"
    );
    Checkpoint::read(&out.join("last.safetensors")).unwrap();
}

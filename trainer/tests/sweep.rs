//! The training sweep of scripts/sweep.sh (what scripts/results.sh and the
//! Kubernetes Indexed Job run), on a micro preset with 1 epoch: runs fanned
//! out over two processes at once, one run by its Job index, and
//! `rir-train report` merging the runs from two places.

use std::path::Path;
use std::process::Command;

use rir_testkit::data as fixtures;

fn sweep(out: &Path, data: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new("bash");
    c.arg(root.join("scripts/sweep.sh"))
        .env("RIR_TRAIN", env!("CARGO_BIN_EXE_rir-train"))
        .env("RUST_LOG", "warn")
        .env("SWEEP_SEEDS", "0 1")
        .env("SWEEP_VARIANTS", "rir cnn")
        .env("SWEEP_PRESET", "micro")
        .env("SWEEP_EPOCHS", "1")
        .env("SWEEP_THREADS", "1")
        .env("SWEEP_OUT", out)
        .env(
            "SWEEP_ARGS",
            format!("--batch-size 16 --device cpu --data-dir {}", data.display()),
        );
    c
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_sweep_fans_out_over_processes_and_reports_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixtures::write_fashion_mnist(&data, 64, 32, 28, true, 3).unwrap();
    let out = dir.path().join("runs");

    let count = sweep(&out, &data).arg("count").output().unwrap();
    assert_eq!(text(&count).0.trim(), "4");

    let all = sweep(&out, &data)
        .args(["all", "-j", "2"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&all);
    assert!(all.status.success(), "{stdout}\n{stderr}");
    for run in ["rir-s0", "cnn-s0", "rir-s1", "cnn-s1"] {
        assert!(
            out.join(run).join("last.safetensors").is_file(),
            "{run}: {stderr}"
        );
    }
    // Two processes at once: the second run starts before the first one
    // finishes.
    let started_1 = stderr.find("== started run 1").expect(&stderr);
    let finished_0 = stderr.find("== finished run 0").expect(&stderr);
    assert!(started_1 < finished_0, "runs did not overlap:\n{stderr}");
    // One report of every run: both variants, two seeds each.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(
        rows.iter().any(|r| r.contains("RiR") || r.contains("rir")),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(" | 2 | ").count(),
        2,
        "two variants, two seeds each:\n{stdout}"
    );

    // The Indexed Job's way: one run, named by JOB_COMPLETION_INDEX, into a
    // folder of its own (as on another machine).
    let elsewhere = dir.path().join("node-b");
    let one = sweep(&elsewhere, &data)
        .arg("run")
        .env("JOB_COMPLETION_INDEX", "3")
        .output()
        .unwrap();
    assert!(one.status.success(), "{:?}", text(&one));
    assert!(elsewhere.join("cnn-s1/last.safetensors").is_file());
    let bad = sweep(&elsewhere, &data)
        .args(["run", "4"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).1.contains("not in 0..3"), "{:?}", text(&bad));

    // Both places merged: cnn-s1 is there twice and counts once.
    let report = Command::new(env!("CARGO_BIN_EXE_rir-train"))
        .arg("report")
        .arg(&out)
        .arg(&elsewhere)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&report);
    assert!(report.status.success(), "{stderr}");
    assert!(stderr.contains("is the same run as"), "{stderr}");
    assert_eq!(stdout.matches(" | 2 | ").count(), 2, "{stdout}");

    // A folder with no run under it is an error that says so.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = Command::new(env!("CARGO_BIN_EXE_rir-train"))
        .arg("report")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(text(&none).1.contains("no run"), "{:?}", text(&none));
}

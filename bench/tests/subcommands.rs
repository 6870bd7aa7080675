//! rir-bench as a user runs it: each benchmark, cut short, prints its
//! table. `rir-loadtest bench` forwards here (its own test shows that).

use std::path::Path;

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rir-bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_four_benchmarks_run_end_to_end_in_short_form() {
    // The four benchmarks as a user starts them, each cut to a second or
    // two: exit 0 and the table's heading. Their figures are benchmarks
    // (docs/benchmarks.md), not assertions. (`hostile` is not among them:
    // once under the whole suite's load its server's memory could not be
    // read; its defences are tested in rir-server's own tests.)
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let models = root.join("models").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json").display().to_string();
    let perf = root.join("scripts/perf-analyzer.sh").display().to_string();
    let runs: [(&[&str], &str); 4] = [
        (
            &["ceiling", "-c", "1", "-d", "0.5", "--warmup", "0.1", "-q"],
            "rir-loadtest ceiling: ModelInfer batch 1",
        ),
        (
            &[
                "server",
                "--models",
                &models,
                "-c",
                "1",
                "-d",
                "0.3",
                "--warmup",
                "0.1",
                "--soak",
                "0",
                "--threads",
                "1",
                "--rounds",
                "1",
                "--pin",
                "-q",
            ],
            "pinned: client on core 0, server and in-process engine on core 1",
        ),
        (
            &[
                "soak",
                "--models",
                &models,
                "-d",
                "2",
                "--interval",
                "1",
                "-w",
                "0.3",
                "--capacity-duration",
                "0.5",
                "--capacity-concurrency",
                "2",
                "--max-p99-change",
                "100000",
                "--max-rss-growth",
                "1000",
                "--json",
                &json,
                "-q",
            ],
            "soak: rir-fashion-mnist on rir-serve",
        ),
        (
            &[
                "compare",
                "--models",
                &models,
                "-c",
                "1",
                "--window-ms",
                "500",
                "--perf-analyzer",
                &perf,
                "-q",
            ],
            "rir-loadtest vs perf_analyzer on one rir-serve",
        ),
    ];
    for (args, heading) in runs {
        let out = cli(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(heading), "{args:?}:\n{stdout}");
    }
    let soak: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(soak.get("verdict").is_some(), "{soak}");
}

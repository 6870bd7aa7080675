//! `rir-train sweep` end to end on a micro preset and a few synthetic
//! images: a grid fanned out over two processes and reported with
//! intervals and a paired comparison; one trial by its Job index; a
//! halving sweep interrupted mid-trial and resumed, against the same
//! sweep run straight.

use std::path::Path;
use std::process::{Command, Output};

use rir_arch::meta::EpochMetrics;
use rir_checkpoint::Checkpoint;
use rir_testkit::data as fixtures;

fn rir_train() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rir-train"));
    c.env("RUST_LOG", "warn").env_remove("JOB_COMPLETION_INDEX");
    c
}

/// `rir-train sweep ACTION --dir DIR SPACE... -- <shared options>`.
fn sweep(action: &[&str], dir: &Path, space: &[&str], data: &Path) -> Command {
    let mut c = rir_train();
    c.arg("sweep")
        .args(action)
        .arg("--dir")
        .arg(dir)
        .args(space);
    c.args([
        "--",
        "--preset",
        "micro",
        "--batch-size",
        "16",
        "--device",
        "cpu",
    ])
    .arg("--data-dir")
    .arg(data);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn history(folder: &Path) -> Vec<EpochMetrics> {
    Checkpoint::read(&folder.join("last.safetensors"))
        .unwrap()
        .meta
        .training
        .history
}

fn data(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    fixtures::write_fashion_mnist(&data, 64, 32, 28, true, 3).unwrap();
    data
}

const GRID: [&str; 8] = [
    "--grid",
    "lr=0.1,0.02",
    "--variants",
    "rir,cnn",
    "--seeds",
    "0,1",
    "--epochs",
    "1",
];

#[test]
fn a_grid_fans_out_over_processes_and_is_ranked_with_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let out = dir.path().join("sweep");

    let count = sweep(&["count"], &out, &GRID, &data).output().unwrap();
    assert_eq!(text(&count).0.trim(), "8", "{:?}", text(&count));
    let list = sweep(&["list", "--no-estimate"], &out, &GRID, &data)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&list);
    assert!(list.status.success(), "{stderr}");
    assert!(
        stdout.contains("2 configurations x 2 variants x 2 seeds = 8 trials"),
        "{stdout}"
    );
    assert!(stdout.contains("    5  c00-cnn-s1"), "{stdout}");
    assert!(!out.exists(), "list wrote the sweep folder");

    let all = sweep(&["all", "-j", "2"], &out, &GRID, &data)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&all);
    assert!(all.status.success(), "{stdout}\n{stderr}");
    for run in ["c00-rir-s0", "c00-cnn-s0", "c01-rir-s1", "c01-cnn-s1"] {
        assert_eq!(history(&out.join(run)).len(), 1, "{run}: {stderr}");
    }
    // Two processes at once: the second trial starts before the first ends.
    let started_1 = stderr.find("== started trial 1").expect(&stderr);
    let finished_0 = stderr.find("== finished trial 0").expect(&stderr);
    assert!(started_1 < finished_0, "trials did not overlap:\n{stderr}");

    // The ranked table: four configurations of two seeds each, best first.
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("| ")
                && l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.trim().parse::<usize>().is_ok())
        })
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    let means: Vec<f64> = rows
        .iter()
        .map(|r| r[8].trim_end_matches(" %").parse().unwrap())
        .collect();
    assert!(
        means.windows(2).all(|w| w[0] >= w[1]),
        "not ranked: {means:?}"
    );
    // Each interval, from the runs' own accuracies by hand: with two seeds
    // a and b, mean ± t(0.975; 1) |a − b| / 2. At least one configuration's
    // seeds score apart (else the check could not tell a width from none).
    let mut widths = vec![];
    for r in &rows {
        let lr = r[3].trim_start_matches("lr=");
        let config = if lr == "0.1" { "c00" } else { "c01" };
        let accs: Vec<f64> = (0..2)
            .map(|s| 100.0 * history(&out.join(format!("{config}-{}-s{s}", r[2])))[0].test_acc)
            .collect();
        let mean = (accs[0] + accs[1]) / 2.0;
        let half = 12.706_204_736 * (accs[0] - accs[1]).abs() / 2.0;
        widths.push(half);
        assert_eq!(r[8], format!("{mean:.2} %"), "{r:?}");
        assert_eq!(
            r[9],
            format!("[{:.2}, {:.2}]", mean - half, mean + half),
            "{r:?}"
        );
    }
    assert!(
        widths.iter().any(|w| *w > 0.0),
        "every interval is empty: {widths:?}"
    );
    // The paired comparison: rir against cnn at each recipe and seed.
    let paired = stdout
        .lines()
        .find(|l| l.starts_with("| rir − cnn"))
        .expect(&stdout);
    let cells: Vec<&str> = paired.split('|').map(str::trim).collect();
    assert_eq!(cells[4], "4", "{paired}");
    let diffs: Vec<f64> = ["c00", "c01"]
        .iter()
        .flat_map(|c| (0..2).map(move |s| (c, s)))
        .map(|(c, s)| {
            let acc = |v: &str| 100.0 * history(&out.join(format!("{c}-{v}-s{s}")))[0].test_acc;
            acc("rir") - acc("cnn")
        })
        .collect();
    let mean = diffs.iter().sum::<f64>() / 4.0;
    assert_eq!(cells[2], format!("{mean:+.2} pp"), "{paired}");

    // CSV and the plot against each axis.
    let csv = dir.path().join("ranked.csv");
    let axes = dir.path().join("axes.png");
    let report = rir_train()
        .arg("report")
        .arg(&out)
        .arg("--csv")
        .arg(&csv)
        .arg("--axes-plot")
        .arg(&axes)
        .output()
        .unwrap();
    assert!(report.status.success(), "{:?}", text(&report));
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.starts_with("rank,variant,settings,seeds,epochs,final_acc_mean"),
        "{csv}"
    );
    assert!(std::fs::metadata(&axes).unwrap().len() > 1000);

    // The Indexed Job's way: one trial, named by JOB_COMPLETION_INDEX, into
    // a folder of its own (as on another machine).
    let elsewhere = dir.path().join("node-b");
    let one = sweep(&["run"], &elsewhere, &GRID, &data)
        .env("JOB_COMPLETION_INDEX", "7")
        .output()
        .unwrap();
    assert!(one.status.success(), "{:?}", text(&one));
    assert!(elsewhere.join("c01-cnn-s1/last.safetensors").is_file());
    let bad = sweep(&["run", "--index", "8"], &elsewhere, &GRID, &data)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("not in 0..7"), "{:?}", text(&bad));
    // A folder keeps its space: another one is refused, none reuses it.
    let other = sweep(
        &["run", "--index", "0", "--seeds", "3"],
        &elsewhere,
        &GRID,
        &data,
    )
    .output()
    .unwrap();
    assert!(
        text(&other).1.contains("holds another sweep"),
        "{:?}",
        text(&other)
    );
    let recorded = rir_train()
        .args(["sweep", "count", "--dir"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(text(&recorded).0.trim(), "8");

    // Both places merged: c01-cnn-s1 is there twice and counts once.
    let report = rir_train()
        .arg("report")
        .arg(&out)
        .arg(&elsewhere)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&report);
    assert!(report.status.success(), "{stderr}");
    assert!(stderr.contains("is the same run as"), "{stderr}");
    assert_eq!(stdout.matches(" | 2 | 1 | ").count(), 4, "{stdout}");

    // A folder with no run under it is an error that says so.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = rir_train().arg("report").arg(&empty).output().unwrap();
    assert!(!none.status.success());
    assert!(text(&none).1.contains("no run"), "{:?}", text(&none));
}

const HALVING: [&str; 10] = [
    "--grid",
    "lr=0.2,0.05,0.01",
    "--seeds",
    "0",
    "--epochs",
    "3",
    "--halving",
    "3",
    "--min-epochs",
    "1",
];

#[test]
fn an_interrupted_halving_sweep_resumes_to_what_one_run_straight_gives() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");

    let all = sweep(&["all", "-j", "2"], &straight, &HALVING, &data)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&all);
    assert!(all.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("rung 1: 1 trials to 3 epochs"), "{stderr}");

    // Rung 1 cannot start before rung 0 has trained.
    let early = sweep(
        &["run", "--index", "0", "--rung", "1"],
        &resumed,
        &HALVING,
        &data,
    )
    .output()
    .unwrap();
    assert!(
        text(&early).1.contains("is not finished"),
        "{:?}",
        text(&early)
    );
    // Trial 1 stopped mid-epoch (4 steps an epoch), as by a signal.
    let stopped = sweep(
        &[
            "run",
            "--index",
            "1",
            "--threads",
            "1",
            "--stop-at-step",
            "2",
        ],
        &resumed,
        &HALVING,
        &data,
    )
    .output()
    .unwrap();
    assert_eq!(stopped.status.code(), Some(130), "{:?}", text(&stopped));
    let again = sweep(&["all", "-j", "2"], &resumed, &HALVING, &data)
        .output()
        .unwrap();
    assert!(again.status.success(), "{:?}", text(&again));

    // The same decision, the same winner, the same figures.
    let ledger = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("halving.json")).unwrap()).unwrap()
    };
    assert_eq!(ledger(&straight), ledger(&resumed));
    let promoted = &ledger(&straight)["decisions"][0]["promoted"];
    assert_eq!(promoted.as_array().unwrap().len(), 1, "{promoted}");
    for c in 0..3 {
        let name = format!("c{c:02}-rir-s0");
        let (a, b) = (
            history(&straight.join(&name)),
            history(&resumed.join(&name)),
        );
        let want = if promoted[0] == c { 3 } else { 1 };
        assert_eq!((a.len(), b.len()), (want, want), "{name}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.test_acc, y.test_acc, "{name} epoch {}", x.epoch);
            assert!(
                (x.train_loss - y.train_loss).abs() < 1e-6,
                "{name} epoch {}",
                x.epoch
            );
        }
    }
}

#[test]
fn a_trial_that_diverges_is_an_outcome_not_a_failed_sweep() {
    // Through the library, with typed results: the pool's children are the
    // real rir-train.
    use rir_trainer::sweep::args::SpaceArgs;
    use rir_trainer::sweep::pool::Pool;
    use rir_trainer::sweep::trial::{self, Overrides, Place, TrialEnd};
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let out = dir.path().join("sweep");
    let shared = ["--preset", "micro", "--batch-size", "16", "--device", "cpu"];
    let mut train_args: Vec<String> = shared.iter().map(|a| a.to_string()).collect();
    train_args.push(format!("--data-dir={}", data.display()));
    let space = SpaceArgs {
        dir: out.clone(),
        space: None,
        grid: vec!["lr=0.05,1e38".into()],
        variants: None,
        seeds: None,
        epochs: Some(2),
        halving: Some(2),
        min_epochs: Some(1),
        train_args,
    }
    .resolve()
    .unwrap();
    let pool = Pool {
        jobs: 1,
        device: None,
        exe: env!("CARGO_BIN_EXE_rir-train").into(),
        poll: std::time::Duration::from_millis(50),
    };
    let all = pool.train_all(&space, &out, &mut |_| {}).unwrap();
    let diverged: Vec<usize> = all.diverged.iter().map(|(t, _)| t.index).collect();
    assert_eq!(diverged, [1], "{:?}", all.diverged);
    assert!(
        all.diverged[0].1.contains("training diverged"),
        "{:?}",
        all.diverged
    );
    assert!(out.join("c01-rir-s0/diverged.txt").is_file());
    // Halving scored it 0 and kept the other one.
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("halving.json")).unwrap()).unwrap();
    assert_eq!(ledger["decisions"][0]["promoted"], serde_json::json!([0]));
    assert_eq!(ledger["decisions"][0]["scores"][1][1], 0.0);
    assert_eq!(history(&out.join("c00-rir-s0")).len(), 2);
    // Run again, it is not trained again.
    let place = Place { index: 1, rung: 0 };
    let again = trial::run(&space, &out, place, Overrides::default(), |_| {}).unwrap();
    assert!(matches!(again, TrialEnd::DivergedBefore(_)), "{again:?}");
    let listing = rir_trainer::sweep::listing::listing(&space, &out);
    assert!(listing.rows[1].diverged.is_some());
    assert_eq!(listing.rows[1].settings, "lr=1e38");
    assert_eq!(listing.rows[0].trained, 2);
    // The plan's trial-epochs: 2 trials of 1 epoch, then 1 trial of 1 more.
    assert_eq!(listing.trial_epochs, 3);
}

#[test]
fn a_sweep_packed_without_checkpoints_reports_the_same_and_trains_only_what_is_missing() {
    use rir_trainer::summary::{paired_table, read_run, table};
    use rir_trainer::sweep::pack::pack;

    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let out = dir.path().join("sweep");
    let space = ["--variants", "rir,cnn", "--seeds", "0,1", "--epochs", "2"];
    let all = sweep(&["all", "-j", "2"], &out, &space, &data)
        .output()
        .unwrap();
    assert!(all.status.success(), "{:?}", text(&all));

    // The pack: the plan and four logs, no checkpoint.
    let kept = dir.path().join("kept");
    let packed = pack(&out, &kept).unwrap();
    let trials = ["c00-cnn-s0", "c00-cnn-s1", "c00-rir-s0", "c00-rir-s1"];
    assert_eq!(packed.kept, trials);
    assert!(packed.left_out.is_empty(), "{packed:?}");
    assert!(kept.join("sweep.json").is_file());
    for t in trials {
        assert!(!kept.join(t).join("last.safetensors").exists(), "{t}");
    }
    // Each log says what its checkpoint says (two records written apart).
    let from = |root: &Path| -> Vec<_> {
        trials
            .iter()
            .map(|t| read_run(&root.join(t)).unwrap())
            .collect()
    };
    let (checkpoints, logs) = (from(&out), from(&kept));
    for (c, l) in checkpoints.iter().zip(&logs) {
        assert_eq!(c.history.len(), 2, "{}", c.folder.display());
        assert_eq!(c.history, l.history, "{}", c.folder.display());
        assert_eq!(
            (&c.variant, c.seed, c.params),
            (&l.variant, l.seed, l.params)
        );
        assert_eq!(c.config, l.config);
    }
    assert_eq!(table(&checkpoints), table(&logs));
    assert_eq!(paired_table(&checkpoints), paired_table(&logs));
    assert!(paired_table(&logs).contains("rir − cnn"));

    // One trial cut short in the pack (a slice that ran out of time before
    // the pack was made by hand): `sweep all` trains that one, from the
    // start, and no other.
    let cut = kept.join("c00-cnn-s1/metrics.jsonl");
    let log = std::fs::read_to_string(&cut).unwrap();
    let first_epoch: Vec<&str> = log.lines().take(2).collect();
    std::fs::write(&cut, first_epoch.join("\n") + "\n").unwrap();
    let again = sweep(&["all", "-j", "1"], &kept, &space, &data)
        .output()
        .unwrap();
    assert!(again.status.success(), "{:?}", text(&again));
    assert_eq!(history(&kept.join("c00-cnn-s1")).len(), 2);
    for t in ["c00-cnn-s0", "c00-rir-s0", "c00-rir-s1"] {
        assert!(
            !kept.join(t).join("last.safetensors").exists(),
            "{t} trained again"
        );
    }
    // A logged trial asked for by its index is not trained again either.
    let one = sweep(&["run", "--index", "0"], &kept, &space, &data)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&one);
    assert!(one.status.success(), "{stderr}");
    assert!(stdout.contains("has trained (its log is kept"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(&kept)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().join("last.safetensors").exists())
            .count(),
        1
    );
}

//! The load tester against a real rir-serve (started through the server's
//! own entry, over loopback) and as a command-line tool: every input
//! source, TLS and token, and the clear errors of bad use.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rir_client::connect::{ConnectOptions, connect};
use rir_loadtest::LoadError;
use rir_loadtest::load::{Load, RunOptions, Stop};
use rir_loadtest::run::run;
use rir_loadtest::workload::{Api, InputData, Workload, WorkloadOptions};
use rir_testkit::doubles::stub::{Script, StubServer};
use rir_testkit::images::png;
use rir_testserver::server::TestServer;

fn options(api: Api, model: &str, batch: usize, input: InputData) -> WorkloadOptions {
    WorkloadOptions {
        api,
        model: model.into(),
        version: String::new(),
        batch,
        input,
        seed: 0,
        top_k: 3,
        timeout: Some(Duration::from_secs(10)),
        shapes: vec![],
        json_tensors: false,
    }
}

async fn prepare(c: &ConnectOptions, o: &WorkloadOptions) -> Result<Workload, LoadError> {
    Workload::prepare(connect(c).await?, o).await
}

fn plain(url: &str) -> ConnectOptions {
    ConnectOptions {
        url: url.into(),
        connections: 2,
        ..Default::default()
    }
}

async fn count(w: Workload, n: u64) -> rir_loadtest::report::Report {
    let o = RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Requests(n),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 100,
        seed: 0,
        progress: false,
    };
    run(Arc::new(w), Load::Closed { concurrency: 3 }, &o)
        .await
        .unwrap()
        .report
}

fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_rir_serve_with_random_tensors_raw_files_and_images() {
    let s = TestServer::start(None, &[]).await;
    let c = plain(&s.url);
    let tmp = tempfile::tempdir().unwrap();

    let w = prepare(&c, &options(Api::Infer, "gray", 2, InputData::Random))
        .await
        .unwrap();
    assert!(
        w.description.contains("image FP32 [-1, 1, 28, 28]"),
        "{}",
        w.description
    );
    let r = count(w, 40).await;
    assert_eq!((r.ok, r.failed()), (40, 0));

    // Raw files: single items (cycled into batches of 2) and one whole batch.
    let item: Vec<u8> = (0..784)
        .flat_map(|i| (i as f32 / 784.0).to_le_bytes())
        .collect();
    let batch2: Vec<u8> = [item.clone(), item.clone()].concat();
    let raw = tmp.path().join("raw");
    write_files(
        &raw,
        &[("a.bin", item.clone()), ("b.bin", item), ("c.raw", batch2)],
    );
    let w = prepare(
        &c,
        &options(Api::Infer, "gray", 2, InputData::Dir(raw.clone())),
    )
    .await
    .unwrap();
    let r = count(w, 20).await;
    assert_eq!((r.ok, r.failed()), (20, 0));

    // Images through Classify, converted and resized by the server.
    let imgs = tmp.path().join("imgs");
    write_files(
        &imgs,
        &[("a.png", png(28, 28, false)), ("b.png", png(40, 30, true))],
    );
    let w = prepare(
        &c,
        &options(Api::Classify, "rgb", 4, InputData::Dir(imgs.clone())),
    )
    .await
    .unwrap();
    let r = count(w, 20).await;
    assert_eq!((r.ok, r.failed(), r.batch), (20, 0, 4));

    // Bad use: each a single clear error before any load.
    let e = prepare(
        &c,
        &options(Api::Infer, "gray", 1, InputData::Dir(imgs.clone())),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("holds images"), "{e}");
    let short = tmp.path().join("short");
    write_files(&short, &[("x.bin", vec![0; 100])]);
    let e = prepare(&c, &options(Api::Infer, "gray", 1, InputData::Dir(short)))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("needs 3136 bytes per item"), "{e}");
    let e = prepare(&c, &options(Api::Infer, "nope", 1, InputData::Random))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("model `nope` is not on the server"),
        "{e}"
    );
    // More than the server's max batch (16): the probe is refused with the reason.
    match prepare(&c, &options(Api::Infer, "gray", 17, InputData::Random)).await {
        Err(LoadError::Rejected { code, message }) => {
            assert_eq!(code, "INVALID_ARGUMENT");
            assert!(message.contains("16"), "{message}");
        }
        other => panic!("expected a rejection, got {:?}", other.err()),
    }
    let e = prepare(&c, &options(Api::Classify, "gray", 1, InputData::Dir(raw)))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("no .png"), "{e}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, _) = rir_testkit::tls::self_signed(dir.path());
    let (cert, key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--auth-token",
        "s3cret",
    ];
    let s = TestServer::start(None, &flags).await;
    let mut c = ConnectOptions {
        url: s.url.trim_start_matches("http://").into(),
        tls: true,
        ca_cert: Some(cert_path),
        tls_domain: Some("localhost".into()),
        token: None,
        ..Default::default()
    };
    let gray = options(Api::Infer, "gray", 1, InputData::Random);
    let e = prepare(&c, &gray).await.err().unwrap();
    assert!(e.to_string().contains("bearer token"), "{e}");
    c.token = Some("s3cret".into());
    let r = count(prepare(&c, &gray).await.unwrap(), 10).await;
    assert_eq!(r.ok, 10);
    s.shutdown().await.unwrap();
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rir-loadtest"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_sweep_writes_table_json_csv_and_plot() {
    let stub = StubServer::start(Script {
        delay: Some(Arc::new(|_| Duration::from_micros(500))),
        ..Script::instant("stub")
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (url, json, csv, png, svg) = (
        stub.url.clone(),
        p("r.json"),
        p("r.csv"),
        p("r.png"),
        p("r.svg"),
    );
    let out = tokio::task::spawn_blocking(move || {
        let base = [
            "-u", &url, "-m", "stub", "-c", "1..4", "-w", "0.2", "-n", "100", "-q",
        ];
        let a = cli(&[&base[..], &["--json", &json, "--csv", &csv, "--plot", &png]].concat());
        let b = cli(&[&base[..], &["--plot", &svg]].concat());
        (a, b)
    })
    .await
    .unwrap();
    for o in [&out.0, &out.1] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.0.stdout);
    for row in ["concurrency 1", "concurrency 2", "concurrency 4", "p99.9"] {
        assert!(stdout.contains(row), "{stdout}");
    }
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[2]["concurrency"], 4);
    assert_eq!(reports[2]["requests"], 100);
    assert!(reports[0]["latency_ms"]["p50"].as_f64().unwrap() >= 0.45);
    // The stub keeps no statistics: said once, and the runs go on without.
    let stderr = String::from_utf8_lossy(&out.0.stderr);
    assert_eq!(
        stderr.matches("no server statistics").count(),
        1,
        "{stderr}"
    );
    assert!(reports.iter().all(|r| r.get("server").is_none()));
    assert!(!stdout.contains("compute"), "{stdout}");
    let csv = std::fs::read_to_string(p("r.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width), "{csv}");
    assert!(std::fs::read(p("r.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(
        std::fs::read_to_string(p("r.svg"))
            .unwrap()
            .contains("<svg")
    );
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_bad_use_is_one_clear_error_and_exit_1() {
    let stub = StubServer::start(Script::instant("stub")).await.unwrap();
    let url = stub.url.clone();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases = tokio::task::spawn_blocking(move || {
        [
            (
                cli(&["-u", &free.to_string(), "-q"]),
                "cannot reach the server",
            ),
            (
                cli(&["-u", &url, "-m", "nope", "-q"]),
                "model `nope` is not on the server",
            ),
            (
                cli(&["-u", &url, "-m", "stub", "-c", "0", "-q"]),
                "at least 1",
            ),
            (
                cli(&[
                    "-u",
                    &url,
                    "-m",
                    "stub",
                    "--input-data",
                    "/nonexistent",
                    "-q",
                ]),
                "/nonexistent",
            ),
            (
                cli(&["-u", &url, "-m", "stub", "-b", "0", "-q"]),
                "--batch must be at least 1",
            ),
            (
                cli(&["-u", &url, "-m", "stub", "-r", "100..200", "-q"]),
                "give its length with --ramp SECONDS",
            ),
            (
                cli(&["-u", &url, "-m", "stub", "-r", "100,200", "--ramp", "2"]),
                "--ramp needs a --rate range A..B",
            ),
        ]
    })
    .await
    .unwrap();
    for (out, expected) in cases {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
    }
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_rir_serve_over_rest_with_binary_tensors_images_and_given_shapes() {
    use rir_client::http::HttpClient;
    let s = TestServer::start(None, &[]).await;
    let http = || HttpClient::new(&s.http_url, None, Duration::from_secs(5)).unwrap();

    let w = Workload::prepare_http(http(), &options(Api::Infer, "gray", 2, InputData::Random))
        .await
        .unwrap();
    assert!(
        w.description.starts_with("REST infer gray batch 2"),
        "{}",
        w.description
    );
    let r = count(w, 40).await;
    assert_eq!((r.ok, r.failed()), (40, 0));
    // The server counted them: 40 requests of 2 plus the probe.
    let stats = s.core().statistics("gray", "").unwrap();
    assert_eq!(stats[0].inference_count, 82);
    // JSON tensors instead of binary data.
    let mut json = options(Api::Infer, "gray", 2, InputData::Random);
    json.json_tensors = true;
    let w = Workload::prepare_http(http(), &json).await.unwrap();
    assert!(
        w.description.ends_with("JSON tensors)"),
        "{}",
        w.description
    );
    let r = count(w, 10).await;
    assert_eq!((r.ok, r.failed()), (10, 0));

    // Images through POST .../classify.
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_files(
        &imgs,
        &[("a.png", png(28, 28, false)), ("b.png", png(40, 30, true))],
    );
    let w = Workload::prepare_http(
        http(),
        &options(Api::Classify, "gray", 1, InputData::Dir(imgs)),
    )
    .await
    .unwrap();
    let r = count(w, 10).await;
    assert_eq!((r.ok, r.failed()), (10, 0));

    // --shape replaces what the metadata says: a wrong one is refused by
    // the server at the probe, with its reason; an input the metadata does
    // not list is added (and refused here, since the model does not take it).
    let mut o = options(Api::Infer, "gray", 1, InputData::Random);
    o.shapes = vec!["image:1,28,27".parse().unwrap()];
    match Workload::prepare_http(http(), &o).await {
        Err(LoadError::Rejected { code, message }) => {
            assert_eq!(code, "INVALID_ARGUMENT");
            assert!(
                message.contains("HTTP 400") && message.contains("[batch, 1, 28, 28]"),
                "{message}"
            );
        }
        other => panic!("{:?}", other.err()),
    }
    o.shapes = vec!["extra:4:FP32".parse().unwrap()];
    let Err(LoadError::Rejected { message, .. }) = Workload::prepare_http(http(), &o).await else {
        panic!("two inputs for a one-input model");
    };
    assert!(message.contains("takes one input"), "{message}");
    // Same shapes over gRPC, same refusal.
    o.shapes = vec!["image:1,28,27".parse().unwrap()];
    assert!(matches!(
        prepare(&plain(&s.url), &o).await,
        Err(LoadError::Rejected { .. })
    ));
    // Bad --shape text, an unknown model over REST.
    assert!(
        "image"
            .parse::<rir_loadtest::workload::InputShape>()
            .is_err()
    );
    assert!(
        "image:1,x"
            .parse::<rir_loadtest::workload::InputShape>()
            .is_err()
    );
    assert!(
        "image:0,28"
            .parse::<rir_loadtest::workload::InputShape>()
            .is_err()
    );
    let e = Workload::prepare_http(http(), &options(Api::Infer, "nope", 1, InputData::Random))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not on the server"), "{e}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_request_gets_its_status_and_the_good_ones_are_untouched() {
    use rir_loadtest::hostile::Hostile;
    let s = TestServer::start(None, &[]).await;
    let w = prepare(
        &plain(&s.url),
        &options(Api::Infer, "gray", 2, InputData::Random),
    )
    .await
    .unwrap()
    .with_bad_fraction(0.5, 1)
    .await
    .unwrap();
    let r = count(w, 600).await;
    // Every class went out, and each got the status it is owed.
    let classes: Vec<&str> = r.bad_requests.keys().map(String::as_str).collect();
    let mut all: Vec<&str> = Hostile::ALL.iter().map(|h| h.name()).collect();
    all.sort();
    assert_eq!(classes, all);
    for (class, c) in &r.bad_requests {
        assert!(c.sent > 5, "{class}: {c:?}");
        assert_eq!(c.as_expected, c.sent, "{class}: {c:?}");
    }
    assert_eq!(r.bad_mismatched(), 0);
    // Half of them bad, the rest answered and the only ones in the figures.
    assert!((200..400).contains(&r.bad_sent()), "{}", r.bad_sent());
    assert_eq!(r.ok + r.bad_sent(), 600);
    assert_eq!(r.failed(), 0, "{:?}", r.error_messages);
    assert!(r.latency_ms.p50 > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_bad_requests_a_server_accepts_exit_1_and_intervals_are_rows() {
    // The stub answers everything, bad requests included, and has no
    // Classify: the check must catch the first and leave the images out.
    let stub = StubServer::start(Script::instant("stub")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv").to_string_lossy().into_owned();
    let json = dir.path().join("r.json").to_string_lossy().into_owned();
    let url = stub.url.clone();
    let (bad, plain) = tokio::task::spawn_blocking(move || {
        let base = ["-u", &url, "-m", "stub", "-w", "0", "-q", "-r", "400"];
        let bad = cli(&[&base[..], &["-d", "0.5", "--bad-fraction", "0.2"]].concat());
        let plain = cli(&[
            &base[..],
            &[
                "-d",
                "1.2",
                "--interval",
                "0.4",
                "--csv",
                &csv,
                "--json",
                &json,
            ],
        ]
        .concat());
        (bad, plain)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("answered with another status"), "{stderr}");
    assert!(stdout.contains("OK (owed INVALID_ARGUMENT)"), "{stdout}");
    assert!(stdout.contains("OK (owed NOT_FOUND)"), "{stdout}");
    assert!(!stdout.contains("image-bomb"), "{stdout}");

    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(stdout.contains("0.0-0.4 s"), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("r.csv")).unwrap();
    // Three intervals, then the whole run.
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[3].starts_with("rate 400/s"), "{csv}");
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let intervals = reports[0]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 3);
    let sum: u64 = intervals.iter().map(|i| i["ok"].as_u64().unwrap()).sum();
    assert_eq!(sum, reports[0]["ok"].as_u64().unwrap());
    stub.shutdown().await;
}

/// A REST run against `s` for `seconds` at concurrency 4, while `meddle`
/// changes the server; the report.
async fn rest_run_while<F: std::future::Future<Output = ()>>(
    s: &TestServer,
    model: &str,
    seconds: f64,
    meddle: F,
) -> rir_loadtest::report::Report {
    use rir_client::http::HttpClient;
    let http = HttpClient::new(&s.http_url, None, Duration::from_secs(5)).unwrap();
    let w = Workload::prepare_http(http, &options(Api::Infer, model, 1, InputData::Random))
        .await
        .unwrap();
    let o = RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Duration(Duration::from_secs_f64(seconds)),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 100,
        seed: 0,
        progress: false,
    };
    let load =
        tokio::spawn(async move { run(Arc::new(w), Load::Closed { concurrency: 4 }, &o).await });
    meddle.await;
    load.await.unwrap().unwrap().report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_failures_are_reported_under_the_grpc_code_of_their_http_status() {
    // 404 and 503: the model unloaded mid-run, then loaded from a broken
    // file (explicit mode).
    let dir = tempfile::tempdir().unwrap();
    rir_testserver::models::repository(dir.path());
    let flags = ["--model-control-mode", "explicit", "--load-model", "gray"];
    let s = TestServer::start(Some(dir.path()), &flags).await;
    let core = s.core().clone();
    let root = dir.path().to_path_buf();
    let report = rest_run_while(&s, "gray", 2.4, async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        core.unload_model("gray").await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        for v in ["1", "2"] {
            std::fs::write(root.join("gray").join(v).join("model.onnx"), b"broken").unwrap();
        }
        assert!(core.load_model("gray", std::iter::empty()).await.is_err());
    })
    .await;
    assert!(report.ok > 0, "{report:?}");
    for code in ["NOT_FOUND", "UNAVAILABLE"] {
        assert!(
            report.errors.get(code).is_some_and(|&n| n > 0),
            "{code}: {:?}",
            report.errors
        );
    }
    assert!(
        report.error_messages["NOT_FOUND"].contains("404"),
        "{:?}",
        report.error_messages
    );
    assert!(
        report.error_messages["UNAVAILABLE"].contains("503"),
        "{:?}",
        report.error_messages
    );
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    s.shutdown().await.unwrap();

    // 429: a queue of one in front of a slow model.
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::one_slot(dir.path()).await;
    let report = rest_run_while(&s, "gray", 1.5, async {}).await;
    assert!(report.ok > 0, "{report:?}");
    assert!(
        report
            .errors
            .get("RESOURCE_EXHAUSTED")
            .is_some_and(|&n| n > 0),
        "{:?}",
        report.errors
    );
    assert!(
        report.error_messages["RESOURCE_EXHAUSTED"].contains("429"),
        "{:?}",
        report.error_messages
    );
    s.shutdown().await.unwrap();
}

#[test]
fn bench_forwards_its_arguments_to_rir_bench_beside_it_and_exits_as_it_does() {
    // `rir-loadtest bench ARGS` runs the rir-bench installed beside it. A
    // stand-in rir-bench beside a link of this binary records what it got and
    // exits 7; the benchmarks themselves are rir-bench's tests.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let me = dir.path().join("rir-loadtest");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_rir-loadtest"), &me).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_rir-loadtest"), &me).unwrap();
    }
    let got = dir.path().join("got");
    let stand_in = dir.path().join("rir-bench");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" > '{}'\nexit 7\n",
            got.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&me)
        .args(["bench", "soak", "--models", "a dir", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        "soak|--models|a dir|-q|"
    );

    // Without one beside it nor on PATH: exit 1 and how to build it.
    std::fs::remove_file(&stand_in).unwrap();
    let out = std::process::Command::new(&me)
        .args(["bench", "soak"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cargo build -p rir-bench"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_fail_the_run_with_status_3_naming_each_bound_missed() {
    // A stub answering in 2 ms and failing every tenth request.
    let stub = StubServer::start(Script {
        delay: Some(Arc::new(|_| Duration::from_millis(2))),
        error: Some(Arc::new(|n| {
            (n % 10 == 9).then_some(tonic::Code::Unavailable)
        })),
        ..Script::instant("stub")
    })
    .await
    .unwrap();
    let url = stub.url.clone();
    let runs = tokio::task::spawn_blocking(move || {
        let base = [
            "-u", &url, "-m", "stub", "-c", "2", "-w", "0", "-n", "200", "-q",
        ];
        let with = |extra: &[&str]| cli(&[&base[..], extra].concat());
        (
            // Bounds it meets: p99 under a second, 20 % errors allowed.
            with(&[
                "--max-p99-ms",
                "1000",
                "--max-error-rate",
                "0.2",
                "--min-throughput",
                "1",
            ]),
            // p50 under 1 ms and at most 1 % errors: both missed.
            with(&["--max-p50-ms", "1", "--max-error-rate", "0.01"]),
            // A throughput no 2 ms server at concurrency 2 reaches.
            with(&["--min-throughput", "100000"]),
            with(&["--max-error-rate", "2"]),
        )
    })
    .await
    .unwrap();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(runs.0.status.code(), Some(0), "{}", err(&runs.0));
    assert!(String::from_utf8_lossy(&runs.0.stdout).contains("all thresholds met"));
    assert_eq!(runs.1.status.code(), Some(3), "{}", err(&runs.1));
    let missed: Vec<String> = err(&runs.1)
        .lines()
        .filter(|l| l.starts_with("threshold missed: "))
        .map(String::from)
        .collect();
    assert_eq!(missed.len(), 2, "{missed:?}");
    assert!(
        missed[0].contains("concurrency 2: p50 ") && missed[0].ends_with("missed --max-p50-ms 1"),
        "{missed:?}"
    );
    assert!(
        missed[1].contains("error rate 0.1000 (20 of 200) missed --max-error-rate 0.01"),
        "{missed:?}"
    );
    assert_eq!(runs.2.status.code(), Some(3));
    assert!(
        err(&runs.2).contains("missed --min-throughput 100000"),
        "{}",
        err(&runs.2)
    );
    // A bound that is not a share: bad use, status 1 and the reason.
    assert_eq!(runs.3.status.code(), Some(1));
    assert!(
        err(&runs.3).contains("--max-error-rate is a share between 0 and 1"),
        "{}",
        err(&runs.3)
    );
    stub.shutdown().await;
}

/// Whether `a` and `b` agree to 12 digits (serde_json reads floats to
/// within an ulp or so without its float_roundtrip feature).
fn same(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(p, q)| close(p.0, q.0) && close(p.1, q.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_html_report_opens_offline_and_its_charts_hold_the_runs_points() {
    // A sweep against a stub that takes 0.3 ms and fails every seventh
    // request; the report, opened by headless Chromium with no network,
    // draws each level where the run's JSON puts it.
    let stub = StubServer::start(Script {
        delay: Some(Arc::new(|_| Duration::from_micros(300))),
        error: Some(Arc::new(|n| {
            (n % 7 == 6).then_some(tonic::Code::Unavailable)
        })),
        ..Script::instant("stub")
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (url, json, html) = (stub.url.clone(), p("r.json"), p("r.html"));
    let out = tokio::task::spawn_blocking(move || {
        let out = cli(&[
            "-u", &url, "-m", "stub", "-c", "1..4", "-w", "0.2", "-d", "1.5", "-q", "--json",
            &json, "--html", &html,
        ]);
        let dom = rir_testkit::web::headless_dom_offline(&format!("file://{html}"), 1000);
        (out, dom)
    })
    .await
    .unwrap();
    let (out, dom) = out;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert!(dom.contains("rir-loadtest report"), "{dom}");
    let f = |r: &serde_json::Value, k: &str| r["latency_ms"][k].as_f64().unwrap();
    let at = |r: &serde_json::Value, k: &str| (r["inferences_per_s"].as_f64().unwrap(), f(r, k));
    for k in ["p50", "p99"] {
        let want: Vec<(f64, f64)> = reports.iter().map(|r| at(r, k)).collect();
        let got = rir_testkit::web::svg_points(&dom, k);
        // The sweep's points first; then the same series name over time.
        assert!(same(&got[..3], &want), "{k}: {got:?} drawn, {want:?} run");
    }
    // Over time: each level's timeline splits (the run had no --interval),
    // one point each, their rates as the JSON has them.
    let splits: Vec<f64> = reports
        .iter()
        .flat_map(|r| r["timeline"].as_array().unwrap())
        .map(|s| s["requests_per_s"].as_f64().unwrap())
        .collect();
    assert!(splits.len() >= 3, "{reports:?}");
    let rates: Vec<(f64, f64)> = rir_testkit::web::svg_points(&dom, "requests/s")
        .iter()
        .map(|p| (0.0, p.1))
        .collect();
    let splits: Vec<(f64, f64)> = splits.into_iter().map(|r| (0.0, r)).collect();
    assert!(same(&rates, &splits), "{rates:?} drawn, {splits:?} run");
    // The spectrum at p90 (x = 1) is the level's p90.
    for r in reports {
        let curve = rir_testkit::web::svg_points(
            &dom,
            r["load"]["concurrency"]
                .as_u64()
                .map(|c| format!("concurrency {c}"))
                .unwrap()
                .as_str(),
        );
        let p90: Vec<(f64, f64)> = curve.into_iter().filter(|p| p.0 == 1.0).collect();
        assert!(same(&p90, &[(1.0, f(r, "p90"))]), "{p90:?}");
    }
    // Errors by kind: each level's UNAVAILABLE count, as the JSON has it.
    for r in reports {
        let n = r["errors"]["UNAVAILABLE"].as_u64().unwrap();
        assert!(n > 0);
        assert!(
            dom.contains(&format!("<td>UNAVAILABLE</td><td class=\"n\">{n}</td>")),
            "{n}"
        );
    }
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_adds_the_histograms_of_two_generators_run_at_once() {
    // Two generator processes against one rir-serve at the same time, then
    // `merge`: counts add up, and the merged figures are those of the union
    // of the two runs' latencies (bounds any union obeys, and the mean
    // weighted by hand), not averages of their percentiles.
    let s = TestServer::start(None, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (url, a, b) = (s.url.clone(), p("a.json"), p("b.json"));
    let runs = [(a.clone(), "1", "300"), (b.clone(), "2", "200")].map(|(json, c, n)| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cli(&[
                "-u", &url, "-m", "gray", "-c", c, "-w", "0.2", "-n", n, "-q", "--json", &json,
            ])
        })
    });
    for run in runs {
        let o = run.await.unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
    };
    let merged = p("m.json");
    let html = p("m.html");
    let out = cli(&[
        "merge",
        &a,
        &b,
        "--json",
        &merged,
        "--html",
        &html,
        "--max-error-rate",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 generators merged"), "{stdout}");
    assert!(stdout.contains("concurrency 3"), "{stdout}");
    assert!(stdout.contains("all thresholds met"), "{stdout}");
    let (ra, rb, m) = (&read(&a)[0], &read(&b)[0], &read(&merged)[0]);
    let f = |r: &serde_json::Value, k: &str| r["latency_ms"][k].as_f64().unwrap();
    assert_eq!(m["requests"], 500);
    assert_eq!(m["ok"], 500);
    assert_eq!(m["generators"], 2);
    assert_eq!(f(m, "min"), f(ra, "min").min(f(rb, "min")));
    assert_eq!(f(m, "max"), f(ra, "max").max(f(rb, "max")));
    for k in ["p50", "p90", "p99"] {
        let (lo, hi) = (f(ra, k).min(f(rb, k)), f(ra, k).max(f(rb, k)));
        assert!(
            (lo..=hi).contains(&f(m, k)),
            "{k}: {} not in {lo}..={hi}",
            f(m, k)
        );
    }
    let weighted = (300.0 * f(ra, "avg") + 200.0 * f(rb, "avg")) / 500.0;
    assert!((f(m, "avg") - weighted).abs() <= weighted * 1e-6, "{m}");
    let rps = ra["requests_per_s"].as_f64().unwrap() + rb["requests_per_s"].as_f64().unwrap();
    assert!((m["requests_per_s"].as_f64().unwrap() - rps).abs() < 1e-6);
    // The merged HTML report: its row holds the merged count, and its
    // verdict the bound that was met.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("2 generators merged"));
    assert!(
        page.contains("<tr class=\"level\"><td>concurrency 3</td>"),
        "{page}"
    );
    assert!(page.contains("<td class=\"n\">500</td>"), "{page}");
    assert!(page.contains("Every bound was met."));

    // A bound the merged run misses: status 3; a single file: bad use (2);
    // runs of another batch: status 1 naming what differs.
    let out = cli(&["merge", &a, &b, "--max-p50-ms", "0.000001"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("threshold missed"));
    assert_eq!(cli(&["merge", &a]).status.code(), Some(2));
    let mut other = read(&b);
    other[0]["batch"] = 4.into();
    std::fs::write(p("c.json"), other.to_string()).unwrap();
    let out = cli(&["merge", &a, &p("c.json")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run 2 has batch 4, run 1 has 1"),
        "{stderr}"
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_threshold_search_finds_the_knee_of_a_one_worker_server() {
    // A server with one worker taking 100 ms a request: at concurrency c a
    // request waits for the c in flight, so latency is at least 100c ms (by
    // hand: 100, 200, 300, 400, plus overheads). Under 250 ms the answer is
    // concurrency 2, found by trying 1, 2, 4 (missed) then 3 (missed): the
    // misses hold however slow the machine, the answer has 50 ms to spare.
    let busy = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let stub = StubServer::start(Script {
        delay: Some(Arc::new(move |_| {
            let mut until = busy.lock().unwrap();
            let now = std::time::Instant::now();
            *until = (*until).max(now) + Duration::from_millis(100);
            *until - now
        })),
        ..Script::instant("stub")
    })
    .await
    .unwrap();
    // Through the library, from the flags the binary takes: the answer and
    // the levels tried are typed.
    let plan = |bound: &str| {
        use clap::Parser;
        let cli = rir_loadtest::args::Cli::try_parse_from([
            "rir-loadtest",
            "-u",
            &stub.url,
            "-m",
            "stub",
            "-w",
            "0.1",
            "-n",
            "40",
            "-q",
            "--latency-threshold",
            bound,
        ])
        .unwrap();
        cli.test.plan().unwrap()
    };
    let outcome = rir_loadtest::session::execute(&plan("250")).await.unwrap();
    let levels: Vec<_> = outcome
        .reports
        .iter()
        .filter_map(|r| r.concurrency)
        .collect();
    assert_eq!(levels, [1, 2, 3, 4], "the levels tried, lowest first");
    let search = outcome.search.as_ref().unwrap();
    assert_eq!(search.knee, Some(1), "concurrency 2: {levels:?}");
    assert_eq!(outcome.exit_code(), 0);

    // A bound not even one request in flight meets: no answer, status 3.
    let outcome = rir_loadtest::session::execute(&plan("50")).await.unwrap();
    assert_eq!(outcome.search.as_ref().unwrap().knee, None);
    assert_eq!(outcome.reports.len(), 1, "the search stops at level 1");
    assert_eq!(outcome.exit_code(), rir_loadtest::thresholds::MISSED);
    stub.shutdown().await;
}

/// The server breakdown of a measurement of `n` requests of batch 2: the
/// report's, after checking that it is there and adds up.
fn checked_breakdown(
    r: &rir_loadtest::report::Report,
    n: u64,
) -> rir_loadtest::breakdown::Breakdown {
    assert_eq!((r.ok, r.failed()), (n, 0));
    let b = r
        .server
        .unwrap_or_else(|| panic!("no server breakdown in {r:?}"));
    // Without warm-up every measured request is between the two reads, and
    // the probe request before the first.
    assert_eq!(b.requests, n, "{b:?}");
    assert!(b.executions >= 1 && b.executions <= n, "{b:?}");
    assert!(b.avg_batch >= 2.0, "{b:?}");
    // Each request's server time lies inside its client latency, and its
    // queue and compute inside its server time.
    assert!(b.compute_infer_ms > 0.0, "{b:?}");
    assert!(b.queue_ms + b.compute_ms() <= b.server_ms + 1e-6, "{b:?}");
    assert!(
        b.server_ms <= r.latency_ms.avg,
        "{b:?} vs {:?}",
        r.latency_ms
    );
    assert!((b.outside_ms - (r.latency_ms.avg - b.server_ms)).abs() < 1e-9);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_split_latency_with_the_server_s_statistics_or_metrics() {
    use rir_client::http::HttpClient;
    use rir_client::server_counters::{Probe, Source};
    let s = TestServer::start(None, &[]).await;
    let o = options(Api::Infer, "gray", 2, InputData::Random);
    // Over gRPC: ModelStatistics.
    let w = prepare(&plain(&s.url), &o).await.unwrap();
    let b = checked_breakdown(&count(w, 60).await, 60);
    assert_eq!(b.source, Source::Statistics);
    // Over REST: GET /v2/models/gray/stats.
    let http = HttpClient::new(&s.http_url, None, Duration::from_secs(5)).unwrap();
    let w = Workload::prepare_http(http, &o).await.unwrap();
    checked_breakdown(&count(w, 40).await, 40);
    // From the metrics page, which counts the same requests.
    let probe = Probe::metrics(std::slice::from_ref(&s.metrics_url), "gray", "").unwrap();
    let w = prepare(&plain(&s.url), &o)
        .await
        .unwrap()
        .with_server_counters(Some(probe));
    let r = count(w, 50).await;
    let b = checked_breakdown(&r, 50);
    assert_eq!(b.source, Source::Metrics);
    // The JSON and CSV carry it.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["server"]["requests"], 50);
    assert_eq!(json["server"]["source"], "metrics");
    let csv = rir_loadtest::report::csv(std::slice::from_ref(&r));
    let (head, row) = csv.split_once('\n').unwrap();
    let col = head
        .split(',')
        .position(|c| c == "server_requests")
        .unwrap();
    assert_eq!(row.trim().split(',').nth(col), Some("50"), "{csv}");
    // A page without the model's counters is a clear error, and the run
    // goes on without a breakdown.
    let probe = Probe::metrics(std::slice::from_ref(&s.metrics_url), "nope", "").unwrap();
    let w = prepare(&plain(&s.url), &o)
        .await
        .unwrap()
        .with_server_counters(Some(probe));
    let r = count(w, 10).await;
    assert_eq!((r.ok, r.server), (10, None));
}

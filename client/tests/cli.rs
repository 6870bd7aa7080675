//! The clients against a real rir-serve: the served accuracy of the
//! shipped model on the whole test split, and `rir-classify` as a user runs
//! it: images classified through two replicas, and `--eval`, whose served
//! accuracy must reproduce the trainer's or exit 1 with both figures.

use std::path::Path;

use rir_client::balance::Replicas;
use rir_client::connect::{ConnectOptions, connect};
use rir_testserver::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_default_model_scores_what_the_trainer_measured() {
    // The shipped model, served from models/, on the full Fashion-MNIST test
    // split (Debian's dataset-fashion-mnist, installed by scripts/setup.sh).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let s = TestServer::start(Some(&root), &[]).await;
    let file = s.model_path("rir-fashion-mnist");
    let trained = rir_contract::ModelInfo::read(&file)
        .unwrap()
        .recorded_metrics()
        .and_then(|m| m.test_accuracy())
        .expect("the default model records the trainer's accuracy");
    let data = rir_data::load(
        rir_data::Source::FashionMnist,
        &rir_data::Source::FashionMnist.default_dir(),
    )
    .expect("Fashion-MNIST (apt install dataset-fashion-mnist; scripts/setup.sh does)");
    let chans = connect(&ConnectOptions {
        url: s.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let replicas = Replicas::new(vec![(s.url.clone(), chans[0].clone())]);
    let ev = rir_client::accuracy::evaluate(
        &replicas,
        "rir-fashion-mnist",
        &data.test,
        [1, 28, 28],
        64,
        &mut Default::default(),
        |_| {},
    )
    .await
    .unwrap();
    let acc = ev.accuracy;
    assert_eq!(acc.total, 10_000);
    assert_eq!(
        acc.correct,
        (trained * 10_000.0).round() as usize,
        "trainer recorded {trained}"
    );
    // Every image's scores, in the split's order: image 7's are what the
    // server answers for image 7 sent alone; the predictions are their
    // argmax and score the accuracy above against the labels.
    assert_eq!((ev.classes, ev.scores.len()), (10, 100_000));
    let pixels: Vec<f32> = data.test.images[7 * 784..8 * 784]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let request = rir_testkit::requests::fp32_request("rir-fashion-mnist", 1, &pixels, true);
    let alone = s
        .kserve()
        .await
        .model_infer(request)
        .await
        .unwrap()
        .into_inner();
    let at = alone
        .outputs
        .iter()
        .position(|o| o.name == "logits")
        .unwrap();
    let alone = rir_proto::raw::f32s(&alone.raw_output_contents[at]);
    let in_batch = &ev.scores[70..80];
    let apart = alone
        .iter()
        .zip(in_batch)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(apart < 1e-4, "{alone:?} alone, {in_batch:?} in a batch");
    let predictions = ev.predictions();
    let hits = predictions
        .iter()
        .zip(&data.test.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    assert_eq!(hits, acc.correct);
    // The CSV `--outputs` writes: a header, then image 7's row as above.
    let csv = ev.csv(&data.test.labels);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 10_001);
    assert!(
        lines[0].starts_with("image,label,predicted,score_0,") && lines[0].ends_with(",score_9")
    );
    let row: Vec<&str> = lines[8].split(',').collect();
    let label = data.test.labels[7].to_string();
    let predicted = predictions[7].to_string();
    assert_eq!(row[..3], ["7", label.as_str(), predicted.as_str()]);
    let scores: Vec<f32> = row[3..].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(scores, in_batch, "scores written exactly");
    s.shutdown().await.unwrap();
}

/// `rir-classify ARGS` on a blocking thread, so the test's server keeps running.
async fn classify_off_thread(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || classify_cli(&args))
        .await
        .unwrap()
}

fn classify_cli(args: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rir-classify"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rir_classify_over_two_replicas_and_its_accuracy_mismatch_error() {
    // The shipped default model on two servers.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let (a, b) = (
        TestServer::start(Some(&root), &[]).await,
        TestServer::start(Some(&root), &[]).await,
    );
    let urls = format!("{},{}", a.url, b.url);
    // The images go in one Classify request, first to a replica whose copy
    // of the model is broken (UNAVAILABLE: not ready): it fails there and
    // is answered by the next one.
    let broken_repo = tempfile::tempdir().unwrap();
    let broken_file = broken_repo.path().join("rir-fashion-mnist/1/model.onnx");
    std::fs::create_dir_all(broken_file.parent().unwrap()).unwrap();
    std::fs::write(&broken_file, b"not onnx").unwrap();
    let broken = TestServer::start(Some(broken_repo.path()), &[]).await;
    let dead = broken.url.clone();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/fashion-mnist");
    let image = samples.join("01-pullover.png").display().to_string();
    let out = {
        let args = vec![
            "-u".into(),
            format!("{dead},{}", a.url),
            "-m".into(),
            "rir-fashion-mnist".into(),
            image,
        ];
        tokio::task::spawn_blocking(move || classify_cli(&args))
            .await
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Pullover 91.1 %"), "{stdout}");
    // The per-replica table: replica, ok, failed, retried elsewhere.
    let row = |addr: &str| -> Vec<u64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(addr))
            .unwrap_or_else(|| panic!("no row for {addr}: {stdout}"));
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(row(&dead), [0, 0, 1], "{stdout}");
    assert_eq!(row(&a.url), [1, 0, 0], "{stdout}");

    // --eval on 64 generated images (not the test split the trainer
    // measured): the served accuracy cannot reproduce the 94.52 % recorded
    // in the model file, and that is an error, status 1.
    let dir = tempfile::tempdir().unwrap();
    rir_testkit::data::write_fashion_mnist(dir.path(), 64, 64, 28, true, 7).unwrap();
    let model_file = a.model_path("rir-fashion-mnist");
    let out = classify_off_thread(&[
        "-u",
        &urls,
        "--eval",
        "fashion-mnist",
        "--batch",
        "8",
        "--data-dir",
        &dir.path().display().to_string(),
        "--model-file",
        &model_file.display().to_string(),
    ])
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("of 64 images"), "{stdout}");
    assert!(
        stderr.contains("the trainer recorded 94.52 %"),
        "the mismatch, with both figures: {stderr}"
    );
    // Eight requests of 8, spread over both replicas, each image once.
    let served = |s: &TestServer| -> u64 {
        s.core().statistics("rir-fashion-mnist", "").unwrap()[0].inference_count
    };
    let (on_a, on_b) = (served(&a), served(&b));
    assert!(on_a > 0 && on_b > 0, "{on_a} and {on_b} images");
    assert_eq!(
        on_a + on_b,
        64 + 1,
        "each image once (and the first image, on a)"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    broken.shutdown().await.unwrap();
}

/// `rir-health` with `args`, its exit status.
async fn health(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rir-health"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments of the container image's HEALTHCHECK command, after the
/// program name, as deploy/Containerfile writes them.
fn healthcheck_args() -> Vec<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Containerfile");
    let text = std::fs::read_to_string(file).unwrap();
    let at = text
        .find("HEALTHCHECK")
        .expect("the image has a HEALTHCHECK");
    let cmd = &text[at..];
    let list = &cmd[cmd.find("CMD [").expect("exec form") + 4..];
    let list = &list[..=list.find(']').unwrap()];
    let words: Vec<String> = serde_json::from_str(list).unwrap();
    assert_eq!(words[0], "rir-health");
    words[1..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rir_health_exit_statuses_and_the_container_healthcheck() {
    let s = TestServer::start(None, &["--auth-token", "s3cret"]).await;
    let url = s.url.clone();
    // The image's own check, pointed at this server: healthy.
    let mut image = healthcheck_args();
    image.extend(["-u".into(), url.clone()]);
    let image: Vec<&str> = image.iter().map(String::as_str).collect();
    assert_eq!(
        health(&image).await.0,
        Some(0),
        "HEALTHCHECK on a serving server"
    );
    // The whole server, without the token (health is never guarded): 0.
    assert_eq!(health(&["-u", &url]).await.0, Some(0));
    // A service the server does not know: 4.
    let (code, err) = health(&["-u", &url, "--service", "no.Such"]).await;
    assert_eq!(code, Some(4), "{err}");
    // Bad arguments: 1; nothing listening: 2.
    assert_eq!(health(&["--timeout", "zero"]).await.0, Some(1));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, err) = health(&["-u", &format!("127.0.0.1:{port}"), "--timeout", "1"]).await;
    assert_eq!(code, Some(2), "{err}");
    // Once the server has stopped: the image's check fails.
    s.shutdown().await.unwrap();
    assert_ne!(
        health(&image).await.0,
        Some(0),
        "HEALTHCHECK on a stopped server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int8_version_served_beside_the_fp32_one_scores_what_its_quantization_measured() {
    let repo = tempfile::tempdir().unwrap();
    let int8 = rir_testserver::models::shipped_with_int8(repo.path());
    let s = TestServer::start(Some(repo.path()), &[]).await;
    for version in ["1", "2"] {
        assert!(
            s.core().statistics("rir-fashion-mnist", version).is_ok(),
            "version {version} is served"
        );
    }
    // Without a version, requests go to the latest: the int8 model.
    let out = classify_off_thread(&[
        "-u",
        &s.url,
        "--eval",
        "fashion-mnist",
        "--model-file",
        &int8.display().to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("int8 model's accuracy measured when it was quantized"),
        "{stdout}"
    );
    assert!(stdout.contains("reproduces the quantization's"), "{stdout}");
    let v2 = s.core().statistics("rir-fashion-mnist", "2").unwrap()[0].inference_count;
    assert_eq!(v2, 10_000, "the whole split went to the int8 version");
    s.shutdown().await.unwrap();
}

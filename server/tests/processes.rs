//! Real `rir-serve` processes on loopback, stopped the ways processes stop:
//! SIGTERM (a rollout: health turns NOT_SERVING, calls in flight finish,
//! exit 0), SIGKILL under open-loop load and a restart on the same port
//! (every request counted once, the failures exactly those the dead server
//! could not answer), and one of three replicas killed behind the load
//! tester's client-side balancing (no request lost); and the binary as a
//! user runs it: flags and environment variables as given, what it logs,
//! its exit statuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_arch::InputSpec;
use rir_client::balance::Replicas;
use rir_client::connect::{ConnectOptions, connect, connect_replicas, resolve};
use rir_loadtest::load::{Arrivals, Load, RunOptions, Stop};
use rir_loadtest::run::run;
use rir_loadtest::workload::{Api, InputData, Workload, WorkloadOptions};
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rir_proto::inference::model_infer_request::InferInputTensor;
use rir_proto::inference::{ModelInferRequest, ModelStatisticsRequest, ServerLiveRequest};
use rir_testkit::binary::Launched;
use rir_testkit::process::{spawn as spawn_server, spawn_on as spawn_server_on};
use rir_testkit::requests::fp32_request;
use rir_testkit::web::{call, get, metric};
use rir_testserver::models::{write_model, write_preset};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn serve_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rir-serve"))
}

fn args(extra: &[&str]) -> Vec<String> {
    ["--threads", "1"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn infer_options() -> WorkloadOptions {
    WorkloadOptions {
        api: Api::Infer,
        model: "gray".into(),
        version: String::new(),
        batch: 1,
        input: InputData::Random,
        seed: 0,
        top_k: 1,
        timeout: Some(Duration::from_secs(10)),
        shapes: vec![],
        json_tensors: false,
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 1);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(
            spawn_server(serve_bin(), dir.path(), &args(&["--max-batch", "8"]))
                .await
                .unwrap(),
        );
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let targets = resolve(&urls).await.unwrap();
    let replicas = connect_replicas(&ConnectOptions::default(), &targets)
        .await
        .unwrap();
    let workload = Workload::prepare_replicas(replicas, &infer_options())
        .await
        .unwrap();
    let options = RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Duration(Duration::from_secs(3)),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 100,
        seed: 0,
        progress: false,
    };
    let workload = Arc::new(workload);
    let load =
        tokio::spawn(async move { run(workload, Load::Closed { concurrency: 6 }, &options).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    servers[1].kill().unwrap();
    let report = load.await.unwrap().unwrap().report;

    println!(
        "{} requests, {} ok, {} retried; per replica: {:?}",
        report.requests, report.ok, report.retried, report.replicas
    );
    assert_eq!(
        report.failed(),
        0,
        "lost requests: {:?}",
        report.error_messages
    );
    assert_eq!(report.ok, report.requests);
    let killed = &report.replicas[1];
    assert!(killed.ok > 0, "the killed replica served before the kill");
    assert!(
        killed.retried_elsewhere >= 1,
        "requests it did not answer were sent again: {:?}",
        report.replicas
    );
    // Every retry came from the killed replica; the others answered all
    // they were sent.
    assert_eq!(report.retried, killed.retried_elsewhere);
    for k in [0, 2] {
        assert_eq!(report.replicas[k].retried_elsewhere, 0);
        assert!(report.replicas[k].ok > killed.ok, "{:?}", report.replicas);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_off_finishes_calls_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    // A model slow enough on the CPU that a burst of batches is still in
    // flight when the signal arrives.
    write_preset(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), "tiny", 1);
    let mut server = spawn_server(
        serve_bin(),
        dir.path(),
        &args(&["--max-batch", "64", "--shutdown-timeout", "20"]),
    )
    .await
    .unwrap();
    let chan = connect(&ConnectOptions {
        url: server.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .remove(0);
    // A health Watch opened before the signal: the one way to see the
    // status change once the server accepts no new calls.
    let mut health = HealthClient::new(chan.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "inference.GRPCInferenceService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut c = GrpcInferenceServiceClient::new(chan.clone());
            let request = fp32_request("gray", 64, &vec![0.0; 64 * 784], true);
            tokio::spawn(async move { c.model_infer(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let signalled = Instant::now();
    server.terminate();

    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("health changed within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    let mut done = 0;
    for c in calls {
        let r = c.await.unwrap();
        assert!(r.is_ok(), "a call in flight failed during the drain: {r:?}");
        done += 1;
    }
    // No new connections once draining.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if tokio::net::TcpStream::connect(server.url.trim_start_matches("http://"))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "still accepting connections 5 s after SIGTERM"
    );
    let status = server.wait().unwrap();
    println!(
        "SIGTERM: {done} calls in flight finished, exit {status} {:.0} ms after the signal",
        signalled.elapsed().as_secs_f64() * 1e3
    );
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_too_and_the_shutdown_timeout_cuts_calls_still_running() {
    let dir = tempfile::tempdir().unwrap();
    write_preset(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), "tiny", 1);
    // 96 batches of 64 on one engine: seconds of work, queued at once,
    // against a one-second shutdown timeout.
    let mut server = spawn_server(
        serve_bin(),
        dir.path(),
        &args(&["--max-batch", "64", "--shutdown-timeout", "1"]),
    )
    .await
    .unwrap();
    let chan = connect(&ConnectOptions {
        url: server.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .remove(0);
    let calls: Vec<_> = (0..96)
        .map(|_| {
            let mut c = GrpcInferenceServiceClient::new(chan.clone());
            let request = fp32_request("gray", 64, &vec![0.0; 64 * 784], true);
            tokio::spawn(async move { c.model_infer(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGINT) };
    let status = server.wait().unwrap();
    let (mut ok, mut cut) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(_) => cut += 1,
        }
    }
    // SIGINT stops the server as SIGTERM does (exit 0, not the default
    // action's 130); the timeout ended the drain with calls unanswered.
    assert!(status.success(), "{status}");
    assert!(ok > 0, "calls finished during the drain");
    assert!(
        cut > 0,
        "the drain outlived --shutdown-timeout: all {ok} calls finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_open_loop_load_counts_every_request_and_the_restart_serves() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 1);
    let mut first = spawn_server(serve_bin(), dir.path(), &args(&[]))
        .await
        .unwrap();
    let url = first.url.clone();
    let port = port_of(&url);
    let chans = connect(&ConnectOptions {
        url: url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let workload =
        Workload::prepare_replicas(Replicas::new(vec![(url.clone(), chans)]), &infer_options())
            .await
            .unwrap();
    let (rate, seconds) = (200.0, 4.0);
    let options = RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Duration(Duration::from_secs_f64(seconds)),
        stability: None,
        // Intervals show when answers came: from the first server, none
        // while nothing listened, then from the restarted one.
        interval: Some(Duration::from_millis(100)),
        timeline: None,
        max_in_flight: 1_000,
        seed: 0,
        progress: false,
    };
    let workload = Arc::new(workload);
    let load = tokio::spawn(async move {
        run(
            workload,
            Load::Open {
                rate,
                arrivals: Arrivals::Constant,
            },
            &options,
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill().unwrap();
    let down = Instant::now();
    // Nothing listens for 300 ms, so that whole 100 ms intervals fall
    // inside the outage however fast the restart and however busy the
    // machine: they mark where the first server's answers end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart = Instant::now();
    let second = spawn_server_on(serve_bin(), dir.path(), port, &args(&[]))
        .await
        .unwrap();
    let ready_ms = restart.elapsed().as_secs_f64() * 1e3;
    let down_ms = down.elapsed().as_secs_f64() * 1e3;
    let report = load.await.unwrap().unwrap().report;

    // What the restarted server answered, by its own count.
    let mut c = GrpcInferenceServiceClient::connect(second.url.clone())
        .await
        .unwrap();
    let stats = c
        .model_statistics(ModelStatisticsRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let answered_after: u64 = stats
        .model_stats
        .iter()
        .filter_map(|m| m.inference_stats.as_ref())
        .filter_map(|s| s.success.as_ref())
        .map(|d| d.count)
        .sum();
    println!(
        "kill -9 at 1 s of {seconds} s at {rate}/s: {} requests, {} ok, {} failed {:?}; \
         down {down_ms:.0} ms, restarted and ready in {ready_ms:.0} ms; it answered {answered_after}",
        report.requests,
        report.ok,
        report.failed(),
        report.errors
    );
    // Every scheduled request is counted once, answered or failed.
    let scheduled = rate * seconds;
    assert!(
        (report.requests as f64 - scheduled).abs() <= 2.0,
        "{} requests counted for {scheduled} scheduled",
        report.requests
    );
    assert_eq!(report.ok + report.failed(), report.requests);
    // The failures are the requests no server could answer: those in
    // flight at the kill (their connection broke: tonic says UNKNOWN,
    // "transport error", or for one still being handed to the connection
    // as it dropped, CANCELLED, "operation was canceled"; rir-serve itself
    // never answers CANCELLED) and those sent while nothing listened
    // (UNAVAILABLE, connection refused); at least one, and no more than
    // were scheduled while it was down plus those in flight.
    assert!(report.failed() >= 1);
    for (code, message) in &report.error_messages {
        let broken = (code == "UNKNOWN" && message.contains("transport error"))
            || (code == "CANCELLED" && message.contains("operation was canceled"));
        assert!(code == "UNAVAILABLE" || broken, "{code}: {message}");
    }
    let down_window = rate * (down_ms / 1e3) + 10.0;
    assert!(
        (report.failed() as f64) <= down_window,
        "{} failed, at most {down_window:.0} could have",
        report.failed()
    );
    // The restarted server answered the rest: what it counted is what the
    // load tester saw succeed after the restart (after the intervals with
    // no answer while nothing listened), so no answer was lost.
    let ok: Vec<u64> = report.intervals.iter().map(|i| i.ok).collect();
    let gap = ok
        .iter()
        .position(|&n| n == 0)
        .unwrap_or_else(|| panic!("no interval without answers: {ok:?}"));
    let resumed = gap + ok[gap..].iter().take_while(|&&n| n == 0).count();
    let (before, after): (u64, u64) = (ok[..gap].iter().sum(), ok[resumed..].iter().sum());
    assert!(
        before > 0,
        "the first server answered before the kill: {ok:?}"
    );
    assert!(answered_after > 0, "the restarted server got no traffic");
    assert_eq!(
        after, answered_after,
        "the client's successes after the restart, per interval: {ok:?}"
    );
    assert_eq!(before + after, report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rir_serve_leaves_no_onnx_runtime_telemetry_behind() {
    // Microsoft's ONNX Runtime builds write a device ID and an event
    // database under ~/.cache/Microsoft when telemetry is on.
    let home = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut child = std::process::Command::new(serve_bin())
        .arg("--models")
        .arg(&models)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .args(["--metrics-addr", "127.0.0.1:0", "--device", "cpu"])
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .env_remove("ORT_DISABLE_TELEMETRY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the models are loaded (the library is in use), then stop it.
    // The reader keeps draining stderr: a closed pipe would kill the server.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("gRPC on") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(ready && status.success(), "{status}");
    let cache = home.path().join(".cache/Microsoft");
    assert!(
        !cache.exists(),
        "ONNX Runtime telemetry files: {:?}",
        std::fs::read_dir(home.path().join(".cache")).map(|d| d.count())
    );
}

#[test]
fn device_cuda_without_a_usable_gpu_fails_at_start_with_the_reason() {
    rir_infer::ort_engine::environment(None).unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    // No device visible: on a CPU-only ONNX Runtime the provider is
    // missing; on a GPU host's it is there but cannot create a session.
    // Either way the server must refuse to start, not serve on the CPU.
    let out = std::process::Command::new(serve_bin())
        .arg("--models")
        .arg(&models)
        .args([
            "--device",
            "cuda",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "off",
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--device cuda:"), "{stderr}");
    if let Err(why) = rir_infer::ort_engine::cuda_provider() {
        assert!(
            stderr.contains(&why.0),
            "the missing provider named: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_instances_answer_concurrent_calls_exactly_as_one() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 3);
    let one = spawn_server(serve_bin(), dir.path(), &args(&[]))
        .await
        .unwrap();
    // Batches of one, so the 32 calls make 32 executions for the two
    // engines to share; none inline, where calls that arrive one at a
    // time (a loaded machine) would all take the first instance.
    let two = spawn_server(
        serve_bin(),
        dir.path(),
        &args(&[
            "--instances",
            "2",
            "--max-batch",
            "1",
            "--run-inline",
            "false",
        ]),
    )
    .await
    .unwrap();
    let request = |k: u8| ModelInferRequest {
        model_name: "gray".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "UINT8".into(),
            shape: vec![1, 28, 28, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![(0..784).map(|i| (i as u8).wrapping_mul(k)).collect()],
        ..Default::default()
    };
    let mut reference = GrpcInferenceServiceClient::connect(one.url.clone())
        .await
        .unwrap();
    let client = GrpcInferenceServiceClient::connect(two.url.clone())
        .await
        .unwrap();
    // Bursts of 32 calls until both engines have run some (the first
    // burst, unless a busy machine leaves one engine thread unscheduled).
    let mut per_instance = vec![];
    let mut page = String::new();
    for _burst in 0..10 {
        let calls: Vec<_> = (0..32u8)
            .map(|k| {
                let mut c = client.clone();
                let r = request(k);
                tokio::spawn(async move { c.model_infer(r).await.map(|r| r.into_inner()) })
            })
            .collect();
        for (k, call) in calls.into_iter().enumerate() {
            let got = call.await.unwrap().unwrap();
            let want = reference
                .model_infer(request(k as u8))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                got.raw_output_contents, want.raw_output_contents,
                "call {k}"
            );
        }
        page = String::from_utf8_lossy(&get(two.metrics_url.clone()).await.body).into_owned();
        per_instance = (0..3)
            .map(|i| {
                let series =
                    format!("rir_instance_executions_total{{instance=\"{i}\",model=\"gray\"}}");
                metric(&page, &series).unwrap_or(0.0) as u64
            })
            .collect();
        if per_instance[0] > 0 && per_instance[1] > 0 {
            break;
        }
    }
    // Both engines ran some of the calls, and no third one exists.
    assert!(
        per_instance[0] > 0 && per_instance[1] > 0 && per_instance[2] == 0,
        "executions per instance: {per_instance:?}"
    );
    assert_eq!(
        per_instance.iter().sum::<u64>(),
        counter(&page, "rir_execution_count")
    );
}

/// `name{model="gray"}` from a Prometheus text page; 0 when absent.
fn counter(page: &str, name: &str) -> u64 {
    metric(page, &format!("{name}{{model=\"gray\"}}")).map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_at_a_time_runs_inline_by_default_and_with_run_inline_false_does_not() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 3);
    let on = spawn_server(serve_bin(), dir.path(), &args(&[]))
        .await
        .unwrap();
    let off = spawn_server(serve_bin(), dir.path(), &args(&["--run-inline", "false"]))
        .await
        .unwrap();
    let fp32 =
        |k: usize| -> Vec<f32> { (0..784).map(|i| ((i * k) % 255) as f32 / 255.0).collect() };
    // Per server: the six answers, engine executions, inline executions.
    let mut seen = vec![];
    for s in [&on, &off] {
        let mut c = GrpcInferenceServiceClient::connect(s.url.clone())
            .await
            .unwrap();
        let mut raw = vec![];
        for k in 0..6 {
            let r = fp32_request("gray", 1, &fp32(k), true);
            raw.push(
                c.model_infer(r)
                    .await
                    .unwrap()
                    .into_inner()
                    .raw_output_contents,
            );
        }
        let page = get(s.metrics_url.clone()).await.body;
        let page = String::from_utf8_lossy(&page);
        seen.push((
            raw,
            counter(&page, "rir_execution_count"),
            counter(&page, "rir_inline_executions_total"),
        ));
    }
    // The first request measures the model on an engine thread; the five
    // after it find the engine idle and run on the thread that decoded
    // them, each one whose last run took under 1 ms (on a loaded machine
    // a run can take longer and send the next to an engine thread).
    assert_eq!(seen[0].1, 6, "default");
    assert!(
        (1..=5).contains(&seen[0].2),
        "default: {} inline",
        seen[0].2
    );
    assert_eq!((seen[1].1, seen[1].2), (6, 0), "--run-inline false");
    assert_eq!(
        seen[0].0, seen[1].0,
        "the outputs do not depend on the path"
    );
}

/// The shipped models/ repository.
fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The shipped repository, one ONNX Runtime thread, and the test's flags.
fn flags<'a>(models: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut f = vec!["--models", models, "--threads", "1"];
    f.extend_from_slice(extra);
    f
}

// The binary as a user runs it: flags and environment variables as given,
// the log it writes, its exit statuses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rir_auth_token_from_the_environment_guards_calls_and_metrics_and_is_never_logged() {
    let token = "tok-6f1d2c9e-never-in-a-log";
    let models = models().display().to_string();
    let server = Launched::start(
        serve_bin(),
        &flags(&models, &["--http-addr", "127.0.0.1:0"]),
        &[
            ("RIR_AUTH_TOKEN", token),
            ("RIR_METRICS_TOKEN", "scrape-6f1d"),
            ("RUST_LOG", "debug,ort=warn"),
        ],
    )
    .unwrap();
    let mut c = GrpcInferenceServiceClient::connect(server.url())
        .await
        .unwrap();
    let e = c.server_live(ServerLiveRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut with_token = tonic::Request::new(ServerLiveRequest {});
    let bearer = format!("Bearer {token}");
    with_token
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    assert!(c.server_live(with_token).await.unwrap().into_inner().live);
    // A wrong token is refused without being echoed or logged.
    let http = server.http.clone().expect("HTTP on");
    let wrong = call(
        "GET",
        format!("{http}/v2"),
        &[("authorization", "Bearer tok-wrong-guess")],
        vec![],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        !wrong.text().contains("tok-wrong-guess"),
        "{}",
        wrong.text()
    );
    // RIR_METRICS_TOKEN: the metrics endpoint wants its own token, not
    // the API's.
    assert_eq!(get(server.metrics.clone()).await.status, 401);
    let api = call(
        "GET",
        server.metrics.clone(),
        &[("authorization", &bearer)],
        vec![],
    )
    .await;
    assert_eq!(api.status, 401);
    let metrics = call(
        "GET",
        server.metrics.clone(),
        &[("authorization", "Bearer scrape-6f1d")],
        vec![],
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("rir_open_connections"));

    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("gRPC on"), "a debug log was written: {log}");
    assert!(!log.contains(token), "the token is in the log:\n{log}");
    assert!(
        !log.contains("scrape-6f1d"),
        "the metrics token is in the log:\n{log}"
    );
    assert!(
        !log.contains("tok-wrong-guess"),
        "a refused token is in the log:\n{log}"
    );
}

#[test]
fn tls_turns_http_off_and_http_with_tls_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = rir_testkit::tls::self_signed(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let models = models().display().to_string();
    // No --http-addr: the HTTP front end stays off, gRPC says TLS.
    let server = Launched::start(
        serve_bin(),
        &flags(&models, &["--tls-cert", &cert, "--tls-key", &key]),
        &[],
    )
    .unwrap();
    let log = server.log();
    assert!(server.http.is_none(), "HTTP announced under TLS:\n{log}");
    assert!(log.contains("(TLS)"), "{log}");
    let (status, _) = server.stop(libc::SIGTERM);
    assert!(status.success());
    // --http-addr with TLS: refused before anything starts, exit 1.
    let out = std::process::Command::new(serve_bin())
        .args(flags(&models, &["--tls-cert", &cert, "--tls-key", &key]))
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--http-addr 127.0.0.1:0 with --tls-cert"),
        "{stderr}"
    );
    // --tls-key without --tls-cert: a usage error naming the missing flag.
    let out = std::process::Command::new(serve_bin())
        .args(flags(&models, &["--tls-key", &key]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

#[test]
fn cuda_flags_parse_and_a_bad_value_names_its_flag() {
    let models = models().display().to_string();
    // Every CUDA setting given on a CPU host with --device cpu: they parse,
    // and the server starts (they apply to the CUDA provider only).
    let server = Launched::start(
        serve_bin(),
        &flags(
            &models,
            &[
                "--device",
                "cpu",
                "--session-per-bucket",
                "true",
                "--cudnn-conv-search",
                "heuristic",
                "--cuda-tf32",
                "false",
                "--cuda-nhwc",
                "false",
                "--cuda-mem-limit-mb",
                "512",
            ],
        ),
        &[],
    )
    .unwrap();
    let (status, log) = server.stop(libc::SIGINT);
    assert!(
        status.success(),
        "SIGINT drains and exits 0: {status}\n{log}"
    );
    for (flag, value) in [
        ("--cuda-tf32", "maybe"),
        ("--cudnn-conv-search", "fastest"),
        ("--session-per-bucket", "sometimes"),
        ("--cuda-mem-limit-mb", "lots"),
    ] {
        let out = std::process::Command::new(serve_bin())
            .args(flags(&models, &[flag, value]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(value), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_buffers_serve_tracts_answers_and_cuda_graphs_off_the_gpu_are_refused_or_warned() {
    use rir_infer::engine::{max_abs_diff, output};
    use rir_infer::{Engine, TractEngine};

    let repository = models();
    let models = repository.display().to_string();
    let out = std::process::Command::new(serve_bin())
        .args(flags(&models, &["--cuda-graph", "true", "--device", "cpu"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--cuda-graph: needs the CUDA provider"),
        "{stderr}"
    );

    // Bound buffers per bucket (1, 2 and 4), batches of 1 to 4 images, so
    // that 3 is padded to a bound 4 and each size is bound again after
    // another ran; with --cuda-graph on a host without CUDA, served
    // without graphs and said so.
    let server = Launched::start(
        serve_bin(),
        &flags(
            &models,
            &[
                "--io-binding",
                "true",
                "--cuda-graph",
                "true",
                "--max-batch",
                "4",
            ],
        ),
        &[],
    )
    .unwrap();
    let model = repository.join("rir-fashion-mnist/1/model.onnx");
    let mut tract = TractEngine::load(&model).unwrap();
    let mut client = GrpcInferenceServiceClient::connect(server.url())
        .await
        .unwrap();
    for (k, n) in [1usize, 4, 2, 3, 1, 4].into_iter().enumerate() {
        let data: Vec<f32> = (0..n * 784)
            .map(|i| ((i * 13 + k * 101) % 256) as f32 / 255.0)
            .collect();
        let r = client
            .model_infer(fp32_request("rir-fashion-mnist", n, &data, true))
            .await
            .unwrap()
            .into_inner();
        let want = tract.run(&data, &[n, 1, 28, 28]).unwrap();
        for (o, raw) in r.outputs.iter().zip(&r.raw_output_contents) {
            let got = rir_proto::raw::f32s(raw);
            let diff = max_abs_diff(&got, &output(&want, &o.name).unwrap().data);
            assert!(diff < 1e-4, "{} at batch {n}: {diff}", o.name);
        }
    }
    // Bound buffers exist per bucket: the batch of 3 ran padded to 4.
    let page = String::from_utf8_lossy(&get(server.metrics.clone()).await.body).into_owned();
    let padded = metric(
        &page,
        "rir_padded_images_total{model=\"rir-fashion-mnist\"}",
    );
    assert_eq!(padded, Some(1.0), "{page}");
    let (status, log) = server.stop(libc::SIGINT);
    assert!(status.success(), "{status}\n{log}");
    rir_infer::ort_engine::environment(None).unwrap();
    if rir_infer::ort_engine::cuda_provider().is_err() {
        assert!(
            log.contains("CUDA graphs asked for, but the session runs on the CPU"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_a_taken_port_says_so_and_spawn_tries_new_ports() {
    // The port taken: the error carries the server's own words.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = spawn_server_on(serve_bin(), &models(), port, &args(&[]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Address already in use") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    // A stand-in that fails as a taken port does `fails` times, then runs
    // the server: spawn starts it on its third try, not on a fourth.
    let dir = tempfile::tempdir().unwrap();
    let stand_in = |fails: usize| {
        let script = dir.path().join(format!("serve-{fails}.sh"));
        let count = dir.path().join(format!("tries-{fails}"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}\n\
                 if [ $n -le {fails} ]; then echo 'error: binding 127.0.0.1:1: Address already in use (os error 98)' >&2; exit 1; fi\n\
                 exec {serve} \"$@\"\n",
                count = count.display(),
                serve = serve_bin().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script, count)
    };
    let tries = |count: &Path| std::fs::read_to_string(count).unwrap().trim().to_string();
    let (script, count) = stand_in(2);
    let server = spawn_server(&script, &models(), &args(&[])).await.unwrap();
    assert_eq!(tries(&count), "3");
    drop(server);
    let (script, count) = stand_in(5);
    let err = spawn_server(&script, &models(), &args(&[]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("Address already in use"), "{err}");
    assert_eq!(tries(&count), "3", "three tries, then the error");
}

//! Three real rir-serve processes on loopback behind the load tester's
//! client-side balancing, one of them killed (SIGKILL) in the middle of the
//! run: the requests it had in flight, and those sent to it before the
//! client noticed, are sent again to the others; none is lost.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rir_loadtest::bench::spawn_server;
use rir_loadtest::connect::{ConnectOptions, connect_replicas, resolve};
use rir_loadtest::run::{Load, RunOptions, Stop, run};
use rir_loadtest::workload::{Api, InputData, Workload, WorkloadOptions};
use rir_spec::InputSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    common::write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 1);
    let bin = Path::new(env!("CARGO_BIN_EXE_rir-serve"));
    let args: Vec<String> = ["--threads", "1", "--max-batch", "8"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(spawn_server(bin, dir.path(), &args).await.unwrap());
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let targets = resolve(&urls).await.unwrap();
    let replicas = connect_replicas(&ConnectOptions::default(), &targets)
        .await
        .unwrap();
    let workload = Workload::prepare_replicas(
        replicas,
        &WorkloadOptions {
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
        },
    )
    .await
    .unwrap();
    let options = RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Duration(Duration::from_secs(3)),
        stability: None,
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

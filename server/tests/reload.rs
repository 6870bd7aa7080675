//! Model repository control over real sockets: the index, explicit load
//! and unload over gRPC and REST, polling, a failed reload that leaves the
//! old file serving, and a reload under load that loses no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rir_arch::InputSpec;
use rir_proto::inference::{self as pb, model_infer_request::InferInputTensor};
use rir_testkit::web::call;
use rir_testserver::models::{repository, write_model};
use rir_testserver::server::TestServer;
use tonic::Code;

fn request(model: &str) -> pb::ModelInferRequest {
    let data: Vec<f32> = (0..784).map(|i| (i % 17) as f32 / 17.0).collect();
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1, 28, 28],
            ..Default::default()
        }],
        raw_input_contents: vec![rir_proto::raw::f32_bytes(&data)],
        ..Default::default()
    }
}

fn index_of(r: &pb::RepositoryIndexResponse) -> Vec<(String, String, String)> {
    r.models
        .iter()
        .map(|m| (m.name.clone(), m.version.clone(), m.state.clone()))
        .collect()
}

fn entry(name: &str, version: &str, state: &str) -> (String, String, String) {
    (name.into(), version.into(), state.into())
}

/// The standard repository served in explicit mode with only `gray` loaded.
async fn explicit_gray() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path());
    let flags = ["--model-control-mode", "explicit", "--load-model", "gray"];
    let s = TestServer::start(Some(dir.path()), &flags).await;
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_unloads_and_indexes() {
    let (dir, s) = explicit_gray().await;
    let root = dir.path().display().to_string();
    let mut c = s.kserve().await;
    let index = |ready| pb::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let r = c.repository_index(index(false)).await.unwrap().into_inner();
    assert_eq!(
        index_of(&r),
        vec![
            entry("broken", "", "UNAVAILABLE"),
            entry("gray", "1", "READY"),
            entry("gray", "2", "READY"),
            entry("rgb", "", "UNAVAILABLE"),
        ]
    );
    assert_eq!(r.models[0].reason, "unloaded");
    assert_eq!(
        c.model_infer(request("rgb")).await.unwrap_err().code(),
        Code::NotFound
    );

    // Load over gRPC, unload over REST.
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: "rgb".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ready = c.repository_index(index(true)).await.unwrap().into_inner();
    assert!(index_of(&ready).contains(&entry("rgb", "1", "READY")));
    let http = call(
        "POST",
        format!("{}/v2/repository/models/gray/unload", s.http_url),
        &[],
        vec![],
    )
    .await;
    assert_eq!(http.status, 200, "{}", String::from_utf8_lossy(&http.body));
    let e = c.model_infer(request("gray")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let listed = call(
        "POST",
        format!("{}/v2/repository/index", s.http_url),
        &[],
        vec![],
    )
    .await;
    assert_eq!(listed.status, 200);
    let json = listed.json();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "gray" && m["reason"] == "unloaded"),
        "{json}"
    );

    // A model that cannot load: an error with the reason, and the index says it.
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "broken".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("version 1"), "{}", e.message());
    // The server's disk layout stays its own: paths relative to the repository.
    assert!(!e.message().contains(&root), "{}", e.message());
    let r = c.repository_index(index(false)).await.unwrap().into_inner();
    let broken = r.models.iter().find(|m| m.name == "broken").unwrap();
    assert_eq!(
        (broken.version.as_str(), broken.state.as_str()),
        ("1", "UNAVAILABLE")
    );
    assert!(!broken.reason.is_empty());
    assert!(!broken.reason.contains(&root), "{}", broken.reason);
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_unload_are_refused_without_explicit_control() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let e = c
        .repository_model_unload(pb::RepositoryModelUnloadRequest {
            model_name: "gray".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("explicit"), "{}", e.message());
    let r = call(
        "POST",
        format!("{}/v2/repository/models/gray/load", s.http_url),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("explicit"), "{}", r.error());
    assert!(c.model_infer(request("gray")).await.is_ok());
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_that_fails_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path());
    let flags = [
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "3600",
    ];
    let s = TestServer::start(Some(dir.path()), &flags).await;
    let mut c = s.kserve().await;
    let before = c.model_infer(request("gray")).await.unwrap().into_inner();
    assert_eq!(before.model_version, "2");
    std::fs::write(
        dir.path().join("gray/2/model.onnx"),
        b"truncated by a bad copy",
    )
    .unwrap();
    s.core().poll_repository().await;
    let after = c.model_infer(request("gray")).await.unwrap().into_inner();
    assert_eq!(after.model_version, "2");
    assert_eq!(after.raw_output_contents, before.raw_output_contents);
    let r = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let v2 = r
        .models
        .iter()
        .find(|m| m.name == "gray" && m.version == "2")
        .unwrap();
    assert_eq!(v2.state, "READY");
    assert!(v2.reason.contains("the new one failed"), "{}", v2.reason);

    // Polling again does not retry the same bad file; a good one replaces it.
    let failed = r#"rir_model_loads_total{model="gray",outcome="failed"}"#;
    let ready = r#"rir_model_loads_total{model="gray",outcome="ready"}"#;
    let (failed_once, ready_before) = (s.metric(failed).await, s.metric(ready).await);
    assert_eq!(failed_once, 1.0, "the bad file was tried once");
    s.core().poll_repository().await;
    assert_eq!(
        s.metric(failed).await,
        failed_once,
        "the same bad file was tried again"
    );
    assert_eq!(
        s.metric(ready).await,
        ready_before,
        "an unchanged model was reloaded"
    );
    write_model(dir.path(), "gray", 2, InputSpec::new(1, 28, 28), 99);
    s.core().poll_repository().await;
    assert_eq!(
        s.metric(ready).await,
        ready_before + 1.0,
        "only version 2 loaded again"
    );
    let fixed = c.model_infer(request("gray")).await.unwrap().into_inner();
    assert_ne!(
        fixed.raw_output_contents, before.raw_output_contents,
        "new weights serve"
    );
    let r = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.models
            .iter()
            .all(|m| !m.reason.contains("the new one failed"))
    );

    // A new version, a new model, a removed model.
    write_model(dir.path(), "gray", 3, InputSpec::new(1, 28, 28), 7);
    write_model(dir.path(), "gray2", 1, InputSpec::new(1, 28, 28), 8);
    std::fs::remove_dir_all(dir.path().join("rgb")).unwrap();
    s.core().poll_repository().await;
    let r = c.model_infer(request("gray")).await.unwrap().into_inner();
    assert_eq!(r.model_version, "3");
    assert!(c.model_infer(request("gray2")).await.is_ok());
    assert_eq!(
        c.model_infer(request("rgb")).await.unwrap_err().code(),
        Code::NotFound
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request() {
    // Sixteen clients call without pause while version 2 of `gray` is
    // replaced and reloaded. Every call must succeed, and the answers
    // switch from the old weights to the new. The latency figures are
    // printed for the README, not asserted (wall-clock on a shared machine).
    let (dir, s) = explicit_gray().await;
    let old = s
        .kserve()
        .await
        .model_infer(request("gray"))
        .await
        .unwrap()
        .into_inner()
        .raw_output_contents;
    let phase = Arc::new(AtomicU64::new(0)); // 0 steady, 1 reloading, 2 after
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = vec![];
    for _ in 0..16 {
        let (mut c, phase, stop) = (s.kserve().await, phase.clone(), stop.clone());
        // Per call, in order: the phase it started in, the phase when its
        // answer came, how long it took, and the answer (None: lost).
        clients.push(tokio::spawn(async move {
            let mut calls = vec![];
            while !stop.load(Ordering::SeqCst) {
                let started = phase.load(Ordering::SeqCst) as usize;
                let t = Instant::now();
                let answer = c.model_infer(request("gray")).await;
                let finished = phase.load(Ordering::SeqCst) as usize;
                let answer = answer
                    .map_err(|e| eprintln!("lost: {e:?}"))
                    .ok()
                    .map(|r| r.into_inner().raw_output_contents);
                calls.push((started, finished, t.elapsed(), answer));
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write_model(dir.path(), "gray", 2, InputSpec::new(1, 28, 28), 1234);
    phase.store(1, Ordering::SeqCst);
    let t = Instant::now();
    s.core()
        .load_model("gray", std::iter::empty())
        .await
        .unwrap();
    let reload = t.elapsed();
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let new = s
        .kserve()
        .await
        .model_infer(request("gray"))
        .await
        .unwrap()
        .into_inner()
        .raw_output_contents;
    assert_ne!(new, old, "the new weights answer differently");
    let mut lat = vec![vec![]; 3];
    let (mut lost, mut old_answers, mut new_answers) = (0, 0, 0);
    for c in clients {
        let mut switched = false;
        for (started, finished, took, answer) in c.await.unwrap() {
            lat[started].push(took);
            let Some(answer) = answer else {
                lost += 1;
                continue;
            };
            let is_new = if answer == old {
                old_answers += 1;
                false
            } else {
                assert_eq!(answer, new, "an answer from neither version");
                new_answers += 1;
                true
            };
            // Before the reload began: the old weights; after it returned:
            // the new; between: either, but a client never goes back.
            if finished == 0 {
                assert!(
                    !is_new,
                    "a call answered before the reload got the new weights"
                );
            }
            if started == 2 {
                assert!(
                    is_new,
                    "a call started after the reload got the old weights"
                );
            }
            assert!(!switched || is_new, "a client saw the old weights again");
            switched |= is_new;
        }
    }
    assert_eq!(lost, 0, "requests lost during the reload");
    assert!(
        old_answers > 0 && new_answers > 0 && !lat[1].is_empty(),
        "{old_answers} old, {new_answers} new, {} during",
        lat[1].len()
    );
    let p99 = |v: &mut Vec<Duration>| {
        v.sort();
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    };
    let (steady, during) = (p99(&mut lat[0]), p99(&mut lat[1]));
    println!(
        "reload under load, concurrency 16: reload took {:.0} ms; {} calls steady, {} during, {} after, 0 lost; p99 steady {:.2} ms, during the reload {:.2} ms ({:.2}x)",
        reload.as_secs_f64() * 1e3,
        lat[0].len(),
        lat[1].len(),
        lat[2].len(),
        steady.as_secs_f64() * 1e3,
        during.as_secs_f64() * 1e3,
        during.as_secs_f64() / steady.as_secs_f64()
    );
    s.shutdown().await.unwrap();
}

/// Successful requests model `name` has served, by ModelStatistics.
async fn served(
    c: &mut pb::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >,
    name: &str,
) -> u64 {
    c.model_statistics(pb::ModelStatisticsRequest {
        name: name.into(),
        version: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .model_stats
    .iter()
    .map(|m| m.inference_count)
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_timer_reloads_a_changed_config_and_leaves_unchanged_models_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gray", 1, InputSpec::new(1, 28, 28), 1);
    write_model(dir.path(), "other", 1, InputSpec::new(1, 28, 28), 2);
    let flags = [
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ];
    let s = TestServer::start(Some(dir.path()), &flags).await;
    let mut c = s.kserve().await;
    for _ in 0..3 {
        c.model_infer(request("gray")).await.unwrap();
        c.model_infer(request("other")).await.unwrap();
    }
    let loads = |m: &str| format!(r#"rir_model_loads_total{{model="{m}",outcome="ready"}}"#);
    let (gray_loads, other_loads) = (
        s.metric(&loads("gray")).await,
        s.metric(&loads("other")).await,
    );
    assert_eq!((gray_loads, other_loads), (1.0, 1.0));

    // A person edits gray's config.pbtxt; nobody calls for a poll: the
    // server's own timer finds the change and serves the new setting.
    std::fs::write(dir.path().join("gray/config.pbtxt"), "max_batch_size: 4\n").unwrap();
    let edited = Instant::now();
    let max_batch = loop {
        let cfg = c
            .model_config(pb::ModelConfigRequest {
                name: "gray".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        if cfg.max_batch_size == Some(4) || edited.elapsed() > Duration::from_secs(15) {
            break cfg.max_batch_size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(max_batch, Some(4), "the edited config served within 15 s");
    assert_eq!(s.metric(&loads("gray")).await, gray_loads + 1.0);
    // The unchanged model kept its engines (no load) and its statistics,
    // through that poll and the ones after it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        s.metric(&loads("other")).await,
        other_loads,
        "an unchanged model was reloaded"
    );
    assert_eq!(
        served(&mut c, "other").await,
        3,
        "its statistics were reset"
    );
    assert_eq!(
        served(&mut c, "gray").await,
        0,
        "the reloaded version counts anew"
    );
    c.model_infer(request("other")).await.unwrap();
    assert_eq!(served(&mut c, "other").await, 4);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_control_refuses_what_a_page_of_another_site_can_send() {
    let (_dir, s) = explicit_gray().await;
    let unload = format!("{}/v2/repository/models/gray/unload", s.http_url);
    let host = s.http_url.trim_start_matches("http://").to_string();
    let same_origin = format!("http://{host}");
    // A form post (no preflight): refused by its content type, and a
    // fetch from another origin by its Origin; nothing is unloaded.
    for (headers, status) in [
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
        (vec![("content-type", "text/plain")], 415),
        (vec![("origin", "http://evil.example")], 403),
        (
            vec![("content-type", "application/json"), ("origin", "null")],
            403,
        ),
    ] {
        let r = call("POST", unload.clone(), &headers, b"{}".to_vec()).await;
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
        assert!(s.core().model_ready("gray", ""), "{headers:?} unloaded it");
    }
    // JSON from a client that is no browser, or from the server's own page.
    let own = [
        ("content-type", "application/json"),
        ("origin", same_origin.as_str()),
    ];
    let r = call("POST", unload.clone(), &own, b"{}".to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!s.core().model_ready("gray", ""));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_load_calls_for_one_model_costs_a_few_loads_not_one_each() {
    let (_dir, s) = explicit_gray().await;
    let loads = r#"rir_model_loads_total{model="rgb",outcome="ready"}"#;
    let coalesced = r#"rir_model_loads_coalesced_total{model="rgb"}"#;
    assert_eq!(s.metric(loads).await, 0.0);
    let mut clients = vec![];
    for _ in 0..12 {
        clients.push(s.kserve().await);
    }
    let mut calls = vec![];
    for mut c in clients {
        calls.push(tokio::spawn(async move {
            c.repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: "rgb".into(),
                ..Default::default()
            })
            .await
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // The first call loads rgb; each call that came while a load ran takes
    // the result of the next one: the 12 calls run a few loads (one, and
    // two or three on a busy machine), and every other call shares one.
    assert_eq!(s.metric(loads).await, 1.0);
    let shared = s.metric(coalesced).await;
    assert!(
        (9.0..=11.0).contains(&shared),
        "{shared} of 12 calls coalesced"
    );
    // A load asked for after the burst runs again (it may find new files).
    let mut c = s.kserve().await;
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: "rgb".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.metric(coalesced).await, shared);
    s.shutdown().await.unwrap();
}

//! Requests that decode into far more than they carry, sent over real
//! sockets to a server started as `rir-serve` starts: each is answered with
//! a clear status, raises the process's peak resident memory by less than
//! [`BOUND_MIB`], and leaves the server serving. A binary of its own: it
//! reads its own process's peak RSS, which other tests running beside it
//! would raise. The attacks are built as wire bytes (a prost message of
//! millions of entries would cost the client what it costs the server).

use rir_testkit::attacks::{
    CLASSIFY, MODEL_INFER, empty_entries, many_outputs_gzip, nested_arrays_gzip, raw_call,
};
use rir_testkit::requests::fp32_request;
use rir_testkit::web::call;
use rir_testserver::server::TestServer;
use tonic::Code;

/// The most one hostile request may add to the server's peak RSS, MiB.
const BOUND_MIB: u64 = 64;

/// What `attack` raised the peak RSS by over the RSS before it, MiB.
async fn growth_mib<F: std::future::Future<Output = ()>>(attack: F) -> u64 {
    rir_process::reset_peak("self").unwrap();
    let before = rir_process::resident_kib("self").unwrap();
    attack.await;
    let peak = rir_process::peak_resident_kib("self").unwrap();
    peak.saturating_sub(before) >> 10
}

/// One good call over each protocol still answers.
async fn still_serves(s: &TestServer) {
    let mut c = s.kserve().await;
    let r = c
        .model_infer(fp32_request("gray", 1, &[0.5; 784], true))
        .await
        .unwrap();
    assert_eq!(r.into_inner().outputs[0].shape, [1, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_decode_into_far_more_than_they_carry_are_refused_within_the_bound() {
    // Message and body limits of 16 MiB: four times what the defaults
    // derive for these models, so each attack gets room to grow.
    let s = TestServer::start(None, &["--max-message-bytes", "16777216"]).await;
    still_serves(&s).await;
    let url = s.url.clone();

    // 16 MB ModelInfer messages: 8 M empty inputs, then 8 M empty outputs
    // (2.6 GB and 0.9 GB decoded before the wire check).
    for (field, name) in [(5u8, "inputs"), (6, "outputs"), (7, "raw_input_contents")] {
        let message = empty_entries("gray", field, (16 << 20) - 16);
        let mut status = None;
        let call = async { status = Some(raw_call(&url, MODEL_INFER, message).await) };
        let mib = growth_mib(call).await;
        let status = status.unwrap();
        println!(
            "gRPC, 8 M empty {name}: {:?} {}; peak +{mib} MiB",
            status.code(),
            status.message()
        );
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(
            status.message().contains("more than 16 entries"),
            "{}",
            status.message()
        );
        assert!(mib < BOUND_MIB, "{name}: +{mib} MiB");
        still_serves(&s).await;
    }
    // Classify with 8 M empty images.
    let images = empty_entries("gray", 3, (16 << 20) - 16);
    let mut status = None;
    let mib = growth_mib(async { status = Some(raw_call(&url, CLASSIFY, images).await) }).await;
    let status = status.unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(mib < BOUND_MIB, "images: +{mib} MiB");

    // REST: a small gzip body that inflates to 16 MB of nested arrays
    // (4 M of them: 2.8 GB per 64 MB as serde_json::Value).
    let http = format!("{}/v2/models/gray/infer", s.http_url);
    let gzip = [
        ("content-encoding", "gzip"),
        ("content-type", "application/json"),
    ];
    for (what, body) in [
        ("nested arrays", nested_arrays_gzip("x", (16 << 20) - 64)),
        ("empty outputs", many_outputs_gzip(16 << 20)),
    ] {
        println!("REST {what}: {} bytes compressed", body.len());
        let mut reply = None;
        let mib = growth_mib(async {
            reply = Some(call("POST", http.clone(), &gzip, body).await);
        })
        .await;
        let reply = reply.unwrap();
        println!(
            "REST {what}: {} {}; peak +{mib} MiB",
            reply.status,
            reply.error()
        );
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert!(mib < BOUND_MIB, "{what}: +{mib} MiB");
        still_serves(&s).await;
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_memory_budget_sheds_requests_at_once_with_retry_after() {
    // A budget of one KiB: no request fits (each image is 6 KiB decoded).
    let s = TestServer::start(None, &["--max-inflight-mb", "0"]).await;
    let mut c = s.kserve().await;
    let e = c
        .model_infer(fp32_request("gray", 1, &[0.5; 784], true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("--max-inflight-mb"), "{}", e.message());
    let body = serde_json::json!({"inputs": [{"name": rir_contract::onnx::INPUT, "shape": [1, 1, 28, 28],
        "datatype": "FP32", "data": vec![0.5; 784]}]});
    let reply = call(
        "POST",
        format!("{}/v2/models/gray/infer", s.http_url),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    // A body is held to the budget before it is read: 2 KiB of what is
    // not even JSON is refused unread (503), not parsed (400).
    let unread = call(
        "POST",
        format!("{}/v2/models/gray/infer", s.http_url),
        &[("content-type", "application/json")],
        vec![b'{'; 2048],
    )
    .await;
    assert_eq!(unread.status, 503, "{}", unread.text());
    let shed = "rir_requests_shed_total{reason=\"memory\"}";
    assert_eq!(s.metric(shed).await, 3.0);
    assert_eq!(s.metric("rir_inflight_request_bytes").await, 0.0);
    s.shutdown().await.unwrap();
}

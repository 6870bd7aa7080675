//! OpenTelemetry traces over real sockets: rir-serve exports OTLP/gRPC to a
//! receiver this test starts on loopback, which decodes the protobuf; the
//! span tree, the caller's trace continued from `traceparent` (gRPC
//! metadata and HTTP header), the batch span's links (one request and
//! several, padded), an error's status, Classify's span, sampling at 0 and
//! at 0.5 with and without following callers, and when spans are sent
//! (every interval, and the rest at shutdown) are checked on what arrived.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use rir_testkit::doubles::otlp_sink::OtlpSink;
use rir_testkit::requests::fp32_request;
use rir_testkit::web::call;
use rir_testserver::server::TestServer;
use serde_json::json;

const GRPC_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GRPC_CALLER: &str = "00f067aa0ba902b7";
const HTTP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HTTP_CALLER: &str = "b7ad6b7169203331";

fn image(seed: u32) -> Vec<f32> {
    (0..784u32)
        .map(|i| ((i * 31 + seed) % 255) as f32 / 255.0)
        .collect()
}

fn with_traceparent<T>(message: T, trace: &str, parent: &str, flags: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{parent}-{flags}").parse().unwrap(),
    );
    r
}

fn attribute<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int(s: &Span, key: &str) -> i64 {
    match attribute(s, key) {
        Some(Any::IntValue(v)) => *v,
        other => panic!("{}: {key} = {other:?}", s.name),
    }
}

/// The children of `parent`, by name.
fn children<'a>(spans: &'a [Span], parent: &Span) -> HashMap<&'a str, &'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .map(|s| (s.name.as_str(), s))
        .collect()
}

/// The request span of the trace `trace` (hex), and its children.
fn request_in<'a>(spans: &'a [Span], trace: &str) -> (&'a Span, HashMap<&'a str, &'a Span>) {
    let id = hex::decode(trace).unwrap();
    let request = spans
        .iter()
        .find(|s| s.trace_id == id && s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span in trace {trace}: {spans:#?}"));
    (request, children(spans, request))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_export_their_span_tree_in_the_caller_s_trace() {
    let sink = OtlpSink::start().await.unwrap();
    let s = TestServer::start(None, &["--otlp-endpoint", &sink.endpoint]).await;
    let mut c = s.kserve().await;

    // gRPC, continuing the caller's trace.
    let req = fp32_request("gray", 1, &image(1), true);
    c.model_infer(with_traceparent(req, GRPC_TRACE, GRPC_CALLER, "01"))
        .await
        .unwrap();
    // HTTP, the same by header.
    let body = json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": image(2)}]});
    let traceparent = format!("00-{HTTP_TRACE}-{HTTP_CALLER}-01");
    let r = call(
        "POST",
        format!("{}/v2/models/gray/infer", s.http_url),
        &[
            ("content-type", "application/json"),
            ("traceparent", &traceparent),
        ],
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A burst of calls at once, without a caller's trace: batched together.
    let burst: Vec<_> = (0..12)
        .map(|k| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.model_infer(fp32_request("gray", 1, &image(10 + k), true))
                    .await
            })
        })
        .collect();
    for b in burst {
        b.await.unwrap().unwrap();
    }
    // A request the model refuses: its span says why.
    let mut bad = fp32_request("gray", 1, &image(3), true);
    bad.inputs[0].name = "pixels".into();
    let refused = c.model_infer(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // The drain exports what is buffered.
    s.shutdown().await.unwrap();
    // 14 requests answered (4 or 5 spans each, a batch span per engine
    // run) and the refused one.
    let spans = sink.wait_for(14 * 4 + 1, Duration::from_secs(10)).await;

    for (trace, caller) in [(GRPC_TRACE, GRPC_CALLER), (HTTP_TRACE, HTTP_CALLER)] {
        let (request, kids) = request_in(&spans, trace);
        assert_eq!(request.name, "ModelInfer");
        assert_eq!(hex::encode(&request.parent_span_id), caller, "{request:#?}");
        let mut names: Vec<&str> = kids.keys().copied().collect();
        names.sort_unstable();
        assert_eq!(names, ["batch", "decode", "encode", "queue"], "{trace}");
        let (decode, queue, batch, encode) =
            (kids["decode"], kids["queue"], kids["batch"], kids["encode"]);
        // In order, inside the request (the clock conversions round to a
        // few microseconds).
        let slack = 200_000;
        assert!(request.start_time_unix_nano <= decode.start_time_unix_nano + slack);
        assert!(decode.end_time_unix_nano <= queue.end_time_unix_nano + slack);
        assert!(queue.end_time_unix_nano <= batch.start_time_unix_nano + slack);
        assert!(batch.end_time_unix_nano <= encode.start_time_unix_nano + slack);
        assert!(encode.end_time_unix_nano <= request.end_time_unix_nano + slack);
        assert!(batch.links.iter().any(|l| l.span_id == request.span_id));
        assert_eq!(int(batch, "rir.batch.size"), 1);
        assert_eq!(int(batch, "rir.batch.padding"), 0);
        assert!(
            matches!(attribute(request, "rir.model"), Some(Any::StringValue(m)) if m == "gray")
        );
    }

    // Every answered request's span is linked from exactly one batch span,
    // and each batch span counts the requests it links.
    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "ModelInfer"
                && s.status
                    .as_ref()
                    .is_none_or(|st| st.code != StatusCode::Error as i32)
        })
        .collect();
    assert_eq!(requests.len(), 14, "{requests:#?}");
    let batches: Vec<&Span> = spans.iter().filter(|s| s.name == "batch").collect();
    for r in &requests {
        let linked = batches
            .iter()
            .filter(|b| b.links.iter().any(|l| l.span_id == r.span_id))
            .count();
        assert_eq!(
            linked,
            1,
            "request {} in {linked} batches",
            hex::encode(&r.span_id)
        );
    }
    // A batch span is a child of the first request it links.
    let mut images = 0;
    for b in &batches {
        assert_eq!(int(b, "rir.batch.requests") as usize, b.links.len());
        assert_eq!(b.links[0].span_id, b.parent_span_id);
        images += int(b, "rir.batch.size");
    }
    assert_eq!(images, 14);

    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0]
            .status
            .as_ref()
            .unwrap()
            .message
            .contains("pixels"),
        "{failed:#?}"
    );
    sink.shutdown().await;
}

/// Five unsampled-by-nobody calls, one from a caller that did not sample,
/// one from a caller that did; the spans exported.
async fn ratio_zero_with(follow: bool) -> Vec<Span> {
    let sink = OtlpSink::start().await.unwrap();
    let mut flags = vec![
        "--otlp-endpoint",
        &sink.endpoint,
        "--trace-sample-ratio",
        "0",
    ];
    if follow {
        flags.push("--trace-follow-caller");
    }
    let s = TestServer::start(None, &flags).await;
    let mut c = s.kserve().await;
    for k in 0..5 {
        c.model_infer(fp32_request("gray", 1, &image(k), true))
            .await
            .unwrap();
    }
    let req = fp32_request("gray", 1, &image(7), true);
    c.model_infer(with_traceparent(req, GRPC_TRACE, GRPC_CALLER, "00"))
        .await
        .unwrap();
    let req = fp32_request("gray", 1, &image(8), true);
    c.model_infer(with_traceparent(req, HTTP_TRACE, HTTP_CALLER, "01"))
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let spans = sink.wait_for(5, Duration::from_secs(3)).await;
    sink.shutdown().await;
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_exports_nothing_and_a_caller_is_followed_only_when_allowed() {
    // By default the ratio decides for every request: a caller that
    // sampled its trace cannot make the server trace (and export) at will.
    let spans = ratio_zero_with(false).await;
    assert!(spans.is_empty(), "{spans:#?}");
    // With --trace-follow-caller, a sampled caller is followed (W3C
    // parent-based sampling) and an unsampled one is not.
    let spans = ratio_zero_with(true).await;
    let traces: Vec<String> = spans.iter().map(|s| hex::encode(&s.trace_id)).collect();
    assert!(traces.iter().all(|t| t == HTTP_TRACE), "{traces:?}");
    assert_eq!(
        spans.len(),
        5,
        "the followed request's tree only: {spans:#?}"
    );
    // Without an endpoint nothing is traced at all (the default), and a
    // ratio outside 0..1 is refused at start.
    let err = rir_server::Args::try_parse_from(["rir-serve", "--trace-sample-ratio", "1.5"])
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
    assert!(err.contains("--trace-sample-ratio 1.5"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_http_carries_the_same_spans() {
    let sink = OtlpSink::start().await.unwrap();
    let s = TestServer::start(
        None,
        &[
            "--otlp-endpoint",
            &sink.http_endpoint,
            "--otlp-protocol",
            "http-protobuf",
        ],
    )
    .await;
    let mut c = s.kserve().await;
    let req = fp32_request("gray", 1, &image(1), true);
    c.model_infer(with_traceparent(req, GRPC_TRACE, GRPC_CALLER, "01"))
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let spans = sink.wait_for(5, Duration::from_secs(10)).await;
    let (request, kids) = request_in(&spans, GRPC_TRACE);
    assert_eq!(hex::encode(&request.parent_span_id), GRPC_CALLER);
    assert_eq!(kids.len(), 4, "{spans:#?}");
    sink.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_several_requests_links_each_and_a_ratio_samples_its_share() {
    // A 300 ms queue delay batches five concurrent calls into one engine
    // run (inline runs are off with a delay); with one session per bucket
    // (1, 2, 4, 8) the five images run padded to 8. A ratio of 0.5 samples
    // about half of 200 calls; Classify calls have their own request span.
    let sink = OtlpSink::start().await.unwrap();
    let flags = [
        "--otlp-endpoint",
        &sink.endpoint,
        "--max-queue-delay-us",
        "300000",
        "--max-batch",
        "8",
        "--session-per-bucket",
        "true",
    ];
    let s = TestServer::start(None, &flags).await;
    let c = s.kserve().await;
    let burst: Vec<_> = (0..5)
        .map(|k| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.model_infer(fp32_request("gray", 1, &image(k), true))
                    .await
            })
        })
        .collect();
    for b in burst {
        b.await.unwrap().unwrap();
    }
    let png = rir_testkit::images::png(28, 28, false);
    let mut classifier = s.classifier().await;
    classifier
        .classify(rir_proto::classify::ClassifyRequest {
            model_name: "gray".into(),
            images: vec![png],
            top_k: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let spans = sink.wait_for(5 * 4 + 1, Duration::from_secs(10)).await;
    sink.shutdown().await;
    let batches: Vec<&Span> = spans
        .iter()
        .filter(|b| b.name == "batch" && int(b, "rir.batch.requests") > 1)
        .collect();
    assert_eq!(batches.len(), 1, "one batch of the five: {batches:#?}");
    let b = batches[0];
    assert_eq!(int(b, "rir.batch.requests"), 5);
    assert_eq!(b.links.len(), 5);
    assert_eq!(int(b, "rir.batch.size"), 5, "one image per request");
    assert_eq!(int(b, "rir.batch.padding"), 8 - 5, "padded to bucket 8");
    assert_eq!(int(b, "rir.engine.instance"), 0);
    assert!(matches!(
        attribute(b, "rir.inline"),
        Some(Any::BoolValue(false))
    ));
    // Every request a batch links is a ModelInfer span of this export.
    for l in &b.links {
        let r = spans
            .iter()
            .find(|s| s.span_id == l.span_id)
            .expect("linked span");
        assert_eq!(r.name, "ModelInfer");
        assert!(matches!(
            attribute(r, "rir.model_version"),
            Some(Any::StringValue(_))
        ));
    }
    assert!(
        spans.iter().any(|s| s.name == "Classify"),
        "no Classify span"
    );

    // A ratio between 0 and 1: a binomial(200, 0.5) share of 200 calls.
    let sampled = at_half(&[], &[]).await.len();
    assert!(
        (60..=140).contains(&sampled),
        "{sampled} of 200 sampled at 0.5"
    );
}

/// A server at `--trace-sample-ratio 0.5` with `flags` gets one call from
/// each of `callers` (trace id, traceparent flags), then 200 calls without
/// a traceparent; the trace ids of the request spans exported. Of the 200,
/// a binomial(200, 0.5) share is sampled: 60 to 140 holds with probability
/// 1 - 2e-8.
async fn at_half(flags: &[&str], callers: &[(String, String)]) -> Vec<String> {
    let sink = OtlpSink::start().await.unwrap();
    let mut all = vec![
        "--otlp-endpoint",
        &sink.endpoint,
        "--trace-sample-ratio",
        "0.5",
    ];
    all.extend_from_slice(flags);
    let s = TestServer::start(None, &all).await;
    let mut c = s.kserve().await;
    for (k, (trace, flags)) in callers.iter().enumerate() {
        let req = fp32_request("gray", 1, &image(k as u32), true);
        c.model_infer(with_traceparent(req, trace, GRPC_CALLER, flags))
            .await
            .unwrap();
    }
    for k in 0..200 {
        c.model_infer(fp32_request("gray", 1, &image(k), true))
            .await
            .unwrap();
    }
    s.shutdown().await.unwrap();
    // The drain exported everything at shutdown: wait for all that comes
    // (at most five spans a call).
    let spans = sink
        .wait_for((callers.len() + 200) * 5, Duration::from_secs(3))
        .await;
    sink.shutdown().await;
    spans
        .iter()
        .filter(|s| s.name == "ModelInfer")
        .map(|s| hex::encode(&s.trace_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_callers_at_half_keeps_every_sampled_caller_and_half_the_rest() {
    // --trace-follow-caller at 0.5: a caller that sampled is always
    // followed, one that did not never is, and requests without a
    // traceparent are sampled at the ratio (binomial(200, 0.5): 60 to 140
    // holds with probability 1 - 2e-8).
    let caller = |k: u32, flags: &str| (format!("{:032x}", 0x5eed_0000 + k), flags.to_string());
    let callers: Vec<(String, String)> = (0..40)
        .map(|k| caller(k, if k % 2 == 0 { "01" } else { "00" }))
        .collect();
    let requests = at_half(&["--trace-follow-caller"], &callers).await;
    for (trace, flags) in &callers {
        let exported = requests.iter().filter(|t| *t == trace).count();
        let want = usize::from(flags == "01");
        assert_eq!(exported, want, "caller {trace} with flags {flags}");
    }
    let own = requests
        .iter()
        .filter(|t| !callers.iter().any(|(c, _)| c == *t))
        .count();
    assert!((60..=140).contains(&own), "{own} of 200 sampled at 0.5");
}

/// Spans of one call that reached `sink` before the server stopped, and
/// after: `interval` is --otlp-export-interval-ms.
async fn exported_before_and_after_shutdown(interval: &str) -> (usize, usize) {
    let sink = OtlpSink::start().await.unwrap();
    let flags = [
        "--otlp-endpoint",
        &sink.endpoint,
        "--otlp-export-interval-ms",
        interval,
    ];
    let s = TestServer::start(None, &flags).await;
    let mut c = s.kserve().await;
    c.model_infer(fp32_request("gray", 1, &image(3), true))
        .await
        .unwrap();
    let before = sink.wait_for(5, Duration::from_secs(2)).await.len();
    s.shutdown().await.unwrap();
    let after = sink.wait_for(5, Duration::from_secs(3)).await.len();
    sink.shutdown().await;
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_sent_every_interval_and_the_rest_at_shutdown() {
    // Every 100 ms: a call's five spans arrive while the server runs.
    assert_eq!(exported_before_and_after_shutdown("100").await, (5, 5));
    // Every 10 minutes: nothing in the first two seconds; the shutdown
    // sends them.
    assert_eq!(exported_before_and_after_shutdown("600000").await, (0, 5));
    // An interval of 0 is refused by the flag parser.
    let err = rir_server::Args::try_parse_from(["rir-serve", "--otlp-export-interval-ms", "0"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--otlp-export-interval-ms"), "{err}");
}

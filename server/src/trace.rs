//! OpenTelemetry traces of inference requests, exported over OTLP (gRPC or
//! HTTP/protobuf) when `--otlp-endpoint` is given, off otherwise.
//!
//! A sampled request has a server span (`ModelInfer`) with a child for each
//! stage it went through: `decode` (the request's tensor to the model's
//! input), `queue` (waiting for an engine), `encode` (the outputs asked
//! for). Each engine run is one `batch` span, a child of the first sampled
//! request that rode in it and linked to every sampled request in it, with
//! the batch's size, padding and engine instance as attributes. A caller's
//! W3C `traceparent` (gRPC metadata or HTTP header) makes the request span
//! a child of the caller's, in the caller's trace; the sampler follows the
//! caller's sampled flag and, for requests without one, samples
//! `--trace-sample-ratio` of the traces.
//!
//! Spans are built from the times the request path measures anyway (the
//! same as the statistics), with explicit start and end times, so a
//! request that is not sampled costs one sampling decision and nothing
//! else; export runs on the SDK's own thread, in batches.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};

/// How traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP receiver (a collector, Jaeger, Tempo ...); `None`: no traces.
    pub(crate) endpoint: Option<String>,
    /// OTLP over gRPC or over HTTP with protobuf bodies.
    pub(crate) protocol: OtlpProtocol,
    /// Share of requests sampled, 0 to 1.
    pub(crate) sample_ratio: f64,
    /// A caller's sampled traceparent makes its request sampled whatever
    /// the ratio (OpenTelemetry's parent-based sampling). Off, the ratio
    /// decides alone, so a caller cannot make the server trace at will.
    pub(crate) follow_caller: bool,
    /// Between exports of the finished spans (all that are left go at
    /// shutdown).
    pub(crate) export_every: Duration,
}

/// Longest span attribute or status text, bytes: model names and error
/// messages come from clients, and a span holds them until exported.
pub(crate) const MAX_TEXT: usize = 256;

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
pub(crate) fn clip(text: &str) -> String {
    crate::error::clip(text, MAX_TEXT)
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sample_ratio: 1.0,
            follow_caller: false,
            export_every: EXPORT_EVERY,
        }
    }
}

/// The OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OtlpProtocol {
    /// OTLP/gRPC (a collector's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318; `/v1/traces` is added to
    /// an endpoint without a path).
    HttpProtobuf,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The exporter could not be built from the endpoint.
    #[error("--otlp-endpoint {endpoint}: {reason}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// What the exporter said.
        reason: String,
    },
}

/// The server's tracer: where request and batch spans are made (cheap to
/// clone: every traced request carries one to its batch).
#[derive(Debug, Clone)]
pub struct Tracing(Arc<Exporting>);

#[derive(Debug)]
struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// The ratio the server draws every request's sampling with, when
    /// callers do not decide it.
    draw: Option<f64>,
}

/// A draw that comes out true with probability `ratio`.
fn drawn(ratio: f64) -> bool {
    use std::hash::BuildHasher;
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if ratio >= 1.0 {
        return true;
    }
    let n = DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bits = std::collections::hash_map::RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - ratio
}

impl Tracing {
    /// Starts the exporter `config` asks for (inside the server's runtime:
    /// the gRPC exporter's connection lives there); `None` without an
    /// endpoint.
    pub fn start(config: &TraceConfig) -> Result<Option<Tracing>, TraceError> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(None);
        };
        let built = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(http_traces_url(endpoint))
                .with_http_client(OnRuntime {
                    client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
                    runtime: tokio::runtime::Handle::current(),
                })
                .build(),
        };
        let exporter = built.map_err(|e| TraceError::Exporter {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(EXPORT_QUEUE)
            .with_max_export_batch_size(EXPORT_BATCH)
            .with_scheduled_delay(config.export_every)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(match config.follow_caller {
                true => {
                    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)))
                }
                // The draw in `request` has decided already.
                false => Sampler::AlwaysOn,
            })
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("rir-serve")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("rir-serve");
        tracing::info!(
            endpoint,
            protocol = ?config.protocol,
            sample_ratio = config.sample_ratio,
            "exporting OpenTelemetry traces"
        );
        let draw = (!config.follow_caller).then_some(config.sample_ratio);
        Ok(Some(Tracing(Arc::new(Exporting {
            provider,
            tracer,
            draw,
        }))))
    }

    /// Exports what is still buffered and stops the exporter (blocking:
    /// call it off the async workers).
    pub fn shutdown(&self) {
        if let Err(e) = self
            .0
            .provider
            .shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!("trace export at shutdown: {e}");
        }
    }

    /// The caller's trace context from W3C `traceparent`/`tracestate`
    /// headers (gRPC metadata or HTTP), or an empty one.
    pub(crate) fn parent_of(headers: &http::HeaderMap) -> Context {
        TraceContextPropagator::new().extract(&Headers(headers))
    }

    /// Starts the server span of a request, now; `None` when the request
    /// is not sampled (nothing more is done for it then, `attributes` are
    /// not even made).
    pub(crate) fn request(
        &self,
        name: &'static str,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<RequestTrace> {
        if self.0.draw.is_some_and(|ratio| !drawn(ratio)) {
            return None;
        }
        let tracer = &self.0.tracer;
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, parent);
        if !span.span_context().is_sampled() {
            return None;
        }
        span.set_attributes(attributes());
        Some(RequestTrace {
            tracing: self.clone(),
            span,
        })
    }

    /// One engine run: a child of `parent`, linked to every request in it.
    fn batch(
        &self,
        parent: &SpanContext,
        links: Vec<Link>,
        from: Instant,
        to: Instant,
        attributes: Vec<KeyValue>,
    ) {
        let cx = Context::new().with_remote_span_context(parent.clone());
        let tracer = &self.0.tracer;
        let mut span = tracer
            .span_builder("batch")
            .with_kind(SpanKind::Internal)
            .with_start_time(wall(from))
            .with_links(links)
            .with_attributes(attributes)
            .start_with_context(tracer, &cx);
        span.end_with_timestamp(wall(to));
    }
}

/// A sampled request's server span, and what its children are made with.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    tracing: Tracing,
    span: Span,
}

impl RequestTrace {
    /// Where the batch that runs this request finds its span (boxed: it
    /// rides in every queued request, traced or not, as an `Option`).
    pub(crate) fn handle(&self) -> Box<BatchLink> {
        Box::new(BatchLink {
            tracing: self.tracing.clone(),
            parent: self.span.span_context().clone(),
        })
    }

    /// A child span over `from..to`.
    pub(crate) fn stage(&self, name: &'static str, from: Instant, to: Instant) {
        let cx = Context::new().with_remote_span_context(self.span.span_context().clone());
        let tracer = &self.tracing.0.tracer;
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(wall(from))
            .start_with_context(tracer, &cx);
        span.end_with_timestamp(wall(to));
    }

    /// Ends the request span now, with an error status when it failed.
    pub(crate) fn end(mut self, error: Option<&str>) {
        if let Some(e) = error {
            self.span.set_status(Status::error(clip(e)));
        }
        self.span.end();
    }
}

/// What a queued request carries for the batch span of the run it rides in.
#[derive(Debug, Clone)]
pub struct BatchLink {
    tracing: Tracing,
    parent: SpanContext,
}

/// Records the batch span of one engine run over `from..to`, if any of
/// its requests is sampled: a child of the first, linked to all.
pub(crate) fn record_batch<'a>(
    links: impl Iterator<Item = &'a BatchLink>,
    from: Instant,
    to: Instant,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) {
    let mut links = links.peekable();
    let Some(first) = links.peek().map(|l| (l.tracing.clone(), l.parent.clone())) else {
        return;
    };
    let all = links
        .map(|l| Link::with_context(l.parent.clone()))
        .collect();
    first.0.batch(&first.1, all, from, to, attributes());
}

/// The wall-clock time of `at` (spans carry wall time; the request path
/// measures with the monotonic clock).
fn wall(at: Instant) -> SystemTime {
    let now = SystemTime::now();
    let ago = Instant::now().saturating_duration_since(at);
    now.checked_sub(ago).unwrap_or(now)
}

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans held for export at most; more are dropped (and the SDK logs it).
/// A request makes four or five, so this holds about a second of a
/// saturated 2-core server at every request sampled.
const EXPORT_QUEUE: usize = 16_384;

/// Spans per export call.
const EXPORT_BATCH: usize = 2_048;

/// Between exports by default (the SDK's default is 5 s; a shorter wait
/// keeps the queue short at high rates).
pub(crate) const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// OTLP/HTTP's client: hyper's, run on the server's runtime. The SDK
/// exports from a thread of its own, where hyper would find no reactor.
#[derive(Debug)]
struct OnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Handle,
}

#[tonic::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

/// The URL OTLP/HTTP posts traces to: `/v1/traces` on an endpoint given
/// without a path, the endpoint as it is otherwise.
fn http_traces_url(endpoint: &str) -> String {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.path(), "" | "/") => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_string(),
    }
}

/// Header lookup for the W3C propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_s_traceparent_is_read_from_headers() {
        let cx = caller(true);
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), CALLER_TRACE);
        assert_eq!(sc.span_id().to_string(), CALLER_SPAN);
        assert!(sc.is_sampled() && sc.is_remote());
        let none = Tracing::parent_of(&http::HeaderMap::new());
        assert!(!none.span().span_context().is_valid());
    }

    /// The trace and span of the caller in [`caller`]'s `traceparent`.
    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    fn config(
        endpoint: Option<String>,
        protocol: OtlpProtocol,
        ratio: f64,
        follow: bool,
    ) -> TraceConfig {
        TraceConfig {
            endpoint,
            protocol,
            sample_ratio: ratio,
            follow_caller: follow,
            // Nothing goes before the shutdown sends it.
            export_every: Duration::from_secs(3600),
        }
    }

    fn exporting(protocol: OtlpProtocol, sample_ratio: f64, follow_caller: bool) -> Tracing {
        // Nothing listens there; nothing is exported before shutdown.
        let endpoint = Some("http://127.0.0.1:9".into());
        Tracing::start(&config(endpoint, protocol, sample_ratio, follow_caller))
            .unwrap()
            .expect("an endpoint starts an exporter")
    }

    fn caller(sampled: bool) -> Context {
        let mut h = http::HeaderMap::new();
        let flags = if sampled { "01" } else { "00" };
        let header = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}");
        h.insert("traceparent", header.parse().unwrap());
        Tracing::parent_of(&h)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_ratio_decides_alone_unless_the_caller_is_followed() {
        let off = config(None, OtlpProtocol::Grpc, 1.0, false);
        assert!(
            Tracing::start(&off).unwrap().is_none(),
            "no endpoint, no exporter"
        );
        let sampled =
            |t: &Tracing, parent: &Context| t.request("ModelInfer", parent, Vec::new).is_some();
        let root = Context::new();
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            let t = |ratio, follow| exporting(protocol, ratio, follow);
            // The ratio alone: 1 samples a request, 0 none, a caller's
            // sampled flag or not.
            assert!(sampled(&t(1.0, false), &root));
            assert!(sampled(&t(1.0, false), &caller(false)));
            assert!(!sampled(&t(0.0, false), &root));
            assert!(!sampled(&t(0.0, false), &caller(true)));
            // Following the caller: its flag decides; the ratio decides
            // the requests that come without one.
            assert!(sampled(&t(0.0, true), &caller(true)));
            assert!(!sampled(&t(1.0, true), &caller(false)));
            assert!(sampled(&t(1.0, true), &root));
            assert!(!sampled(&t(0.0, true), &root));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_stages_and_batches_reach_a_receiver_as_built_over_both_protocols() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::trace::v1::Span as Sent;
        use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;
        use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
        let attribute = |s: &Sent, key: &str| {
            let a = s.attributes.iter().find(|a| a.key == key);
            a.and_then(|a| a.value.clone()).and_then(|v| v.value)
        };
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            let sink = rir_testkit::doubles::otlp_sink::OtlpSink::start()
                .await
                .unwrap();
            let endpoint = match protocol {
                OtlpProtocol::Grpc => sink.endpoint.clone(),
                OtlpProtocol::HttpProtobuf => sink.http_endpoint.clone(),
            };
            let t = Tracing::start(&config(Some(endpoint), protocol, 1.0, false))
                .unwrap()
                .unwrap();
            let model = || vec![KeyValue::new("model", "gray")];
            let infer = t.request("ModelInfer", &caller(true), model).unwrap();
            let classify = t.request("Classify", &Context::new(), Vec::new).unwrap();
            let t0 = Instant::now() - Duration::from_millis(50);
            let ms = |n| t0 + Duration::from_millis(n);
            infer.stage("queue", ms(0), ms(10));
            let links = [infer.handle(), classify.handle()];
            let size = || vec![KeyValue::new("batch.size", 2i64)];
            record_batch(links.iter().map(|l| &**l), ms(10), ms(30), size);
            record_batch(std::iter::empty(), ms(0), ms(1), || {
                unreachable!("no batch")
            });
            infer.end(None);
            classify.end(Some("engine failed"));
            tokio::task::spawn_blocking(move || t.shutdown())
                .await
                .unwrap();
            let spans = sink.wait_for(4, Duration::from_secs(5)).await;
            let by = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
            let names: std::collections::BTreeSet<&str> =
                spans.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["Classify", "ModelInfer", "batch", "queue"].into());
            assert_eq!(spans.len(), 4, "{protocol:?}: one each");
            let (infer, classify) = (by("ModelInfer"), by("Classify"));
            // The request: the caller's child in the caller's trace.
            assert_eq!(infer.trace_id, hex::decode(CALLER_TRACE).unwrap());
            assert_eq!(infer.parent_span_id, hex::decode(CALLER_SPAN).unwrap());
            assert_eq!(infer.kind, Kind::Server as i32);
            assert_eq!(
                attribute(infer, "model"),
                Some(Value::StringValue("gray".into()))
            );
            assert_ne!(
                infer.status.as_ref().map(|s| s.code),
                Some(StatusCode::Error as i32)
            );
            // Without a caller: a trace of its own; a failure is its status.
            assert!(classify.parent_span_id.is_empty() && classify.trace_id != infer.trace_id);
            let status = classify.status.as_ref().unwrap();
            assert_eq!(
                (status.code, status.message.as_str()),
                (StatusCode::Error as i32, "engine failed")
            );
            // The stage and the batch: children of the first request, over
            // the times given; the batch linked to both requests.
            for (name, ns) in [("queue", 10_000_000), ("batch", 20_000_000)] {
                let s = by(name);
                assert_eq!(
                    (&s.trace_id, &s.parent_span_id),
                    (&infer.trace_id, &infer.span_id)
                );
                assert_eq!(s.kind, Kind::Internal as i32);
                let took = s.end_time_unix_nano as i64 - s.start_time_unix_nano as i64;
                assert!((took - ns).abs() < 1_000_000, "{name} took {took} ns");
            }
            let batch = by("batch");
            let linked: Vec<_> = batch.links.iter().map(|l| l.span_id.clone()).collect();
            assert_eq!(linked, [infer.span_id.clone(), classify.span_id.clone()]);
            assert_eq!(attribute(batch, "batch.size"), Some(Value::IntValue(2)));
            sink.shutdown().await;
        }
    }

    #[test]
    fn the_draw_comes_out_true_at_the_ratio() {
        // 20,000 draws: binomial standard deviations 42 at 0.1 and 71 at
        // 0.5; the bounds are six of them wide (a false failure about once
        // in 500 million runs).
        let share = |ratio: f64| (0..20_000).filter(|_| drawn(ratio)).count();
        assert_eq!(share(1.0), 20_000);
        assert_eq!(share(0.0), 0);
        let tenth = share(0.1);
        assert!((1_750..=2_250).contains(&tenth), "{tenth} of 20,000 at 0.1");
        let half = share(0.5);
        assert!((9_575..=10_425).contains(&half), "{half} of 20,000 at 0.5");
    }

    #[test]
    fn texts_from_clients_are_cut_at_a_character_boundary() {
        assert_eq!(clip("gray"), "gray");
        // 200 two-byte characters: 400 bytes, cut to 128 of them (256
        // bytes) and marked.
        let long = "é".repeat(200);
        assert_eq!(clip(&long), format!("{}…", "é".repeat(128)));
        // A cut inside a character backs off to its start.
        let text = format!("a{}", "é".repeat(200));
        assert_eq!(clip(&text), format!("a{}…", "é".repeat(127)));
    }

    #[test]
    fn an_http_endpoint_without_a_path_posts_to_v1_traces() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/otlp/v1/traces"),
            "http://c:4318/otlp/v1/traces"
        );
    }
}

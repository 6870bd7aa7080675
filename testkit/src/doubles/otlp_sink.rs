//! An OTLP trace receiver on free loopback ports, OTLP/gRPC on one and
//! OTLP/HTTP (protobuf bodies, `POST /v1/traces`) on another, that keeps
//! every span it is sent: what the tests check rir-serve's spans against,
//! and where the tracing benchmark's spans go (a collector's receiving
//! end, without the collector).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// A running receiver.
pub struct OtlpSink {
    /// `http://127.0.0.1:PORT` of OTLP/gRPC, what `--otlp-endpoint` takes.
    pub endpoint: String,
    /// `http://127.0.0.1:PORT` of OTLP/HTTP (with `--otlp-protocol http-protobuf`).
    pub http_endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
}

/// Keeps the spans of one export request.
fn keep(into: &Mutex<Vec<Span>>, request: ExportTraceServiceRequest) {
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    into.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(spans);
}

/// Answers one OTLP/HTTP request: 200 with an empty response for a
/// protobuf export to `/v1/traces`, 400 or 404 otherwise.
async fn http_export(
    spans: Arc<Mutex<Vec<Span>>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let status = if request.uri().path() != "/v1/traces" {
        404
    } else {
        let body = request.into_body().collect().await?.to_bytes();
        match ExportTraceServiceRequest::decode(body) {
            Ok(r) => {
                keep(&spans, r);
                200
            }
            Err(_) => 400,
        }
    };
    let body = ExportTraceServiceResponse {
        partial_success: None,
    }
    .encode_to_vec();
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// The service: appends what each export carries.
struct Keep(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Keep {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        keep(&self.0, request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpSink {
    /// Starts the receiver.
    pub async fn start() -> std::io::Result<OtlpSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(Mutex::new(vec![]));
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = TraceServiceServer::new(Keep(spans.clone()));
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("OTLP sink: {e}");
            }
        });
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_endpoint = format!("http://{}", http.local_addr()?);
        let kept = spans.clone();
        let http_task = tokio::spawn(async move {
            while let Ok((stream, _)) = http.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| http_export(kept.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(OtlpSink {
            endpoint,
            http_endpoint,
            spans,
            stop: Some(tx),
            task,
            http_task,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many spans have arrived.
    pub fn count(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until at least `n` spans have arrived or `within` has passed,
    /// and returns what has.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Span> {
        let deadline = Instant::now() + within;
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.spans()
    }

    /// Stops the receiver.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.http_task.abort();
    }
}

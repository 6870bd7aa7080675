//! Wiring the gRPC services into a running server: message-size limits,
//! optional TLS and bearer-token auth, health and reflection, the metrics
//! endpoint, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rir_proto::classify::image_classifier_server::ImageClassifierServer;
use rir_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use crate::conn::Gate;
use crate::core::Core;
use crate::service::Service;
use crate::stats::Metrics;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// PEM certificate and key for TLS, if TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With TLS: a PEM CA bundle; clients must then present a certificate
    /// it signed (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Bearer token every call must carry, if auth is on.
    pub auth_token: Option<String>,
    /// Admission of connections (None: every connection is taken).
    pub gate: Option<Gate>,
    /// HTTP/2 settings.
    pub http2: Http2Settings,
}

/// The HTTP/2 settings that bound what one connection may hold or cost.
#[derive(Debug, Clone, Copy)]
pub struct Http2Settings {
    /// Streams (calls) open at once on one connection; more are refused
    /// with REFUSED_STREAM, which clients retry.
    pub max_concurrent_streams: u32,
    /// Size of a request's headers (HPACK-decoded), bytes.
    pub max_header_list_bytes: u32,
    /// Ping an idle connection this often ...
    pub keepalive_interval: Duration,
    /// ... and close it when a ping goes unanswered this long.
    pub keepalive_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 1024,
            max_header_list_bytes: 16 << 10,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Rewrites tonic's OUT_OF_RANGE for an oversized message into
/// RESOURCE_EXHAUSTED, the status gRPC specifies (and clients expect) for a
/// message over the receive limit.
fn oversized_to_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let oversized = res.headers().get("grpc-status").is_some_and(|v| v == "11")
        && res
            .headers()
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if oversized {
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

fn check_token(
    expected: Option<Arc<str>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(token) = &expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let ok = bearer_matches(given, token);
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
            ))
        }
    }
}

/// Whether an `authorization` value is `Bearer <token>`, compared in
/// constant time. Both front ends check tokens with it.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `state` on `listener` until `shutdown` resolves, then marks the
/// server not ready, stops accepting and lets in-flight calls finish.
pub async fn serve(
    state: Arc<Core>,
    transport: &TransportConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let service = Service {
        core: state.clone(),
    };
    let limit = transport.max_message_bytes;
    let auth = check_token(transport.auth_token.as_deref().map(Arc::from));
    let inference = GrpcInferenceServiceServer::new(service.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let classifier = ImageClassifierServer::new(service)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<GrpcInferenceServiceServer<Service>>()
        .await;
    health.set_serving::<ImageClassifierServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rir_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let h2 = transport.http2;
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(h2.max_concurrent_streams)
        .http2_max_header_list_size(h2.max_header_list_bytes)
        .http2_keepalive_interval(Some(h2.keepalive_interval))
        .http2_keepalive_timeout(Some(h2.keepalive_timeout));
    if let Some((cert, key)) = &transport.tls {
        let cert =
            std::fs::read(cert).map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        let key = std::fs::read(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        if let Some(ca) = &transport.tls_client_ca {
            let pem =
                std::fs::read(ca).map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let drain_state = state.clone();
    let on_shutdown = async move {
        shutdown.await;
        drain_state.ready.store(false, Ordering::SeqCst);
        health
            .set_not_serving::<GrpcInferenceServiceServer<Service>>()
            .await;
        health
            .set_not_serving::<ImageClassifierServer<Service>>()
            .await;
        tracing::info!("shutting down: not ready, no new connections, finishing calls in flight");
    };
    let router = builder
        .layer(tower::util::MapResponseLayer::new(
            oversized_to_resource_exhausted,
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            inference,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            classifier, auth,
        ))
        .add_service(health_service)
        .add_service(reflection);
    let served = match &transport.gate {
        Some(gate) => {
            use tokio_stream::StreamExt;
            let admitted = tokio_stream::wrappers::ReceiverStream::new(gate.admit(listener))
                .map(Ok::<_, std::io::Error>);
            router
                .serve_with_incoming_shutdown(admitted, on_shutdown)
                .await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, on_shutdown)
                .await
        }
    };
    served.map_err(|e| format!("gRPC server: {e}"))
}

/// The `authorization` header of a raw HTTP/1 request head, if any.
fn authorization_of(head: &[u8]) -> Option<&str> {
    std::str::from_utf8(head)
        .ok()?
        .split("\r\n")
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| value.trim())
        })
}

/// Serves the Prometheus text format on `listener` (any path), until the
/// task is dropped. With `token`, a scrape must carry `Authorization:
/// Bearer <token>` (Prometheus's `authorization` or `bearer_token` scrape
/// settings) or gets 401.
pub async fn serve_metrics(metrics: Arc<Metrics>, listener: TcpListener, token: Option<Arc<str>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, token) = (metrics.clone(), token.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let allowed = token
                .as_deref()
                .is_none_or(|t| bearer_matches(authorization_of(&buf[..n]), t));
            let (status, body) = if allowed {
                ("200 OK", metrics.render())
            } else {
                (
                    "401 Unauthorized",
                    "missing or wrong bearer token (header `Authorization: Bearer <token>`)\n"
                        .to_string(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// One shutdown signal that every front end waits on: `send(true)` on the
/// sender, and each [`Stop::wait`] future resolves.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// A signal and the sender that raises it.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Stop(rx))
    }

    /// Resolves once the signal is raised (or its sender is gone).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// The address a listener is bound to, for logs.
pub fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a: SocketAddr| a.to_string())
}

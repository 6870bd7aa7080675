//! The gRPC front end: KServe v2 / Triton `inference.GRPCInferenceService`
//! and `rir.v1.ImageClassifier` ([`service`]), with message-size limits,
//! optional TLS and bearer-token auth, grpc.health.v1, server reflection,
//! HTTP/2 limits, and graceful shutdown.

pub(crate) mod service;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rir_proto::classify::image_classifier_server::ImageClassifierServer;
use rir_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tonic::{Request, Status};

use crate::auth::bearer_matches;
use crate::conn::{AdmittedInfo, Gate};
use crate::core::Core;
use crate::error::ServerError;
use crate::limits::MessageLimits;
use crate::stall;
use service::Service;

/// Settings of the gRPC front end.
#[derive(Debug, Clone)]
pub(crate) struct GrpcConfig {
    /// Largest request or response message, bytes (None: sized from the
    /// models, [`crate::limits`]).
    pub(crate) max_message_bytes: Option<usize>,
    /// End a call whose request message stops arriving for this long
    /// (zero: never); the HTTP front end takes the same for its bodies.
    pub(crate) body_timeout: Duration,
    /// End a call whose request message has not all arrived this long
    /// after it began (zero: never); the same for HTTP bodies.
    pub(crate) body_deadline: Duration,
    /// PEM certificate and key for TLS, if TLS is on.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// With TLS: a PEM CA bundle; clients must then present a certificate
    /// it signed (mutual TLS).
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Bearer token every call but health checks must carry, if auth is on.
    pub(crate) auth_token: Option<crate::auth::Token>,
    /// HTTP/2 settings.
    pub(crate) http2: Http2Settings,
}

/// The HTTP/2 settings that bound what one connection may hold or cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Http2Settings {
    /// Streams (calls) open at once on one connection; more are refused
    /// with REFUSED_STREAM, which clients retry.
    pub(crate) max_concurrent_streams: u32,
    /// Size of a request's headers (HPACK-decoded), bytes.
    pub(crate) max_header_list_bytes: u32,
    /// Ping an idle connection this often ...
    pub(crate) keepalive_interval: Duration,
    /// ... and close it when a ping goes unanswered this long.
    pub(crate) keepalive_timeout: Duration,
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

/// A call arrived: its connection is past its handshake deadline.
fn mark_spoke<B>(req: http::Request<B>) -> http::Request<B> {
    let e = req.extensions();
    let info = e.get::<AdmittedInfo>().or_else(|| {
        e.get::<tonic::transport::server::TlsConnectInfo<AdmittedInfo>>()
            .map(|t| t.get_ref())
    });
    if let Some(i) = info {
        i.spoke();
    }
    req
}

fn check_token(
    expected: Option<crate::auth::Token>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(token) = &expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if bearer_matches(given, token.expose()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
            ))
        }
    }
}

/// The TLS settings of `config`, read from its files, if TLS is on.
fn tls(config: &GrpcConfig) -> Result<Option<tonic::transport::ServerTlsConfig>, ServerError> {
    let Some((cert, key)) = &config.tls else {
        return Ok(None);
    };
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile {
            what,
            path: path.clone(),
            source: Arc::new(source),
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read("certificate", cert)?, read("key", key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "client CA",
            ca,
        )?));
    }
    Ok(Some(tls))
}

/// Serves `core` on the connections `gate` admits from `listener` until
/// `shutdown` resolves, then reports NOT_SERVING on health, stops
/// accepting and lets in-flight calls finish.
/// The HTTP/2 transport with its limits and keep-alive, and TLS when
/// configured.
fn transport(config: &GrpcConfig) -> Result<tonic::transport::Server, ServerError> {
    let h2 = config.http2;
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(h2.max_concurrent_streams)
        .http2_max_header_list_size(h2.max_header_list_bytes)
        .http2_keepalive_interval(Some(h2.keepalive_interval))
        .http2_keepalive_timeout(Some(h2.keepalive_timeout));
    if let Some(tls) = tls(config)? {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    Ok(builder)
}

/// Wraps each request body in the idle and total body deadlines; a body
/// that stalls ends the call with DEADLINE_EXCEEDED, counted in the gate.
fn body_deadlines(
    config: &GrpcConfig,
    gate: &Gate,
) -> impl Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone + use<> {
    let timing = stall::BodyTiming {
        idle: config.body_timeout,
        total: config.body_deadline,
    };
    let stalls = gate.stalls();
    move |req| {
        let stalls = stalls.clone();
        req.map(|body| {
            tonic::body::Body::new(stall::guarded(body, timing, stalls, |s| {
                Box::new(Status::deadline_exceeded(s.to_string()))
            }))
        })
    }
}

pub(crate) async fn serve(
    core: Arc<Core>,
    config: &GrpcConfig,
    limits: &MessageLimits,
    listener: TcpListener,
    gate: Gate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let service = Service { core };
    let auth = check_token(config.auth_token.clone());
    // Responses may be as large as the largest request (a batch's outputs
    // are smaller than its inputs).
    let out = limits.largest();
    let inference = GrpcInferenceServiceServer::new(service.clone())
        .max_decoding_message_size(limits.grpc_infer)
        .max_encoding_message_size(out);
    let classifier = ImageClassifierServer::new(service)
        .max_decoding_message_size(limits.grpc_classify)
        .max_encoding_message_size(out);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<GrpcInferenceServiceServer<Service>>()
        .await;
    health.set_serving::<ImageClassifierServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rir_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let builder = transport(config)?;
    let on_shutdown = async move {
        shutdown.await;
        health
            .set_not_serving::<GrpcInferenceServiceServer<Service>>()
            .await;
        health
            .set_not_serving::<ImageClassifierServer<Service>>()
            .await;
    };
    let router = builder
        .layer(tower::util::MapRequestLayer::new(mark_spoke))
        .layer(tower::util::MapResponseLayer::new(
            oversized_to_resource_exhausted,
        ))
        .layer(tower::util::MapRequestLayer::new(body_deadlines(
            config, &gate,
        )))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            inference,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            classifier,
            auth.clone(),
        ))
        .add_service(health_service)
        // Reflection lists every call and message: behind the token too.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection, auth,
        ));
    use tokio_stream::StreamExt;
    let admitted = tokio_stream::wrappers::ReceiverStream::new(gate.admit(listener))
        .map(Ok::<_, std::io::Error>);
    router
        .serve_with_incoming_shutdown(admitted, on_shutdown)
        .await
        .map_err(|e| ServerError::Serve {
            front: "gRPC",
            detail: e.to_string(),
        })
}

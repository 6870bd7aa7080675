//! Channels to the server under test: plain or TLS HTTP/2, optionally several
//! (requests are spread over them), each call carrying the bearer token when
//! one is given.

use std::path::PathBuf;
use std::time::Duration;

use rir_proto::classify::image_classifier_client::ImageClassifierClient;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::LoadError;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub url: String,
    /// Use TLS (implied by `https://` or a CA certificate).
    pub tls: bool,
    /// PEM CA certificate that signs the server's certificate (default: the
    /// system's roots).
    pub ca_cert: Option<PathBuf>,
    /// Name to verify in the server's certificate (default: the URL's host).
    pub tls_domain: Option<String>,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// HTTP/2 connections to open; requests go round-robin over them.
    pub connections: usize,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            url: "http://127.0.0.1:8001".into(),
            tls: false,
            ca_cert: None,
            tls_domain: None,
            token: None,
            connections: 1,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Adds the bearer token to each call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the token interceptor: what every client is built on.
pub type Chan = InterceptedService<Channel, Bearer>;

/// The URL with its scheme: `https://` when TLS is asked for.
pub fn normalize_url(o: &ConnectOptions) -> String {
    let tls = o.tls || o.ca_cert.is_some();
    if o.url.contains("://") {
        o.url.clone()
    } else if tls {
        format!("https://{}", o.url)
    } else {
        format!("http://{}", o.url)
    }
}

/// Opens `o.connections` connections now (so an unreachable server fails
/// here, once, with its reason).
pub async fn connect(o: &ConnectOptions) -> Result<Vec<Chan>, LoadError> {
    let url = normalize_url(o);
    let unreachable = |reason: String| LoadError::Unreachable {
        url: url.clone(),
        reason,
    };
    let token = match &o.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    LoadError::Setup("the token has characters a header cannot carry".into())
                })?,
        ),
        None => None,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| LoadError::Setup(format!("bad server URL {url:?}: {e}")))?
        .connect_timeout(o.connect_timeout)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &o.ca_cert {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| LoadError::io(p, e))?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        if let Some(d) = &o.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| LoadError::Setup(format!("TLS set-up: {e}")))?;
    }
    let mut out = Vec::with_capacity(o.connections.max(1));
    for _ in 0..o.connections.max(1) {
        let ch = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        out.push(InterceptedService::new(ch, Bearer(token.clone())));
    }
    Ok(out)
}

/// An error with its causes, `a: b: c`: tonic's top-level transport error
/// alone says only "transport error". Causes that repeat what is already
/// said are left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// A KServe client on `chan` with no message-size limit of its own (the
/// server's limit is the one that counts).
pub fn kserve_client(chan: Chan) -> GrpcInferenceServiceClient<Chan> {
    GrpcInferenceServiceClient::new(chan)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A `Classify` client on `chan` with no message-size limit of its own.
pub fn classify_client(chan: Chan) -> ImageClassifierClient<Chan> {
    ImageClassifierClient::new(chan)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

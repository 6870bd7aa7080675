//! Channels to the server under test: plain or TLS HTTP/2, optionally several
//! (requests are spread over them), each call carrying the bearer token when
//! one is given; and the server's replicas, when it has several: addresses
//! given one by one, or a `dns:///name:port` that resolves to several.

use std::path::PathBuf;
use std::time::Duration;

use rir_proto::classify::image_classifier_client::ImageClassifierClient;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ClientError;
use crate::balance::Replicas;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub url: String,
    /// Use TLS (implied by `https://`, a CA certificate or a client
    /// certificate).
    pub tls: bool,
    /// PEM CA certificate that signs the server's certificate (default: the
    /// system's roots).
    pub ca_cert: Option<PathBuf>,
    /// Name to verify in the server's certificate (default: the URL's host).
    pub tls_domain: Option<String>,
    /// PEM certificate and key this client presents (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
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
            client_cert: None,
            token: None,
            connections: 1,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The options every client binary takes for a server that wants TLS,
/// mutual TLS or a bearer token (`#[command(flatten)]` it).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientAuthArgs {
    /// PEM CA certificate of the server (turns on TLS; without it,
    /// https:// trusts the system's roots).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS (with --client-key).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Bearer token, for servers that require one on every call.
    #[arg(long, env = "RIR_AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientAuthArgs {
    /// `o` with these credentials.
    pub fn apply(&self, o: ConnectOptions) -> ConnectOptions {
        ConnectOptions {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            token: self.token.clone(),
            ..o
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
    let tls = o.tls || o.ca_cert.is_some() || o.client_cert.is_some();
    if o.url.contains("://") {
        o.url.clone()
    } else if tls {
        format!("https://{}", o.url)
    } else {
        format!("http://{}", o.url)
    }
}

/// The prefix of an address that stands for every address a name resolves
/// to (gRPC's name syntax; `dns:` alone is accepted too).
const DNS_PREFIXES: [&str; 2] = ["dns:///", "dns:"];

/// One replica to connect to: its URL, and the name its certificate must
/// carry when that is not the URL's host (an address resolved from a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` or `scheme://host:port`.
    pub url: String,
    /// TLS name to verify, when it differs from the URL's host.
    pub domain: Option<String>,
}

/// Expands the addresses a user gave into replicas: each plain address is
/// one; `dns:///name:port` is every address `name` resolves to now (IPv4
/// and IPv6, duplicates dropped), for instance the pods behind a Kubernetes
/// headless Service. The name is resolved once, at start.
pub async fn resolve(addresses: &[String]) -> Result<Vec<Target>, ClientError> {
    let mut out: Vec<Target> = Vec::new();
    for a in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let Some(name) = DNS_PREFIXES.iter().find_map(|p| a.strip_prefix(p)) else {
            out.push(Target {
                url: a.to_string(),
                domain: None,
            });
            continue;
        };
        let host = name
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                ClientError::Setup(format!(
                    "{a:?}: expected dns:///NAME:PORT, e.g. dns:///rir:8001"
                ))
            })?;
        let resolved =
            tokio::net::lookup_host(name)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: a.to_string(),
                    reason: format!("resolving {name}: {e}"),
                })?;
        let mut found = 0;
        for addr in resolved {
            let url = addr.to_string();
            if !out.iter().any(|t| t.url == url) {
                out.push(Target {
                    url,
                    domain: Some(host.to_string()),
                });
                found += 1;
            }
        }
        if found == 0 {
            return Err(ClientError::Unreachable {
                url: a.to_string(),
                reason: format!("{name} resolves to no address"),
            });
        }
    }
    if out.is_empty() {
        return Err(ClientError::Setup("no server address given".into()));
    }
    Ok(out)
}

/// Connects to every replica (`o.connections` each), with `o`'s TLS and
/// token. An address given by hand that cannot be reached fails the whole
/// set-up, naming it; one that a name resolved to is left out with a
/// warning (`localhost` resolves to ::1 too, which a server bound to
/// 127.0.0.1 does not answer), as long as one address of the name answers.
pub async fn connect_replicas(
    o: &ConnectOptions,
    targets: &[Target],
) -> Result<Replicas<Vec<Chan>>, ClientError> {
    let mut members = Vec::with_capacity(targets.len());
    let mut left_out = None;
    for (k, t) in targets.iter().enumerate() {
        let one = ConnectOptions {
            url: t.url.clone(),
            tls_domain: o.tls_domain.clone().or_else(|| t.domain.clone()),
            ..o.clone()
        };
        match connect(&one).await {
            Ok(chans) => members.push((t.url.clone(), chans)),
            Err(ClientError::Unreachable { url, reason }) if t.domain.is_some() => {
                tracing::warn!("leaving out {url} (resolved from {:?}): {reason}", t.domain);
                left_out = Some(ClientError::Unreachable { url, reason });
            }
            Err(ClientError::Unreachable { url, reason }) if targets.len() > 1 => {
                return Err(ClientError::Unreachable {
                    url: format!("{url} (replica {} of {})", k + 1, targets.len()),
                    reason,
                });
            }
            Err(e) => return Err(e),
        }
    }
    if members.is_empty() {
        return Err(
            left_out.unwrap_or_else(|| ClientError::Setup("no server address given".into()))
        );
    }
    Ok(Replicas::new(members))
}

/// Opens `o.connections` connections now (so an unreachable server fails
/// here, once, with its reason).
pub async fn connect(o: &ConnectOptions) -> Result<Vec<Chan>, ClientError> {
    let url = normalize_url(o);
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let token = match &o.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    ClientError::Setup("the token has characters a header cannot carry".into())
                })?,
        ),
        None => None,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::Setup(format!("bad server URL {url:?}: {e}")))?
        .connect_timeout(o.connect_timeout)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &o.ca_cert {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| ClientError::io(p, e))?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        if let Some(d) = &o.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        if let Some((cert, key)) = &o.client_cert {
            let cert = std::fs::read(cert).map_err(|e| ClientError::io(cert, e))?;
            let key = std::fs::read(key).map_err(|e| ClientError::io(key, e))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| ClientError::Setup(format!("TLS set-up: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn plain_addresses_are_one_replica_each_in_order() {
        let t = resolve(&strings(&["127.0.0.1:1", " http://127.0.0.1:2 ", ""]))
            .await
            .unwrap();
        let urls: Vec<&str> = t.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(t.iter().all(|t| t.domain.is_none()));
    }

    #[tokio::test]
    async fn a_dns_name_stands_for_every_address_it_resolves_to() {
        for form in ["dns:///localhost:8001", "dns:localhost:8001"] {
            let t = resolve(&strings(&[form])).await.unwrap();
            assert!(!t.is_empty(), "{form}");
            for target in &t {
                let addr: std::net::SocketAddr = target.url.parse().unwrap();
                assert!(addr.ip().is_loopback() && addr.port() == 8001, "{target:?}");
                assert_eq!(target.domain.as_deref(), Some("localhost"));
            }
        }
    }

    #[tokio::test]
    async fn bad_names_are_clear_errors() {
        let e = resolve(&strings(&["dns:///no-port"])).await.unwrap_err();
        assert!(e.to_string().contains("dns:///NAME:PORT"), "{e}");
        let e = resolve(&strings(&["dns:///name.invalid:1"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("resolving name.invalid:1"), "{e}");
        let e = resolve(&strings(&[""])).await.unwrap_err();
        assert!(e.to_string().contains("no server address"), "{e}");
    }
}

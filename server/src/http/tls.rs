//! TLS for the metrics endpoint: when rir-serve runs with `--tls-cert`,
//! its metrics are served over TLS with the same certificate, so that a
//! scrape and its token never cross the network in the clear. (gRPC's TLS
//! is tonic's; the REST front end is off under TLS.)

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ServerError;

/// A TLS acceptor for the PEM certificate chain `cert` and key `key`.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile {
            what,
            path: path.to_path_buf(),
            source: Arc::new(source),
        })
    };
    let bad = |e: &dyn std::fmt::Display| ServerError::Tls(format!("metrics endpoint: {e}"));
    let chain = CertificateDer::pem_slice_iter(&read("certificate", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("key", key)?).map_err(|e| bad(&e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

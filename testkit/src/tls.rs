//! A self-signed certificate for `localhost`, for TLS tests.

use std::path::{Path, PathBuf};

/// Writes a self-signed certificate for `localhost` and its key to `dir`:
/// the certificate's and the key's paths, and the certificate's PEM for clients.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generating a certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("writing the certificate");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("writing the key");
    (cert_path, key_path, cert.cert.pem())
}

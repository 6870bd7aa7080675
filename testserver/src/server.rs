//! A rir-serve for black-box tests: started through the library's own
//! entry, `rir_server::start`, from the flags the binary takes, on loopback
//! ports any free, over a model repository of real exports. The metrics
//! endpoint, the connection gates, polling, auth, TLS and the drain are the
//! ones that ship.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use rir_proto::classify::image_classifier_client::ImageClassifierClient;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rir_server::core::Core;
use rir_server::{Server, ServerError, Stopped};
use tonic::transport::Channel;

use rir_testkit::web;

/// The flags every test server starts with unless the test gives its own:
/// one ONNX Runtime thread that does not spin (two cores run the test and
/// the server), batches of at most 16, `gray` as the default model, no
/// default deadline.
const DEFAULTS: [(&str, Option<&str>); 9] = [
    ("--threads", Some("1")),
    ("--ort-spin", Some("false")),
    ("--max-batch", Some("16")),
    ("--queue-capacity", Some("256")),
    ("--default-model", Some("gray")),
    ("--max-decodes", Some("2")),
    ("--max-message-bytes", Some("4194304")),
    ("--default-timeout-ms", Some("0")),
    ("--first-byte-timeout-ms", Some("10000")),
];

/// The listen addresses unless the test gives its own: loopback, any free
/// port. Under TLS the HTTP front end is off, as in rir-serve.
fn addresses(flags: &[&str]) -> [(&'static str, Option<&'static str>); 3] {
    let http = match flags.contains(&"--tls-cert") {
        true => "off",
        false => "127.0.0.1:0",
    };
    [
        ("--grpc-addr", Some("127.0.0.1:0")),
        ("--http-addr", Some(http)),
        ("--metrics-addr", Some("127.0.0.1:0")),
    ]
}

/// `defaults` with each flag that `flags` sets left out, then `flags`: a
/// flag given by the test wins.
fn with_defaults(defaults: &[(&str, Option<&str>)], flags: &[&str]) -> Vec<String> {
    let given = |name: &str| flags.contains(&name);
    let mut out: Vec<String> = vec![];
    for (name, value) in defaults {
        if !given(name) {
            out.push(name.to_string());
            out.extend(value.map(String::from));
        }
    }
    out.extend(flags.iter().map(|f| f.to_string()));
    out
}

/// A running server and what a test needs to talk to it and stop it.
pub struct TestServer {
    server: Option<Server>,
    /// `http://127.0.0.1:PORT` of the gRPC front end.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the HTTP front end (empty when off).
    pub http_url: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    /// The repository served, kept alive while the server runs.
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server over `root`, or over a fresh standard repository
    /// ([`crate::models::repository`]) when None, with the test's `flags`
    /// over [`DEFAULTS`]. Panics with the reason when it does not start.
    pub async fn start(root: Option<&Path>, flags: &[&str]) -> TestServer {
        match Self::try_start(root, flags).await {
            Ok(s) => s,
            Err(e) => panic!("the server did not start: {e}"),
        }
    }

    /// A server whose queue holds one request in front of a slow model:
    /// `gray`, a random tiny RiR (1x28x28) written into `dir`, batching off
    /// and no runs on the receiving thread, so that a few concurrent calls
    /// overflow the queue (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    pub async fn one_slot(dir: &Path) -> TestServer {
        crate::models::write_preset(
            dir,
            "gray",
            1,
            rir_arch::InputSpec::new(1, 28, 28),
            "tiny",
            1,
        );
        let flags = [
            "--queue-capacity",
            "1",
            "--max-batch",
            "1",
            "--run-inline",
            "false",
        ];
        Self::start(Some(dir), &flags).await
    }

    /// The same, returning why it did not start.
    pub async fn try_start(root: Option<&Path>, flags: &[&str]) -> Result<TestServer, ServerError> {
        let dir = root.is_none().then(|| {
            let d = tempfile::tempdir().expect("a temporary folder");
            crate::models::repository(d.path());
            d
        });
        let root: PathBuf = match (root, &dir) {
            (Some(r), _) => r.to_path_buf(),
            (None, Some(d)) => d.path().to_path_buf(),
            (None, None) => unreachable!("a folder was made"),
        };
        let mut argv = vec!["rir-serve".to_string(), "--models".into()];
        argv.push(root.display().to_string());
        let defaults = [&DEFAULTS[..], &addresses(flags)[..]].concat();
        argv.extend(with_defaults(&defaults, flags));
        let config = rir_server::Args::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("bad test flags {flags:?}: {e}"))
            .into_config()
            .unwrap_or_else(|e| panic!("test flags {flags:?}: {e}"));
        let server = rir_server::start(config).await?;
        let a = server.addresses();
        Ok(TestServer {
            url: format!("http://{}", a.grpc),
            http_url: a.http.map(|h| format!("http://{h}")).unwrap_or_default(),
            metrics_url: format!("http://{}/metrics", a.metrics),
            server: Some(server),
            _dir: dir,
        })
    }

    /// The server's request path: readiness, the models served, statistics,
    /// the repository calls.
    pub fn core(&self) -> &Arc<Core> {
        self.server.as_ref().expect("running").core()
    }

    /// A connected KServe client.
    pub async fn kserve(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.url.clone())
            .await
            .expect("connecting")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// A connected classification client.
    pub async fn classifier(&self) -> ImageClassifierClient<Channel> {
        ImageClassifierClient::connect(self.url.clone())
            .await
            .expect("connecting")
    }

    /// The ONNX file the server serves as the latest version of `name`.
    pub fn model_path(&self, name: &str) -> PathBuf {
        let models = self.core().models();
        let version = models.get(name, "").expect("model served");
        version.desc().expect("model loadable").path.clone()
    }

    /// The metrics endpoint's page, scraped over HTTP.
    pub async fn metrics(&self) -> String {
        let reply = web::get(self.metrics_url.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text()
    }

    /// One sample of the metrics page (`rir_execution_count{model="m"}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        web::metric(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Stops the server (not ready, drain) and waits for it.
    pub async fn shutdown(mut self) -> Result<Stopped, ServerError> {
        self.server.take().expect("running").shutdown().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.stopper().stop();
        }
    }
}

//! An in-process rir server on a loopback port, over a model repository of
//! real exported models, for the server's black-box tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rir_checkpoint::synthetic::random_checkpoint;
use rir_exporter::{Form, Precision, export_file};
use rir_infer::{Backend, Buckets, EngineOptions, OrtOptions};
use rir_proto::classify::image_classifier_client::ImageClassifierClient;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rir_server::batcher::BatchConfig;
use rir_server::control::{ControlMode, Repository};
use rir_server::core::{Core, Settings};
use rir_server::http::{HttpConfig, serve_http};
use rir_server::models::{Loader, ServingEngines};
use rir_server::server::{Stop, TransportConfig, serve};
use rir_server::stats::Metrics;
use rir_server::tensors::ImageLimits;
use rir_spec::{InputSpec, Variant, preset};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Writes `<root>/<name>/<version>/model.onnx`: a random micro RiR on the given input.
pub fn write_model(root: &Path, name: &str, version: u64, input: InputSpec, seed: u64) {
    write_preset(root, name, version, input, "micro", seed);
}

/// Writes `<root>/<name>/<version>/model.onnx`: a random RiR of `preset`.
pub fn write_preset(
    root: &Path,
    name: &str,
    version: u64,
    input: InputSpec,
    preset_name: &str,
    seed: u64,
) {
    let spec = preset::build(preset_name, Variant::Rir, input, 10).unwrap();
    let dir = root.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("ck.safetensors");
    random_checkpoint(&spec, seed).write_atomic(&ck).unwrap();
    export_file(&ck, &dir.join("model.onnx"), Form::Folded, Precision::Fp32).unwrap();
    std::fs::remove_file(ck).unwrap();
}

/// A repository with `gray` (1x28x28, versions 1 and 2), `rgb` (3x32x32) and
/// `broken` (a version whose model.onnx is garbage).
pub fn repository(root: &Path) {
    write_model(root, "gray", 1, InputSpec::new(1, 28, 28), 1);
    write_model(root, "gray", 2, InputSpec::new(1, 28, 28), 2);
    write_model(root, "rgb", 1, InputSpec::new(3, 32, 32), 3);
    let b = root.join("broken/1");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("model.onnx"), b"this is not onnx").unwrap();
}

/// A running server and what a test needs to talk to it and stop it.
pub struct Running {
    /// `http://127.0.0.1:PORT` of the gRPC front end.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the HTTP front end.
    pub http_url: String,
    /// Sends the shutdown signal to both front ends.
    pub stop: Option<watch::Sender<bool>>,
    /// The gRPC server task; resolves when it has stopped.
    pub task: tokio::task::JoinHandle<Result<(), String>>,
    /// The HTTP server task.
    pub http_task: tokio::task::JoinHandle<Result<(), String>>,
    /// Shared state (readiness, models).
    pub state: Arc<Core>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Keeps the repository alive.
    pub _dir: Option<tempfile::TempDir>,
}

/// Options of a test server.
#[derive(Clone)]
pub struct Options {
    /// Batching limits.
    pub batching: BatchConfig,
    /// Engine.
    pub backend: Backend,
    /// Transport.
    pub transport: TransportConfig,
    /// `--reject-nonfinite`.
    pub reject_nonfinite: bool,
    /// `--model-control-mode`.
    pub control: ControlMode,
    /// `--load-model` (explicit mode).
    pub load_models: Vec<String>,
    /// `--max-image-pixels`, `--max-image-bytes`.
    pub image_limits: ImageLimits,
    /// `--default-timeout-ms`.
    pub default_timeout: Option<Duration>,
    /// The HTTP front end's admission gate (the gRPC one is in `transport`).
    pub http_gate: Option<rir_server::conn::Gate>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batching: BatchConfig {
                buckets: Buckets::powers_of_two(16),
                max_delay: Duration::ZERO,
                queue_capacity: 256,
                inline: true,
            },
            backend: Backend::Ort,
            transport: TransportConfig {
                max_message_bytes: 4 << 20,
                tls: None,
                tls_client_ca: None,
                auth_token: None,
                gate: None,
                http2: Default::default(),
            },
            reject_nonfinite: false,
            control: ControlMode::None,
            load_models: vec![],
            image_limits: ImageLimits::default(),
            default_timeout: None,
            http_gate: None,
        }
    }
}

/// Starts a server over `root` (or a fresh standard repository).
pub async fn start(root: Option<&Path>, o: Options) -> Running {
    let dir = if root.is_none() {
        let d = tempfile::tempdir().unwrap();
        repository(d.path());
        Some(d)
    } else {
        None
    };
    let root = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.as_ref().unwrap().path().to_path_buf());
    let metrics = Arc::new(Metrics::new().unwrap());
    let engines = ServingEngines {
        options: EngineOptions {
            backend: o.backend,
            ort: OrtOptions {
                threads: 1,
                spin: false,
                ..OrtOptions::default()
            },
            per_bucket: None,
        },
        instances: 1,
    };
    let loader = Loader {
        root: root.clone(),
        engines,
        batching: o.batching.clone(),
        metrics: metrics.clone(),
    };
    let startup = match o.control {
        ControlMode::Explicit => Some(&o.load_models[..]),
        ControlMode::None | ControlMode::Poll => None,
    };
    let models = loader.load(startup).unwrap();
    let state = Arc::new(Core::new(
        models,
        Some(Repository::new(loader, o.control)),
        Settings {
            default_model: Some("gray".into()),
            reject_nonfinite: o.reject_nonfinite,
            image_limits: o.image_limits,
            max_decodes: 2,
            default_timeout: o.default_timeout,
        },
    ));
    state.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_url = format!("http://{}", http_listener.local_addr().unwrap());
    let (tx, stop) = Stop::new();
    let st = state.clone();
    let transport = o.transport.clone();
    let grpc_stop = stop.wait();
    let task = tokio::spawn(async move { serve(st, &transport, listener, grpc_stop).await });
    let http = HttpConfig {
        max_body_bytes: o.transport.max_message_bytes,
        auth_token: o.transport.auth_token.as_deref().map(Arc::from),
        gate: o.http_gate.clone(),
    };
    let http_task = tokio::spawn(serve_http(state.clone(), http, http_listener, stop.wait()));
    Running {
        url,
        http_url,
        stop: Some(tx),
        task,
        http_task,
        state,
        metrics,
        _dir: dir,
    }
}

impl Running {
    /// A connected KServe client.
    pub async fn kserve(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.url.clone())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// The ONNX file the server serves as the latest version of `name`.
    pub fn model_path(&self, name: &str) -> std::path::PathBuf {
        let models = self.state.models();
        let slot = models.get(name, "").expect("model served");
        slot.desc().expect("model loadable").path.clone()
    }

    /// A connected classification client.
    pub async fn classifier(&self) -> ImageClassifierClient<Channel> {
        ImageClassifierClient::connect(self.url.clone())
            .await
            .unwrap()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) -> Result<(), String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        (&mut self.http_task).await.unwrap()?;
        (&mut self.task).await.unwrap()
    }
}

/// A PNG of the given size and color type, with a gradient.
pub fn png(w: u32, h: u32, rgb: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    if rgb {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
    } else {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) * 4) as u8]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
    }
    out.into_inner()
}

/// A self-signed certificate for `localhost` written to `dir`: the
/// certificate and key paths, and the certificate's PEM for clients.
pub fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.cert.pem())
}

/// PYTHONPATH of the Python packages scripts/setup.sh installs for the
/// tests (`RIR_PYTHONPATH` overrides).
pub fn python_path() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var("RIR_PYTHONPATH").unwrap_or_else(|_| root.join(".deps/py").display().to_string())
}

/// Runs `server/tests/triton_client.py` (NVIDIA's stock Python client over
/// `protocol`, grpc or http) against `addr` and asserts that it passed.
pub async fn run_triton_client(protocol: &str, addr: &str, model: &str, path: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/triton_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([protocol, addr, model])
        .arg(path)
        .env("PYTHONPATH", python_path())
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "tritonclient.{protocol} run failed (scripts/setup.sh installs tritonclient[grpc,http] and onnxruntime into .deps/py):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("statistics OK"));
}

/// One HTTP exchange: status, headers (lower-case names) and body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: std::collections::HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_string()
    }
}

/// Sends one request with a client that hands back 4xx and 5xx answers as they are.
pub async fn call(method: &str, url: String, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let method = method.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = http::Request::builder().method(method.as_str()).uri(&url);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let mut response = agent.run(request.body(body).unwrap()).expect(&url);
        Reply {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .unwrap(),
        }
    })
    .await
    .unwrap()
}

/// A GET.
pub async fn get(url: String) -> Reply {
    call("GET", url, &[], vec![]).await
}

/// A ModelInferRequest for `n` gray 28x28 FP32 images of `model`: raw
/// contents, or typed ones when `raw` is false.
pub fn fp32_request(
    model: &str,
    n: usize,
    data: &[f32],
    raw: bool,
) -> rir_proto::inference::ModelInferRequest {
    let shape = vec![n as i64, 1, 28, 28];
    rir_proto::inference::ModelInferRequest {
        model_name: model.into(),
        id: "req-1".into(),
        inputs: vec![
            rir_proto::inference::model_infer_request::InferInputTensor {
                name: "image".into(),
                datatype: "FP32".into(),
                shape,
                contents: (!raw).then(|| rir_proto::inference::InferTensorContents {
                    fp32_contents: data.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        raw_input_contents: if raw {
            vec![rir_proto::raw::f32_bytes(data)]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

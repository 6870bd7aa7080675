//! What a load test sends: the API, the model, and a small set of prepared
//! requests that the run cycles through. Building them checks the model on
//! the server first, so that a wrong name or shape is one clear error and
//! not thousands of failed requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rir_proto::classify::ClassifyRequest;
use rir_proto::classify::image_classifier_client::ImageClassifierClient;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rir_proto::inference::model_infer_request::InferInputTensor;
use rir_proto::inference::model_metadata_response::TensorMetadata;
use rir_proto::inference::{ModelInferRequest, ModelMetadataRequest, ServerLiveRequest};

use rir_contract::Datatype;

use crate::LoadError;
use crate::error::{ServerError, WorkloadError};
use crate::hostile::{Call, Hostile, Mix};
use rir_client::balance::{Replicas, Routed};
use rir_client::connect::{Chan, classify_client, kserve_client};
use rir_client::error::code_name;
use rir_client::http::{self, HttpClient, Post};
use rir_client::server_counters::Probe;

/// Which RPC to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `inference.GRPCInferenceService/ModelInfer` (KServe v2 / Triton): tensors.
    Infer,
    /// `rir.v1.ImageClassifier/Classify`: encoded images.
    Classify,
}

/// Where request data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputData {
    /// Random tensors of the model's input shape (FP32 in [0, 1)).
    Random,
    /// A directory of raw tensor files (`.bin`/`.raw`: one item or one whole
    /// batch of the input, little-endian) or of PNG/JPEG images.
    Dir(PathBuf),
}

/// What to send and to which model.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// RPC.
    pub api: Api,
    /// Model name (Classify: empty means the server's default model).
    pub model: String,
    /// Model version (empty: the server's choice, normally the latest).
    pub version: String,
    /// Items per request.
    pub batch: usize,
    /// Request data.
    pub input: InputData,
    /// Seed of random tensors.
    pub seed: u64,
    /// Classify: labels per image.
    pub top_k: u32,
    /// Per-request deadline sent to the server (`grpc-timeout`; over HTTP,
    /// the client stops waiting).
    pub timeout: Option<Duration>,
    /// Input shapes given by hand, for servers whose metadata lists no
    /// inputs or leaves dimensions open.
    pub shapes: Vec<InputShape>,
    /// Over HTTP: tensors as JSON values instead of binary data.
    pub json_tensors: bool,
}

/// `--shape NAME:DIMS[:DATATYPE]`: one item's dimensions (without the
/// batch) of input NAME, and its datatype when the server does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShape {
    /// Input name.
    pub name: String,
    /// Dimensions of one item.
    pub dims: Vec<i64>,
    /// Datatype (default FP32 when the metadata does not give one).
    pub datatype: Option<String>,
}

/// A `--shape` that is not `NAME:DIMS[:DATATYPE]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shape {0:?}: expected NAME:DIMS[:DATATYPE], e.g. image:1,28,28 or x:4:FP32")]
pub struct BadShape(pub String);

impl std::str::FromStr for InputShape {
    type Err = BadShape;

    fn from_str(s: &str) -> Result<Self, BadShape> {
        let bad = || BadShape(s.to_string());
        let mut parts = s.split(':');
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
        let dims = parts
            .next()
            .ok_or_else(bad)?
            .split(',')
            .map(|d| d.trim().parse::<i64>().ok().filter(|d| *d > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        let datatype = parts.next().map(|d| d.to_ascii_uppercase());
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(InputShape {
            name: name.into(),
            dims,
            datatype,
        })
    }
}

/// The model's inputs with the `--shape` overrides: a named input gets
/// `[-1, dims...]`; one the metadata does not list is added.
fn with_shapes(mut inputs: Vec<TensorMetadata>, shapes: &[InputShape]) -> Vec<TensorMetadata> {
    for s in shapes {
        let shape: Vec<i64> = std::iter::once(-1).chain(s.dims.iter().copied()).collect();
        match inputs.iter_mut().find(|t| t.name == s.name) {
            Some(t) => {
                t.shape = shape;
                if let Some(d) = &s.datatype {
                    t.datatype = d.clone();
                }
            }
            None => inputs.push(TensorMetadata {
                name: s.name.clone(),
                datatype: s
                    .datatype
                    .clone()
                    .unwrap_or_else(|| Datatype::Fp32.name().into()),
                shape,
            }),
        }
    }
    inputs
}

/// Distinct random requests prepared for random input data; the run cycles
/// through them so that caches do not see one tensor over and over.
const RANDOM_VARIANTS: usize = 8;

/// Both gRPC services' clients over one connection.
#[derive(Clone)]
struct GrpcClients {
    kserve: GrpcInferenceServiceClient<Chan>,
    classify: ImageClassifierClient<Chan>,
}

impl GrpcClients {
    fn new(chan: Chan) -> Self {
        GrpcClients {
            kserve: kserve_client(chan.clone()),
            classify: classify_client(chan),
        }
    }
}

/// The prepared requests, and the replicas to send them to (each with its
/// clients, one per connection).
enum Requests {
    /// ModelInfer or Classify calls.
    Grpc(Replicas<Vec<GrpcClients>>, Arc<[Call]>),
    /// KServe v2 REST: prepared POSTs (binary tensors, or images to classify).
    Http(Replicas<HttpClient>, Arc<[Post]>),
}

/// One request's answer, and the class of bad request it was, if it was one.
#[derive(Debug)]
pub struct Sent {
    /// The answer, and which replica gave it.
    pub routed: Routed<()>,
    /// `None` for a good request.
    pub hostile: Option<Hostile>,
}

/// A checked, ready workload: the prepared requests and clients to send them.
pub struct Workload {
    requests: Requests,
    timeout: Option<Duration>,
    /// Bad requests mixed in (gRPC only).
    hostile: Option<Mix>,
    /// Items per request.
    pub batch: usize,
    /// One line saying what is sent, for logs and reports.
    pub description: String,
    /// Reads the server's counters around each measurement (by default
    /// its statistics over the run's protocol).
    pub(crate) probe: Option<Probe>,
}

impl Workload {
    /// Checks the server and model, builds the requests and sends one probe
    /// request, whose failure is returned as [`LoadError::Rejected`]: over
    /// one server's connections `chans`.
    pub async fn prepare(chans: Vec<Chan>, o: &WorkloadOptions) -> Result<Workload, LoadError> {
        Self::prepare_replicas(Replicas::new(vec![(String::new(), chans)]), o).await
    }

    /// The same over several replicas of one server: each must be live;
    /// the model is checked on the first.
    pub async fn prepare_replicas(
        replicas: Replicas<Vec<Chan>>,
        o: &WorkloadOptions,
    ) -> Result<Workload, LoadError> {
        if o.batch == 0 {
            return Err(WorkloadError::NoBatch.into());
        }
        let first = live_replicas(&replicas).await?;
        let (calls, description) = match o.api {
            Api::Infer => grpc_infer_calls(first, o).await?,
            Api::Classify => grpc_classify_calls(o)?,
        };
        let clients: Replicas<Vec<GrpcClients>> =
            replicas.map(|chans| chans.into_iter().map(GrpcClients::new).collect());
        let stats_clients = clients
            .members()
            .iter()
            .filter_map(|r| r.client.first().map(|c| c.kserve.clone()))
            .collect();
        Workload {
            requests: Requests::Grpc(clients, calls.into()),
            timeout: o.timeout,
            hostile: None,
            batch: o.batch,
            description,
            probe: Some(Probe::grpc(stats_clients, &o.model, &o.version)),
        }
        .probe()
        .await
    }

    /// The same over KServe v2 REST: health and metadata over HTTP, then
    /// binary-tensor inference bodies (or images for classify).
    pub async fn prepare_http(
        client: HttpClient,
        o: &WorkloadOptions,
    ) -> Result<Workload, LoadError> {
        let address = client.base().to_string();
        Self::prepare_http_replicas(Replicas::new(vec![(address, client)]), o).await
    }

    /// The same over several replicas: each must answer `GET /v2`; the
    /// model is checked on the first.
    pub async fn prepare_http_replicas(
        replicas: Replicas<HttpClient>,
        o: &WorkloadOptions,
    ) -> Result<Workload, LoadError> {
        if o.batch == 0 {
            return Err(WorkloadError::NoBatch.into());
        }
        let setup = |what: &'static str, base: &str, s: tonic::Status| ServerError::Rest {
            what,
            base: base.to_string(),
            message: s.message().to_string(),
        };
        for r in replicas.members() {
            r.client
                .get_json("/v2")
                .await
                .map_err(|s| setup("the server did not answer GET /v2", r.client.base(), s))?;
        }
        let client = &replicas.members()[0].client;
        let (posts, description) = match o.api {
            Api::Infer => rest_infer_posts(client, o).await?,
            Api::Classify => rest_classify_posts(o)?,
        };
        let stats_clients = replicas
            .members()
            .iter()
            .map(|r| r.client.clone())
            .collect();
        Workload {
            requests: Requests::Http(replicas, posts.into()),
            timeout: o.timeout,
            hostile: None,
            batch: o.batch,
            description,
            probe: Some(Probe::rest(stats_clients, &o.model, &o.version)),
        }
        .probe()
        .await
    }

    /// Mixes bad requests into the run: `fraction` (0 to 1) of them, drawn
    /// by `seed`, spread over every class the workload can build (the image
    /// classes only where the server has `Classify`). gRPC only.
    pub async fn with_bad_fraction(mut self, fraction: f64, seed: u64) -> Result<Self, LoadError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(WorkloadError::BadFraction(fraction).into());
        }
        let Requests::Grpc(replicas, calls) = &self.requests else {
            return Err(WorkloadError::BadFractionOverRest.into());
        };
        let good = calls.iter().find_map(|c| match c {
            Call::Infer(r) => Some(r),
            Call::Classify(_) => None,
        });
        let model = match &calls[0] {
            Call::Infer(r) => r.model_name.clone(),
            Call::Classify(r) => r.model_name.clone(),
        };
        let mut mix = Mix::new(fraction, seed, &Hostile::ALL, good, &model);
        // Servers without rir's Classify get the tensor classes only.
        if let Some(Call::Classify(r)) = Hostile::NoImages.call(None, &model) {
            let mut c = replicas.members()[0].client[0].classify.clone();
            if let Err(s) = c.classify(self.request(r)).await
                && s.code() == tonic::Code::Unimplemented
            {
                let images: Vec<Hostile> =
                    Hostile::ALL.into_iter().filter(|h| h.is_image()).collect();
                tracing::info!("the server has no Classify: the bad images are left out");
                mix = mix.without(&images);
            }
        }
        if mix.classes().is_empty() {
            return Err(WorkloadError::NoBadClass.into());
        }
        tracing::info!(
            "{:.1} % bad requests: {}",
            fraction * 100.0,
            mix.classes()
                .iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.hostile = Some(mix);
        Ok(self)
    }

    /// Where the server breakdown comes from: `Some` replaces the server's
    /// statistics with another reader (a metrics page), `None` leaves the
    /// breakdown out.
    pub fn with_server_counters(mut self, probe: Option<Probe>) -> Self {
        self.probe = probe;
        self
    }

    /// Sends one request; its failure is [`LoadError::Rejected`].
    async fn probe(self) -> Result<Workload, LoadError> {
        let w = self;
        if let Err(s) = w.send(0).await.routed.result {
            return Err(LoadError::Rejected {
                code: code_name(s.code()).into(),
                message: s.message().into(),
            });
        }
        Ok(w)
    }

    /// The replicas' addresses, in order (one, unnamed, for a single server
    /// reached over gRPC).
    pub fn replicas(&self) -> Vec<String> {
        match &self.requests {
            Requests::Grpc(r, _) => r.addresses(),
            Requests::Http(r, _) => r.addresses(),
        }
    }

    /// Sends the `i`-th request (cycling through the prepared ones, the
    /// replicas and each one's connections; or the bad request the mix makes
    /// it) and waits for its answer; a replica that does not answer hands it
    /// to the next.
    pub async fn send(&self, i: u64) -> Sent {
        let pick = |n: usize| (i % n as u64) as usize;
        match &self.requests {
            Requests::Grpc(replicas, calls) => {
                let (call, hostile) = match self.hostile.as_ref().and_then(|m| m.pick(i)) {
                    Some((h, call)) => (call, Some(*h)),
                    None => (&calls[pick(calls.len())], None),
                };
                let routed = replicas
                    .call(i, |clients| {
                        let c = clients[pick(clients.len())].clone();
                        let call = call.clone();
                        async move {
                            match call {
                                Call::Infer(r) => c
                                    .kserve
                                    .clone()
                                    .model_infer(self.request(r))
                                    .await
                                    .map(drop),
                                Call::Classify(r) => {
                                    c.classify.clone().classify(self.request(r)).await.map(drop)
                                }
                            }
                        }
                    })
                    .await;
                Sent { routed, hostile }
            }
            Requests::Http(replicas, posts) => {
                let post = &posts[pick(posts.len())];
                let routed = replicas
                    .call(i, |client| async move {
                        match self.timeout {
                            None => client.post(post).await,
                            Some(t) => tokio::time::timeout(t, client.post(post))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(tonic::Status::deadline_exceeded(
                                        "no answer within --timeout",
                                    ))
                                }),
                        }
                    })
                    .await;
                Sent {
                    routed,
                    hostile: None,
                }
            }
        }
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = self.timeout {
            r.set_timeout(t);
        }
        r
    }
}

/// `name DATATYPE [shape]` of each input, for the workload's description.
/// The REST inference bodies of the workload, and its description: the
/// model's inputs from its REST metadata, with the `--shape` overrides.
async fn rest_infer_posts(
    client: &HttpClient,
    o: &WorkloadOptions,
) -> Result<(Vec<Post>, String), LoadError> {
    let meta = client
        .get_json(&http::model_path(&o.model, &o.version))
        .await
        .map_err(|s| model_error(o, &s))?;
    let inputs = with_shapes(http::inputs_of(&meta)?, &o.shapes);
    let posts: Vec<Post> = infer_requests(o, &inputs)?
        .iter()
        .map(|r| http::infer_post(r, o.json_tensors))
        .collect::<Result<_, _>>()?;
    let description = format!(
        "REST infer {}{} batch {} ({}; {} tensors)",
        o.model,
        version_suffix(&o.version),
        o.batch,
        describe_inputs(&inputs),
        if o.json_tensors { "JSON" } else { "binary" }
    );
    Ok((posts, description))
}

/// Checks every replica is a live KServe server; the first one's client,
/// which the model's metadata is asked of.
async fn live_replicas(
    replicas: &Replicas<Vec<Chan>>,
) -> Result<GrpcInferenceServiceClient<Chan>, LoadError> {
    let mut first = None;
    for r in replicas.members() {
        let chan = r.client.first().cloned().ok_or(ServerError::NoConnection)?;
        let mut client = GrpcInferenceServiceClient::new(chan);
        check_live(&mut client)
            .await
            .map_err(|e| match replicas.len() {
                1 => e,
                _ => ServerError::Replica {
                    address: r.address.clone(),
                    source: Box::new(e),
                },
            })?;
        first.get_or_insert(client);
    }
    Ok(first.ok_or(ServerError::NoConnection)?)
}

/// ModelInfer requests for the model's inputs (its metadata, or the
/// shapes given), and the run's description.
async fn grpc_infer_calls(
    mut client: GrpcInferenceServiceClient<Chan>,
    o: &WorkloadOptions,
) -> Result<(Vec<Call>, String), LoadError> {
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: o.model.clone(),
            version: o.version.clone(),
        })
        .await
        .map_err(|s| model_error(o, &s))?
        .into_inner();
    let inputs = with_shapes(meta.inputs, &o.shapes);
    let reqs = infer_requests(o, &inputs)?;
    let description = format!(
        "ModelInfer {}{} batch {} ({})",
        o.model,
        version_suffix(&o.version),
        o.batch,
        describe_inputs(&inputs)
    );
    Ok((reqs.into_iter().map(Call::Infer).collect(), description))
}

/// Classify requests of the images given, and the run's description.
fn grpc_classify_calls(o: &WorkloadOptions) -> Result<(Vec<Call>, String), LoadError> {
    let reqs = classify_requests(o)?;
    let model = match o.model.is_empty() {
        true => "(server default)",
        false => &o.model,
    };
    let description = format!(
        "Classify {model}{} batch {} ({} images)",
        version_suffix(&o.version),
        o.batch,
        reqs.len() * o.batch
    );
    Ok((reqs.into_iter().map(Call::Classify).collect(), description))
}

/// The REST classification bodies (one image each) and their description.
fn rest_classify_posts(o: &WorkloadOptions) -> Result<(Vec<Post>, String), LoadError> {
    if o.batch != 1 {
        return Err(WorkloadError::RestClassifyBatch.into());
    }
    if o.model.is_empty() {
        return Err(WorkloadError::RestClassifyModel.into());
    }
    let path = format!(
        "{}/classify?top_k={}",
        http::model_path(&o.model, &o.version),
        o.top_k
    );
    let posts: Vec<Post> = classify_requests(o)?
        .into_iter()
        .map(|r| Post {
            path: path.clone(),
            header_length: None,
            body: r.images.into_iter().next().unwrap_or_default().into(),
        })
        .collect();
    let description = format!(
        "REST classify {}{} ({} images)",
        o.model,
        version_suffix(&o.version),
        posts.len()
    );
    Ok((posts, description))
}

fn describe_inputs(inputs: &[TensorMetadata]) -> String {
    inputs
        .iter()
        .map(|t| format!("{} {} {:?}", t.name, t.datatype, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

fn version_suffix(v: &str) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(" v{v}")
    }
}

async fn check_live(client: &mut GrpcInferenceServiceClient<Chan>) -> Result<(), ServerError> {
    match client.server_live(ServerLiveRequest {}).await {
        Ok(r) if r.get_ref().live => Ok(()),
        Ok(_) => Err(ServerError::NotLive),
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            Err(ServerError::NeedsToken(s.message().to_string()))
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => Err(ServerError::NotKserve),
        Err(s) => Err(ServerError::NoAnswer {
            code: code_name(s.code()).to_string(),
            message: s.message().to_string(),
        }),
    }
}

fn model_error(o: &WorkloadOptions, s: &tonic::Status) -> LoadError {
    let what = format!("model `{}`{}", o.model, version_suffix(&o.version));
    match s.code() {
        tonic::Code::NotFound => ServerError::NotFound {
            what,
            message: s.message().to_string(),
        }
        .into(),
        tonic::Code::Unavailable => ServerError::Unavailable {
            what,
            message: s.message().to_string(),
        }
        .into(),
        c => ServerError::AskFailed {
            what,
            code: code_name(c).to_string(),
            message: s.message().to_string(),
        }
        .into(),
    }
}

/// Bytes per element of a KServe datatype; `None` for BYTES and unknown ones.
fn element_size(datatype: &str) -> Option<usize> {
    Datatype::from_name(datatype).and_then(Datatype::size)
}

/// The shape of one request's tensor: a leading -1 (the batch dimension)
/// becomes `batch`; any other variable dimension cannot be filled.
fn request_shape(t: &TensorMetadata, batch: usize) -> Result<Vec<i64>, LoadError> {
    let mut shape = t.shape.clone();
    match shape.first() {
        Some(-1) => shape[0] = batch as i64,
        _ if batch > 1 => {
            return Err(WorkloadError::NoBatchDimension {
                input: t.name.clone(),
                shape: t.shape.clone(),
                batch,
            }
            .into());
        }
        _ => {}
    }
    if let Some(d) = shape.iter().skip(1).find(|d| **d < 0) {
        return Err(WorkloadError::VariableDimension {
            input: t.name.clone(),
            dim: *d,
            shape: t.shape.clone(),
        }
        .into());
    }
    Ok(shape)
}

/// `elements` random values of `datatype` as raw little-endian bytes.
fn random_tensor(
    datatype: &str,
    elements: usize,
    rng: &mut fastrand::Rng,
) -> Result<Vec<u8>, LoadError> {
    let mut out = Vec::with_capacity(elements * element_size(datatype).unwrap_or(1));
    let d = Datatype::from_name(datatype);
    for _ in 0..elements {
        match d {
            Some(Datatype::Fp32) => out.extend_from_slice(&rng.f32().to_le_bytes()),
            Some(Datatype::Fp64) => out.extend_from_slice(&rng.f64().to_le_bytes()),
            Some(Datatype::Uint8) => out.push(rng.u8(..)),
            Some(Datatype::Int8) => out.push(rng.u8(0..100)),
            Some(Datatype::Bool) => out.push(rng.u8(0..2)),
            Some(Datatype::Int32) => out.extend_from_slice(&rng.i32(0..10).to_le_bytes()),
            Some(Datatype::Int64) => out.extend_from_slice(&rng.i64(0..10).to_le_bytes()),
            _ => {
                return Err(WorkloadError::NoRandomData(datatype.to_string()).into());
            }
        }
    }
    Ok(out)
}

fn infer_requests(
    o: &WorkloadOptions,
    inputs: &[TensorMetadata],
) -> Result<Vec<ModelInferRequest>, LoadError> {
    if inputs.is_empty() {
        return Err(WorkloadError::NoInputs(o.model.clone()).into());
    }
    let shapes = inputs
        .iter()
        .map(|t| request_shape(t, o.batch))
        .collect::<Result<Vec<_>, _>>()?;
    let tensor = |t: &TensorMetadata, shape: &[i64]| InferInputTensor {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        shape: shape.to_vec(),
        ..Default::default()
    };
    let request = |raw: Vec<Vec<u8>>| ModelInferRequest {
        model_name: o.model.clone(),
        model_version: o.version.clone(),
        inputs: inputs
            .iter()
            .zip(&shapes)
            .map(|(t, s)| tensor(t, s))
            .collect(),
        raw_input_contents: raw,
        ..Default::default()
    };
    let contents = match &o.input {
        InputData::Random => random_contents(inputs, &shapes, o.seed)?,
        InputData::Dir(dir) => file_contents(o, dir, inputs, &shapes[0])?,
    };
    Ok(contents.into_iter().map(request).collect())
}

/// [`RANDOM_VARIANTS`] sets of random raw contents, one tensor per input.
fn random_contents(
    inputs: &[TensorMetadata],
    shapes: &[Vec<i64>],
    seed: u64,
) -> Result<Vec<Vec<Vec<u8>>>, LoadError> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..RANDOM_VARIANTS)
        .map(|_| {
            inputs
                .iter()
                .zip(shapes)
                .map(|(t, s)| {
                    random_tensor(&t.datatype, s.iter().product::<i64>() as usize, &mut rng)
                })
                .collect()
        })
        .collect()
}

/// The raw contents of the single input from the files in `dir`: a file
/// of a whole batch is one request as it is; single items are taken
/// `batch` at a time, cycling, as many requests as files.
fn file_contents(
    o: &WorkloadOptions,
    dir: &Path,
    inputs: &[TensorMetadata],
    shape: &[i64],
) -> Result<Vec<Vec<Vec<u8>>>, LoadError> {
    let files = list_files(dir)?;
    if files.iter().any(|f| is_image(f)) {
        return Err(WorkloadError::ImagesForInfer(dir.to_path_buf()).into());
    }
    let [t] = inputs else {
        return Err(WorkloadError::SeveralInputs {
            model: o.model.clone(),
            inputs: inputs.len(),
        }
        .into());
    };
    let elem = element_size(&t.datatype).ok_or_else(|| WorkloadError::NoRawData {
        input: t.name.clone(),
        datatype: t.datatype.clone(),
    })?;
    let batch_bytes = shape.iter().product::<i64>() as usize * elem;
    let item_bytes = batch_bytes / o.batch;
    let data = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| LoadError::io(f, e)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((f, d)) = files
        .iter()
        .zip(&data)
        .find(|(_, d)| d.len() != item_bytes && d.len() != batch_bytes)
    {
        return Err(WorkloadError::FileSize {
            file: f.clone(),
            bytes: d.len(),
            input: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
            item_bytes,
            batch: o.batch,
        }
        .into());
    }
    let items: Vec<&Vec<u8>> = data.iter().filter(|d| d.len() == item_bytes).collect();
    let mut out: Vec<Vec<Vec<u8>>> = data
        .iter()
        .filter(|d| d.len() == batch_bytes && o.batch > 1)
        .map(|d| vec![d.clone()])
        .collect();
    for k in 0..items.len() {
        let raw = (0..o.batch)
            .flat_map(|j| items[(k * o.batch + j) % items.len()].iter().copied())
            .collect();
        out.push(vec![raw]);
    }
    Ok(out)
}

fn classify_requests(o: &WorkloadOptions) -> Result<Vec<ClassifyRequest>, LoadError> {
    let InputData::Dir(dir) = &o.input else {
        return Err(WorkloadError::ClassifyWithoutImages.into());
    };
    let files: Vec<PathBuf> = list_files(dir)?
        .into_iter()
        .filter(|f| is_image(f))
        .collect();
    if files.is_empty() {
        return Err(WorkloadError::NoImages(dir.clone()).into());
    }
    let images = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| LoadError::io(f, e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..images.len())
        .map(|k| ClassifyRequest {
            model_name: o.model.clone(),
            model_version: o.version.clone(),
            images: (0..o.batch)
                .map(|j| images[(k * o.batch + j) % images.len()].clone())
                .collect(),
            top_k: o.top_k,
        })
        .collect())
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Regular files of `dir`, sorted by name (hidden files skipped).
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))?;
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(|e| LoadError::io(dir, e))?;
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if p.is_file() && !hidden {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(WorkloadError::NoFiles(dir.to_path_buf()).into());
    }
    Ok(files)
}

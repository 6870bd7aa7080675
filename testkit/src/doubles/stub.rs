//! A KServe v2 server whose behaviour is scripted per request: a latency
//! (from any distribution the caller writes), an error status, or a stall
//! that holds every request arriving during it. It is what the load tester
//! is checked against (the injected figures are known), and with no delay
//! it is the "trivial model" that shows the tool's own ceiling.
//!
//! It serves one model with input `x` (FP32, `[-1, 4]`) and echoes it as
//! output `y`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rir_contract::Datatype;
use rir_proto::inference as pb;
use rir_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// Elements per item of the stub model's input.
pub const ITEM: usize = 4;

/// Per-request latency, by request number (0 = the first request received).
pub type DelayFn = Arc<dyn Fn(u64) -> Duration + Send + Sync>;
/// Per-request failure, by request number.
pub type ErrorFn = Arc<dyn Fn(u64) -> Option<tonic::Code> + Send + Sync>;

/// What the stub does with each request.
#[derive(Clone)]
pub struct Script {
    /// Name of the one model.
    pub model: String,
    /// Time spent on request n before answering.
    pub delay: Option<DelayFn>,
    /// Status to fail request n with, if any.
    pub error: Option<ErrorFn>,
    /// When request number `.0` arrives, every request (it included) is held
    /// until `.1` after that moment: a server pause (GC, a slow disk, a
    /// noisy neighbour).
    pub stall: Option<(u64, Duration)>,
}

impl Script {
    /// Answers at once, never fails: a trivial model.
    pub fn instant(model: &str) -> Self {
        Script {
            model: model.into(),
            delay: None,
            error: None,
            stall: None,
        }
    }
}

struct Stub {
    script: Script,
    received: Arc<AtomicU64>,
    images: Arc<AtomicU64>,
    stall_until: Mutex<Option<Instant>>,
}

/// A running stub server.
pub struct StubServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// ModelInfer requests received so far.
    pub received: Arc<AtomicU64>,
    /// Images received so far: the batch dimension of each request's
    /// first input, as the client declared it.
    pub images: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubServer {
    /// Starts the stub on a free loopback port.
    pub async fn start(script: Script) -> std::io::Result<StubServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (received, images) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let svc = Stub {
            script,
            received: received.clone(),
            images: images.clone(),
            stall_until: Mutex::new(None),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(GrpcInferenceServiceServer::new(svc))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("stub server: {e}");
            }
        });
        Ok(StubServer {
            url,
            received,
            images,
            stop: Some(tx),
            task,
        })
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Sleeps precisely: the async timer rounds up to whole milliseconds, a
/// blocking-pool thread sleeps to within tens of microseconds.
async fn sleep_precisely(d: Duration) {
    if !d.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}

impl Stub {
    fn tensor(&self, name: &str) -> pb::model_metadata_response::TensorMetadata {
        pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: Datatype::Fp32.name().into(),
            shape: vec![-1, ITEM as i64],
        }
    }

    fn check_model(&self, name: &str) -> Result<(), Status> {
        if name == self.script.model {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown model `{name}`")))
        }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Stub {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.check_model(&r.get_ref().name)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "rir-loadtest-stub".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.check_model(&r.get_ref().name)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: self.script.model.clone(),
            versions: vec!["1".into()],
            platform: "stub".into(),
            inputs: vec![self.tensor("x")],
            outputs: vec![self.tensor("y")],
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let n = self.received.fetch_add(1, Ordering::SeqCst);
        let req = r.into_inner();
        let batch = req
            .inputs
            .first()
            .and_then(|i| i.shape.first())
            .map_or(0, |&b| b.max(0) as u64);
        self.images.fetch_add(batch, Ordering::SeqCst);
        self.check_model(&req.model_name)?;
        let stall_end = {
            let mut until = self
                .stall_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, d)) = self.script.stall
                && n == at
            {
                *until = Some(Instant::now() + d);
            }
            *until
        };
        if let Some(end) = stall_end {
            sleep_precisely(end.saturating_duration_since(Instant::now())).await;
        }
        if let Some(delay) = &self.script.delay {
            sleep_precisely(delay(n)).await;
        }
        if let Some(code) = self.script.error.as_ref().and_then(|f| f(n)) {
            return Err(Status::new(
                code,
                format!("scripted failure of request {n}"),
            ));
        }
        let (Some(input), Some(raw)) = (req.inputs.first(), req.raw_input_contents.first()) else {
            return Err(Status::invalid_argument(
                "expected input `x` in raw_input_contents",
            ));
        };
        let batch = input.shape.first().copied().unwrap_or(0);
        if input.shape.len() != 2
            || input.shape[1] != ITEM as i64
            || raw.len() != batch.max(0) as usize * ITEM * 4
        {
            return Err(Status::invalid_argument(format!(
                "input `x` must be FP32 [N, {ITEM}] with N*{} bytes; got shape {:?} and {} bytes",
                ITEM * 4,
                input.shape,
                raw.len()
            )));
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: self.script.model.clone(),
            model_version: "1".into(),
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: Datatype::Fp32.name().into(),
                shape: input.shape.clone(),
                ..Default::default()
            }],
            raw_output_contents: vec![raw.clone()],
            ..Default::default()
        }))
    }

    async fn model_config(
        &self,
        _: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        Err(Status::unimplemented("the stub has no model configuration"))
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("the stub keeps no statistics"))
    }

    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        Err(Status::unimplemented("the stub has no repository"))
    }

    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented("the stub has no repository"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented("the stub has no repository"))
    }
}

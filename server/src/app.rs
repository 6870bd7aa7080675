//! A server's life: [`start`] loads the repository, binds every listener
//! and starts the front ends, the metrics endpoint and the repository
//! poller; the returned [`Server`] says where it listens and stops it. A
//! stop makes the server not ready (health NOT_SERVING), stops accepting,
//! lets calls in flight finish for at most the shutdown timeout, then ends
//! the endpoint and the poller. `rir-serve` is [`run`] with the signals;
//! the tests call [`start`] with the same configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, RepositoryConfig};
use crate::conn::Gate;
use crate::core::{Budget, Core, Offload};
use crate::error::ServerError;
use crate::http::HttpConfig;
use crate::limits::MessageLimits;
use crate::loader::Loader;
use crate::registry::{Models, Registry, VersionState};
use crate::reload::{ControlMode, Controller};
use crate::scan::ModelError;
use crate::stats::Metrics;
use crate::trace::Tracing;

/// Where a started server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// gRPC.
    pub grpc: SocketAddr,
    /// HTTP/REST, when on.
    pub http: Option<SocketAddr>,
    /// The Prometheus endpoint.
    pub metrics: SocketAddr,
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every call in flight finished.
    Drained,
    /// Calls were still in flight when the shutdown timeout ran out.
    TimedOut,
}

/// Asks a server to stop; cheap to clone, so a signal handler can hold one.
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Starts the stop (again: no effect).
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A running server.
pub struct Server {
    /// Where it listens.
    addresses: Addresses,
    /// Its request path, for what tests and the process read of it.
    core: Arc<Core>,
    /// Raises the stop.
    stopper: Stopper,
    /// The lifecycle task: ends when the server has stopped.
    lifecycle: JoinHandle<Result<Stopped, ServerError>>,
}

impl Server {
    /// Where it listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Its request path: readiness, the models served, their statistics.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Waits until the server has stopped (after a stop, or when a front
    /// end fails), and says how.
    pub(crate) async fn wait(self) -> Result<Stopped, ServerError> {
        self.lifecycle.await.unwrap_or_else(|e| {
            Err(ServerError::Serve {
                front: "lifecycle",
                detail: e.to_string(),
            })
        })
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> Result<Stopped, ServerError> {
        self.stopper.stop();
        self.wait().await
    }
}

/// Starts a server and serves until `signal` resolves, then stops it.
pub async fn run(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped, ServerError> {
    let server = start(config).await?;
    let stopper = server.stopper();
    tokio::spawn(async move {
        signal.await;
        stopper.stop();
    });
    server.wait().await
}

/// Loads the repository, binds every listener and starts serving; the
/// server is ready when this returns.
pub async fn start(config: Config) -> Result<Server, ServerError> {
    check_device(&config)?;
    let metrics = Arc::new(Metrics::new()?);
    let loader = Loader {
        root: config.repository.root.clone(),
        engines: config.engines.clone(),
        batching: config.batching.clone(),
        metrics: metrics.clone(),
    };
    let models = load_at_start(&config.repository, &loader)?;
    check_cuda_sessions(&config, &models)?;
    let all_ready = models.all_ready();
    let registry = Arc::new(Registry::new(models));
    let control = Controller::new(loader, config.repository.mode, registry.clone());
    let limits = MessageLimits::resolve(
        config.grpc.max_message_bytes,
        &registry.snapshot(),
        config.requests.image_limits.max_bytes,
    );
    let tracing = Tracing::start(&config.tracing)?;
    let core = Arc::new(Core::new(
        control,
        config.requests.clone(),
        tracing,
        budget(&config, &metrics),
        Offload::new(
            config.requests.max_decodes,
            config.requests.max_decode_queue,
            metrics.shed.with_label_values(&["decoders"]),
        ),
    ));
    let metrics_tls = metrics_tls(&config)?;
    let listeners = Listeners::bind(&config).await?;
    let addresses = listeners.addresses()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let fronts = spawn_fronts(
        &config,
        &limits,
        &core,
        &metrics,
        (listeners, metrics_tls),
        &drain_rx,
    );
    let poller = spawn_poller(&config.repository, &core);
    core.set_ready(true);
    if !all_ready {
        tracing::warn!("some models are not ready; the others are served");
    }
    announce(&config, &addresses, &limits);
    let lifecycle = tokio::spawn(lifecycle(
        core.clone(),
        stop_rx,
        drain_tx,
        fronts,
        poller,
        config.shutdown_timeout,
    ));
    Ok(Server {
        addresses,
        core,
        stopper: Stopper(Arc::new(stop_tx)),
        lifecycle,
    })
}

/// Under TLS, the metrics endpoint's acceptor (the gRPC certificate) and
/// its handshake deadline.
fn metrics_tls(
    config: &Config,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Duration)>, ServerError> {
    let Some((cert, key)) = &config.grpc.tls else {
        return Ok(None);
    };
    let within = config
        .connections
        .handshake_timeout
        .unwrap_or(Duration::from_secs(30));
    Ok(Some((crate::http::tls::acceptor(cert, key)?, within)))
}

/// The process's budget of request bytes in flight, counted in `metrics`.
fn budget(config: &Config, metrics: &Metrics) -> Budget {
    Budget::new(
        config.requests.max_inflight_bytes,
        metrics.shed.with_label_values(&["memory"]),
        metrics.inflight_bytes.clone(),
    )
}

/// Asked for CUDA and the library has no CUDA provider: fail now, with the
/// reason, rather than serve with every model unavailable.
fn check_device(config: &Config) -> Result<(), ServerError> {
    let options = &config.engines.options;
    if options.ort.device == rir_infer::Device::Cuda && options.backend == rir_infer::Backend::Ort {
        rir_infer::ort_engine::environment(options.ort.library.as_deref())?;
        options
            .ort
            .device
            .resolve(rir_infer::ort_engine::cuda_provider())?;
    }
    Ok(())
}

/// Asked for CUDA, the provider is there, and a model's session could not
/// be made on it (no device visible, out of memory): fail now with the
/// reason too; `--device cuda` never serves on the CPU nor serves nothing.
fn check_cuda_sessions(config: &Config, models: &Models) -> Result<(), ServerError> {
    let options = &config.engines.options;
    if options.ort.device != rir_infer::Device::Cuda || options.backend != rir_infer::Backend::Ort {
        return Ok(());
    }
    let device_error = models
        .by_name
        .values()
        .flatten()
        .find_map(|v| match &v.state {
            VersionState::Unavailable {
                error: ModelError::Engine(rir_infer::InferError::Device { detail, .. }),
                ..
            } => Some(detail.clone()),
            _ => None,
        });
    match device_error {
        Some(detail) => Err(rir_infer::CudaRequired(rir_infer::NoCuda(detail)).into()),
        None => Ok(()),
    }
}

/// The models loaded before the server listens: all of them, or in
/// explicit mode the `--load-model` ones (each of which must exist).
fn load_at_start(repo: &RepositoryConfig, loader: &Loader) -> Result<Models, ServerError> {
    let explicit = repo.mode == ControlMode::Explicit;
    let models = loader.load(explicit.then_some(repo.load_models.as_slice()))?;
    if models.by_name.is_empty() && !explicit {
        return Err(ServerError::NoModels(repo.root.clone()));
    }
    if let Some(missing) = repo
        .load_models
        .iter()
        .find(|n| !models.by_name.contains_key(*n))
    {
        return Err(ServerError::UnknownModel {
            name: missing.clone(),
            root: repo.root.clone(),
        });
    }
    Ok(models)
}

/// Every socket the server listens on, bound before anything is served.
struct Listeners {
    grpc: TcpListener,
    http: Option<TcpListener>,
    metrics: TcpListener,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Self, ServerError> {
        let l = &config.listen;
        let http = match &l.http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Listeners {
            grpc: bind(&l.grpc).await?,
            http,
            metrics: bind(&l.metrics).await?,
        })
    }

    fn addresses(&self) -> Result<Addresses, ServerError> {
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|source| ServerError::Bind {
                addr: "a bound listener".into(),
                source,
            })
        };
        Ok(Addresses {
            grpc: local(&self.grpc)?,
            http: self.http.as_ref().map(local).transpose()?,
            metrics: local(&self.metrics)?,
        })
    }
}

async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The tasks serving requests: the front ends, which drain, and the
/// metrics endpoint, which serves until the server has stopped.
struct Fronts {
    grpc: JoinHandle<Result<(), ServerError>>,
    http: Option<JoinHandle<Result<(), ServerError>>>,
    metrics: JoinHandle<Result<(), ServerError>>,
    /// Ends the metrics endpoint.
    metrics_stop: watch::Sender<bool>,
}

fn spawn_fronts(
    config: &Config,
    sizes: &MessageLimits,
    core: &Arc<Core>,
    metrics: &Arc<Metrics>,
    (listeners, metrics_tls): (Listeners, Option<(tokio_rustls::TlsAcceptor, Duration)>),
    drain: &watch::Receiver<bool>,
) -> Fronts {
    let limits = config.connections;
    let grpc = tokio::spawn({
        let (core, grpc, sizes) = (core.clone(), config.grpc.clone(), *sizes);
        let gate = Gate::new(limits, "grpc", metrics).expecting_calls(limits.handshake_timeout);
        let drained = raised(drain.clone());
        async move { crate::grpc::serve(core, &grpc, &sizes, listeners.grpc, gate, drained).await }
    });
    let http = listeners.http.map(|listener| {
        let http = HttpConfig {
            max_body_bytes: sizes.rest,
            max_image_body_bytes: sizes.rest_image,
            body_timeout: config.grpc.body_timeout,
            body_deadline: config.grpc.body_deadline,
            auth_token: config.grpc.auth_token.clone(),
        };
        let gate = Gate::new(limits, "http", metrics);
        tokio::spawn(crate::http::serve(
            core.clone(),
            http,
            listener,
            gate,
            raised(drain.clone()),
        ))
    });
    let (metrics_stop, metrics_stopped) = watch::channel(false);
    let metrics = tokio::spawn(crate::http::metrics::serve(
        metrics.clone(),
        core.clone(),
        config.metrics_token.clone(),
        listeners.metrics,
        Gate::new(limits, "metrics", metrics),
        metrics_tls,
        raised(metrics_stopped),
    ));
    Fronts {
        grpc,
        http,
        metrics,
        metrics_stop,
    }
}

/// Resolves once `signal` is raised (or its sender is gone).
async fn raised(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|raised| *raised).await;
}

/// In poll mode, a task that rescans the repository every interval.
fn spawn_poller(repo: &RepositoryConfig, core: &Arc<Core>) -> Option<JoinHandle<()>> {
    if repo.mode != ControlMode::Poll {
        return None;
    }
    let every = repo.poll_interval.max(Duration::from_secs(1));
    tracing::info!("polling {} every {}s", repo.root.display(), every.as_secs());
    let core = core.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            core.poll_repository().await;
        }
    }))
}

/// The lines an operator looks for: where each front end listens, and
/// how large a request may be.
fn announce(config: &Config, a: &Addresses, limits: &MessageLimits) {
    tracing::info!(
        "request limits: gRPC ModelInfer {} KiB, Classify {} KiB; REST {} KiB, images {} KiB",
        limits.grpc_infer >> 10,
        limits.grpc_classify >> 10,
        limits.rest >> 10,
        limits.rest_image >> 10
    );
    let scheme = if config.grpc.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!("metrics on {scheme}://{}/metrics", a.metrics);
    let security = match (&config.grpc.tls, &config.grpc.tls_client_ca) {
        (Some(_), Some(_)) => " (mutual TLS)",
        (Some(_), None) => " (TLS)",
        (None, _) => "",
    };
    tracing::info!("gRPC on {}{security}", a.grpc);
    if let Some(http) = a.http {
        tracing::info!("HTTP on http://{http}/v2");
    }
}

/// Serves until a stop is asked for or a front end fails; then drains the
/// front ends for at most `timeout` and ends the rest.
async fn lifecycle(
    core: Arc<Core>,
    mut stop: watch::Receiver<bool>,
    drain: watch::Sender<bool>,
    mut fronts: Fronts,
    poller: Option<JoinHandle<()>>,
    timeout: Duration,
) -> Result<Stopped, ServerError> {
    let failed = tokio::select! {
        _ = stop.wait_for(|s| *s) => None,
        r = &mut fronts.grpc => Some(r),
    };
    core.set_ready(false);
    let _ = drain.send(true);
    tracing::info!("shutting down: not ready, no new connections, finishing calls in flight");
    let outcome = match failed {
        Some(r) => joined(r).map(|()| Stopped::Drained),
        None => drain_fronts(&mut fronts, timeout).await,
    };
    if let Some(p) = poller {
        p.abort();
    }
    let _ = fronts.metrics_stop.send(true);
    let _ = (&mut fronts.metrics).await;
    if let Some(t) = core.tracing().cloned() {
        // The spans of the last calls, before the process ends.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// Waits for the front ends to finish their calls, at most `timeout`.
async fn drain_fronts(fronts: &mut Fronts, timeout: Duration) -> Result<Stopped, ServerError> {
    let drained = async {
        joined((&mut fronts.grpc).await)?;
        if let Some(http) = &mut fronts.http {
            joined(http.await)?;
        }
        Ok::<(), ServerError>(())
    };
    match tokio::time::timeout(timeout, drained).await {
        Ok(r) => r.map(|()| Stopped::Drained),
        Err(_) => {
            tracing::warn!(
                "calls still in flight after {}s; exiting",
                timeout.as_secs()
            );
            fronts.grpc.abort();
            if let Some(http) = &fronts.http {
                http.abort();
            }
            Ok(Stopped::TimedOut)
        }
    }
}

fn joined(r: Result<Result<(), ServerError>, tokio::task::JoinError>) -> Result<(), ServerError> {
    r.unwrap_or_else(|e| {
        Err(ServerError::Serve {
            front: "a front end",
            detail: e.to_string(),
        })
    })
}

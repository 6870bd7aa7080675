//! ONNX Runtime through `ort` with `load-dynamic`.
//!
//! The shared library is never downloaded: it comes from the PyPI
//! `onnxruntime` wheel (`scripts/setup.sh` unpacks it into `.deps/`). Its
//! path is resolved here, in this order: an explicit path, the
//! `ORT_DYLIB_PATH` environment variable, the path baked in at build time
//! (`RIR_ORT_DYLIB`), and `.deps/onnxruntime/libonnxruntime.so` under the
//! working directory. Without any, loading fails with an error saying so
//! (ort itself would panic).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::bound::Bound;
use crate::device::{ConvSearch, CudaOptions, Device, NoCuda};
use crate::engine::{Engine, Output};
use crate::error::InferError;

/// How to create ONNX Runtime sessions.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// Path of `libonnxruntime.so`, if not found the usual way.
    pub library: Option<PathBuf>,
    /// Intra-op threads per session (0: ONNX Runtime's default).
    pub threads: usize,
    /// The CPU or CUDA execution provider.
    pub device: Device,
    /// The CUDA execution provider's settings (unused on the CPU).
    pub cuda: CudaOptions,
    /// Let idle intra-op threads spin-wait for the next run (ONNX Runtime's
    /// default). Fastest when the session has the cores to itself; in a
    /// server it takes CPU from the threads that receive and answer
    /// requests.
    pub spin: bool,
    /// Run through an IoBinding whose input and outputs are preallocated on
    /// the session's device, one set per batch size (the engine asks for
    /// fixed batch sizes, so callers pad to their buckets), with explicit copies
    /// in and out (always on when [`CudaOptions::graph`] is).
    pub bound_io: bool,
}

impl Default for OrtOptions {
    /// The CPU, so that tests and references are deterministic wherever
    /// they run; binaries pass the user's `--device`.
    fn default() -> Self {
        OrtOptions {
            library: None,
            threads: 0,
            device: Device::Cpu,
            cuda: CudaOptions::default(),
            spin: true,
            bound_io: false,
        }
    }
}

/// The library path the search settles on.
pub fn resolve_library(explicit: Option<&Path>) -> Result<PathBuf, InferError> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    let baked = env!("RIR_ORT_DYLIB_BAKED");
    if !baked.is_empty() {
        candidates.push(PathBuf::from(baked));
    }
    candidates.push(PathBuf::from(".deps/onnxruntime/libonnxruntime.so"));
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(InferError::Library(format!(
        "libonnxruntime.so not found (tried: {}). Run scripts/setup.sh, or set ORT_DYLIB_PATH to the \
         library inside the PyPI onnxruntime wheel (onnxruntime/capi/libonnxruntime.so.*)",
        tried.join(", ")
    )))
}

static ENVIRONMENT: OnceLock<Result<Environment, InferError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one),
/// loading the library on first use, with ONNX Runtime's telemetry off.
pub fn environment(library: Option<&Path>) -> Result<&'static Environment, InferError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = resolve_library(library)?;
            let builder = ort::init_from(&path)
                .map_err(|e| InferError::Library(format!("loading {}: {e}", path.display())))?;
            tracing::debug!("ONNX Runtime loaded from {}", path.display());
            // Microsoft's builds (the PyPI wheel among them) send usage
            // telemetry by default: model names and metadata, error
            // messages, run counts. A server must not phone home unasked.
            builder
                .with_name("rir")
                .with_telemetry(false)
                .build()
                .map_err(|e| {
                    InferError::Library(format!("creating the ONNX Runtime environment: {e}"))
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs before a graph session's first answer: ONNX Runtime's CUDA
/// provider makes its allocations in a regular run, captures the graph in
/// the next and replays it from then on.
const CAPTURE_RUNS: usize = 3;

/// One ONNX Runtime session.
pub struct OrtEngine {
    session: Session,
    input: String,
    cuda: bool,
    /// `Some` when runs go through bound buffers: the bindings made so far,
    /// one per input shape.
    bound: Option<Vec<Bound>>,
    /// A CUDA graph is captured: one input shape only.
    graph: bool,
}

fn model_err(path: &Path) -> impl Fn(String) -> InferError + '_ {
    move |detail| InferError::Model {
        path: path.to_path_buf(),
        detail,
    }
}

impl OrtEngine {
    /// Loads `path` with `options`. With [`Device::Auto`] a session on the
    /// CUDA provider is tried first; when it cannot be made the reason is
    /// logged and the session runs on the CPU.
    pub fn load(path: &Path, options: &OrtOptions) -> Result<Self, InferError> {
        let env = environment(options.library.as_deref())?;
        on_device(options.device, |cuda| Self::build(env, path, options, cuda))
    }

    fn build(
        env: &Environment,
        path: &Path,
        options: &OrtOptions,
        cuda: bool,
    ) -> Result<Self, InferError> {
        let err = model_err(path);
        let mut builder = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(|e| err(e.to_string()))?;
        }
        if !options.spin {
            builder = builder
                .with_intra_op_spinning(false)
                .map_err(|e| err(e.to_string()))?;
        }
        if cuda {
            builder = with_cuda(builder, &options.cuda)?;
        }
        let session = builder.commit_from_file(path).map_err(|e| {
            if cuda {
                InferError::Device {
                    device: "cuda",
                    detail: format!("creating a session for {}: {e}", path.display()),
                }
            } else {
                err(e.to_string())
            }
        })?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or_else(|| err("the model has no input".into()))?;
        let graph = cuda && options.cuda.graph;
        Ok(OrtEngine {
            session,
            input,
            cuda,
            bound: (options.bound_io || graph).then(Vec::new),
            graph,
        })
    }

    /// Whether this session runs on the CUDA execution provider.
    pub fn on_cuda(&self) -> bool {
        self.cuda
    }

    /// The input shapes this session holds bound buffers for, in the order
    /// first run (empty without bound buffers): each costs its input and
    /// outputs twice, on the device and on the host.
    pub fn bound_shapes(&self) -> Vec<Vec<usize>> {
        self.bound
            .iter()
            .flatten()
            .map(|b| b.shape().to_vec())
            .collect()
    }

    /// Whether this session replays a CUDA graph (and so runs one batch
    /// size only).
    pub fn cuda_graph(&self) -> bool {
        self.graph
    }

    /// A run through the binding for `shape`, made on the first run at
    /// that shape. A graph session has one: ONNX Runtime captures the graph
    /// at the first shape and cannot replay it at another.
    fn run_bound(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>, String> {
        let bound = self.bound.get_or_insert_with(Vec::new);
        let at = match bound.iter().position(|b| b.shape() == shape) {
            Some(at) => at,
            None => {
                if let (true, Some(first)) = (self.graph, bound.first()) {
                    return Err(format!(
                        "this session's CUDA graph was captured at input shape {:?}, not {shape:?} \
                         (a graph session runs one batch size; serve with one session per bucket)",
                        first.shape()
                    ));
                }
                let mut made = Bound::new(&self.session, &self.input, shape, self.cuda)?;
                if self.graph {
                    // ONNX Runtime captures the graph after a regular run
                    // or two: do them now (the server's warm-up), not on
                    // the first requests.
                    for _ in 0..CAPTURE_RUNS {
                        made.run(&mut self.session, input)?;
                    }
                }
                bound.push(made);
                bound.len() - 1
            }
        };
        bound[at].run(&mut self.session, input)
    }
}

/// Makes something on the device `device` asks for: `build(true)` on the
/// CUDA provider first unless the CPU was asked for, and where that fails
/// for want of CUDA (no provider, no device, a session the provider could
/// not create) either `build(false)` on the CPU (`auto`, the reason
/// logged) or the error (`cuda`).
fn on_device<T>(
    device: Device,
    build: impl Fn(bool) -> Result<T, InferError>,
) -> Result<T, InferError> {
    if device == Device::Cpu {
        return build(false);
    }
    match build(true) {
        Err(InferError::Device { detail, .. }) => match device.resolve(Err(NoCuda(detail.clone())))
        {
            Ok(_) => build(false),
            Err(_) => Err(InferError::Device {
                device: "cuda",
                detail,
            }),
        },
        made => made,
    }
}

/// Whether the loaded ONNX Runtime library has its CUDA execution provider
/// (`Err` says why not). Call after [`environment`] has loaded the library.
pub fn cuda_provider() -> Result<(), NoCuda> {
    use ort::ep::ExecutionProvider;
    match ort::ep::CUDA::is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(NoCuda(
            "this ONNX Runtime library has no CUDA execution provider (on a GPU \
             host, scripts/setup.sh installs onnxruntime-gpu; or point ORT_DYLIB_PATH at its \
             libonnxruntime.so)"
                .into(),
        )),
        Err(e) => Err(NoCuda(e.to_string())),
    }
}

fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    o: &CudaOptions,
) -> Result<ort::session::builder::SessionBuilder, InferError> {
    use ort::ep::cuda::ConvAlgorithmSearch;
    let fail = |detail: String| InferError::Device {
        device: "cuda",
        detail,
    };
    cuda_provider().map_err(|e| fail(e.0))?;
    let mut ep = ort::ep::CUDA::default()
        .with_conv_algorithm_search(match o.conv_search {
            ConvSearch::Exhaustive => ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Heuristic => ConvAlgorithmSearch::Heuristic,
            ConvSearch::Default => ConvAlgorithmSearch::Default,
        })
        .with_tf32(o.tf32)
        .with_prefer_nhwc(o.prefer_nhwc)
        .with_cuda_graph(o.graph);
    if let Some(limit) = o.memory_limit {
        ep = ep.with_memory_limit(limit);
    }
    builder
        .with_execution_providers([ep.build().error_on_failure()])
        .map_err(|e| fail(e.to_string()))
}

impl Engine for OrtEngine {
    fn name(&self) -> String {
        if self.cuda {
            "onnxruntime-cuda".into()
        } else {
            "onnxruntime-cpu".into()
        }
    }

    fn fixed_batch_sizes(&self) -> bool {
        // Bound buffers are allocated per batch size: at the buckets only.
        self.cuda || self.bound.is_some()
    }

    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Output>, InferError> {
        let fail = |detail: String| InferError::Run {
            engine: "onnxruntime",
            detail,
        };
        if self.bound.is_some() {
            return self.run_bound(input, shape).map_err(fail);
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = TensorRef::from_array_view((dims, input)).map_err(|e| fail(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| fail(format!("output {name}: {e}")))?;
            out.push(Output {
                name: name.to_string(),
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A build whose CUDA session cannot be created, as on a host whose
    /// library has the provider but whose device is gone or out of memory;
    /// it records which sessions were asked for.
    fn failing_cuda<'a>(
        tried: &'a RefCell<Vec<bool>>,
    ) -> impl Fn(bool) -> Result<&'static str, InferError> + 'a {
        move |cuda| {
            tried.borrow_mut().push(cuda);
            match cuda {
                true => Err(InferError::Device {
                    device: "cuda",
                    detail: "creating a session: CUDA failure 100: no CUDA-capable device".into(),
                }),
                false => Ok("cpu session"),
            }
        }
    }

    #[test]
    fn a_cuda_session_that_cannot_be_created_falls_back_on_auto_and_fails_on_cuda() {
        let tried = RefCell::new(vec![]);
        assert_eq!(
            on_device(Device::Auto, failing_cuda(&tried)).unwrap(),
            "cpu session"
        );
        assert_eq!(*tried.borrow(), [true, false], "CUDA first, then the CPU");

        let tried = RefCell::new(vec![]);
        let err = on_device(Device::Cuda, failing_cuda(&tried))
            .unwrap_err()
            .to_string();
        assert_eq!(
            *tried.borrow(),
            [true],
            "no CPU session behind the user's back"
        );
        assert!(
            err.contains("device cuda unavailable") && err.contains("no CUDA-capable device"),
            "{err}"
        );

        let tried = RefCell::new(vec![]);
        on_device(Device::Cpu, failing_cuda(&tried)).unwrap();
        assert_eq!(
            *tried.borrow(),
            [false],
            "the CPU asked for, CUDA never tried"
        );
    }

    #[test]
    fn a_model_error_on_cuda_is_not_a_reason_to_fall_back() {
        let tried = RefCell::new(vec![]);
        let build = |cuda| {
            tried.borrow_mut().push(cuda);
            Err::<(), _>(InferError::Library("no libonnxruntime.so".into()))
        };
        assert!(matches!(
            on_device(Device::Auto, build),
            Err(InferError::Library(_))
        ));
        assert_eq!(*tried.borrow(), [true]);
    }
}

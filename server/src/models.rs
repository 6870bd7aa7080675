//! The served models: each version found in the repository, its engines,
//! its batcher and its statistics, or the reason it is not ready.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rir_infer::{Engine, OrtEngine, OrtOptions, TractEngine};

use crate::batcher::{BatchConfig, Batcher};
use crate::repository::{Found, ModelDescriptor, scan};
use crate::stats::{Metrics, ModelStats};

/// Which engine serves the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// ONNX Runtime.
    Ort,
    /// tract (pure Rust).
    Tract,
}

/// Where ONNX Runtime computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The CUDA execution provider when it can be had, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA, or fail.
    Cuda,
}

/// How engines are made.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// ONNX Runtime or tract.
    pub backend: BackendKind,
    /// ONNX Runtime's device.
    pub device: DeviceChoice,
    /// Engine instances (and threads) per model.
    pub instances: usize,
    /// Intra-op threads per ONNX Runtime instance (0: its default).
    pub threads: usize,
    /// Path of libonnxruntime.so, if not found the usual way.
    pub ort_library: Option<PathBuf>,
    /// Let ONNX Runtime's idle intra-op threads spin-wait (see
    /// [`OrtOptions::spin`]).
    pub ort_spin: bool,
}

/// One model version and its state.
pub struct Slot {
    /// Version number.
    pub version: u64,
    /// What the model takes and returns, when it could be read.
    pub desc: Option<ModelDescriptor>,
    /// The batcher, when the model is ready.
    pub batcher: Option<Batcher>,
    /// Why it is not ready.
    pub error: Option<String>,
    /// The engine serving it (`onnxruntime`, `tract`), for ModelConfig.
    pub engine: String,
    /// Its statistics.
    pub stats: Arc<ModelStats>,
}

impl Slot {
    /// Whether requests can be served.
    pub fn ready(&self) -> bool {
        self.batcher.is_some()
    }
}

/// Every model, by name, then by version.
pub struct Models {
    /// Models by name; versions ascending.
    pub by_name: BTreeMap<String, Vec<Slot>>,
}

/// Why a model lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such model or version.
    NotFound(String),
}

fn make_engine(d: &ModelDescriptor, o: &EngineOptions) -> Result<Box<dyn Engine>, String> {
    Ok(match o.backend {
        BackendKind::Tract => Box::new(TractEngine::load(&d.path).map_err(|e| e.to_string())?),
        BackendKind::Ort => {
            let base = OrtOptions {
                library: o.ort_library.clone(),
                threads: o.threads,
                cuda: false,
                spin: o.ort_spin,
            };
            match o.device {
                DeviceChoice::Cpu => {
                    Box::new(OrtEngine::load(&d.path, &base).map_err(|e| e.to_string())?)
                }
                DeviceChoice::Cuda => Box::new(
                    OrtEngine::load(&d.path, &OrtOptions { cuda: true, ..base })
                        .map_err(|e| format!("--device cuda: {e}"))?,
                ),
                DeviceChoice::Auto => match OrtEngine::load(
                    &d.path,
                    &OrtOptions {
                        cuda: true,
                        ..base.clone()
                    },
                ) {
                    Ok(e) => Box::new(e),
                    Err(why) => {
                        tracing::warn!(model = %d.name, "CUDA unavailable, serving on the CPU: {why}");
                        Box::new(OrtEngine::load(&d.path, &base).map_err(|e| e.to_string())?)
                    }
                },
            }
        }
    })
}

/// Runs every batch size the batcher can form (powers of two and the
/// maximum) once, so that first requests do not pay for allocation and
/// kernel selection.
fn warm_up(engine: &mut dyn Engine, d: &ModelDescriptor, max_batch: usize) -> Result<(), String> {
    let per = d.chw.iter().product::<usize>();
    let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n < max_batch)
        .collect();
    sizes.push(max_batch);
    for n in sizes {
        let x = vec![0.5f32; n * per];
        let outs = engine
            .run(&x, &[n, d.chw[0], d.chw[1], d.chw[2]])
            .map_err(|e| format!("warm-up at batch {n}: {e}"))?;
        if outs.iter().flat_map(|o| &o.data).any(|v| !v.is_finite()) {
            return Err(format!(
                "warm-up at batch {n} produced NaN or infinite outputs"
            ));
        }
    }
    Ok(())
}

impl Models {
    /// Loads and warms up every model under `root`. A model that fails is
    /// kept, not ready, with its reason; the others serve.
    pub fn load(
        root: &Path,
        engines: &EngineOptions,
        batching: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut by_name: BTreeMap<String, Vec<Slot>> = BTreeMap::new();
        for found in scan(root)? {
            let (name, version, desc, err) = match found {
                Found::Ok(d) => (d.name.clone(), d.version, Some(d), None),
                Found::Broken {
                    name,
                    version,
                    reason,
                } => (name, version, None, Some(reason)),
            };
            let stats = Arc::new(ModelStats::new(&name, metrics.clone()));
            let mut slot = Slot {
                version,
                desc: desc.clone(),
                batcher: None,
                error: err,
                stats: stats.clone(),
                engine: match engines.backend {
                    BackendKind::Ort => "onnxruntime".into(),
                    BackendKind::Tract => "tract".into(),
                },
            };
            if let Some(d) = &desc {
                let started = std::time::Instant::now();
                let built: Result<Vec<Box<dyn Engine>>, String> = (0..engines.instances.max(1))
                    .map(|_| {
                        let mut e = make_engine(d, engines)?;
                        warm_up(e.as_mut(), d, batching.max_batch)?;
                        Ok(e)
                    })
                    .collect();
                match built {
                    Ok(list) => {
                        tracing::info!(
                            model = %name, version, engine = %list[0].name(), instances = list.len(),
                            "ready in {:.2}s", started.elapsed().as_secs_f64()
                        );
                        slot.batcher = Some(Batcher::start(d, list, batching, stats));
                    }
                    Err(e) => slot.error = Some(e),
                }
            }
            if let Some(e) = &slot.error {
                tracing::error!(model = %name, version, "not ready: {e}");
            }
            by_name.entry(name).or_default().push(slot);
        }
        Ok(Models { by_name })
    }

    /// The slot of `name` at `version` (empty: the latest).
    pub fn get(&self, name: &str, version: &str) -> Result<&Slot, Lookup> {
        let slots = self.by_name.get(name).ok_or_else(|| {
            Lookup::NotFound(format!(
                "unknown model `{name}`; served: {}",
                self.names().join(", ")
            ))
        })?;
        if version.is_empty() {
            return slots
                .last()
                .ok_or_else(|| Lookup::NotFound(format!("model `{name}` has no version")));
        }
        let v: u64 = version.parse().map_err(|_| {
            Lookup::NotFound(format!(
                "model `{name}` has no version `{version}` (versions are numbers)"
            ))
        })?;
        slots
            .iter()
            .find(|s| s.version == v)
            .ok_or_else(|| Lookup::NotFound(format!("model `{name}` has no version {v}")))
    }

    /// Names of all models.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// Whether every model version is ready.
    pub fn all_ready(&self) -> bool {
        self.by_name.values().flatten().all(Slot::ready)
    }
}

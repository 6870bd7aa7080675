//! The served models: each version found in the repository, its engines,
//! its batcher and its statistics, or the reason it is not ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rir_infer::{Backend, Engine, EngineOptions, load_bucketed, warm_up};

use crate::batcher::{BatchConfig, Batcher};
use crate::repository::{Found, ModelDescriptor, scan};
use crate::stats::{Metrics, ModelStats};

/// How a model's engines are made.
#[derive(Debug, Clone)]
pub struct ServingEngines {
    /// Backend, device and their settings.
    pub options: EngineOptions,
    /// Engine instances (and threads) per model.
    pub instances: usize,
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

impl Models {
    /// Loads and warms up every model under `root`. A model that fails is
    /// kept, not ready, with its reason; the others serve.
    pub fn load(
        root: &Path,
        engines: &ServingEngines,
        batching: &BatchConfig,
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
                engine: match engines.options.backend {
                    Backend::Ort => "onnxruntime".into(),
                    Backend::Tract => "tract".into(),
                },
            };
            if let Some(d) = &desc {
                let started = std::time::Instant::now();
                let built: Result<Vec<Box<dyn Engine>>, String> = (0..engines.instances.max(1))
                    .map(|_| {
                        let mut e = load_bucketed(&d.path, &engines.options, &batching.buckets)
                            .map_err(|e| e.to_string())?;
                        warm_up(e.as_mut(), d.chw, &batching.buckets)?;
                        Ok(e)
                    })
                    .collect();
                match built {
                    Ok(list) => {
                        tracing::info!(
                            model = %name, version, engine = %list[0].name(), instances = list.len(),
                            buckets = ?batching.buckets.sizes(),
                            "ready in {:.2}s", started.elapsed().as_secs_f64()
                        );
                        slot.batcher = Some(Batcher::start(d, list, batching.clone(), stats));
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

//! The served models: each version found in the repository, its engines,
//! its batcher and its statistics, or the reason it is not ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rir_infer::{Backend, Engine, EngineOptions, load_bucketed, warm_up};

use crate::batcher::{BatchConfig, Batcher};
use crate::error::ServeError;
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

/// Whether a model version can serve.
pub enum SlotState {
    /// Loaded, warmed and taking requests.
    Ready {
        /// What the model takes and returns.
        desc: ModelDescriptor,
        /// Its queue and engine threads.
        batcher: Batcher,
    },
    /// Not serving, and why. The description is there when the file could
    /// be read but its engines could not be made.
    Unavailable {
        /// What the model takes and returns, when the file could be read.
        desc: Option<ModelDescriptor>,
        /// Why it does not serve.
        reason: String,
    },
}

/// One model version: its state, engine name and statistics.
pub struct Slot {
    /// Version number.
    pub version: u64,
    /// Ready, or unavailable with its reason.
    pub state: SlotState,
    /// The engine serving it (`onnxruntime`, `tract`), for ModelConfig.
    pub engine: String,
    /// Its statistics.
    pub stats: Arc<ModelStats>,
}

impl Slot {
    /// Whether requests can be served.
    pub fn ready(&self) -> bool {
        matches!(self.state, SlotState::Ready { .. })
    }

    /// What the model takes and returns, when its file could be read.
    pub fn desc(&self) -> Option<&ModelDescriptor> {
        match &self.state {
            SlotState::Ready { desc, .. } => Some(desc),
            SlotState::Unavailable { desc, .. } => desc.as_ref(),
        }
    }

    /// Why the version does not serve (None when ready).
    pub fn reason(&self) -> Option<&str> {
        match &self.state {
            SlotState::Ready { .. } => None,
            SlotState::Unavailable { reason, .. } => Some(reason),
        }
    }
}

/// Makes and warms the engines of one model version and starts its batcher.
fn start(
    desc: ModelDescriptor,
    name: &str,
    engines: &ServingEngines,
    batching: &BatchConfig,
    stats: Arc<ModelStats>,
) -> SlotState {
    let started = std::time::Instant::now();
    let built: Result<Vec<Box<dyn Engine>>, String> = (0..engines.instances.max(1))
        .map(|_| {
            let mut e = load_bucketed(&desc.path, &engines.options, &batching.buckets)
                .map_err(|e| e.to_string())?;
            warm_up(e.as_mut(), desc.chw, &batching.buckets)?;
            Ok(e)
        })
        .collect();
    match built {
        Ok(list) => {
            tracing::info!(
                model = %name, version = desc.version, engine = %list[0].name(),
                instances = list.len(), buckets = ?batching.buckets.sizes(),
                "ready in {:.2}s", started.elapsed().as_secs_f64()
            );
            let batcher = Batcher::start(&desc, list, batching.clone(), stats);
            SlotState::Ready { desc, batcher }
        }
        Err(reason) => SlotState::Unavailable {
            desc: Some(desc),
            reason,
        },
    }
}

/// Every model, by name, then by version.
pub struct Models {
    /// Models by name; versions ascending.
    pub by_name: BTreeMap<String, Vec<Slot>>,
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
            let state = match (desc, err) {
                (Some(d), _) => start(d, &name, engines, batching, stats.clone()),
                (None, reason) => SlotState::Unavailable {
                    desc: None,
                    reason: reason.unwrap_or_else(|| "unknown error".into()),
                },
            };
            if let SlotState::Unavailable { reason, .. } = &state {
                tracing::error!(model = %name, version, "not ready: {reason}");
            }
            let slot = Slot {
                version,
                state,
                stats,
                engine: match engines.options.backend {
                    Backend::Ort => "onnxruntime".into(),
                    Backend::Tract => "tract".into(),
                },
            };
            by_name.entry(name).or_default().push(slot);
        }
        Ok(Models { by_name })
    }

    /// The slot of `name` at `version` (empty: the latest).
    pub fn get(&self, name: &str, version: &str) -> Result<&Slot, ServeError> {
        let slots = self.by_name.get(name).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown model `{name}`; served: {}",
                self.names().join(", ")
            ))
        })?;
        if version.is_empty() {
            return slots
                .last()
                .ok_or_else(|| ServeError::NotFound(format!("model `{name}` has no version")));
        }
        let v: u64 = version.parse().map_err(|_| {
            ServeError::NotFound(format!(
                "model `{name}` has no version `{version}` (versions are numbers)"
            ))
        })?;
        slots
            .iter()
            .find(|s| s.version == v)
            .ok_or_else(|| ServeError::NotFound(format!("model `{name}` has no version {v}")))
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

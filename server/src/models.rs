//! The served models: each version found in the repository, its engines,
//! its batcher and its statistics, or the reason it is not ready.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rir_infer::{Backend, Buckets, Engine, EngineOptions, TritonConfig, load_bucketed, warm_up};

use crate::batcher::{BatchConfig, Batcher};
use crate::error::ServeError;
use crate::repository::{
    CONFIG_FILE, Fingerprint, Found, ModelDescriptor, check_config, model_names, read_config,
    scan_model,
};
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
    /// The file it was loaded from, as it was then.
    pub fingerprint: Option<Fingerprint>,
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

/// Makes the slots of models found on disk: engines, warm-up, batcher.
/// Cheap to clone, so a reload can run it on a blocking thread.
#[derive(Clone)]
pub struct Loader {
    /// The repository root.
    pub root: PathBuf,
    /// How engines are made.
    pub engines: ServingEngines,
    /// How requests are batched.
    pub batching: BatchConfig,
    /// Where statistics are exported.
    pub metrics: Arc<Metrics>,
}

/// A model's slots after a (re)load, and what went wrong on the way.
pub struct Loaded {
    /// Every version on disk, ascending.
    pub slots: Vec<Arc<Slot>>,
    /// Versions whose new file failed while the previous one kept serving.
    pub kept: Vec<(u64, Kept)>,
}

impl Loader {
    fn engine_name(&self) -> String {
        match self.engines.options.backend {
            Backend::Ort => "onnxruntime".into(),
            Backend::Tract => "tract".into(),
        }
    }

    /// Loads every version of `name` from disk. A version whose file is
    /// unchanged since `old` keeps its slot (engines, queue, statistics);
    /// a changed or new one is loaded and warmed; a version whose new file
    /// fails keeps its old ready slot, and says so in [`Loaded::kept`].
    pub fn load_model(&self, name: &str, old: &[Arc<Slot>]) -> Loaded {
        let mut slots = vec![];
        let mut kept = vec![];
        // The model's config.pbtxt: batching, instances, versions. A bad one
        // fails every version with its reason.
        let config = read_config(&self.root, name);
        let settings = match &config {
            Ok(c) => self.settings(c.as_ref()),
            Err(e) => Err(e.clone()),
        };
        let mut found = scan_model(&self.root, name);
        if let Ok(Some(c)) = &config {
            let available: Vec<u64> = found.iter().map(|f| f.version).collect();
            let chosen = c.version_policy.select(&available);
            found.retain(|f| chosen.contains(&f.version));
        }
        for mut found in found {
            found.model = match (found.model, &settings, &config) {
                (Err(e), _, _) => Err(e),
                (Ok(_), Err(e), _) => Err(e.clone()),
                (Ok(d), Ok(_), Ok(Some(c))) => check_config(c, &d).map(|()| d),
                (Ok(d), Ok(_), _) => Ok(d),
            };
            let previous = old.iter().find(|s| s.version == found.version);
            if let Some(p) = previous
                && found.fingerprint.is_some()
                && p.fingerprint == found.fingerprint
            {
                slots.push(p.clone());
                continue;
            }
            let (version, fingerprint) = (found.version, found.fingerprint);
            let slot = match &settings {
                Ok((engines, batching)) => self.load_version(found, engines, batching),
                Err(_) => self.load_version(found, &self.engines, &self.batching),
            };
            match (slot.reason(), previous) {
                (Some(reason), Some(p)) if p.ready() => {
                    tracing::error!(
                        model = %name, version,
                        "the new file failed, the previous one keeps serving: {reason}"
                    );
                    kept.push((
                        version,
                        Kept {
                            reason: reason.to_string(),
                            failed: fingerprint,
                        },
                    ));
                    slots.push(p.clone());
                }
                _ => slots.push(Arc::new(slot)),
            }
        }
        Loaded { slots, kept }
    }

    /// The server's engine and batching settings with what `config` sets
    /// for one model: `max_batch_size`, `dynamic_batching` (preferred
    /// sizes become the buckets, and the queue delay) and the number of
    /// instances.
    fn settings(
        &self,
        config: Option<&TritonConfig>,
    ) -> Result<(ServingEngines, BatchConfig), String> {
        let (mut engines, mut batching) = (self.engines.clone(), self.batching.clone());
        let Some(c) = config else {
            return Ok((engines, batching));
        };
        if let Some(n) = c.instance_count {
            engines.instances = n.max(1);
        }
        let max = c.max_batch_size.unwrap_or(batching.max_batch());
        let preferred = c
            .dynamic_batching
            .as_ref()
            .map(|d| d.preferred_batch_size.clone())
            .filter(|p| !p.is_empty());
        let sizes = preferred.unwrap_or_else(|| {
            let server: Vec<usize> = batching.buckets.sizes().to_vec();
            server.into_iter().filter(|&s| s < max).collect()
        });
        batching.buckets = Buckets::new(sizes, max).map_err(|e| format!("{CONFIG_FILE}: {e}"))?;
        if let Some(us) = c
            .dynamic_batching
            .as_ref()
            .and_then(|d| d.max_queue_delay_microseconds)
        {
            batching.max_delay = std::time::Duration::from_micros(us);
        }
        Ok((engines, batching))
    }

    fn load_version(&self, found: Found, engines: &ServingEngines, batching: &BatchConfig) -> Slot {
        let Found {
            name,
            version,
            fingerprint,
            model,
        } = found;
        let stats = Arc::new(ModelStats::new(&name, self.metrics.clone()));
        let state = match model {
            Ok(d) => start(d, &name, engines, batching, stats.clone()),
            Err(reason) => SlotState::Unavailable { desc: None, reason },
        };
        if let SlotState::Unavailable { reason, .. } = &state {
            tracing::error!(model = %name, version, "not ready: {reason}");
        }
        Slot {
            version,
            state,
            stats,
            engine: self.engine_name(),
            fingerprint,
        }
    }

    /// Loads the models named (all on disk when `names` is None).
    pub fn load(&self, names: Option<&[String]>) -> Result<Models, String> {
        let on_disk = model_names(&self.root)?;
        let mut models = Models::default();
        for name in on_disk
            .iter()
            .filter(|n| names.is_none_or(|list| list.contains(n)))
        {
            let loaded = self.load_model(name, &[]);
            if !loaded.slots.is_empty() {
                models.by_name.insert(name.clone(), loaded.slots);
            }
        }
        Ok(models)
    }
}

/// Every served model, by name, then by version. A snapshot: a reload
/// builds a new one and swaps it in, and requests keep the one they began
/// with until they finish.
#[derive(Clone, Default)]
pub struct Models {
    /// Models by name; versions ascending.
    pub by_name: BTreeMap<String, Vec<Arc<Slot>>>,
    /// Versions still served from a previous file because their new file
    /// failed to load (shown by the repository index).
    pub kept: BTreeMap<(String, u64), Kept>,
}

/// A version whose new file failed to load while its previous file serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Why the new file failed.
    pub reason: String,
    /// The failed file's fingerprint: a poll retries only when it changes.
    pub failed: Option<Fingerprint>,
}

impl Models {
    /// The slot of `name` at `version` (empty: the latest ready version,
    /// or the latest when none is ready).
    pub fn get(&self, name: &str, version: &str) -> Result<&Arc<Slot>, ServeError> {
        let slots = self.by_name.get(name).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown model `{name}`; served: {}",
                self.names().join(", ")
            ))
        })?;
        if version.is_empty() {
            return slots
                .iter()
                .rev()
                .find(|s| s.ready())
                .or_else(|| slots.last())
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
        self.by_name.values().flatten().all(|s| s.ready())
    }
}

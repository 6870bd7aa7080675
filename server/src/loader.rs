//! Making served versions from what is on disk: for each version of a
//! model, its engines (one per instance), their warm-up at every batch
//! bucket, its batcher and its statistics, with the model's `config.pbtxt`
//! applied over the server's settings. A version that cannot be made is
//! kept as unavailable, with the reason.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_infer::{Backend, Buckets, Engine, EngineOptions, load_bucketed, warm_up};
use rir_proto::inference::{ModelConfig, model_config::SchedulingChoice};

use crate::batcher::{BatchConfig, Batcher};
use crate::registry::{Kept, ModelVersion, Models, VersionState};
use crate::scan::{
    self, ConfigError, Found, ModelDescriptor, ModelError, RepositoryError, check_config,
};
use crate::stats::{Metrics, ModelStats};

/// How a model's engines are made.
#[derive(Debug, Clone)]
pub(crate) struct ServingEngines {
    /// Backend, device and their settings.
    pub(crate) options: EngineOptions,
    /// Engine instances (and threads) per model.
    pub(crate) instances: usize,
}

impl ServingEngines {
    /// The engine's name in ModelConfig.
    fn name(&self) -> &'static str {
        match self.options.backend {
            Backend::Ort => "onnxruntime",
            Backend::Tract => "tract",
        }
    }
}

/// Makes the versions of models found on disk. Cheap to clone, so a
/// reload can run it on a blocking thread.
#[derive(Clone)]
pub struct Loader {
    /// The repository root.
    pub(crate) root: PathBuf,
    /// How engines are made (before a model's config.pbtxt).
    pub(crate) engines: ServingEngines,
    /// How requests are batched (before a model's config.pbtxt).
    pub(crate) batching: BatchConfig,
    /// Where statistics are exported.
    pub(crate) metrics: Arc<Metrics>,
}

/// A model's versions after a (re)load, and what went wrong on the way.
pub struct Loaded {
    /// Every version on disk that its version policy serves, ascending.
    pub(crate) versions: Vec<Arc<ModelVersion>>,
    /// Versions whose new file failed while the previous one kept serving.
    pub(crate) kept: Vec<(u64, Kept)>,
}

impl Loader {
    /// Loads the models named (all on disk when `names` is None).
    pub(crate) fn load(&self, names: Option<&[String]>) -> Result<Models, RepositoryError> {
        let mut models = Models::default();
        for name in scan::model_names(&self.root)?
            .iter()
            .filter(|n| names.is_none_or(|list| list.contains(n)))
        {
            let loaded = self.load_model(name, &[]);
            if !loaded.versions.is_empty() {
                models.by_name.insert(name.clone(), loaded.versions);
            }
        }
        Ok(models)
    }

    /// Loads every version of `name` from disk. A version whose file is
    /// unchanged since `old` keeps what serves it (engines, queue, statistics);
    /// a changed or new one is loaded and warmed; a version whose new file
    /// fails keeps its old ready one, and says so in [`Loaded::kept`].
    pub fn load_model(&self, name: &str, old: &[Arc<ModelVersion>]) -> Loaded {
        // The model's config.pbtxt: batching, instances, versions. A bad one
        // fails every version with its reason.
        let config = scan::read_config(&self.root, name);
        let settings = config
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| self.settings(c.as_ref()));
        let mut found = scan::scan_model(&self.root, name);
        if let Ok(c) = &config {
            let available: Vec<u64> = found.iter().map(|f| f.version).collect();
            let chosen = scan::chosen_versions(c.as_ref(), &available);
            found.retain(|f| chosen.contains(&f.version));
        }
        let mut loaded = Loaded {
            versions: vec![],
            kept: vec![],
        };
        for mut found in found {
            found.model = checked(found.model, &settings, &config);
            let previous = old.iter().find(|s| s.version == found.version);
            if let Some(p) = previous
                && found.fingerprint.is_some()
                && p.fingerprint == found.fingerprint
            {
                loaded.versions.push(p.clone());
                continue;
            }
            let (engines, batching) = match &settings {
                Ok((e, b)) => (e, b),
                Err(_) => (&self.engines, &self.batching),
            };
            let (version, fingerprint) = (found.version, found.fingerprint);
            let made = self.load_version(found, engines, batching);
            match (made.reason(), previous) {
                (Some(reason), Some(p)) if p.ready() => {
                    tracing::error!(
                        model = %name, version,
                        "the new file failed, the previous one keeps serving: {reason}"
                    );
                    let failed = fingerprint;
                    loaded.kept.push((version, Kept { reason, failed }));
                    loaded.versions.push(p.clone());
                }
                _ => loaded.versions.push(Arc::new(made)),
            }
        }
        loaded
    }

    /// The server's engine and batching settings with what `config` sets
    /// for one model: `max_batch_size`, `dynamic_batching` (preferred
    /// sizes become the buckets, and the queue delay) and the number of
    /// instances.
    fn settings(
        &self,
        config: Option<&ModelConfig>,
    ) -> Result<(ServingEngines, BatchConfig), ConfigError> {
        let (mut engines, mut batching) = (self.engines.clone(), self.batching.clone());
        let Some(c) = config else {
            return Ok((engines, batching));
        };
        if !c.instance_group.is_empty() {
            // Triton counts a group without `count` as one instance.
            engines.instances = c
                .instance_group
                .iter()
                .map(|g| g.count.max(1) as usize)
                .sum();
        }
        let max = c
            .max_batch_size
            .map_or(batching.max_batch(), |m| m.max(1) as usize);
        let dynamic = match &c.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(d)) => Some(d),
            _ => None,
        };
        let sizes = match dynamic.map(|d| &d.preferred_batch_size) {
            Some(p) if !p.is_empty() => p.iter().map(|&s| s.max(0) as usize).collect(),
            _ => batching
                .buckets
                .sizes()
                .iter()
                .copied()
                .filter(|&s| s < max)
                .collect(),
        };
        batching.buckets = Buckets::new(sizes, max)?;
        if let Some(us) = dynamic.and_then(|d| d.max_queue_delay_microseconds) {
            batching.max_delay = Duration::from_micros(us);
        }
        Ok((engines, batching))
    }

    fn load_version(
        &self,
        found: Found,
        engines: &ServingEngines,
        batching: &BatchConfig,
    ) -> ModelVersion {
        let Found {
            name,
            version,
            fingerprint,
            model,
        } = found;
        let stats = Arc::new(ModelStats::new(&name, version, self.metrics.clone()));
        let state = match model {
            Ok(d) => start(d, engines, batching, &stats),
            Err(e) => unavailable(&name, version, None, e),
        };
        let outcome = match state {
            VersionState::Ready { .. } => "ready",
            VersionState::Unavailable { .. } => "failed",
        };
        self.metrics
            .loads
            .with_label_values(&[name.as_str(), outcome])
            .inc();
        ModelVersion {
            version,
            state,
            stats,
            engine: engines.name(),
            fingerprint,
        }
    }
}

/// A version's description once its `config.pbtxt` has been applied and
/// checked against it: the first error of the file, the settings or the
/// check wins.
fn checked(
    model: Result<ModelDescriptor, ModelError>,
    settings: &Result<(ServingEngines, BatchConfig), ConfigError>,
    config: &Result<Option<ModelConfig>, ConfigError>,
) -> Result<ModelDescriptor, ModelError> {
    let d = model?;
    if let Err(e) = settings {
        return Err(e.clone().into());
    }
    if let Ok(Some(c)) = config {
        check_config(c, &d)?;
    }
    Ok(d)
}

/// Version `version` of model `name`, which cannot serve, logged with why.
fn unavailable(
    name: &str,
    version: u64,
    desc: Option<ModelDescriptor>,
    e: ModelError,
) -> VersionState {
    tracing::error!(model = %name, version, "not ready: {e}");
    VersionState::Unavailable { desc, error: e }
}

/// Makes and warms the engines of one model version and starts its
/// batcher; a version whose engines fail keeps its description (for
/// metadata) and says why.
fn start(
    desc: ModelDescriptor,
    engines: &ServingEngines,
    batching: &BatchConfig,
    stats: &Arc<ModelStats>,
) -> VersionState {
    let started = Instant::now();
    let built: Result<Vec<Box<dyn Engine>>, _> = (0..engines.instances.max(1))
        .map(|_| {
            let mut e = load_bucketed(&desc.path, &engines.options, &batching.buckets)?;
            warm_up(e.as_mut(), desc.chw, &batching.buckets)?;
            Ok(e)
        })
        .collect();
    let list = match built {
        Ok(list) => list,
        Err(e) => {
            let (name, version) = (desc.name.clone(), desc.version);
            return unavailable(&name, version, Some(desc), ModelError::Engine(e));
        }
    };
    tracing::info!(
        model = %desc.name, version = desc.version, engine = %list[0].name(),
        instances = list.len(), buckets = ?batching.buckets.sizes(),
        "ready in {:.2}s", started.elapsed().as_secs_f64()
    );
    let batcher = Batcher::start(&desc, list, batching.clone(), stats.clone());
    VersionState::Ready { desc, batcher }
}

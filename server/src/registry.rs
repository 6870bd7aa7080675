//! The served models: every version of every loaded model, ready with its
//! batcher or unavailable with the reason, as one snapshot. A reload builds
//! a new snapshot and swaps it in whole; a request holds the snapshot it
//! began with until it finishes, so a reload never pulls a model from under
//! a running request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::batcher::Batcher;
use crate::error::ServeError;
use crate::protocol::ModelState;
use crate::scan::{Fingerprint, ModelDescriptor, ModelError};
use crate::stats::ModelStats;

/// Whether a model version can serve, and with what.
pub(crate) enum VersionState {
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
        /// Why it does not serve (clients and the index are told its
        /// message).
        error: ModelError,
    },
}

/// One version of a served model: its state, engine name and statistics.
pub struct ModelVersion {
    /// Version number.
    pub(crate) version: u64,
    /// Ready, or unavailable with its reason.
    pub(crate) state: VersionState,
    /// The engine serving it (`onnxruntime`, `tract`), for ModelConfig.
    pub(crate) engine: &'static str,
    /// Its statistics (shared with its batcher).
    pub stats: Arc<ModelStats>,
    /// The file it was loaded from, as it was then: a poll reloads the
    /// version when this changes.
    pub(crate) fingerprint: Option<Fingerprint>,
}

impl ModelVersion {
    /// Whether requests can be served.
    pub(crate) fn ready(&self) -> bool {
        matches!(self.state, VersionState::Ready { .. })
    }

    /// Ready or unavailable, as the protocol names it.
    pub(crate) fn model_state(&self) -> ModelState {
        match self.state {
            VersionState::Ready { .. } => ModelState::Ready,
            VersionState::Unavailable { .. } => ModelState::Unavailable,
        }
    }

    /// What the model takes and returns, when its file could be read.
    pub fn desc(&self) -> Option<&ModelDescriptor> {
        match &self.state {
            VersionState::Ready { desc, .. } => Some(desc),
            VersionState::Unavailable { desc, .. } => desc.as_ref(),
        }
    }

    /// Why the version does not serve (None when ready).
    pub(crate) fn reason(&self) -> Option<String> {
        match &self.state {
            VersionState::Ready { .. } => None,
            VersionState::Unavailable { error, .. } => Some(error.to_string()),
        }
    }

    /// The ready parts, or UNAVAILABLE saying why model `name` cannot serve.
    pub(crate) fn serving(&self, name: &str) -> Result<(&ModelDescriptor, &Batcher), ServeError> {
        match &self.state {
            VersionState::Ready { desc, batcher } => Ok((desc, batcher)),
            VersionState::Unavailable { error, .. } => Err(ServeError::Unavailable(format!(
                "model `{name}` version {} is not ready: {error}",
                self.version
            ))),
        }
    }
}

/// A version whose new file failed to load while its previous file serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Why the new file failed.
    pub(crate) reason: String,
    /// The failed file's fingerprint: a poll retries only when it changes.
    pub(crate) failed: Option<Fingerprint>,
}

/// Every served model, by name, then by version: one snapshot.
#[derive(Clone, Default)]
pub struct Models {
    /// Models by name; versions ascending.
    pub(crate) by_name: BTreeMap<String, Vec<Arc<ModelVersion>>>,
    /// Versions still served from a previous file because their new file
    /// failed to load (shown by the repository index).
    pub(crate) kept: BTreeMap<(String, u64), Kept>,
}

impl Models {
    /// Every version of every model, with its model's name, by name then
    /// version.
    pub(crate) fn versions(&self) -> impl Iterator<Item = (&String, &Arc<ModelVersion>)> {
        self.by_name
            .iter()
            .flat_map(|(name, versions)| versions.iter().map(move |v| (name, v)))
    }

    /// Every version as `(model, version, ready)`: what `rir_model_ready`
    /// reports.
    pub(crate) fn readiness(&self) -> impl Iterator<Item = (&str, u64, bool)> {
        self.versions()
            .map(|(name, v)| (name.as_str(), v.version, v.ready()))
    }

    /// Version `version` of `name` (empty: the latest ready version, or the
    /// latest when none is ready).
    pub fn get(&self, name: &str, version: &str) -> Result<&Arc<ModelVersion>, ServeError> {
        let versions = self.by_name.get(name).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown model `{name}`; served: {}",
                self.names().join(", ")
            ))
        })?;
        if version.is_empty() {
            return versions
                .iter()
                .rev()
                .find(|s| s.ready())
                .or_else(|| versions.last())
                .ok_or_else(|| ServeError::NotFound(format!("model `{name}` has no version")));
        }
        let v: u64 = version.parse().map_err(|_| {
            ServeError::NotFound(format!(
                "model `{name}` has no version `{version}` (versions are numbers)"
            ))
        })?;
        versions
            .iter()
            .find(|s| s.version == v)
            .ok_or_else(|| ServeError::NotFound(format!("model `{name}` has no version {v}")))
    }

    /// Names of all models.
    pub(crate) fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// Whether every model version is ready.
    pub(crate) fn all_ready(&self) -> bool {
        self.by_name.values().flatten().all(|s| s.ready())
    }

    /// Stops serving `name` (and forgets any kept file of it).
    pub(crate) fn remove(&mut self, name: &str) {
        self.by_name.remove(name);
        self.kept.retain(|(n, _), _| n != name);
    }
}

/// Holds the current snapshot; readers take it, the reload controller
/// replaces it.
#[derive(Default)]
pub struct Registry {
    current: RwLock<Arc<Models>>,
}

impl Registry {
    /// A registry serving `models`.
    pub fn new(models: Models) -> Self {
        Registry {
            current: RwLock::new(Arc::new(models)),
        }
    }

    /// The models served now. Hold it for the length of a request.
    pub fn snapshot(&self) -> Arc<Models> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the snapshot with `change` applied to a copy of it.
    pub(crate) fn swap(&self, change: impl FnOnce(&mut Models)) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Models::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }
}

//! Following the repository, as Triton does: which models load at start,
//! whether the repository is polled for changes, and the index, load and
//! unload calls. A (re)load builds the model's new versions on a blocking
//! thread while the old ones serve, then swaps the registry's snapshot:
//! requests already running finish on the version they started with.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ServeError;
use crate::loader::{Loaded, Loader};
use crate::protocol::{IndexEntry, ModelState};
use crate::registry::Registry;
use crate::scan::{fingerprints, model_names};

/// How the served set follows the repository (Triton's `--model-control-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlMode {
    /// Load every model at start; later changes on disk are ignored and
    /// load/unload calls are refused.
    None,
    /// Load every model at start, then rescan every
    /// `--repository-poll-secs`: new, changed and removed models are
    /// loaded, reloaded and unloaded. Load/unload calls are refused.
    Poll,
    /// Load only the `--load-model` models at start; load/unload calls
    /// decide the rest.
    Explicit,
}

/// A model's last finished load: its sequence number and result.
type Finished = (u64, Result<(), ServeError>);

/// The reload controller: changes the registry to follow the repository,
/// by request (explicit mode) or by polling.
pub struct Controller {
    /// Makes versions from what is on disk.
    loader: Loader,
    /// The control mode.
    mode: ControlMode,
    /// What it changes.
    registry: Arc<Registry>,
    /// One load, unload or poll at a time.
    lock: tokio::sync::Mutex<()>,
    /// Loads started so far: each load's sequence number.
    started: AtomicU64,
    /// Each model's last finished load: its sequence number and result.
    /// A load call that waited while a load of the same model started and
    /// finished takes that result instead of reading every file again
    /// (that load saw the disk as it was when this call came, or later),
    /// so a burst of load calls costs one or two loads, not one each.
    finished: std::sync::Mutex<HashMap<String, Finished>>,
}

impl Controller {
    /// A controller of `registry` in `mode`, loading with `loader`.
    pub fn new(loader: Loader, mode: ControlMode, registry: Arc<Registry>) -> Self {
        Controller {
            loader,
            mode,
            registry,
            lock: tokio::sync::Mutex::new(()),
            started: AtomicU64::new(0),
            finished: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The registry it changes.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The metrics its loads and every served version count into.
    pub(crate) fn metrics(&self) -> &Arc<crate::stats::Metrics> {
        &self.loader.metrics
    }

    /// The repository's folder.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.loader.root
    }

    fn explicit(&self) -> Result<(), ServeError> {
        if self.mode != ControlMode::Explicit {
            return Err(ServeError::FailedPrecondition(format!(
                "loading and unloading models by request needs --model-control-mode explicit (this server runs {:?})",
                self.mode
            )));
        }
        Ok(())
    }

    /// Every model version served, and every model on disk not loaded;
    /// only ready versions when `ready_only`.
    pub(crate) fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let models = self.registry.snapshot();
        let mut out = vec![];
        for (name, versions) in &models.by_name {
            for s in versions {
                let reason = match (s.reason(), models.kept.get(&(name.clone(), s.version))) {
                    (Some(r), _) => r.to_string(),
                    (None, Some(kept)) => format!(
                        "serving the previous file; the new one failed: {}",
                        kept.reason
                    ),
                    (None, None) => String::new(),
                };
                out.push(IndexEntry {
                    name: name.clone(),
                    version: s.version.to_string(),
                    state: s.model_state(),
                    reason,
                });
            }
        }
        if let Ok(names) = model_names(&self.loader.root) {
            let unloaded = names
                .into_iter()
                .filter(|n| !models.by_name.contains_key(n));
            out.extend(unloaded.map(|name| IndexEntry {
                name,
                version: String::new(),
                state: ModelState::Unavailable,
                reason: "unloaded".into(),
            }));
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if ready_only {
            out.retain(|e| e.state == ModelState::Ready);
        }
        out
    }

    /// Loads model `name`, or reloads it when it is loaded (explicit mode).
    /// Fails when no version of it is ready afterwards, or when a new file
    /// failed and the previous one kept serving.
    pub(crate) async fn load(&self, name: &str) -> Result<(), ServeError> {
        self.explicit()?;
        let arrived = self.started.load(Ordering::SeqCst);
        let _one_at_a_time = self.lock.lock().await;
        if let Some(result) = self.finished_since(name, arrived) {
            tracing::debug!(model = %name, "load coalesced with the one that just ran");
            self.loader
                .metrics
                .loads_coalesced
                .with_label_values(&[name])
                .inc();
            return result;
        }
        let on_disk =
            model_names(&self.loader.root).map_err(|e| ServeError::Internal(e.to_string()))?;
        if !on_disk.iter().any(|n| n == name) {
            return Err(ServeError::NotFound(format!(
                "no model `{name}` in the repository"
            )));
        }
        let mine = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = self.reload(name).await;
        if let Ok(mut f) = self.finished.lock() {
            f.insert(name.to_string(), (mine, result.clone()));
        }
        result
    }

    /// The result of a load of `name` that started after sequence
    /// number `arrived` and has finished, if any.
    fn finished_since(&self, name: &str, arrived: u64) -> Option<Result<(), ServeError>> {
        let f = self.finished.lock().ok()?;
        f.get(name)
            .filter(|(seq, _)| *seq > arrived)
            .map(|(_, r)| r.clone())
    }

    /// Stops serving model `name` (explicit mode); requests already
    /// running on it finish.
    pub(crate) async fn unload(&self, name: &str) -> Result<(), ServeError> {
        self.explicit()?;
        let _one_at_a_time = self.lock.lock().await;
        if !self.registry.snapshot().by_name.contains_key(name) {
            return Err(ServeError::NotFound(format!(
                "model `{name}` is not loaded"
            )));
        }
        self.registry.swap(|m| m.remove(name));
        tracing::info!(model = %name, "unloaded");
        Ok(())
    }

    /// Loads `name` from disk beside the versions serving it, then swaps.
    async fn reload(&self, name: &str) -> Result<(), ServeError> {
        let old = self
            .registry
            .snapshot()
            .by_name
            .get(name)
            .cloned()
            .unwrap_or_default();
        let loader = self.loader.clone();
        let owned = name.to_string();
        let loaded = tokio::task::spawn_blocking(move || loader.load_model(&owned, &old))
            .await
            .map_err(|e| ServeError::Internal(format!("loading `{name}`: {e}")))?;
        let failures = failures(&loaded);
        let ready = loaded.versions.iter().any(|s| s.ready());
        let empty = loaded.versions.is_empty();
        self.registry.swap(|m| {
            m.remove(name);
            for (v, k) in &loaded.kept {
                m.kept.insert((name.to_string(), *v), k.clone());
            }
            if !empty {
                m.by_name.insert(name.to_string(), loaded.versions);
            }
        });
        if empty {
            return Err(ServeError::NotFound(format!(
                "model `{name}` has no version folders"
            )));
        }
        tracing::info!(model = %name, ready, "loaded");
        if ready && failures.is_empty() {
            Ok(())
        } else {
            Err(ServeError::Unavailable(format!(
                "model `{name}`: {}",
                failures.join("; ")
            )))
        }
    }

    /// One poll: reloads every model whose files changed, loads new ones
    /// and unloads those gone from disk.
    pub(crate) async fn poll_once(&self) {
        let _one_at_a_time = self.lock.lock().await;
        let on_disk: BTreeSet<String> = match model_names(&self.loader.root) {
            Ok(n) => n.into_iter().collect(),
            Err(e) => {
                tracing::warn!("repository poll: {e}");
                return;
            }
        };
        let models = self.registry.snapshot();
        for name in models.by_name.keys().filter(|n| !on_disk.contains(*n)) {
            tracing::info!(model = %name, "gone from the repository");
            self.registry.swap(|m| m.remove(name));
        }
        for name in &on_disk {
            if self.unchanged(name) {
                continue;
            }
            if let Err(e) = self.reload(name).await {
                tracing::warn!("repository poll: {e}");
            }
        }
    }

    /// Whether model `name`'s files on disk are the ones served (or, for a
    /// version kept from its previous file, the file that failed: that one
    /// is retried only when it changes again), or it has no version folder.
    fn unchanged(&self, name: &str) -> bool {
        let now = fingerprints(&self.loader.root, name);
        let models = self.registry.snapshot();
        let served: Vec<_> = models
            .by_name
            .get(name)
            .map(|versions| {
                versions
                    .iter()
                    .map(|s| match models.kept.get(&(name.to_string(), s.version)) {
                        Some(k) => (s.version, k.failed),
                        None => (s.version, s.fingerprint),
                    })
                    .collect()
            })
            .unwrap_or_default();
        now.is_empty()
            || (now.len() == served.len()
                && now.iter().zip(&served).all(|(a, b)| (*a.0, *a.1) == *b))
    }
}

/// What went wrong in a (re)load, one line per version.
fn failures(loaded: &Loaded) -> Vec<String> {
    let unavailable = loaded
        .versions
        .iter()
        .filter_map(|s| s.reason().map(|r| format!("version {}: {r}", s.version)));
    let kept = loaded.kept.iter().map(|(v, k)| {
        format!(
            "version {v}: the new file failed, the previous one keeps serving: {}",
            k.reason
        )
    });
    unavailable.chain(kept).collect()
}

//! Model repository control, as in Triton: which models load at start,
//! whether the repository is polled for changes, and the index, load and
//! unload calls. A (re)load builds the model's new slots on a blocking
//! thread while the old ones serve, then swaps one snapshot for another:
//! requests already running finish on the version they started with.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::core::Core;
use crate::error::ServeError;
use crate::models::{Loader, Models};
use crate::repository::{fingerprints, model_names};

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

/// The repository a [`Core`] can reload from, and how.
pub struct Repository {
    /// Makes slots from what is on disk.
    pub loader: Loader,
    /// The control mode.
    pub mode: ControlMode,
    /// One load, unload or poll at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Repository {
    /// A repository controlled in `mode`.
    pub fn new(loader: Loader, mode: ControlMode) -> Self {
        Repository {
            loader,
            mode,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// One entry of the repository index (Triton's `ModelIndex`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version (empty for a model that is not loaded).
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why, when something went wrong or the model is not loaded.
    pub reason: String,
}

impl Core {
    fn repository(&self) -> Result<&Repository, ServeError> {
        self.repository.as_ref().ok_or_else(|| {
            ServeError::FailedPrecondition("this server has no model repository to control".into())
        })
    }

    fn explicit(&self) -> Result<&Repository, ServeError> {
        let r = self.repository()?;
        if r.mode != ControlMode::Explicit {
            return Err(ServeError::FailedPrecondition(format!(
                "loading and unloading models by request needs --model-control-mode explicit (this server runs {:?})",
                r.mode
            )));
        }
        Ok(r)
    }

    /// Every model version served, and every model on disk not loaded;
    /// only ready versions when `ready_only`.
    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let models = self.models();
        let mut out = vec![];
        for (name, slots) in &models.by_name {
            for s in slots {
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
                    state: if s.ready() { "READY" } else { "UNAVAILABLE" },
                    reason,
                });
            }
        }
        if let Some(r) = &self.repository
            && let Ok(names) = model_names(&r.loader.root)
        {
            for name in names
                .into_iter()
                .filter(|n| !models.by_name.contains_key(n))
            {
                out.push(IndexEntry {
                    name,
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: "unloaded".into(),
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if ready_only {
            out.retain(|e| e.state == "READY");
        }
        out
    }

    /// Loads model `name`, or reloads it when it is loaded (explicit mode).
    /// Fails when no version of it is ready afterwards, or when a new file
    /// failed and the previous one kept serving.
    pub async fn load_model(&self, name: &str) -> Result<(), ServeError> {
        let repo = self.explicit()?;
        let _one_at_a_time = repo.lock.lock().await;
        if !model_names(&repo.loader.root)
            .map_err(ServeError::Internal)?
            .iter()
            .any(|n| n == name)
        {
            return Err(ServeError::NotFound(format!(
                "no model `{name}` in the repository {}",
                repo.loader.root.display()
            )));
        }
        self.reload(repo, name).await
    }

    /// Stops serving model `name` (explicit mode); requests already
    /// running on it finish.
    pub async fn unload_model(&self, name: &str) -> Result<(), ServeError> {
        let repo = self.explicit()?;
        let _one_at_a_time = repo.lock.lock().await;
        if !self.models().by_name.contains_key(name) {
            return Err(ServeError::NotFound(format!(
                "model `{name}` is not loaded"
            )));
        }
        self.swap(|m| {
            m.by_name.remove(name);
            m.kept.retain(|(n, _), _| n != name);
        });
        tracing::info!(model = %name, "unloaded");
        Ok(())
    }

    /// Loads `name` from disk beside the slots serving it, then swaps.
    async fn reload(&self, repo: &Repository, name: &str) -> Result<(), ServeError> {
        let old = self.models().by_name.get(name).cloned().unwrap_or_default();
        let loader = repo.loader.clone();
        let owned = name.to_string();
        let loaded = tokio::task::spawn_blocking(move || loader.load_model(&owned, &old))
            .await
            .map_err(|e| ServeError::Internal(format!("loading `{name}`: {e}")))?;
        let ready = loaded.slots.iter().any(|s| s.ready());
        let failures: Vec<String> = loaded
            .slots
            .iter()
            .filter_map(|s| s.reason().map(|r| format!("version {}: {r}", s.version)))
            .chain(loaded.kept.iter().map(|(v, k)| {
                format!(
                    "version {v}: the new file failed, the previous one keeps serving: {}",
                    k.reason
                )
            }))
            .collect();
        self.swap(|m| {
            m.kept.retain(|(n, _), _| n != name);
            for (v, k) in &loaded.kept {
                m.kept.insert((name.to_string(), *v), k.clone());
            }
            if loaded.slots.is_empty() {
                m.by_name.remove(name);
            } else {
                m.by_name.insert(name.to_string(), loaded.slots.clone());
            }
        });
        if loaded.slots.is_empty() {
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

    /// Replaces the served snapshot with `change` applied to a copy.
    fn swap(&self, change: impl FnOnce(&mut Models)) {
        let mut guard = self.models.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Models::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// One poll: reloads every model whose files changed, loads new ones
    /// and unloads those gone from disk.
    pub async fn poll_once(&self) {
        let Ok(repo) = self.repository() else {
            return;
        };
        let _one_at_a_time = repo.lock.lock().await;
        let on_disk: BTreeSet<String> = match model_names(&repo.loader.root) {
            Ok(n) => n.into_iter().collect(),
            Err(e) => {
                tracing::warn!("repository poll: {e}");
                return;
            }
        };
        let models = self.models();
        for name in models.by_name.keys().filter(|n| !on_disk.contains(*n)) {
            tracing::info!(model = %name, "gone from the repository");
            self.swap(|m| {
                m.by_name.remove(name);
                m.kept.retain(|(n, _), _| n != name);
            });
        }
        for name in &on_disk {
            let now = fingerprints(&repo.loader.root, name);
            // What each served version was loaded from, or for a version
            // kept from its previous file, the file that failed: that one
            // is retried only when it changes again.
            let served: Vec<_> = models
                .by_name
                .get(name)
                .map(|slots| {
                    slots
                        .iter()
                        .map(|s| match models.kept.get(&(name.clone(), s.version)) {
                            Some(k) => (s.version, k.failed),
                            None => (s.version, s.fingerprint),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let same = now.len() == served.len()
                && now.iter().zip(&served).all(|(a, b)| (*a.0, *a.1) == *b);
            if same || now.is_empty() {
                continue;
            }
            if let Err(e) = self.reload(repo, name).await {
                tracing::warn!("repository poll: {e}");
            }
        }
    }

    /// Polls the repository every `interval`, forever.
    pub async fn poll_forever(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.poll_once().await;
        }
    }
}

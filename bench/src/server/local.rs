//! The model run in this process on ONNX Runtime: the reference the
//! server is measured against.

use std::path::Path;
use std::time::{Duration, Instant};

use rir_contract::ModelInfo;
use rir_figures::median;
use rir_infer::{Engine, OrtEngine, OrtOptions};

use crate::BenchError;

/// The engine, its input, and the core it is held to (pinned mode).
pub(crate) struct Local {
    engine: OrtEngine,
    /// Random input for the largest batch.
    data: Vec<f32>,
    /// Item dimensions (C, H, W).
    dims: Vec<usize>,
    /// The core every run of it is held to (and its threads, created at
    /// load); `None`: any.
    core: Option<usize>,
}

impl Local {
    /// Loads `path` with `threads` intra-op threads on `core`, and warms
    /// it up at batch 1 and `big`.
    pub(crate) fn load(
        path: &Path,
        threads: usize,
        big: usize,
        core: Option<usize>,
    ) -> Result<Local, BenchError> {
        let info = ModelInfo::read(path)?;
        let dims: Vec<usize> = info
            .inputs
            .first()
            .ok_or_else(|| BenchError::Setup(format!("{} has no input", path.display())))?
            .dims
            .iter()
            .skip(1)
            .map(|d| d.unwrap_or(1))
            .collect();
        let item: usize = dims.iter().product();
        let mut rng = fastrand::Rng::with_seed(0);
        let data: Vec<f32> = (0..item * big).map(|_| rng.f32()).collect();
        // ONNX Runtime's pool threads start here and keep this thread's cores.
        pin_here(core)?;
        let engine = OrtEngine::load(
            path,
            &OrtOptions {
                threads,
                ..Default::default()
            },
        )?;
        let mut local = Local {
            engine,
            data,
            dims,
            core,
        };
        for _ in 0..20 {
            local.run(1)?;
        }
        for _ in 0..3 {
            local.run(big)?;
        }
        Ok(local)
    }

    fn run(&mut self, n: usize) -> Result<(), BenchError> {
        let item: usize = self.dims.iter().product();
        let shape = [vec![n], self.dims.clone()].concat();
        self.engine.run(&self.data[..n * item], &shape)?;
        Ok(())
    }

    /// Median latency of batch-1 runs for `duration`, ms.
    pub(crate) fn p50(&mut self, duration: Duration) -> Result<f64, BenchError> {
        let mut lat = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < duration || lat.len() < 100 {
            let t = Instant::now();
            self.run(1)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(lat))
    }

    /// Images per second at batch `n` for `duration`.
    pub(crate) fn throughput(&mut self, n: usize, duration: Duration) -> Result<f64, BenchError> {
        let (t0, mut runs) = (Instant::now(), 0usize);
        while t0.elapsed() < duration || runs < 10 {
            self.run(n)?;
            runs += 1;
        }
        Ok((runs * n) as f64 / t0.elapsed().as_secs_f64())
    }
}

/// Holds the calling thread to `core`, when one is given.
fn pin_here(core: Option<usize>) -> Result<(), BenchError> {
    match core {
        Some(c) => rir_process::cpu::pin_thread(0, &[c])
            .map_err(|e| BenchError::io(format!("holding the in-process engine to core {c}"), e)),
        None => Ok(()),
    }
}

/// Runs `f` on `local` off the async threads (on its core, in pinned
/// mode) and hands `local` back. The blocking thread goes back to
/// `client_core` after, so the client's threads stay where they were put.
pub(crate) async fn blocking<T: Send + 'static>(
    mut local: Local,
    client_core: Option<usize>,
    f: impl FnOnce(&mut Local) -> Result<T, BenchError> + Send + 'static,
) -> Result<(Local, T), BenchError> {
    tokio::task::spawn_blocking(move || {
        pin_here(local.core)?;
        let r = f(&mut local);
        pin_here(client_core)?;
        Ok((local, r?))
    })
    .await?
}

/// Loads the engine off the async threads, on `server_core` (where its
/// pool threads then stay), and hands the blocking thread back to
/// `client_core`.
pub(crate) async fn blocking_load(
    path: std::path::PathBuf,
    threads: usize,
    big: usize,
    (server_core, client_core): (Option<usize>, Option<usize>),
) -> Result<Local, BenchError> {
    tokio::task::spawn_blocking(move || {
        let local = Local::load(&path, threads, big, server_core);
        pin_here(client_core)?;
        local
    })
    .await?
}

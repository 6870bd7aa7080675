//! The trainer's error type.

use std::path::PathBuf;

/// Why training could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model specification is invalid.
    #[error(transparent)]
    Spec(#[from] rir_arch::SpecError),
    /// The data set could not be read.
    #[error(transparent)]
    Data(#[from] rir_data::DataError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] rir_checkpoint::CheckpointError),
    /// A file in the run folder could not be written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The recipe is unusable.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// Model and data (or checkpoint and data) do not fit together.
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, step {step}: loss {loss}; lower --lr or add --warmup-epochs"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    /// One of the benchmark's own measurements could not run.
    #[error("bench: {0}")]
    Bench(String),
    /// The run folder already holds a run that was not asked to resume.
    #[error("{0} already holds a run; pass --resume to continue it or --out for a new folder")]
    RunExists(PathBuf),
    /// Resuming was asked for where there is nothing to resume.
    #[error("--resume: {0} does not exist")]
    NothingToResume(PathBuf),
    /// A sweep's space, plan or folder is unusable.
    #[error("sweep: {0}")]
    Sweep(String),
    /// `--device cuda` and no CUDA.
    #[error(transparent)]
    Device(#[from] rir_contract::device::CudaRequired),
    /// The signal handler could not be installed.
    #[error("installing the signal handler: {0}")]
    Signal(#[from] ctrlc::Error),
    /// A sweep trial's arguments are not a `rir-train train` command line.
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// Trials of a sweep's rung failed.
    #[error(
        "{}{} trials of rung {rung} failed; `rir-train sweep all` again resumes them",
        failed.iter().map(|(t, log)| format!(
            "trial {} ({} {} seed {}) failed: see {}\n",
            t.index, t.describe_settings(), t.variant, t.seed, log.display()
        )).collect::<String>(),
        failed.len()
    )]
    TrialsFailed {
        /// The rung.
        rung: usize,
        /// Each failed trial and its log.
        failed: Vec<(crate::sweep::Trial, PathBuf)>,
    },
    /// `fetch` was asked for a data set that is not downloaded.
    #[error(
        "fetch is for cifar10 and cifar100; Fashion-MNIST comes from Debian's dataset-fashion-mnist package"
    )]
    NotFetchable,
    /// Writing the plot failed.
    #[error("plot {0}: {1}")]
    Plot(PathBuf, String),
}

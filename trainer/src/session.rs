//! A run as `rir-train train` and `rir-train eval` drive it: which folder,
//! a fresh run or the one saved there, the signal that stops it cleanly,
//! what to tell the user at the start and at the end, and the evaluation
//! of a saved checkpoint. The binary keeps only its arguments and the exit
//! status.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rir_arch::{ModelSpec, Variant};
use rir_checkpoint::Checkpoint;
use rir_data::{Dataset, Source};
use tch::Device;

use crate::error::TrainError;
use crate::recipe::{Recipe, Runtime};
use crate::train::{BEST, Evaluation, LAST, METRICS, Outcome, TrainConfig, Trainer};
use crate::{ckpt, plot};

/// How a run folder is used.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new run of this network with this recipe; the folder must not
    /// hold a run already.
    Fresh {
        /// The network.
        spec: Box<ModelSpec>,
        /// The recipe.
        config: TrainConfig,
    },
    /// Continue the run saved in the folder's last checkpoint, with its
    /// recipe; `epochs` extends or shortens it.
    Resume {
        /// A new total number of epochs.
        epochs: Option<usize>,
    },
}

/// Where a run goes when no folder is named: `runs/<data>-<variant>-<preset>-s<seed>`.
pub fn default_folder(source: Source, variant: Variant, preset: &str, seed: u64) -> PathBuf {
    PathBuf::from("runs").join(format!("{}-{variant}-{preset}-s{seed}", source.name()))
}

/// Reads a data set from `dir` (default: where the set-up or `rir-train
/// fetch` puts it), logging what was read and how long it took.
pub fn load_data(source: Source, dir: Option<PathBuf>) -> Result<Dataset, TrainError> {
    let dir = dir.unwrap_or_else(|| source.default_dir());
    let started = std::time::Instant::now();
    let ds = rir_data::load(source, &dir)?;
    tracing::info!(
        "{}: {} train / {} test images of {} from {} in {:.1}s",
        source.name(),
        ds.train.len(),
        ds.test.len(),
        ds.info.input,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ds)
}

/// The trainer for `start` in `out`.
pub fn open(
    start: Start,
    data: Dataset,
    device: Device,
    out: &Path,
) -> Result<Trainer, TrainError> {
    let last = out.join(LAST);
    match start {
        Start::Fresh { spec, config } => {
            spec.validate()?;
            if last.exists() {
                return Err(TrainError::RunExists(out.to_path_buf()));
            }
            Trainer::new(&spec, data, config, device, out)
        }
        Start::Resume { epochs } => {
            if !last.is_file() {
                return Err(TrainError::NothingToResume(last));
            }
            let mut t = Trainer::resume(&last, data, device, out)?;
            if let Some(e) = epochs {
                t.config.epochs = e;
            }
            tracing::info!(
                "resuming {} at epoch {} batch {} (step {})",
                last.display(),
                t.state.epoch + 1,
                t.state.next_batch,
                t.state.step
            );
            Ok(t)
        }
    }
}

/// Downloads CIFAR-10 or CIFAR-100 into `dir` (md5-checked, from
/// `mirror` when given) and checks that it loads; the folder it is in.
/// `progress(done, total)` follows the download in bytes.
pub fn fetch(
    source: Source,
    dir: &Path,
    mirror: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, TrainError> {
    use rir_data::cifar::Flavour;
    let flavour = match source {
        Source::FashionMnist => return Err(TrainError::NotFetchable),
        // Coarse and fine labels come in one archive.
        Source::Cifar(Flavour::HundredCoarse) => Flavour::HundredFine,
        Source::Cifar(f) => f,
    };
    let folder = rir_data::fetch::fetch_cifar(flavour, dir, mirror, progress)?;
    rir_data::load(source, &folder)?;
    Ok(folder)
}

/// Applies `--threads` and resolves `--device`.
pub fn setup_runtime(r: &Runtime) -> Result<Device, TrainError> {
    if let Some(n) = r.threads {
        tch::set_num_threads(n);
    }
    Ok(crate::device::select(r.device)?)
}

/// A finished (or interrupted) `rir-train train`.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The run folder.
    pub folder: PathBuf,
    /// Whether it ran to its last epoch or was stopped.
    pub outcome: Outcome,
    /// The closing lines: accuracies, time, files.
    pub conclusion: String,
}

/// Trains `r`: a fresh run, or the one in its folder with `resume`.
/// `announce` gets the lines that describe the run before its first step.
pub fn train(r: &Recipe, announce: impl FnOnce(&str)) -> Result<Trained, TrainError> {
    preset_exists(&r.arch.preset)?;
    let device = setup_runtime(&r.runtime)?;
    let data = load_data(r.dataset, r.data_dir.clone())?;
    let folder = r.folder();
    let start = match r.resume {
        true => Start::Resume { epochs: r.epochs },
        false => Start::Fresh {
            spec: Box::new(r.arch.spec(data.info.input, data.info.class_names.len())?),
            config: r.config.clone(),
        },
    };
    let mut trainer = open(start, data, device, &folder)?;
    trainer.stop_at_step = r.stop_at_step;
    trainer.progress = !r.quiet;
    announce(&trainer.describe());
    stop_on_signal(&trainer.stop)?;
    let started = std::time::Instant::now();
    let outcome = trainer.run()?;
    if let Err(e) = trainer.write_curves() {
        tracing::warn!("no plot: {e}");
    }
    Ok(Trained {
        conclusion: trainer.conclusion(outcome, started.elapsed()),
        folder,
        outcome,
    })
}

fn preset_exists(name: &str) -> Result<(), TrainError> {
    rir_arch::preset::find(name)
        .map(|_| ())
        .map_err(TrainError::from)
}

/// The flag the signal handler raises: the run being trained now.
static STOP: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

/// SIGINT/SIGTERM ask the run being trained to save and stop; a second
/// one exits at once. The handler is installed once per process and
/// raises whichever run's flag is current.
fn stop_on_signal(flag: &Arc<AtomicBool>) -> Result<(), TrainError> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    *STOP.lock().unwrap_or_else(PoisonError::into_inner) = Some(flag.clone());
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        result = ctrlc::set_handler(|| {
            if SIGNALS.fetch_add(1, Ordering::SeqCst) > 0 {
                eprintln!("second signal: exiting without saving");
                // At once: no exit handlers, which would tear libtorch down
                // under the threads still training (and crash on the way out).
                // SAFETY: _exit ends the process; nothing runs after it.
                unsafe { libc::_exit(130) };
            }
            eprintln!(
                "signal received: finishing this step, saving, then exiting (again to force)"
            );
            if let Some(f) = STOP.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                f.store(true, Ordering::SeqCst);
            }
        });
    });
    result.map_err(TrainError::from)
}

impl Trainer {
    /// What is about to be trained, where and on what: the lines printed
    /// before the first step.
    pub fn describe(&self) -> String {
        let cost = self.net.spec.cost();
        let device = self.vs.device();
        [
            format!("model:      {}", self.net.spec.describe()),
            format!(
                "size:       {:.3} M parameters, {:.1} M multiply-adds per image",
                cost.params as f64 / 1e6,
                cost.macs as f64 / 1e6
            ),
            format!(
                "device:     {device:?}, {} libtorch threads",
                tch::get_num_threads()
            ),
            format!(
                "data:       {} ({} train, {} test), {} steps/epoch of {}",
                self.data.info.name,
                self.data.train.len(),
                self.data.test.len(),
                self.steps_per_epoch(),
                self.config.batch_size
            ),
            format!("run folder: {}", self.out.display()),
        ]
        .join("\n")
    }

    /// Draws the run's curves to `<out>/curves.png`.
    pub fn write_curves(&self) -> Result<PathBuf, TrainError> {
        let path = self.out.join("curves.png");
        let title = format!("{} on {}", self.net.spec.describe(), self.data.info.name);
        let series = [(self.net.spec.variant.name(), self.state.history.as_slice())];
        plot::curves(&path, &title, &series)?;
        Ok(path)
    }

    /// What happened, once [`Trainer::run`] returned `outcome` after `took`:
    /// where the checkpoints are, or how to continue.
    pub fn conclusion(&self, outcome: Outcome, took: Duration) -> String {
        let out = &self.out;
        match outcome {
            Outcome::Finished => format!(
                "done: {} epochs in {:.1} min; best test accuracy {:.2}%; checkpoints {} and {}; metrics {}",
                self.state.epoch,
                took.as_secs_f64() / 60.0,
                100.0 * self.state.best_test_acc().unwrap_or(0.0),
                out.join(BEST).display(),
                out.join(LAST).display(),
                out.join(METRICS).display()
            ),
            Outcome::Interrupted => format!(
                "interrupted at epoch {} step {}; state saved to {}; continue with --resume --out {}",
                self.state.epoch + 1,
                self.state.step,
                out.join(LAST).display(),
                out.display()
            ),
        }
    }
}

/// Evaluates a checkpoint on its data set's test split, read from
/// `data_dir` (default: the usual place), with the normalization it was
/// trained with, in exact float32. Returns the figures and the number of
/// test images.
pub fn evaluate_checkpoint(
    path: &Path,
    data_dir: Option<PathBuf>,
    device: Device,
) -> Result<(Evaluation, usize), TrainError> {
    let ck = Checkpoint::read(path)?;
    let source: Source = ck
        .meta
        .dataset
        .name
        .parse()
        .map_err(|e: rir_data::dataset::UnknownSource| TrainError::Mismatch(e.to_string()))?;
    let mut data = load_data(source, data_dir)?;
    data.info = ck.meta.dataset.clone();
    let config: TrainConfig =
        serde_json::from_value(ck.meta.training.config.clone()).unwrap_or_default();
    let config = TrainConfig {
        train_limit: Some(2),
        test_limit: None,
        ..config
    };
    let trainer = Trainer::new(&ck.meta.spec, data, config, device, Path::new("."))?;
    ckpt::restore(&ck, &trainer.vs, None)?;
    Ok((
        trainer.evaluate(&trainer.data.test),
        trainer.data.test.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_testkit::data as fixtures;

    fn data(dir: &Path) -> Dataset {
        fixtures::write_fashion_mnist(dir, 8, 4, 28, false, 1).unwrap();
        rir_data::load(Source::FashionMnist, dir).unwrap()
    }

    fn fresh() -> Start {
        let spec =
            crate::throughput::spec_for("micro", Source::FashionMnist, Variant::Rir).unwrap();
        Start::Fresh {
            spec: Box::new(spec),
            config: TrainConfig {
                epochs: 3,
                batch_size: 4,
                ..TrainConfig::default()
            },
        }
    }

    #[test]
    fn a_folder_holds_one_run_and_only_a_saved_run_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let (images, out) = (tmp.path().join("data"), tmp.path().join("run"));
        let resume = |epochs| Start::Resume { epochs };

        let err = open(resume(None), data(&images), Device::Cpu, &out)
            .err()
            .unwrap();
        assert!(matches!(err, TrainError::NothingToResume(_)), "{err}");
        assert!(err.to_string().contains("last.safetensors"), "{err}");

        let t = open(fresh(), data(&images), Device::Cpu, &out).unwrap();
        assert!(
            t.describe()
                .contains(&format!("run folder: {}", out.display()))
        );
        t.save(LAST).unwrap();
        let err = open(fresh(), data(&images), Device::Cpu, &out)
            .err()
            .unwrap();
        assert!(matches!(err, TrainError::RunExists(_)), "{err}");
        assert!(err.to_string().contains("--resume"), "{err}");

        let t = open(resume(Some(7)), data(&images), Device::Cpu, &out).unwrap();
        assert_eq!((t.config.epochs, t.config.batch_size), (7, 4));
        let done = t.conclusion(Outcome::Interrupted, Duration::ZERO);
        assert!(
            done.contains(&format!("--resume --out {}", out.display())),
            "{done}"
        );
    }

    #[test]
    fn runs_go_to_a_folder_named_after_what_they_train() {
        let f = default_folder(Source::FashionMnist, Variant::Rir, "tiny", 3);
        assert_eq!(f, Path::new("runs/fashion-mnist-rir-tiny-s3"));
    }
}

//! The training loop: batches, steps, evaluation, metrics, checkpoints and
//! clean interruption.
//!
//! Reproducibility: shuffles and augmentation come from [`Rng`] streams
//! derived from `(seed, epoch, batch)`, not from libtorch's generator, so a
//! run resumed from any checkpoint (even one written mid-epoch by SIGINT)
//! draws exactly the batches an uninterrupted run would have drawn.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rir_arch::meta::EpochMetrics;
use rir_arch::meta::PartialEpoch;
use rir_arch::{CheckpointMeta, ModelSpec, TrainingState};
use rir_checkpoint::Checkpoint;
use rir_data::augment::{Augment, fill_batch};
use rir_data::rng::Rng;
use rir_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor, nn::VarStore};

use crate::ckpt;
use crate::error::TrainError;
use crate::init::Init;
use crate::model::{Precision, RirNet};
use crate::optim::{Optimizer, OptimizerKind, Rule};
use crate::schedule::Schedule;

/// Everything about a run that is not the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs to train.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate curve.
    pub schedule: Schedule,
    /// Linear warm-up, in epochs.
    pub warmup_epochs: f64,
    /// How convolution kernels start (He-normal before this field existed).
    #[serde(default)]
    pub init: Init,
    /// The update rule (SGD before this field existed).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Adam: decay of the first moment.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam: decay of the second moment.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// RMSprop: decay of the mean square.
    #[serde(default = "default_alpha")]
    pub rms_alpha: f64,
    /// Adam and RMSprop: added to the root of the second moment.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// L2 coefficient on convolution kernels.
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy (0: off).
    pub label_smoothing: f64,
    /// Augmentation: zero padding before the random crop (0: no crop).
    pub crop_pad: usize,
    /// Augmentation: random horizontal flip.
    pub flip: bool,
    /// Seed of initialization, shuffling and augmentation.
    pub seed: u64,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Convolution precision.
    pub precision: Precision,
    /// Channels-last memory layout (helps tensor cores on CUDA).
    pub channels_last: bool,
    /// Use only the first N training images (smoke runs).
    pub train_limit: Option<usize>,
    /// Use only the first N test images (smoke runs).
    pub test_limit: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 82,
            batch_size: 128,
            lr: 0.1,
            schedule: Schedule::Step,
            warmup_epochs: 0.0,
            init: Init::HeNormal,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            rms_alpha: default_alpha(),
            eps: default_eps(),
            weight_decay: 1e-4,
            label_smoothing: 0.0,
            crop_pad: 4,
            flip: true,
            seed: 0,
            eval_batch_size: 500,
            precision: Precision::Fp32,
            channels_last: false,
            train_limit: None,
            test_limit: None,
        }
    }
}

fn default_beta1() -> f64 {
    0.9
}

fn default_beta2() -> f64 {
    0.999
}

fn default_alpha() -> f64 {
    0.99
}

fn default_eps() -> f64 {
    1e-8
}

impl TrainConfig {
    /// The update rule the recipe names, with its coefficients.
    pub fn rule(&self) -> Rule {
        match self.optimizer {
            OptimizerKind::Sgd => Rule::sgd(self.momentum, self.nesterov),
            OptimizerKind::Adam => Rule::Adam {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
            },
            OptimizerKind::Rmsprop => Rule::RmsProp {
                alpha: self.rms_alpha,
                eps: self.eps,
            },
        }
    }
}

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs done.
    Finished,
    /// Stopped by the stop flag; the last checkpoint holds the exact state.
    Interrupted,
}

/// Test-split figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy (no smoothing).
    pub loss: f64,
    /// Top-1 accuracy in [0, 1].
    pub accuracy: f64,
}

/// A training run: the network, its optimizer, the data and where results go.
pub struct Trainer {
    /// The variables.
    pub vs: VarStore,
    /// The network over `vs`.
    pub net: RirNet,
    /// The optimizer over `vs`.
    pub opt: Optimizer,
    /// The data, in memory.
    pub data: Dataset,
    /// The recipe.
    pub config: TrainConfig,
    /// Progress so far.
    pub state: TrainingState,
    /// Run folder: checkpoints, metrics.jsonl, curves.png.
    pub out: PathBuf,
    /// Set by a signal handler (or a test) to stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many optimizer steps in total (tests, smoke runs).
    pub stop_at_step: Option<usize>,
    /// Draw progress bars.
    pub progress: bool,
}

/// File name of the checkpoint written after every epoch (and on interrupt).
pub const LAST: &str = "last.safetensors";
/// File name of the checkpoint with the best test accuracy.
pub const BEST: &str = "best.safetensors";
/// File name of the metrics log (one JSON object per line).
pub const METRICS: &str = "metrics.jsonl";

impl Trainer {
    /// A fresh run of `spec` on `data`, initialized from `config.seed`.
    pub fn new(
        spec: &ModelSpec,
        mut data: Dataset,
        config: TrainConfig,
        device: Device,
        out: &Path,
    ) -> Result<Self, TrainError> {
        spec.validate()?;
        if spec.input != data.info.input || spec.num_classes != data.info.class_names.len() {
            return Err(TrainError::Mismatch(format!(
                "model expects {:?} with {} classes, data set {} has {:?} with {} classes",
                spec.input,
                spec.num_classes,
                data.info.name,
                data.info.input,
                data.info.class_names.len()
            )));
        }
        if config.batch_size == 0 || config.eval_batch_size == 0 || config.epochs == 0 {
            return Err(TrainError::Config(
                "epochs, batch size and eval batch size must be positive".into(),
            ));
        }
        let bytes = data.image_bytes();
        if let Some(n) = config.train_limit {
            data.train.truncate(n, bytes);
        }
        if let Some(n) = config.test_limit {
            data.test.truncate(n, bytes);
        }
        if data.train.len() < 2 || data.test.is_empty() {
            return Err(TrainError::Config(format!(
                "need at least 2 training and 1 test image, have {} and {}",
                data.train.len(),
                data.test.len()
            )));
        }
        let vs = VarStore::new(device);
        let mut net = RirNet::new(&vs.root(), spec);
        crate::init::init_kernels(&vs, config.init, config.seed);
        net.precision = config.precision;
        if config.channels_last {
            to_channels_last(&vs);
        }
        let opt = Optimizer::new(&vs, config.rule(), config.weight_decay);
        let state = TrainingState {
            epoch: 0,
            next_batch: 0,
            partial: None,
            step: 0,
            config: serde_json::to_value(&config).unwrap_or_default(),
            history: vec![],
        };
        Ok(Trainer {
            vs,
            net,
            opt,
            data,
            config,
            state,
            out: out.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
            stop_at_step: None,
            progress: false,
        })
    }

    /// Continues the run saved in `checkpoint`, with the recipe and data set
    /// it was started with.
    pub fn resume(
        checkpoint: &Path,
        data: Dataset,
        device: Device,
        out: &Path,
    ) -> Result<Self, TrainError> {
        let ck = Checkpoint::read(checkpoint)?;
        let config: TrainConfig =
            serde_json::from_value(ck.meta.training.config.clone()).map_err(|e| {
                TrainError::Config(format!(
                    "{}: stored training config: {e}",
                    checkpoint.display()
                ))
            })?;
        if data.info.name != ck.meta.dataset.name {
            return Err(TrainError::Mismatch(format!(
                "{} was trained on {}, not {}",
                checkpoint.display(),
                ck.meta.dataset.name,
                data.info.name
            )));
        }
        let mut t = Trainer::new(&ck.meta.spec, data, config, device, out)?;
        // Keep the normalization the run started with.
        t.data.info = ck.meta.dataset.clone();
        ckpt::restore(&ck, &t.vs, Some(&mut t.opt))?;
        t.state = ck.meta.training.clone();
        Ok(t)
    }

    fn meta(&self) -> CheckpointMeta {
        CheckpointMeta {
            spec: self.net.spec.clone(),
            dataset: self.data.info.clone(),
            training: self.state.clone(),
        }
    }

    /// Writes the current state to `<out>/<name>` atomically.
    pub fn save(&self, name: &str) -> Result<PathBuf, TrainError> {
        let path = self.out.join(name);
        ckpt::snapshot(&self.vs, Some(&self.opt), self.meta()).write_atomic(&path)?;
        Ok(path)
    }

    /// Optimizer steps in one epoch (the last partial batch is dropped).
    pub fn steps_per_epoch(&self) -> usize {
        (self.data.train.len() / self.config.batch_size).max(1)
    }

    fn batch_size_now(&self) -> usize {
        self.config.batch_size.min(self.data.train.len())
    }

    fn input_tensor(&self, buf: &[f32], n: usize) -> Tensor {
        let i = self.data.info.input;
        let x = Tensor::from_slice(buf)
            .view([n as i64, i.channels as i64, i.height as i64, i.width as i64])
            .to_device(self.vs.device());
        if self.config.channels_last {
            channels_last(&x)
        } else {
            x
        }
    }

    /// Evaluates on a split without augmentation, in eval mode, in exact
    /// float32 (the arithmetic of the exported model: no bf16, no TF32),
    /// whatever the run trains in.
    pub fn evaluate(&self, split: &Split) -> Evaluation {
        self.evaluate_in(split, Precision::Fp32Exact)
    }

    /// Evaluates with the convolutions in `precision`.
    pub fn evaluate_in(&self, split: &Split, precision: Precision) -> Evaluation {
        let (mut loss, mut correct) = (0.0, 0usize);
        let (mut buf, mut labels) = (Vec::new(), Vec::new());
        let mut rng = Rng::new(0);
        let idx: Vec<usize> = (0..split.len()).collect();
        tch::no_grad(|| {
            for chunk in idx.chunks(self.config.eval_batch_size) {
                fill_batch(
                    &self.data.info,
                    split,
                    chunk,
                    Augment::NONE,
                    &mut rng,
                    &mut buf,
                    &mut labels,
                );
                let x = self.input_tensor(&buf, chunk.len());
                let y = Tensor::from_slice(&labels).to_device(self.vs.device());
                let logits = self.net.forward_in(&x, false, precision);
                loss += logits
                    .cross_entropy_loss(&y, None::<Tensor>, Reduction::Sum, -100, 0.0)
                    .double_value(&[]);
                correct += logits
                    .argmax(-1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[]) as usize;
            }
        });
        let n = split.len().max(1) as f64;
        Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
        }
    }

    fn log_line(&self, value: &serde_json::Value) -> Result<(), TrainError> {
        let path = self.out.join(METRICS);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Io(path.clone(), e))?;
        writeln!(f, "{value}").map_err(|e| TrainError::Io(path, e))
    }

    /// Trains until the configured epochs are done or the stop flag is set.
    pub fn run(&mut self) -> Result<Outcome, TrainError> {
        std::fs::create_dir_all(&self.out).map_err(|e| TrainError::Io(self.out.clone(), e))?;
        remove_stale_temporaries(&self.out);
        self.log_start()?;
        while self.state.epoch < self.config.epochs {
            let epoch = self.state.epoch;
            let Some(tally) = self.train_epoch(epoch)? else {
                return Ok(Outcome::Interrupted);
            };
            self.end_epoch(epoch, tally)?;
            if self.should_stop() && self.state.epoch < self.config.epochs {
                self.log_line(&serde_json::json!({"event": "interrupted", "epoch": self.state.epoch, "next_batch": 0, "step": self.state.step}))?;
                return Ok(Outcome::Interrupted);
            }
        }
        Ok(Outcome::Finished)
    }

    /// The `start` (or `resume`) line of `metrics.jsonl`.
    fn log_start(&self) -> Result<(), TrainError> {
        let cost = self.net.spec.cost();
        self.log_line(&serde_json::json!({
            "event": if self.state.step == 0 { "start" } else { "resume" },
            "epoch": self.state.epoch,
            "step": self.state.step,
            "spec": self.net.spec,
            "dataset": self.data.info.name,
            "config": self.config,
            "params": cost.params,
            "macs": cost.macs,
            "device": format!("{:?}", self.vs.device()),
        }))
    }

    /// The steps of epoch `epoch` from where the run stands; None when a
    /// stop was asked for mid-epoch (the state is then saved).
    fn train_epoch(&mut self, epoch: usize) -> Result<Option<EpochTally>, TrainError> {
        let steps = self.steps_per_epoch();
        let started = Instant::now();
        let perm = Rng::for_epoch(self.config.seed, epoch, 0).permutation(self.data.train.len());
        let bar = self.progress_bar(epoch, steps);
        let first = self.state.next_batch;
        bar.set_position(first as u64);
        // An epoch resumed midway goes on from the sums its first steps left.
        let before = self.state.partial.take().filter(|_| first > 0);
        let mut tally = EpochTally {
            started: before
                .and_then(|p| started.checked_sub(Duration::from_secs_f64(p.seconds)))
                .unwrap_or(started),
            train_secs: before.map_or(0.0, |p| p.train_secs),
            loss_sum: before.map_or(0.0, |p| p.loss_sum),
            correct: before.map_or(0, |p| p.correct),
            seen: before.map_or(0, |p| p.seen),
            lr: self.config.lr,
            bar,
        };
        let mut batch = BatchBuffers::default();
        for b in first..steps {
            self.train_step(epoch, b, &perm, &mut batch, &mut tally)?;
            let t = &tally;
            t.bar.set_message(format!(
                "loss {:.3} acc {:.1}% {:.0} img/s lr {:.4}",
                t.loss_sum / t.seen as f64,
                100.0 * t.correct as f64 / t.seen as f64,
                t.seen as f64 / t.started.elapsed().as_secs_f64().max(1e-9),
                t.lr
            ));
            t.bar.inc(1);
            if self.should_stop() && b + 1 < steps {
                t.bar.abandon();
                self.state.partial = Some(PartialEpoch {
                    loss_sum: t.loss_sum,
                    correct: t.correct,
                    seen: t.seen,
                    train_secs: t.train_secs,
                    seconds: t.started.elapsed().as_secs_f64(),
                });
                let path = self.save(LAST)?;
                self.log_line(&serde_json::json!({"event": "interrupted", "epoch": epoch, "next_batch": b + 1, "step": self.state.step}))?;
                tracing::info!(
                    "stopped at epoch {} batch {}; state saved to {}",
                    epoch + 1,
                    b + 1,
                    path.display()
                );
                return Ok(None);
            }
        }
        tally.train_secs = started.elapsed().as_secs_f64();
        Ok(Some(tally))
    }

    /// One optimizer step on batch `b` of epoch `epoch` (drawn through
    /// `perm`), added to `tally`.
    fn train_step(
        &mut self,
        epoch: usize,
        b: usize,
        perm: &[usize],
        batch: &mut BatchBuffers,
        tally: &mut EpochTally,
    ) -> Result<(), TrainError> {
        let (steps, bs) = (self.steps_per_epoch(), self.batch_size_now());
        let aug = Augment {
            pad: self.config.crop_pad,
            flip: self.config.flip,
        };
        let mut rng = Rng::for_epoch(
            self.config.seed ^ (b as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            epoch,
            1,
        );
        fill_batch(
            &self.data.info,
            &self.data.train,
            &perm[b * bs..(b + 1) * bs],
            aug,
            &mut rng,
            &mut batch.pixels,
            &mut batch.labels,
        );
        let x = self.input_tensor(&batch.pixels, bs);
        let y = Tensor::from_slice(&batch.labels).to_device(self.vs.device());
        let t = epoch as f64 + b as f64 / steps as f64;
        let c = &self.config;
        tally.lr = c.schedule.lr(c.lr, c.epochs, t, c.warmup_epochs);
        let logits = self.net.forward(&x, true);
        let loss = logits.cross_entropy_loss(
            &y,
            None::<Tensor>,
            Reduction::Mean,
            -100,
            self.config.label_smoothing,
        );
        self.opt.zero_grad();
        loss.backward();
        self.opt.step(tally.lr);
        self.state.step += 1;
        self.state.next_batch = b + 1;
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                step: self.state.step,
                loss: l,
            });
        }
        tally.loss_sum += l * bs as f64;
        tally.correct += logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]) as usize;
        tally.seen += bs;
        Ok(())
    }

    /// Evaluates the finished epoch `epoch`, records it, and saves `last`
    /// (and `best` when the test accuracy improved).
    fn end_epoch(&mut self, epoch: usize, tally: EpochTally) -> Result<(), TrainError> {
        let eval = self.evaluate(&self.data.test);
        let bf16 = (self.config.precision == Precision::Bf16)
            .then(|| self.evaluate_in(&self.data.test, Precision::Bf16).accuracy);
        tally.bar.finish_and_clear();
        let seen = tally.seen.max(1) as f64;
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr: tally.lr,
            train_loss: tally.loss_sum / seen,
            train_acc: tally.correct as f64 / seen,
            test_loss: eval.loss,
            test_acc: eval.accuracy,
            test_acc_bf16: bf16,
            train_img_per_s: tally.seen as f64 / tally.train_secs.max(1e-9),
            seconds: tally.started.elapsed().as_secs_f64(),
        };
        let best_before = self.state.best_test_acc();
        self.state.history.push(m.clone());
        self.state.epoch += 1;
        self.state.next_batch = 0;
        let mut line = serde_json::to_value(&m).unwrap_or_default();
        line["event"] = "epoch".into();
        self.log_line(&line)?;
        self.save(LAST)?;
        if best_before.is_none_or(|b| m.test_acc > b) {
            self.save(BEST)?;
        }
        tracing::info!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0} img/s, {:.1}s",
            m.epoch,
            self.config.epochs,
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.train_img_per_s,
            m.seconds
        );
        Ok(())
    }

    /// Whether a signal (or the step limit) asks the run to stop.
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.stop_at_step.is_some_and(|s| self.state.step >= s)
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.config.epochs));
        bar
    }
}

/// Deletes temporary checkpoint files a killed run left behind (the
/// checkpoints themselves are never partial; see `rir_checkpoint`).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") && name.contains(".safetensors.") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A view of an NCHW tensor with channels-last strides.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Re-lays every 4-D variable of `vs` in channels-last order.
pub fn to_channels_last(vs: &VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                v.set_data(&channels_last(&v));
            }
        }
    });
}
/// What an epoch's steps added up to, and its progress bar.
struct EpochTally {
    /// When the epoch began (evaluation counts in its seconds).
    started: Instant,
    /// Seconds of training steps, evaluation excluded.
    train_secs: f64,
    /// Loss times batch size, summed.
    loss_sum: f64,
    /// Right predictions on the augmented batches.
    correct: usize,
    /// Images trained on.
    seen: usize,
    /// The learning rate of the last step.
    lr: f64,
    /// The epoch's bar, cleared once the epoch is evaluated.
    bar: ProgressBar,
}

/// The buffers a batch is assembled in, reused from step to step.
#[derive(Default)]
struct BatchBuffers {
    pixels: Vec<f32>,
    labels: Vec<i64>,
}

//! A training run as typed values: the command line of `rir-train train`
//! ([`TrainArgs`], in the library so that a sweep's trials are parsed by
//! the same parser) and the [`Recipe`] it becomes: the data, the network
//! (a preset and its architecture overrides), the training configuration,
//! and where and how it runs.
//!
//! A sweep's trial is a recipe too: its argument list is only how a
//! Kubernetes Job carries it ([`Recipe::parse`] reads it back).

use std::path::PathBuf;

use clap::{Args, Parser};
use rir_arch::{BlockMask, InputSpec, ModelSpec, Projection, Variant, preset};
use rir_contract::Device as DeviceChoice;
use rir_data::Source;

use crate::error::TrainError;
use crate::init::Init;
use crate::model::Precision;
use crate::optim::OptimizerKind;
use crate::schedule::Schedule;
use crate::train::TrainConfig;

/// Epochs when none are given: the paper's 82.
pub const PAPER_EPOCHS: usize = 82;
/// Images per evaluation batch (the paper's minibatch).
pub const EVAL_BATCH: usize = 500;

#[derive(Args, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Runtime {
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// fashion-mnist, cifar10, cifar100 or cifar100-coarse.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: Source,
    /// Folder with the data files (default: /usr/share/datasets/fashion-mnist or data/<cifar folder>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Network size: paper, small, tiny or micro (see `rir-train presets`).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// rir, resnet, cnn or resnet-init.
    #[arg(long, default_value = "rir")]
    pub variant: Variant,
    /// Shortcut spanning each RiR block's two units (rir only; others fix it).
    #[arg(long)]
    pub outer_shortcut: Option<bool>,
    /// How shortcuts cross a stride or width change: conv (1x1) or zero-pad (option A).
    #[arg(long, default_value = "conv")]
    pub projection: Projection,
    /// Live sub-kernels as four 0/1 digits rr tr rt tt (ablations), e.g. 1001.
    #[arg(long, default_value = "1111")]
    pub mask: BlockMask,
    /// Epochs [default: 82, the paper's]. With --resume, extends or shortens the stored run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Minibatch size (the paper used 500).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Learning-rate schedule; `step` is the paper's x0.1 at 42 and 62 of 82 epochs, scaled.
    #[arg(long, value_enum, default_value_t = Schedule::Step)]
    pub schedule: Schedule,
    /// Linear learning-rate warm-up, in epochs.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// Initialization of the convolution kernels.
    #[arg(long, value_enum, default_value_t = Init::HeNormal)]
    pub init: Init,
    /// Update rule: SGD with momentum (the paper's), Adam or RMSprop (as
    /// PyTorch's, L2 on the kernels added to the gradient).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum (SGD); `--nesterov=false` too, for a sweep's grid.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub nesterov: bool,
    /// Adam: decay of the first moment.
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Adam: decay of the second moment.
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// RMSprop: decay of the mean square.
    #[arg(long, default_value_t = 0.99)]
    pub rms_alpha: f64,
    /// Adam and RMSprop: added to the root of the second moment.
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    /// L2 on convolution kernels (not on BN, never on the identity).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Zero padding before the random crop (0 disables the crop).
    #[arg(long, default_value_t = 4)]
    pub crop_pad: usize,
    /// Disable the random horizontal flip (`--no-flip=false` too).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub no_flip: bool,
    /// Seed of initialization, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Convolutions in bfloat16 on float32 master weights.
    #[arg(long)]
    pub bf16: bool,
    /// Channels-last memory layout (for CUDA tensor cores).
    #[arg(long)]
    pub channels_last: bool,
    /// Use only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Run folder (default: runs/<dataset>-<variant>-<preset>-s<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (recipe and model come from it).
    #[arg(long)]
    pub resume: bool,
    /// Stop (as on SIGINT) after this many optimizer steps in total.
    #[arg(long, hide = true)]
    pub stop_at_step: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub runtime: Runtime,
}

/// The network a recipe trains: a preset and what is changed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// `paper`, `small`, `tiny` or `micro`.
    pub preset: String,
    /// `rir`, `resnet`, `cnn` or `resnet-init`.
    pub variant: Variant,
    /// The block shortcut, when not the variant's own.
    pub outer_shortcut: Option<bool>,
    /// How shortcuts cross a stride or width change.
    pub projection: Projection,
    /// The live sub-kernels.
    pub mask: BlockMask,
}

impl Arch {
    /// The network for images of `input` in `classes` classes.
    pub fn spec(&self, input: InputSpec, classes: usize) -> Result<ModelSpec, TrainError> {
        let mut spec = preset::build(&self.preset, self.variant, input, classes)?;
        spec.outer_shortcut = self.outer_shortcut.unwrap_or(spec.outer_shortcut);
        spec.projection = self.projection;
        spec.mask = self.mask;
        Ok(spec)
    }
}

/// One training run, checked and typed.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The data set.
    pub dataset: Source,
    /// Its folder (default: the data set's usual place).
    pub data_dir: Option<PathBuf>,
    /// The network.
    pub arch: Arch,
    /// The training configuration of a fresh run.
    pub config: TrainConfig,
    /// Epochs as given (with `resume`, the stored run's are kept unless
    /// given).
    pub epochs: Option<usize>,
    /// The run folder, when not the default.
    pub out: Option<PathBuf>,
    /// Continue the run in the folder.
    pub resume: bool,
    /// Where and on how many threads.
    pub runtime: Runtime,
    /// Stop after this many optimizer steps (tests).
    pub stop_at_step: Option<usize>,
    /// No progress bar.
    pub quiet: bool,
}

/// Arguments that are not a `rir-train train` command line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.render().to_string().trim_end())]
pub struct RecipeError(pub clap::Error);

/// `rir-train train`'s flags alone, to parse a trial's argument list.
#[derive(Parser)]
#[command(name = "rir-train train", no_binary_name = true)]
struct TrainLine {
    #[command(flatten)]
    args: TrainArgs,
}

impl Recipe {
    /// Reads the arguments that follow `rir-train train`.
    pub fn parse(args: &[String]) -> Result<Recipe, RecipeError> {
        let line = TrainLine::try_parse_from(args).map_err(RecipeError)?;
        Ok(line.args.recipe())
    }

    /// The run folder: `--out`, else `runs/<dataset>-<variant>-<preset>-s<seed>`.
    pub fn folder(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            crate::session::default_folder(
                self.dataset,
                self.arch.variant,
                &self.arch.preset,
                self.config.seed,
            )
        })
    }

    /// Training images per epoch.
    pub fn train_images(&self) -> usize {
        self.config
            .train_limit
            .unwrap_or(usize::MAX)
            .min(self.dataset.train_images())
    }
}

impl TrainArgs {
    /// The recipe these flags ask for.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            arch: Arch {
                preset: self.preset.clone(),
                variant: self.variant,
                outer_shortcut: self.outer_shortcut,
                projection: self.projection,
                mask: self.mask,
            },
            config: self.config(),
            epochs: self.epochs,
            out: self.out.clone(),
            resume: self.resume,
            runtime: self.runtime,
            stop_at_step: self.stop_at_step,
            quiet: self.quiet,
        }
    }

    /// The training configuration of a fresh run.
    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs.unwrap_or(PAPER_EPOCHS),
            batch_size: self.batch_size,
            lr: self.lr,
            schedule: self.schedule,
            warmup_epochs: self.warmup_epochs,
            init: self.init,
            optimizer: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            beta1: self.beta1,
            beta2: self.beta2,
            rms_alpha: self.rms_alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
            label_smoothing: self.label_smoothing,
            crop_pad: self.crop_pad,
            flip: !self.no_flip,
            seed: self.seed,
            eval_batch_size: EVAL_BATCH,
            precision: match self.bf16 {
                true => Precision::Bf16,
                false => Precision::Fp32,
            },
            channels_last: self.channels_last,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Recipe, RecipeError> {
        Recipe::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_run_folder_is_out_else_named_for_the_data_variant_preset_and_seed() {
        let r = parse(&["--seed=7"]).unwrap();
        assert_eq!(r.folder(), PathBuf::from("runs/fashion-mnist-rir-tiny-s7"));
        let r = parse(&["--seed=7", "--out=elsewhere/run"]).unwrap();
        assert_eq!(r.folder(), PathBuf::from("elsewhere/run"));
    }

    #[test]
    fn the_paper_defaults_and_every_flag_reach_the_recipe() {
        let r = parse(&[]).unwrap();
        assert_eq!((r.config.epochs, r.config.eval_batch_size), (82, 500));
        assert_eq!(r.epochs, None);
        let r = parse(&[
            "--epochs=3",
            "--lr=0.05",
            "--beta1=0.8",
            "--beta2=0.95",
            "--rms-alpha=0.9",
            "--eps=1e-6",
            "--init=orthogonal",
            "--optimizer=adam",
            "--no-flip",
            "--bf16",
            "--mask=1001",
            "--projection=zero-pad",
            "--outer-shortcut=false",
            "--seed=7",
        ])
        .unwrap();
        let c = &r.config;
        assert_eq!((c.epochs, c.lr, c.beta1, c.beta2), (3, 0.05, 0.8, 0.95));
        assert_eq!((c.rms_alpha, c.eps, c.seed), (0.9, 1e-6, 7));
        assert_eq!(
            (c.init, c.optimizer),
            (Init::Orthogonal, OptimizerKind::Adam)
        );
        assert!(!c.flip);
        assert_eq!(c.precision, Precision::Bf16);
        assert_eq!(r.arch.mask, "1001".parse().unwrap());
        assert_eq!(r.arch.projection, Projection::ZeroPad);
        assert_eq!(r.arch.outer_shortcut, Some(false));
    }

    #[test]
    fn arguments_that_are_not_a_train_command_are_refused_with_clap_s_words() {
        let e = parse(&["--lr=fast"]).unwrap_err().to_string();
        assert!(e.contains("invalid value 'fast' for '--lr <LR>'"), "{e}");
        let e = parse(&["--no-such-flag"]).unwrap_err().to_string();
        assert!(e.contains("--no-such-flag"), "{e}");
    }

    #[test]
    fn the_arch_overrides_change_the_preset_s_network() {
        let r = parse(&["--preset=micro", "--outer-shortcut=false", "--mask=1001"]).unwrap();
        let (input, classes) = Source::FashionMnist.shape();
        let spec = r.arch.spec(input, classes).unwrap();
        let plain = preset::build("micro", Variant::Rir, spec.input, spec.num_classes).unwrap();
        assert!(plain.outer_shortcut && !spec.outer_shortcut);
        assert_eq!(spec.mask, "1001".parse().unwrap());
        assert_ne!(spec.cost().params, plain.cost().params);
    }
}

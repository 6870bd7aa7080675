//! A run read back from its `metrics.jsonl` alone.
//!
//! A run's checkpoint carries its network, recipe and every epoch's
//! figures, but at paper width it weighs tens of megabytes. Runs trained
//! elsewhere (a GPU lent for minutes, whose files come back in a few small
//! pieces) are kept as their logs instead: the `start` line holds the
//! network and the recipe, each `epoch` line one epoch's figures. Reports
//! and sweeps read such a folder as they read a checkpoint's.

use std::path::Path;

use rir_arch::ModelSpec;
use rir_arch::meta::EpochMetrics;
use rir_checkpoint::Checkpoint;
use serde::Deserialize;

use crate::error::TrainError;
use crate::train::{LAST, METRICS};

/// What the log (or the checkpoint, [`of_folder`]) says of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLog {
    /// The network (the last `start` or `resume` line's).
    pub spec: ModelSpec,
    /// The recipe as the trainer serialized it.
    pub config: serde_json::Value,
    /// Every finished epoch, in order.
    pub history: Vec<EpochMetrics>,
}

/// What the run in `folder` says of itself: its checkpoint's record when
/// it has `last.safetensors`, else its log's, else `None` (nothing trained
/// yet). Reports and sweeps read a folder through this one choice.
pub fn of_folder(folder: &Path) -> Result<Option<RunLog>, TrainError> {
    let last = folder.join(LAST);
    if last.is_file() {
        let meta = Checkpoint::read(&last)?.meta;
        return Ok(Some(RunLog {
            spec: meta.spec,
            config: meta.training.config,
            history: meta.training.history,
        }));
    }
    let log = folder.join(METRICS);
    if log.is_file() {
        return read(&log).map(Some);
    }
    Ok(None)
}

/// The lines the reader looks at; other events (`interrupted`) are skipped.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Line {
    Start {
        spec: ModelSpec,
        config: serde_json::Value,
    },
    Resume {
        spec: ModelSpec,
        config: serde_json::Value,
    },
    Epoch(EpochMetrics),
    #[serde(other)]
    Other,
}

/// Reads the log at `path`. A `start` line begins the history again (a run
/// trained afresh in the same folder); an `epoch` line for an epoch already
/// logged replaces it and every later one (a run resumed from a checkpoint
/// older than its log, after a crash between the two writes).
pub fn read(path: &Path) -> Result<RunLog, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io(path.to_path_buf(), e))?;
    let bad =
        |n: usize, why: String| TrainError::Config(format!("{} line {n}: {why}", path.display()));
    let mut head = None;
    let mut history: Vec<EpochMetrics> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Line>(line).map_err(|e| bad(i + 1, e.to_string()))? {
            Line::Start { spec, config } => {
                history.clear();
                head = Some((spec, config));
            }
            Line::Resume { spec, config } => head = Some((spec, config)),
            Line::Epoch(m) => {
                if m.epoch == 0 || m.epoch > history.len() + 1 {
                    return Err(bad(
                        i + 1,
                        format!("epoch {} after {} logged epochs", m.epoch, history.len()),
                    ));
                }
                history.truncate(m.epoch - 1);
                history.push(m);
            }
            Line::Other => {}
        }
    }
    let (spec, config) =
        head.ok_or_else(|| TrainError::Config(format!("{}: no start line", path.display())))?;
    Ok(RunLog {
        spec,
        config,
        history,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use rir_arch::{InputSpec, Variant, preset};

    use super::*;

    pub(crate) fn spec(variant: Variant) -> ModelSpec {
        preset::build("micro", variant, InputSpec::new(1, 28, 28), 10).unwrap()
    }

    /// A `start` (or `resume`) line of a micro network.
    pub(crate) fn start(event: &str, variant: Variant, seed: u64) -> String {
        serde_json::json!({
            "event": event, "epoch": 0, "step": 0, "dataset": "fashion-mnist",
            "spec": spec(variant), "config": {"seed": seed, "epochs": 3, "lr": 0.1},
        })
        .to_string()
    }

    /// An `epoch` line with test accuracy `acc`.
    pub(crate) fn epoch(n: usize, acc: f64) -> String {
        format!(
            r#"{{"event":"epoch","epoch":{n},"lr":0.1,"train_loss":1.5,"train_acc":0.5,"test_loss":1.25,"test_acc":{acc},"train_img_per_s":1000.0,"seconds":2.5}}"#
        )
    }

    fn read_lines(lines: &[String]) -> Result<RunLog, TrainError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        read(&path)
    }

    fn accuracies(log: &RunLog) -> Vec<f64> {
        log.history.iter().map(|m| m.test_acc).collect()
    }

    #[test]
    fn a_resumed_run_reads_as_one_history() {
        let interrupted = r#"{"event":"interrupted","epoch":1,"next_batch":4,"step":20}"#;
        let log = read_lines(&[
            start("start", Variant::Rir, 7),
            epoch(1, 0.5),
            interrupted.into(),
            start("resume", Variant::Rir, 7),
            epoch(2, 0.625),
            epoch(3, 0.75),
        ])
        .unwrap();
        assert_eq!(log.spec, spec(Variant::Rir));
        assert_eq!(log.config["seed"], 7);
        assert_eq!(accuracies(&log), [0.5, 0.625, 0.75]);
        assert_eq!(log.history[2].epoch, 3);
        assert_eq!(log.history[2].seconds, 2.5);
        assert_eq!(log.history[2].test_acc_bf16, None);
    }

    #[test]
    fn a_new_start_and_an_epoch_logged_again_replace_what_came_before() {
        // Trained afresh in the same folder: only the second run counts.
        let log = read_lines(&[
            start("start", Variant::Cnn, 1),
            epoch(1, 0.25),
            epoch(2, 0.375),
            start("start", Variant::Rir, 2),
            epoch(1, 0.5),
        ])
        .unwrap();
        assert_eq!(
            (log.spec.variant, log.config["seed"].as_u64()),
            (Variant::Rir, Some(2))
        );
        assert_eq!(accuracies(&log), [0.5]);
        // Epoch 2 logged, its checkpoint never written, the run resumed
        // from epoch 1: the second epoch 2 and what follows count.
        let log = read_lines(&[
            start("start", Variant::Rir, 0),
            epoch(1, 0.5),
            epoch(2, 0.125),
            start("resume", Variant::Rir, 0),
            epoch(2, 0.625),
            epoch(3, 0.75),
        ])
        .unwrap();
        assert_eq!(accuracies(&log), [0.5, 0.625, 0.75]);
    }

    #[test]
    fn logs_that_cannot_be_a_run_are_errors_naming_the_line() {
        let gap = read_lines(&[start("start", Variant::Rir, 0), epoch(2, 0.5)]).unwrap_err();
        assert!(
            gap.to_string()
                .contains("line 2: epoch 2 after 0 logged epochs"),
            "{gap}"
        );
        let headless = read_lines(&[epoch(1, 0.5)]).unwrap_err();
        assert!(headless.to_string().contains("no start line"), "{headless}");
        let torn =
            read_lines(&[start("start", Variant::Rir, 0), r#"{"event":"epo"#.into()]).unwrap_err();
        assert!(torn.to_string().contains("line 2:"), "{torn}");
    }
}

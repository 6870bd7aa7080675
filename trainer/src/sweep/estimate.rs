//! How long a sweep's plan takes on this machine: a short throughput
//! measurement of each network its trials train (the training step only;
//! evaluation adds a little), times the images of the trial-epochs.

use std::fmt;
use std::path::Path;

use tch::Device;

use crate::bench::{UnitForm, measure};
use crate::error::TrainError;
use crate::recipe::Recipe;
use crate::sweep::Space;

/// The training throughput measured for one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Its preset.
    pub preset: String,
    /// Its variant.
    pub variant: String,
    /// Images per step.
    pub batch: usize,
    /// Training images per second.
    pub img_per_s: f64,
}

/// The time a plan takes, one trial at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Seconds of training in all.
    pub seconds: f64,
    /// Each distinct network's throughput.
    pub rates: Vec<Rate>,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = match self.seconds < 3600.0 {
            true => format!("{:.0} min", (self.seconds / 60.0).ceil()),
            false => format!("{:.1} h", self.seconds / 3600.0),
        };
        let rates: Vec<String> = self
            .rates
            .iter()
            .map(|r| {
                let (p, v, b) = (&r.preset, &r.variant, r.batch);
                format!("{p} {v} batch {b}: {:.0} img/s", r.img_per_s)
            })
            .collect();
        write!(
            f,
            "estimate: about {time} of training, one trial at a time on this machine ({}), \
             before evaluation; -j N shares the cores, so it gains little on a CPU",
            rates.join(", ")
        )
    }
}

/// The seconds one epoch of `recipe` takes at `img_per_s`.
fn epoch_seconds(recipe: &Recipe, img_per_s: f64) -> f64 {
    recipe.train_images() as f64 / img_per_s
}

/// Measures each network of `space` on `device` and estimates `epochs`
/// trial-epochs (the mean epoch of the trials, times that).
pub fn estimate(
    space: &Space,
    dir: &Path,
    epochs: usize,
    device: Device,
) -> Result<Estimate, TrainError> {
    // One measurement per distinct network, data set and batch.
    type Key = (crate::recipe::Arch, &'static str, usize);
    let mut rates: Vec<(Key, Rate)> = vec![];
    let mut per_epoch = vec![];
    for t in space.trials() {
        let r = space.recipe(&t, dir, space.epochs)?;
        let key = (r.arch.clone(), r.dataset.name(), r.config.batch_size);
        let rate = match rates.iter().find(|(k, _)| *k == key) {
            Some((_, rate)) => rate.img_per_s,
            None => {
                let (input, classes) = r.dataset.shape();
                let spec = r.arch.spec(input, classes)?;
                let bf16 = r.config.precision == crate::model::Precision::Bf16;
                // A few steps past libtorch's first (slow) ones.
                let m = measure(
                    &spec,
                    UnitForm::OneConv,
                    r.config.batch_size,
                    3,
                    8,
                    device,
                    bf16,
                );
                let rate = Rate {
                    preset: r.arch.preset.clone(),
                    variant: r.arch.variant.name().to_string(),
                    batch: r.config.batch_size,
                    img_per_s: m.img_per_s,
                };
                rates.push((key, rate));
                m.img_per_s
            }
        };
        per_epoch.push(epoch_seconds(&r, rate));
    }
    let mean = per_epoch.iter().sum::<f64>() / per_epoch.len().max(1) as f64;
    Ok(Estimate {
        seconds: mean * epochs as f64,
        rates: rates.into_iter().map(|(_, r)| r).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_reads_in_minutes_then_hours() {
        let rate = Rate {
            preset: "tiny".into(),
            variant: "rir".into(),
            batch: 128,
            img_per_s: 400.0,
        };
        let e = |seconds| Estimate {
            seconds,
            rates: vec![rate.clone()],
        };
        let said = e(61.0).to_string();
        assert!(
            said.starts_with("estimate: about 2 min of training"),
            "{said}"
        );
        assert!(said.contains("(tiny rir batch 128: 400 img/s)"), "{said}");
        assert!(e(5400.0).to_string().starts_with("estimate: about 1.5 h"));
    }

    #[test]
    fn an_epoch_is_the_recipe_s_images_at_the_measured_rate() {
        let r = Recipe::parse(&["--train-limit=1000".to_string()]).unwrap();
        assert_eq!(epoch_seconds(&r, 250.0), 4.0);
        // Without a limit, Fashion-MNIST's 60,000 training images.
        let r = Recipe::parse(&[]).unwrap();
        assert_eq!(epoch_seconds(&r, 600.0), 100.0);
    }
}

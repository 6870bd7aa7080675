//! Whether a verified model may be served: the bounds a [`Report`] is
//! judged against, and the typed verdict with every bound it missed.
//!
//! The measurements are `verify`'s; the judgement is here, once, so that
//! `rir-export`, the export pipeline and the tests read the same answer.

use crate::precision::Precision;
use crate::verify::Report;

/// The least top-1 agreement of an int8 model with its float32 source on
/// the test images, percent.
pub const MIN_AGREEMENT: f64 = 99.5;
/// The most an int8 model's test accuracy may fall below its source's,
/// percentage points.
pub const MAX_ACCURACY_DROP: f64 = 0.3;

/// What a verification is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Largest acceptable difference of any logit from the reference;
    /// `None`: the precision's default ([`default_tolerance`]).
    pub tolerance: Option<f32>,
    /// [`MIN_AGREEMENT`] unless the user says otherwise.
    pub min_agreement: f64,
    /// [`MAX_ACCURACY_DROP`] unless the user says otherwise.
    pub max_accuracy_drop: f64,
    /// Whether test images were asked for: an int8 model with none to be
    /// judged on fails only when they were.
    pub images_asked: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            tolerance: None,
            min_agreement: MIN_AGREEMENT,
            max_accuracy_drop: MAX_ACCURACY_DROP,
            images_asked: true,
        }
    }
}

/// The difference a precision is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `max |diff|`: float32 against tract.
    Absolute,
    /// `max rel` (|diff| over the largest |logit|): float16 against its
    /// twin, int8 against tract (which rounds requantizations its own way).
    Relative,
}

impl Measure {
    /// The column the figure is printed under.
    pub fn label(self) -> &'static str {
        match self {
            Measure::Absolute => "max |diff|",
            Measure::Relative => "max rel",
        }
    }
}

/// The default tolerance and measure of each precision.
pub fn default_tolerance(p: Precision) -> (f32, Measure) {
    match p {
        Precision::Fp32 => (1e-3, Measure::Absolute),
        Precision::Fp16 => (1e-2, Measure::Relative),
        Precision::Int8 => (5e-2, Measure::Relative),
    }
}

/// One bound a model missed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// A logit differs from the reference by more than the tolerance.
    #[error("{} {worst:.3e} exceeds the tolerance {tolerance:.1e}", measure.label())]
    Tolerance {
        measure: Measure,
        worst: f32,
        tolerance: f32,
    },
    /// An int8 bound is judged on test images, and none could be read.
    #[error("the int8 bound is judged on test images, and none could be read")]
    NoTestImages,
    /// The int8 model no longer scores what was recorded when it was made.
    #[error(
        "the int8 model scores {:.2}%, {:.2}% was recorded when it was quantized",
        100.0 * scored,
        100.0 * recorded
    )]
    Int8NotReproduced { scored: f64, recorded: f64 },
    /// Top-1 agreement with the float32 source below the bound (percent).
    #[error("top-1 agreement {agreement:.2}% is below {min:.2}%")]
    Agreement { agreement: f64, min: f64 },
    /// Test accuracy fell more than the bound (percentage points).
    #[error("the accuracy falls {drop:.2} points, more than {max:.2}")]
    AccuracyDrop { drop: f64, max: f64 },
    /// The export does not score what the trainer recorded on the whole
    /// test split.
    #[error(
        "the export scores {:.2}%, the trainer {:.2}%",
        100.0 * scored,
        100.0 * recorded
    )]
    TrainerNotReproduced { scored: f64, recorded: f64 },
}

/// What a passing verification confirmed beyond the tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The tolerance only (random inputs, or too few images to say more).
    Tolerance,
    /// The trainer's accuracy, reproduced on the whole test split.
    TrainerAccuracy,
    /// The int8 bound: agreement and accuracy against the source.
    Int8Bound,
}

/// The judgement of one [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The difference judged.
    pub measure: Measure,
    /// The worst difference found on the comparisons that are judged.
    pub worst: f32,
    /// The tolerance it was judged against.
    pub tolerance: f32,
    /// Every bound missed; empty when the model passed.
    pub failures: Vec<Failure>,
    /// What passing means here.
    pub confirmed: Confirmed,
}

impl Verdict {
    /// Whether the model met every bound.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The worst difference on the comparisons judged: float32 and float16 on
/// all of them; int8 only against tract, since its distance from the
/// float32 source is judged by agreement.
fn worst(r: &Report, measure: Measure) -> f32 {
    let of = |c: &crate::verify::Comparison| match measure {
        Measure::Absolute => c.max_abs,
        Measure::Relative => c.max_rel,
    };
    let mut worst = of(&r.random);
    if r.precision != Precision::Int8 {
        for c in r.random_twin.iter().chain(&r.real) {
            worst = worst.max(of(c));
        }
    }
    worst
}

/// Judges `r` against `b`.
pub fn judge(r: &Report, b: &Bounds) -> Verdict {
    let (default, measure) = default_tolerance(r.precision);
    let tolerance = b.tolerance.unwrap_or(default);
    let worst = worst(r, measure);
    let mut failures = match r.precision {
        Precision::Int8 => int8_failures(r, b),
        _ => trainer_failures(r),
    };
    if worst > tolerance {
        failures.push(Failure::Tolerance {
            measure,
            worst,
            tolerance,
        });
    }
    let confirmed = match (r.precision, &r.accuracy) {
        (Precision::Int8, Some(_)) => Confirmed::Int8Bound,
        (Precision::Int8, None) => Confirmed::Tolerance,
        (_, Some(a)) if a.full_split && a.recorded.is_some() => Confirmed::TrainerAccuracy,
        _ => Confirmed::Tolerance,
    };
    Verdict {
        measure,
        worst,
        tolerance,
        failures,
        confirmed,
    }
}

/// An int8 model against its float32 source on the test images.
fn int8_failures(r: &Report, b: &Bounds) -> Vec<Failure> {
    let (Some(a), Some(real)) = (&r.accuracy, &r.real) else {
        return match b.images_asked {
            true => vec![Failure::NoTestImages],
            false => vec![],
        };
    };
    let mut out = vec![];
    // The figure recorded when the model was made must come back, on the
    // same whole split.
    if let Some(recorded) = r.int8_recorded
        && a.full_split
        && !rir_arch::meta::reproduces_recorded_accuracy(a.ort, recorded)
    {
        out.push(Failure::Int8NotReproduced {
            scored: a.ort,
            recorded,
        });
    }
    let agreement = 100.0 * real.top1_agreement;
    if agreement < b.min_agreement {
        out.push(Failure::Agreement {
            agreement,
            min: b.min_agreement,
        });
    }
    let drop = 100.0 * (a.reference - a.ort);
    if drop > b.max_accuracy_drop {
        out.push(Failure::AccuracyDrop {
            drop,
            max: b.max_accuracy_drop,
        });
    }
    out
}

/// A float export against what its trainer recorded for these weights, on
/// the whole test split (up to a few near-ties flipped by rounding).
fn trainer_failures(r: &Report) -> Vec<Failure> {
    match &r.accuracy {
        Some(a) if a.full_split => match a.recorded {
            Some(recorded) if !rir_arch::meta::reproduces_recorded_accuracy(a.ort, recorded) => {
                vec![Failure::TrainerNotReproduced {
                    scored: a.ort,
                    recorded,
                }]
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Accuracy, Comparison};

    fn cmp(max_abs: f32, max_rel: f32, agree: f64) -> Comparison {
        Comparison {
            n: 100,
            max_abs,
            max_rel,
            top1_agreement: agree,
        }
    }

    fn int8(agree: f64, ort: f64, reference: f64) -> Report {
        Report {
            precision: Precision::Int8,
            random: cmp(1.0, 0.01, 1.0),
            real: Some(cmp(9.0, 0.9, agree)),
            accuracy: Some(Accuracy {
                n: 10_000,
                ort,
                full_split: true,
                recorded: None,
                reference,
            }),
            ..Report::default()
        }
    }

    #[test]
    fn fp32_is_judged_on_the_absolute_difference_of_every_comparison() {
        let r = Report {
            random: cmp(2e-4, 1.0, 1.0),
            real: Some(cmp(9e-4, 1.0, 1.0)),
            ..Report::default()
        };
        let v = judge(&r, &Bounds::default());
        assert_eq!(
            (v.measure, v.worst, v.tolerance),
            (Measure::Absolute, 9e-4, 1e-3)
        );
        assert!(v.passed());
        let v = judge(
            &r,
            &Bounds {
                tolerance: Some(5e-4),
                ..Bounds::default()
            },
        );
        assert_eq!(
            v.failures,
            [Failure::Tolerance {
                measure: Measure::Absolute,
                worst: 9e-4,
                tolerance: 5e-4
            }]
        );
        assert_eq!(
            v.failures[0].to_string(),
            "max |diff| 9.000e-4 exceeds the tolerance 5.0e-4"
        );
    }

    #[test]
    fn int8_is_judged_on_tract_alone_for_the_tolerance() {
        // The real comparison (against the float32 source) differs by 0.9
        // relative; only the random one against tract (0.01) is judged.
        let v = judge(&int8(1.0, 0.9, 0.9), &Bounds::default());
        assert_eq!((v.measure, v.worst), (Measure::Relative, 0.01));
        assert!(v.passed(), "{:?}", v.failures);
        assert_eq!(v.confirmed, Confirmed::Int8Bound);
    }

    #[test]
    fn int8_bound_agreement_and_drop_at_their_edges() {
        // 99.5 % agreement is met, 99.49 % is not.
        assert!(judge(&int8(0.995, 0.9, 0.9), &Bounds::default()).passed());
        let v = judge(&int8(0.9949, 0.9, 0.9), &Bounds::default());
        assert!(matches!(v.failures[..], [Failure::Agreement { min, .. }] if min == 99.5));
        // A 0.29-point drop is met, 0.31 is not (0.3 itself is not
        // representable: 100 x (0.9 - 0.897) is 0.30000000000000027).
        assert!(judge(&int8(1.0, 0.8971, 0.9), &Bounds::default()).passed());
        let v = judge(&int8(1.0, 0.8969, 0.9), &Bounds::default());
        assert!(matches!(v.failures[..], [Failure::AccuracyDrop { max, .. }] if max == 0.3));
        assert_eq!(
            v.failures[0].to_string(),
            "the accuracy falls 0.31 points, more than 0.30"
        );
    }

    #[test]
    fn int8_without_images_fails_only_when_images_were_asked_for() {
        let r = Report {
            accuracy: None,
            real: None,
            ..int8(1.0, 0.9, 0.9)
        };
        assert_eq!(
            judge(&r, &Bounds::default()).failures,
            [Failure::NoTestImages]
        );
        let none = Bounds {
            images_asked: false,
            ..Bounds::default()
        };
        assert!(judge(&r, &none).passed());
        assert_eq!(judge(&r, &none).confirmed, Confirmed::Tolerance);
    }

    #[test]
    fn the_recorded_int8_accuracy_must_come_back_on_the_whole_split() {
        let mut r = int8(1.0, 0.9, 0.9);
        r.int8_recorded = Some(0.95);
        let v = judge(&r, &Bounds::default());
        assert_eq!(
            v.failures,
            [Failure::Int8NotReproduced {
                scored: 0.9,
                recorded: 0.95
            }]
        );
        // On part of the split the recorded figure is not comparable.
        r.accuracy.as_mut().unwrap().full_split = false;
        assert!(judge(&r, &Bounds::default()).passed());
    }

    #[test]
    fn a_float_export_must_reproduce_its_trainers_accuracy() {
        let acc = |ort, recorded| Accuracy {
            n: 10_000,
            ort,
            full_split: true,
            recorded: Some(recorded),
            reference: ort,
        };
        let r = Report {
            accuracy: Some(acc(0.90, 0.99)),
            ..Report::default()
        };
        let v = judge(&r, &Bounds::default());
        assert_eq!(
            v.failures[0].to_string(),
            "the export scores 90.00%, the trainer 99.00%"
        );
        let r = Report {
            accuracy: Some(acc(0.99, 0.99)),
            ..Report::default()
        };
        assert_eq!(
            judge(&r, &Bounds::default()).confirmed,
            Confirmed::TrainerAccuracy
        );
        // Part of the split, or no figure recorded: only the tolerance is
        // confirmed.
        let v = judge(&r, &Bounds::default());
        assert!(v.passed(), "reproduced: {:?}", v.failures);
        // A figure that does not come back counts only on the whole split.
        for (full_split, recorded) in [(false, Some(0.99)), (true, None)] {
            let r = Report {
                accuracy: Some(Accuracy {
                    full_split,
                    recorded,
                    ..acc(0.90, 0.99)
                }),
                ..Report::default()
            };
            let v = judge(&r, &Bounds::default());
            assert!(v.passed());
            assert_eq!(v.confirmed, Confirmed::Tolerance);
        }
    }

    #[test]
    fn a_difference_at_the_tolerance_passes_and_any_failure_fails() {
        let r = Report {
            random: cmp(1e-3, 1.0, 1.0),
            ..Report::default()
        };
        let v = judge(&r, &Bounds::default());
        assert_eq!((v.worst, v.tolerance), (1e-3, 1e-3));
        assert!(v.passed(), "at the bound is within it");
        let r = Report {
            random: cmp(1.5e-3, 1.0, 1.0),
            ..Report::default()
        };
        assert!(!judge(&r, &Bounds::default()).passed());
        assert!(!judge(&int8(0.9, 0.9, 0.9), &Bounds::default()).passed());
        // A drop exactly at its bound (25 points: 0.75 to 0.5, both exact
        // in binary) is met.
        let at_bound = Bounds {
            max_accuracy_drop: 25.0,
            ..Bounds::default()
        };
        assert!(judge(&int8(1.0, 0.5, 0.75), &at_bound).passed());
        assert!(!judge(&int8(1.0, 0.49, 0.75), &at_bound).passed());
    }
}

//! A PNG of the training curves (loss and accuracy per epoch), drawn with
//! plotters, with the font embedded in rir-process.

use std::path::Path;

use plotters::prelude::*;
use rir_arch::meta::EpochMetrics;

use crate::error::TrainError;

/// Which curve to draw: label, the value it plots, whether it is drawn solid.
type Pick = (&'static str, fn(&EpochMetrics) -> f64, bool);

/// One named series of (epoch, value) points.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// Draws `runs` (label, history) as two panels, loss and test accuracy.
pub fn curves(
    path: &Path,
    title: &str,
    runs: &[(&str, &[EpochMetrics])],
) -> Result<(), TrainError> {
    if !rir_process::font::register_sans_serif() {
        return Err(TrainError::Plot(
            path.to_path_buf(),
            "plotters refused the embedded font".into(),
        ));
    }
    let err = |e: String| TrainError::Plot(path.to_path_buf(), e);
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(600);
    let max_loss = runs
        .iter()
        .flat_map(|(_, h)| h.iter().flat_map(|m| [m.train_loss, m.test_loss]))
        .filter(|v| v.is_finite())
        .fold(0.1f64, f64::max);
    let min_acc = runs
        .iter()
        .flat_map(|(_, h)| h.iter().map(|m| 100.0 * m.test_acc))
        .fold(100.0f64, f64::min)
        .min(90.0)
        .floor()
        - 5.0;
    let loss: [Pick; 2] = [
        ("train", |m| m.train_loss, false),
        ("test", |m| m.test_loss, true),
    ];
    let accuracy: [Pick; 2] = [
        ("train", |m| 100.0 * m.train_acc, false),
        ("test", |m| 100.0 * m.test_acc, true),
    ];
    panel(&left, path, ("loss", 0.0..max_loss * 1.05), loss, runs)?;
    panel(
        &right,
        path,
        ("accuracy %", min_acc.max(0.0)..100.0),
        accuracy,
        runs,
    )?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One panel of the plot at `path`: the `picks` of every run against the
/// epoch, on `y` named as given.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    path: &Path,
    (name, y): (&str, std::ops::Range<f64>),
    picks: [Pick; 2],
    runs: &[(&str, &[EpochMetrics])],
) -> Result<(), TrainError> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| {
        TrainError::Plot(path.to_path_buf(), x.to_string())
    };
    let epochs = runs
        .iter()
        .flat_map(|(_, h)| h.iter().map(|m| m.epoch))
        .max()
        .unwrap_or(1) as f64;
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..epochs.max(1.0), y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(name)
        .draw()
        .map_err(e)?;
    for (i, (label, history)) in runs.iter().enumerate() {
        let color = palette[i % palette.len()];
        for (which, f, solid) in picks {
            let pts: Vec<(f64, f64)> = history.iter().map(|m| (m.epoch as f64, f(m))).collect();
            let style = match solid {
                true => color.stroke_width(2),
                false => color.mix(0.5).stroke_width(1),
            };
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(e)?
                .label(format!("{label} {which}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

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
    if !rir_figures::font::register_sans_serif() {
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

/// One option a report's runs differ in: what `axes` draws as one panel.
#[derive(Debug, Clone)]
pub struct Axis {
    /// The option's name.
    pub name: String,
    /// Its values, in the order of the x axis.
    pub values: Vec<String>,
    /// Per variant, each run's (position in `values`, accuracy %).
    pub points: Vec<(String, Vec<(usize, f64)>)>,
}

/// Draws final accuracy against each option in `axes`, one panel per
/// option side by side, one colour per variant.
pub fn axes(path: &Path, title: &str, axes: &[Axis]) -> Result<(), TrainError> {
    if axes.is_empty() {
        return Err(TrainError::Plot(
            path.to_path_buf(),
            "the runs do not differ in any option".into(),
        ));
    }
    if !rir_figures::font::register_sans_serif() {
        return Err(TrainError::Plot(
            path.to_path_buf(),
            "plotters refused the embedded font".into(),
        ));
    }
    let err = |e: String| TrainError::Plot(path.to_path_buf(), e);
    let width = 420 * axes.len() as u32;
    let root = BitMapBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(e.to_string()))?;
    let accs = axes
        .iter()
        .flat_map(|a| a.points.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)));
    let (lo, hi) = accs.fold((100.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let y = (lo - 1.0).floor().max(0.0)..(hi + 1.0).ceil().min(100.0);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (area, axis) in root.split_evenly((1, axes.len())).iter().zip(axes) {
        let n = axis.values.len();
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, y.clone())
            .map_err(|x| err(x.to_string()))?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                axis.values.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n.max(1) * 2 + 1)
            .x_label_formatter(&label)
            .x_desc(axis.name.as_str())
            .y_desc("final-epoch test accuracy %")
            .draw()
            .map_err(|x| err(x.to_string()))?;
        let variants = axis.points.len() as f64;
        for (i, (variant, pts)) in axis.points.iter().enumerate() {
            let color = palette[i % palette.len()];
            // Variants side by side around each value.
            let shift = (i as f64 - (variants - 1.0) / 2.0) * 0.08;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(at, acc)| Circle::new((at as f64 + shift, acc), 4, color.filled())),
                )
                .map_err(|x| err(x.to_string()))?
                .label(variant.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| err(x.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

//! The sweep's picture: latency (p50 and p99) against throughput, one point
//! per load level, the shape users look for to find a server's knee, each
//! p99 point labelled with its load where the label has room.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::LoadError;
use crate::report::Report;

/// Draws `reports` to `path`: SVG when it ends in `.svg`, else PNG.
pub fn sweep(path: &Path, title: &str, reports: &[Report]) -> Result<(), LoadError> {
    if !rir_figures::font::register_sans_serif() {
        return Err(LoadError::Plot(
            path.to_path_buf(),
            "plotters refused the embedded font".into(),
        ));
    }
    let size = (900, 560);
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if svg {
        draw(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            reports,
            path,
        )
    } else {
        draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            reports,
            path,
        )
    }
}

/// A plotted percentile: its name, how to read it from a report, its color.
type Curve = (&'static str, fn(&Report) -> f64, RGBColor);

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    reports: &[Report],
    path: &Path,
) -> Result<(), LoadError> {
    let e =
        |x: DrawingAreaErrorKind<DB::ErrorType>| LoadError::Plot(path.to_path_buf(), x.to_string());
    root.fill(&WHITE).map_err(e)?;
    let x_max = reports
        .iter()
        .map(|r| r.inferences_per_s)
        .fold(1.0f64, f64::max)
        * 1.1;
    let y_max = reports
        .iter()
        .map(|r| r.latency_ms.p99)
        .fold(0.1f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("throughput, images/s")
        .y_desc("latency, ms")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    let series: [Curve; 2] = [
        ("p50", |r| r.latency_ms.p50, BLUE),
        ("p99", |r| r.latency_ms.p99, RED),
    ];
    for (name, pick, color) in series {
        let pts: Vec<(f64, f64)> = reports
            .iter()
            .map(|r| (r.inferences_per_s, pick(r)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(e)?;
    }
    // Each p99 point's load, above it, unless it would cover a label
    // already placed.
    let at: Vec<(i32, i32)> = reports
        .iter()
        .map(|r| chart.backend_coord(&(r.inferences_per_s, r.latency_ms.p99)))
        .collect();
    let style = ("sans-serif", 15).into_font().color(&BLACK);
    chart
        .draw_series(labelled(&at).into_iter().map(|i| {
            let r = &reports[i];
            let text = r
                .concurrency
                .map(|c| format!("c={c}"))
                .unwrap_or_else(|| r.label());
            let point = (r.inferences_per_s, r.latency_ms.p99);
            EmptyElement::at(point) + Text::new(text, (-10, -24), style.clone())
        }))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Which of the points at pixel positions `at` get a label: each in turn,
/// unless its label box (56 by 20 pixels above the point) would overlap
/// one already placed.
fn labelled(at: &[(i32, i32)]) -> Vec<usize> {
    let mut placed: Vec<(i32, i32)> = Vec::new();
    let mut chosen = Vec::new();
    for (i, &(x, y)) in at.iter().enumerate() {
        if placed
            .iter()
            .all(|&(px, py)| (x - px).abs() >= 56 || (y - py).abs() >= 20)
        {
            placed.push((x, y));
            chosen.push(i);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::labelled;

    #[test]
    fn labels_that_would_overlap_are_left_out() {
        // 0 and 2 are far apart; 1 sits 30 px right of 0 at the same height,
        // 3 is 30 px right of 2 but 25 px lower: room for both.
        let at = [(100, 300), (130, 305), (400, 200), (430, 225), (700, 50)];
        assert_eq!(labelled(&at), [0, 2, 3, 4]);
        assert_eq!(labelled(&[]), Vec::<usize>::new());
    }
}

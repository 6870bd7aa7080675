//! Charts as inline SVG, written by hand so that the report needs no
//! script, no font and no file beside it: lines with points, stacked bars,
//! axes with units and a legend. Every point carries its values
//! (`data-x`, `data-y`) so a reader, or a test, can check what was drawn.

use std::fmt::Write as _;

/// Colors of the series, in order (readable on white, apart in hue).
const COLORS: [&str; 8] = [
    "#2f6fdb", "#d1495b", "#17803d", "#e8793b", "#7a4cc2", "#00798c", "#5b6573", "#b5838d",
];

/// The color of series `i`.
pub(crate) fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

/// The frame every chart is drawn in, in SVG units.
const W: f64 = 720.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 18.0;
const BOTTOM: f64 = 46.0;

/// `s` with the characters that mean something in HTML escaped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as an axis shows it: few digits, `k` for thousands.
pub(crate) fn short(v: f64) -> String {
    let a = v.abs();
    match a {
        _ if a == 0.0 => "0".into(),
        _ if a >= 10_000.0 => format!("{}k", trim(v / 1000.0, 1)),
        _ if a >= 100.0 => format!("{v:.0}"),
        _ if a >= 10.0 => trim(v, 2),
        _ if a >= 1.0 => trim(v, 2),
        _ => trim(v, 3),
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

/// The smallest "round" number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times
/// a power of ten) at or above `v`: the top of an axis whose quarters are
/// round too.
pub(crate) fn nice_max(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|top| v <= top * (1.0 + 1e-9))
        .unwrap_or(10.0 * p)
}

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub(crate) struct Series {
    /// Its name in the legend.
    pub(crate) name: String,
    /// Its points, in data units.
    pub(crate) points: Vec<(f64, f64)>,
    /// A label per point (shown on hover; empty: none).
    pub(crate) labels: Vec<String>,
    /// Dashed, without points: a planned value rather than a measured one.
    pub(crate) dashed: bool,
    /// Small points: a curve of many.
    pub(crate) small: bool,
}

/// A chart of lines over a linear x axis from 0 (or from `x_min`).
#[derive(Debug, Clone, Default)]
pub(crate) struct LineChart {
    /// The x axis title, with its unit.
    pub(crate) x_title: String,
    /// The y axis title, with its unit.
    pub(crate) y_title: String,
    /// The lines.
    pub(crate) series: Vec<Series>,
    /// Horizontal lines: a value and its label (a bound).
    pub(crate) bounds: Vec<(f64, String)>,
    /// Vertical lines: a position and its label (a step of a schedule).
    pub(crate) marks: Vec<(f64, String)>,
    /// One point to ring, with its label (a search's answer).
    pub(crate) ring: Option<(f64, f64, String)>,
    /// The x axis' ticks, when not evenly spaced numbers: position, label.
    pub(crate) x_ticks: Option<Vec<(f64, String)>>,
    /// The x axis' range, when not 0 to the largest x.
    pub(crate) x_range: Option<(f64, f64)>,
}

impl LineChart {
    /// The chart as an `<svg>` element.
    pub(crate) fn svg(&self) -> String {
        let points = self.series.iter().flat_map(|s| &s.points);
        let (x0, x1) = self.x_range.unwrap_or_else(|| {
            let top = points.clone().map(|p| p.0).fold(0.0, f64::max);
            (0.0, nice_max(top))
        });
        let y_top = points
            .map(|p| p.1)
            .chain(self.bounds.iter().map(|b| b.0))
            .fold(0.0, f64::max);
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let frame = Frame::new((x0, x1), nice_max(y_top * 1.05), legend_rows(&names));
        let mut out = frame.open(&self.x_title, &self.y_title);
        let ticks = self.x_ticks.clone().unwrap_or_else(|| even_ticks(x0, x1));
        frame.x_ticks(&mut out, &ticks);
        for (x, label) in &self.marks {
            let px = frame.x(*x);
            let _ = write!(
                out,
                r##"<line class="mark" x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" stroke="#9aa3ad" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#5b6573">{}</text>"##,
                frame.top,
                H - BOTTOM,
                px + 3.0,
                frame.top + 10.0,
                escape(label)
            );
        }
        for (y, label) in &self.bounds {
            let py = frame.y(*y);
            let _ = write!(
                out,
                r##"<line class="bound" data-y="{y}" x1="{LEFT}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" stroke="#b42318" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#b42318" text-anchor="end">{}</text>"##,
                W - RIGHT,
                W - RIGHT - 2.0,
                py - 4.0,
                escape(label)
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            frame.line(&mut out, s, color(i));
        }
        if let Some((x, y, label)) = &self.ring {
            let _ = write!(
                out,
                r##"<circle class="ring" data-x="{x}" data-y="{y}" cx="{:.1}" cy="{:.1}" r="9" fill="none" stroke="#1d232b" stroke-width="2"><title>{}</title></circle>"##,
                frame.x(*x),
                frame.y(*y),
                escape(label)
            );
        }
        legend(
            &mut out,
            self.series.iter().map(|s| (s.name.as_str(), s.dashed)),
        );
        out.push_str("</svg>");
        out
    }
}

/// Bars of stacked parts, one bar per category.
#[derive(Debug, Clone, Default)]
pub(crate) struct StackedBars {
    /// The y axis title, with its unit.
    pub(crate) y_title: String,
    /// The x axis title.
    pub(crate) x_title: String,
    /// The names of the parts, bottom first.
    pub(crate) parts: Vec<String>,
    /// Each bar: its label and its parts' values (negative ones drawn as 0).
    pub(crate) bars: Vec<(String, Vec<f64>)>,
}

impl StackedBars {
    /// The chart as an `<svg>` element.
    pub(crate) fn svg(&self) -> String {
        let top = self
            .bars
            .iter()
            .map(|(_, v)| v.iter().map(|x| x.max(0.0)).sum::<f64>())
            .fold(0.0, f64::max);
        let n = self.bars.len().max(1) as f64;
        let names: Vec<&str> = self.parts.iter().map(String::as_str).collect();
        let frame = Frame::new((0.0, n), nice_max(top * 1.05), legend_rows(&names));
        let mut out = frame.open(&self.x_title, &self.y_title);
        let slot = (W - LEFT - RIGHT) / n;
        let every = (self.bars.len() / 12).max(1);
        for (i, (label, values)) in self.bars.iter().enumerate() {
            let x = LEFT + slot * i as f64 + slot * 0.15;
            let mut base = 0.0;
            for (k, v) in values.iter().enumerate() {
                let v = v.max(0.0);
                let (y0, y1) = (frame.y(base), frame.y(base + v));
                let name = self.parts.get(k).map_or("", String::as_str);
                let _ = write!(
                    out,
                    r#"<rect class="part" data-bar="{}" data-part="{}" data-y="{v}" x="{x:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                    escape(label),
                    escape(name),
                    slot * 0.7,
                    (y0 - y1).max(0.0),
                    color(k),
                    escape(label),
                    escape(name),
                    short(v)
                );
                base += v;
            }
            if i % every == 0 {
                let _ = write!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#5b6573">{}</text>"##,
                    x + slot * 0.35,
                    H - BOTTOM + 15.0,
                    escape(label)
                );
            }
        }
        legend(&mut out, self.parts.iter().map(|p| (p.as_str(), false)));
        out.push_str("</svg>");
        out
    }
}

/// Evenly spaced ticks over `x0..x1`, about six.
fn even_ticks(x0: f64, x1: f64) -> Vec<(f64, String)> {
    let step = nice_max((x1 - x0) / 6.0);
    let mut ticks = Vec::new();
    let mut x = (x0 / step).ceil() * step;
    while x <= x1 + step * 1e-9 {
        ticks.push((x, short(x)));
        x += step;
    }
    ticks
}

/// The mapping from data to the plot area, and the pieces every chart has.
struct Frame {
    x: (f64, f64),
    y_top: f64,
    /// Where the plot area begins: below the legend's rows.
    top: f64,
}

impl Frame {
    fn new(x: (f64, f64), y_top: f64, legend_rows: usize) -> Self {
        let x = if x.1 > x.0 { x } else { (x.0, x.0 + 1.0) };
        Frame {
            x,
            y_top,
            top: 24.0 + 16.0 * legend_rows.max(1) as f64,
        }
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (v - self.x.0) / (self.x.1 - self.x.0)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + (H - self.top - BOTTOM) * (1.0 - v / self.y_top)
    }

    /// The `<svg>` opening, the y grid with its labels and both titles.
    fn open(&self, x_title: &str, y_title: &str) -> String {
        let mut out = format!(
            r#"<svg viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="11">"#
        );
        for i in 0..=4 {
            let v = self.y_top * f64::from(i) / 4.0;
            let py = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e6ea"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#5b6573">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                short(v)
            );
        }
        let mid = (self.top + H - BOTTOM) / 2.0;
        let _ = write!(
            out,
            r##"<text x="14" y="{mid:.1}" transform="rotate(-90 14 {mid:.1})" text-anchor="middle" fill="#1d232b">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#1d232b">{}</text>"##,
            escape(y_title),
            (LEFT + W - RIGHT) / 2.0,
            H - 8.0,
            escape(x_title)
        );
        out
    }

    fn x_ticks(&self, out: &mut String, ticks: &[(f64, String)]) {
        for (x, label) in ticks {
            let px = self.x(*x);
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" stroke="#9aa3ad"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#5b6573">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 4.0,
                H - BOTTOM + 16.0,
                escape(label)
            );
        }
    }

    /// Series `s` as a path in `color`, with a circle per point unless dashed.
    fn line(&self, out: &mut String, s: &Series, color: &str) {
        let d: Vec<String> = s
            .points
            .iter()
            .enumerate()
            .map(|(i, (x, y))| {
                let pen = if i == 0 { 'M' } else { 'L' };
                format!("{pen}{:.1},{:.1}", self.x(*x), self.y(*y))
            })
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<path class="series" data-series="{}" d="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            escape(&s.name),
            d.join("")
        );
        if s.dashed {
            return;
        }
        for (i, (x, y)) in s.points.iter().enumerate() {
            let label = s.labels.get(i).map_or("", String::as_str);
            let _ = write!(
                out,
                r#"<circle class="point" data-series="{}" data-x="{x}" data-y="{y}" cx="{:.1}" cy="{:.1}" r="{}" fill="{color}"><title>{}{}{} · {}</title></circle>"#,
                escape(&s.name),
                self.x(*x),
                self.y(*y),
                if s.small { 1.5 } else { 3.5 },
                escape(label),
                if label.is_empty() { "" } else { ": " },
                escape(&s.name),
                short(*y)
            );
        }
    }
}

/// Where each legend entry goes: its x and its row.
fn legend_layout(names: &[&str]) -> Vec<(f64, usize)> {
    let (mut x, mut row) = (LEFT, 0);
    names
        .iter()
        .map(|name| {
            let width = 34.0 + 6.5 * name.chars().count() as f64;
            if x + width > W - RIGHT && x > LEFT {
                (x, row) = (LEFT, row + 1);
            }
            let at = (x, row);
            x += width;
            at
        })
        .collect()
}

/// How many rows the legend of `names` takes.
fn legend_rows(names: &[&str]) -> usize {
    legend_layout(names).last().map_or(1, |(_, row)| row + 1)
}

/// The legend along the top: a swatch and a name per entry, in rows.
fn legend<'a>(out: &mut String, entries: impl Iterator<Item = (&'a str, bool)>) {
    let entries: Vec<(&str, bool)> = entries.collect();
    let names: Vec<&str> = entries.iter().map(|e| e.0).collect();
    for (i, ((name, dashed), (x, row))) in entries.iter().zip(legend_layout(&names)).enumerate() {
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let y = 16.0 + 16.0 * row as f64;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{:.1}" y1="{y}" y2="{y}" stroke="{}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}" fill="#1d232b">{}</text>"##,
            x + 18.0,
            color(i),
            x + 22.0,
            y + 4.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round_and_numbers_short() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 8.0);
        assert_eq!(nice_max(9.0), 10.0);
        assert_eq!(nice_max(2.0), 2.0);
        assert_eq!(nice_max(2.1), 2.5);
        assert_eq!(nice_max(430.0), 500.0);
        assert_eq!(nice_max(25.2), 30.0);
        assert_eq!(nice_max(0.013), 0.015);
        assert_eq!(short(2500.0), "2500");
        assert_eq!(short(25_000.0), "25k");
        assert_eq!(short(12_500.0), "12.5k");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(0.125), "0.125");
        assert_eq!(short(0.0), "0");
    }

    #[test]
    fn text_is_escaped_and_points_carry_their_values() {
        assert_eq!(
            escape(r#"<b a="1">&'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
        let chart = LineChart {
            x_title: "x".into(),
            y_title: "y".into(),
            series: vec![Series {
                name: "<p99>".into(),
                points: vec![(0.0, 1.0), (50.0, 2.5)],
                labels: vec!["a".into(), "b".into()],
                ..Series::default()
            }],
            bounds: vec![(2.0, "bound".into())],
            ..LineChart::default()
        };
        let svg = chart.svg();
        assert!(svg.contains(r#"data-x="50" data-y="2.5""#), "{svg}");
        assert!(svg.contains("&lt;p99&gt;") && !svg.contains("<p99>"));
        // x 0..50 (nice), y 0..3 (2.5 * 1.05 rounds up to 3), the plot
        // area from 40 to 254: the point (50, 2.5) sits at the right edge,
        // a sixth of the way down.
        assert!(svg.contains(r#"cx="702.0" cy="75.7""#), "{svg}");
        assert!(svg.contains(r#"class="bound" data-y="2""#));
    }
}

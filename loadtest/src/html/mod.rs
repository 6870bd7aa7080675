//! `--html FILE`: one self-contained HTML report of a run (or of merged
//! runs) that opens offline: the command and settings, the verdict, the
//! table, latency against throughput, throughput and latency over time
//! with a schedule's steps and ramps marked, the latency spectrum, the
//! server's breakdown and errors by kind. The charts are inline SVG
//! ([`chart`]); there is no script and nothing is fetched.

mod chart;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chart::{LineChart, Series, StackedBars, escape, short};

use crate::LoadError;
use crate::load::{Load, Schedule};
use crate::recorder::histogram_from_text;
use crate::report::Report;
use crate::session::SearchResult;
use crate::thresholds::Miss;

/// What the report shows.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// What was sent, to whom.
    pub title: String,
    /// The command line that ran.
    pub command: String,
    /// The run's settings, as name and value.
    pub settings: Vec<(String, String)>,
    /// One report per load level.
    pub reports: &'a [Report],
    /// A search's answer, when one ran.
    pub search: Option<&'a SearchResult>,
    /// The bounds missed.
    pub missed: &'a [Miss],
    /// Whether any bound was set.
    pub bounded: bool,
}

/// Writes `page` to `path`.
pub fn write(path: &Path, page: &Page) -> Result<(), LoadError> {
    std::fs::write(path, render(page)).map_err(|e| LoadError::io(path, e))
}

/// The whole HTML document.
pub fn render(page: &Page) -> String {
    let mut out = String::from(HEAD);
    let _ = write!(
        out,
        "<h1>rir-loadtest report</h1><p class=\"sub\">{}</p>",
        escape(&page.title)
    );
    settings(&mut out, page);
    verdict(&mut out, page);
    summary(&mut out, page.reports);
    sweep(&mut out, page);
    over_time(&mut out, page.reports);
    spectrum(&mut out, page.reports);
    breakdown(&mut out, page.reports);
    errors(&mut out, page.reports);
    out.push_str("</main></body></html>\n");
    out
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rir-loadtest report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d232b; background: #f5f6f8; }
main { max-width: 1000px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 0; } h2 { font-size: 16px; margin: 0 0 8px; }
.sub { color: #5b6573; margin: 2px 0 16px; }
section { background: #fff; border-radius: 8px; padding: 14px 18px; margin: 14px 0; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
td.n { font-variant-numeric: tabular-nums; }
code { background: #f0f2f5; padding: 2px 5px; border-radius: 4px; word-break: break-all; }
.ok { color: #17803d; font-weight: 600; } .missed { color: #b42318; font-weight: 600; }
.note { color: #5b6573; font-size: 13px; }
svg { width: 100%; height: auto; display: block; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0 0; font-size: 13px; }
dt { color: #5b6573; } dd { margin: 0; }
</style></head><body><main>
"#;

/// A level's label short enough to sit under a bar: `c=8`, `200/s`.
fn brief(r: &Report) -> String {
    match &r.load {
        Load::Closed { concurrency } => format!("c={concurrency}"),
        Load::Open { rate, .. } => format!("{}/s", short(*rate)),
        Load::Scheduled { .. } => r.label(),
    }
}

fn section(out: &mut String, id: &str, title: &str) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
}

fn settings(out: &mut String, page: &Page) {
    section(out, "settings", "Command and settings");
    let _ = write!(out, "<code>{}</code><dl>", escape(&page.command));
    for (k, v) in &page.settings {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    out.push_str("</dl></section>");
}

fn verdict(out: &mut String, page: &Page) {
    if page.search.is_none() && !page.bounded {
        return;
    }
    section(out, "verdict", "Verdict");
    if let Some(s) = page.search {
        let goal = format!(
            "{} at most {} ms with no request failing",
            s.goal.percentile.name(),
            short(s.goal.bound_ms)
        );
        match s.knee.and_then(|i| page.reports.get(i)) {
            Some(r) => {
                let _ = write!(
                    out,
                    "<p class=\"ok\" id=\"knee\" data-load=\"{}\">The highest load with {}: {} ({} images/s, {} {} ms); ringed on the chart below.</p>",
                    escape(&r.label()),
                    escape(&goal),
                    escape(&r.label()),
                    short(r.inferences_per_s),
                    s.goal.percentile.name(),
                    short(s.goal.percentile.of(&r.latency_ms))
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<p class=\"missed\" id=\"knee\">No load tried met {}.</p>",
                    escape(&goal)
                );
            }
        }
    }
    if page.bounded {
        match page.missed {
            [] => out.push_str("<p class=\"ok\">Every bound was met.</p>"),
            missed => {
                out.push_str("<p class=\"missed\">Bounds missed:</p><ul>");
                for m in missed {
                    let _ = write!(out, "<li>{}</li>", escape(&m.to_string()));
                }
                out.push_str("</ul>");
            }
        }
    }
    out.push_str("</section>");
}

fn summary(out: &mut String, reports: &[Report]) {
    use crate::report::{COLUMNS, SERVER_COLUMNS, cells};
    section(out, "summary", "Summary");
    // The terminal's table, row for row, with the late sends beside it.
    let server = reports.iter().any(|r| r.server.is_some());
    let extra: &[&str] = if server { &SERVER_COLUMNS } else { &[] };
    out.push_str("<div style=\"overflow-x: auto\"><table><tr>");
    for c in COLUMNS.iter().chain(extra).chain(&["late sends"]) {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr>");
    for r in reports {
        let row = cells(r, server);
        let _ = write!(out, "<tr class=\"level\"><td>{}</td>", escape(&row[0]));
        for c in row[1..].iter().chain([&r.late_sends.to_string()]) {
            let _ = write!(out, "<td class=\"n\">{}</td>", escape(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div><p class=\"note\">Latency in milliseconds, of the successful requests, as the client measured it; queue, compute and rest are the server's account of the average.</p></section>");
}

/// Latency against throughput, one point per level; a search's bound and
/// answer drawn on it.
fn sweep(out: &mut String, page: &Page) {
    let reports = page.reports;
    if reports.len() < 2 {
        return;
    }
    section(out, "sweep", "Latency against throughput");
    let series = |name: &str, pick: fn(&Report) -> f64| Series {
        name: name.into(),
        points: reports
            .iter()
            .map(|r| (r.inferences_per_s, pick(r)))
            .collect(),
        labels: reports.iter().map(Report::label).collect(),
        ..Series::default()
    };
    let mut chart = LineChart {
        x_title: "throughput, images/s".into(),
        y_title: "latency, ms".into(),
        series: vec![
            series("p50", |r| r.latency_ms.p50),
            series("p90", |r| r.latency_ms.p90),
            series("p99", |r| r.latency_ms.p99),
        ],
        ..LineChart::default()
    };
    if let Some(s) = page.search {
        let p = s.goal.percentile;
        chart.bounds.push((
            s.goal.bound_ms,
            format!("bound: {} ≤ {} ms", p.name(), short(s.goal.bound_ms)),
        ));
        if let Some(r) = s.knee.and_then(|i| reports.get(i)) {
            let y = p.of(&r.latency_ms);
            chart.ring = Some((r.inferences_per_s, y, format!("answer: {}", r.label())));
        }
    }
    out.push_str(&chart.svg());
    out.push_str("<p class=\"note\">One point per load level (hover for its load). Where the curves bend up is the server's knee.</p></section>");
}

/// Every level's splits (rows of `--interval` or a schedule, else the
/// timeline) laid end to end: throughput and p50/p99 over time, each level
/// and each step of a schedule marked.
fn over_time(out: &mut String, reports: &[Report]) {
    fn split(r: &Report) -> &[Report] {
        match r.intervals.is_empty() {
            true => &r.timeline,
            false => &r.intervals,
        }
    }
    if reports.iter().all(|r| split(r).is_empty()) {
        return;
    }
    section(out, "over-time", "Over time");
    let mut rate = Series {
        name: "requests/s".into(),
        ..Series::default()
    };
    let mut offered = Series {
        name: "offered (schedule)".into(),
        dashed: true,
        ..Series::default()
    };
    let (mut p50, mut p99) = (Series::default(), Series::default());
    p50.name = "p50".into();
    p99.name = "p99".into();
    let mut marks = Vec::new();
    let mut offset = 0.0;
    for r in reports {
        let parts = split(r);
        if parts.is_empty() {
            continue;
        }
        if reports.len() > 1 {
            marks.push((offset, brief(r)));
        }
        for s in parts {
            let (start, end) = (
                s.start_s.unwrap_or(0.0),
                s.start_s.unwrap_or(0.0) + s.seconds,
            );
            let mid = offset + (start + end) / 2.0;
            let label = s.label();
            rate.points.push((mid, s.requests_per_s));
            rate.labels.push(label.clone());
            if s.ok > 0 {
                p50.points.push((mid, s.latency_ms.p50));
                p99.points.push((mid, s.latency_ms.p99));
                p50.labels.push(label.clone());
                p99.labels.push(label);
            }
        }
        if let Load::Scheduled { schedule, .. } = &r.load {
            scheduled(schedule, offset, &mut offered, &mut marks);
        }
        offset += parts
            .iter()
            .map(|s| s.start_s.unwrap_or(0.0) + s.seconds)
            .fold(0.0, f64::max);
    }
    let x_range = Some((0.0, offset.max(1e-3)));
    let mut series = vec![rate];
    if !offered.points.is_empty() {
        series.push(offered);
    }
    let throughput = LineChart {
        x_title: "seconds into the measurement".into(),
        y_title: "requests/s".into(),
        series,
        marks: marks.clone(),
        x_range,
        ..LineChart::default()
    };
    let latency = LineChart {
        x_title: "seconds into the measurement".into(),
        y_title: "latency, ms".into(),
        series: vec![p50, p99],
        marks,
        x_range,
        ..LineChart::default()
    };
    out.push_str(&throughput.svg());
    out.push_str(&latency.svg());
    out.push_str("<p class=\"note\">One point per interval, at its middle; the levels of a sweep follow each other (warm-ups left out).</p></section>");
}

/// The offered rate of `schedule` as a dashed line, and a mark at each step.
fn scheduled(schedule: &Schedule, offset: f64, line: &mut Series, marks: &mut Vec<(f64, String)>) {
    let len = schedule.length().as_secs_f64();
    let at = |t: f64| schedule.rate_at(Duration::from_secs_f64(t.clamp(0.0, len)));
    match schedule {
        Schedule::Steps { rates, step } => {
            let s = step.as_secs_f64();
            for (k, r) in rates.iter().enumerate() {
                let t = k as f64 * s;
                line.points.push((offset + t, *r));
                line.points.push((offset + t + s, *r));
                if k > 0 {
                    marks.push((offset + t, format!("{}/s", short(*r))));
                }
            }
        }
        Schedule::Ramp { .. } => {
            line.points.push((offset, at(0.0)));
            line.points.push((offset + len, at(len)));
            marks.push((
                offset,
                format!("ramp {}→{}/s", short(at(0.0)), short(at(len))),
            ));
        }
    }
}

/// The percentile spectrum, HDR style: latency at each percentile, on a
/// scale that gives each added nine the same width.
fn spectrum(out: &mut String, reports: &[Report]) {
    let curves: Vec<Series> = reports
        .iter()
        .filter_map(|r| {
            let h = histogram_from_text(&r.histogram)
                .ok()
                .filter(|h| !h.is_empty())?;
            // x = -log10(1 - q): 0 at the median's left edge, 1 at p90, 2 at p99...
            let top = (h.len() as f64).log10().min(5.0);
            let steps = (top * 10.0).floor() as usize;
            let points = (0..=steps)
                .map(|k| {
                    let x = k as f64 / 10.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q) as f64 / 1000.0)
                })
                .collect();
            Some(Series {
                name: r.label(),
                points,
                small: true,
                ..Series::default()
            })
        })
        .collect();
    if curves.is_empty() {
        return;
    }
    section(out, "spectrum", "Latency spectrum");
    let top = curves
        .iter()
        .flat_map(|s| s.points.last())
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let names = ["min", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    let mut ticks: Vec<(f64, String)> = (0..=(top.ceil() as usize).min(5))
        .map(|k| (k as f64, names[k].to_string()))
        .collect();
    ticks.insert(1, (2f64.log10(), "50%".into()));
    let chart = LineChart {
        x_title: "percentile".into(),
        y_title: "latency, ms".into(),
        series: curves,
        x_ticks: Some(ticks),
        x_range: Some((0.0, top.ceil())),
        ..LineChart::default()
    };
    out.push_str(&chart.svg());
    out.push_str("<p class=\"note\">Each level's latency at every percentile, from its histogram; each step right adds a nine. A level stops at the percentile its request count can resolve.</p></section>");
}

/// The server's account per level, stacked: queue, input, engine, output,
/// the rest of its own time, and the time outside it.
fn breakdown(out: &mut String, reports: &[Report]) {
    let with: Vec<&Report> = reports.iter().filter(|r| r.server.is_some()).collect();
    if with.is_empty() {
        return;
    }
    section(out, "breakdown", "Where the time went (server's account)");
    let bars = with
        .iter()
        .filter_map(|r| {
            let b = r.server?;
            let own = b.server_ms
                - b.queue_ms
                - b.compute_input_ms
                - b.compute_infer_ms
                - b.compute_output_ms;
            Some((
                brief(r),
                vec![
                    b.queue_ms,
                    b.compute_input_ms,
                    b.compute_infer_ms,
                    b.compute_output_ms,
                    own,
                    b.outside_ms,
                ],
            ))
        })
        .collect();
    let chart = StackedBars {
        y_title: "mean per request, ms".into(),
        x_title: "load".into(),
        parts: [
            "queue",
            "input",
            "engine",
            "output",
            "rest in server",
            "outside the server",
        ]
        .map(String::from)
        .to_vec(),
        bars,
    };
    out.push_str(&chart.svg());
    let source = with[0].server.map_or("", |b| b.source.label());
    let _ = write!(
        out,
        "<p class=\"note\">From the server's {}. \"Outside\" is the client's mean latency less the server's: the network, both protocol stacks and the client.</p></section>",
        escape(source)
    );
}

/// Failed requests by status per level, with each status's first message,
/// and the bad requests mixed in.
fn errors(out: &mut String, reports: &[Report]) {
    section(out, "errors", "Errors");
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.errors.is_empty()).collect();
    if failed.is_empty() {
        out.push_str("<p class=\"ok\">No request failed.</p>");
    } else {
        out.push_str("<table><tr><th>load</th><th>status</th><th>requests</th><th>share</th><th>first message</th></tr>");
        for r in failed {
            for (code, n) in &r.errors {
                let message = r.error_messages.get(code).map_or("", String::as_str);
                let _ = write!(
                    out,
                    "<tr class=\"error\"><td>{}</td><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{:.2} %</td><td style=\"text-align:left;white-space:normal\">{}</td></tr>",
                    escape(&r.label()),
                    escape(code),
                    100.0 * *n as f64 / r.requests.max(1) as f64,
                    escape(message)
                );
            }
        }
        out.push_str("</table>");
    }
    let bad: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.bad_requests.is_empty())
        .collect();
    if !bad.is_empty() {
        out.push_str("<h2 style=\"margin-top:14px\">Bad requests mixed in</h2><table><tr><th>load</th><th>class</th><th>sent</th><th>answered with another status than owed</th></tr>");
        for r in bad {
            for (class, c) in &r.bad_requests {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    escape(&r.label()),
                    escape(class),
                    c.sent,
                    c.sent - c.as_expected
                );
            }
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hdrhistogram::Histogram;
    use rir_client::server_counters::Source;

    use super::*;
    use crate::breakdown::Breakdown;
    use crate::load::Arrivals;
    use crate::recorder::histogram_text;
    use crate::report::Latency;
    use crate::thresholds::Percentile;

    /// A level at concurrency `c`: `images_per_s`, p50 and p99 as given,
    /// and a histogram of 1..=1000 µs (its p90 is 0.9 ms, its p99 0.99 ms).
    fn level(c: usize, images_per_s: f64, p50: f64, p99: f64) -> Report {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        Report {
            load: Load::Closed { concurrency: c },
            concurrency: Some(c),
            batch: 1,
            seconds: 1.0,
            requests: 1000,
            ok: 1000,
            requests_per_s: images_per_s,
            inferences_per_s: images_per_s,
            latency_ms: Latency {
                p50,
                p99,
                ..Latency::default()
            },
            histogram: histogram_text(&h),
            ..Report::default()
        }
    }

    fn page(reports: &[Report], search: Option<&SearchResult>) -> String {
        render(&Page {
            title: "a run".into(),
            command: "rir-loadtest -c 1,2".into(),
            settings: vec![("batch".into(), "1".into())],
            reports,
            search,
            missed: &[],
            bounded: false,
        })
    }

    fn points(html: &str, name: &str) -> Vec<(f64, f64)> {
        rir_testkit::web::svg_points(html, name)
    }

    #[test]
    fn a_sweep_draws_each_level_and_rings_the_searchs_answer() {
        let reports = [
            level(1, 800.0, 1.1, 2.0),
            level(2, 1500.0, 1.3, 2.6),
            level(4, 1700.0, 2.2, 7.5),
        ];
        let search = SearchResult {
            goal: crate::search::Goal {
                percentile: Percentile::P99,
                bound_ms: 3.0,
                max_level: 64,
            },
            knee: Some(1),
        };
        let html = page(&reports, Some(&search));
        assert_eq!(
            points(&html, "p50"),
            [(800.0, 1.1), (1500.0, 1.3), (1700.0, 2.2)]
        );
        assert_eq!(
            points(&html, "p99"),
            [(800.0, 2.0), (1500.0, 2.6), (1700.0, 7.5)]
        );
        assert!(
            html.contains(r#"class="ring" data-x="1500" data-y="2.6""#),
            "the answer"
        );
        assert!(html.contains(r#"class="bound" data-y="3""#), "the bound");
        assert!(html.contains(r#"id="knee" data-load="concurrency 2""#));
        // The spectrum of 1..=1000 µs: 0.9 ms at p90 (x = 1), 0.99 ms at
        // p99 (x = 2), and it stops at 1000 samples' resolution (x = 3).
        let spectrum = points(&html, "concurrency 4");
        assert!(
            spectrum.contains(&(1.0, 0.9)) && spectrum.contains(&(2.0, 0.99)),
            "{spectrum:?}"
        );
        assert_eq!(spectrum.last().map(|p| p.0), Some(3.0));
        assert_eq!(html.matches("<tr class=\"level\">").count(), 3);
        assert!(
            !html.contains("id=\"over-time\""),
            "no splits, no chart over time"
        );
    }

    #[test]
    fn a_schedule_is_drawn_over_time_with_its_steps_marked() {
        let schedule = Schedule::Steps {
            rates: Arc::from([100.0, 200.0, 400.0]),
            step: Duration::from_secs(2),
        };
        let mut r = level(1, 230.0, 1.0, 2.0);
        r.load = Load::Scheduled {
            schedule,
            arrivals: Arrivals::Constant,
        };
        r.intervals = [(0.0, 101.0), (2.0, 198.0), (4.0, 395.0)]
            .into_iter()
            .map(|(start, rate)| Report {
                start_s: Some(start),
                seconds: 2.0,
                requests_per_s: rate,
                ok: 10,
                latency_ms: Latency {
                    p50: rate / 100.0,
                    p99: rate / 50.0,
                    ..Latency::default()
                },
                ..Report::default()
            })
            .collect();
        let html = page(&[r], None);
        assert_eq!(
            points(&html, "requests/s"),
            [(1.0, 101.0), (3.0, 198.0), (5.0, 395.0)]
        );
        assert_eq!(points(&html, "p99")[2], (5.0, 7.9));
        // The offered rate as steps: 100/s on 0..2 s, 200/s on 2..4, 400/s on 4..6.
        assert!(html.contains(r#"data-series="offered (schedule)" d="M"#));
        assert!(html.contains(">200/s</text>") && html.contains(">400/s</text>"));
    }

    #[test]
    fn the_breakdown_stacks_the_servers_parts_and_errors_are_escaped() {
        let mut r = level(8, 2000.0, 3.0, 6.0);
        r.server = Some(Breakdown {
            source: Source::Statistics,
            requests: 1000,
            executions: 250,
            avg_batch: 4.0,
            queue_ms: 1.0,
            compute_input_ms: 0.1,
            compute_infer_ms: 2.0,
            compute_output_ms: 0.1,
            server_ms: 3.5,
            outside_ms: 0.8,
        });
        r.errors = BTreeMap::from([("UNAVAILABLE".to_string(), 50)]);
        r.requests = 1050;
        r.error_messages = BTreeMap::from([(
            "UNAVAILABLE".to_string(),
            "<img src=x onerror=alert(1)>".to_string(),
        )]);
        let html = page(&[r], None);
        // 3.5 - 1.0 - 0.1 - 2.0 - 0.1 = 0.3 ms of the server's own.
        let own = html
            .split("data-part=\"rest in server\" data-y=\"")
            .nth(1)
            .unwrap();
        let own: f64 = own.split_once('"').unwrap().0.parse().unwrap();
        assert!((own - 0.3).abs() < 1e-9, "{own}");
        assert!(html.contains(r#"data-bar="c=8" data-part="outside the server" data-y="0.8""#));
        assert!(html.contains("<td class=\"n\">50</td><td class=\"n\">4.76 %</td>"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<img"), "the server's message stays text");
        // Nothing to fetch: no script, no link, no source, no URL in CSS.
        for fetch in ["<script", "<link", " src=", " href=", "url(", "@import"] {
            assert!(!html.replace("&lt;img src=", "").contains(fetch), "{fetch}");
        }
    }
}

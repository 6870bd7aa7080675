//! The server benchmark's figures as the table `rir-bench server` prints.

use std::fmt::Write as _;

use super::{Point, Sample, ServerFigures};

impl ServerFigures {
    /// The table and the summary against the goals.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.heading(&mut out);
        self.points_table(&mut out);
        self.goals(&mut out);
        out
    }

    fn heading(&self, out: &mut String) {
        let threads = match self.threads {
            0 => "default".to_string(),
            n => n.to_string(),
        };
        let mode = match self.pinned {
            true => "pinned: client on core 0, server and in-process engine on core 1",
            false => "shared: client, server and in-process engine on every core",
        };
        let extra = match self.server_args.is_empty() {
            true => String::new(),
            false => format!(", rir-serve {}", self.server_args.join(" ")),
        };
        let _ = writeln!(
            out,
            "rir-serve vs in-process ONNX Runtime: {} ({}), {} cores, {mode}, ORT threads {threads}{extra}",
            self.model.0,
            self.model.1.display(),
            self.cores,
        );
        let rounds = self.points.first().map_or(0, |p| p.on.len());
        let _ = writeln!(
            out,
            "{rounds} alternating rounds of {:.1} s per point (batching off, then the default); medians, [slowest, fastest] round\n",
            self.slice.as_secs_f64()
        );
    }

    fn points_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{:>5}  {:>26}  {:>26}  {:>8}  {:>15}  {:>15}  {:>19}  {:>13}",
            "conc",
            "images/s, batching off",
            "images/s, default",
            "default/off",
            "p50 ms off/def",
            "p99 ms off/def",
            "server CPU us/req",
            "beyond engine"
        );
        for p in &self.points {
            let ips = |s: &Sample| s.report.inferences_per_s;
            let cell = |v: &[Sample]| {
                let (lo, hi) = Point::spread(v, ips);
                format!("{:.0} [{lo:.0}, {hi:.0}]", Point::median_of(v, ips))
            };
            let pair = |f: &dyn Fn(&Sample) -> f64| {
                format!(
                    "{:.3}/{:.3}",
                    Point::median_of(&p.off, f),
                    Point::median_of(&p.on, f)
                )
            };
            let us = |f: &dyn Fn(&Sample) -> f64| {
                format!(
                    "{:.0}/{:.0}",
                    Point::median_of(&p.off, f),
                    Point::median_of(&p.on, f)
                )
            };
            let mark = if p.default_not_slower() {
                ""
            } else {
                " (slower)"
            };
            let _ = writeln!(
                out,
                "{:>5}  {:>26}  {:>26}  {:>8}  {:>15}  {:>15}  {:>19}  {:>13}",
                p.concurrency,
                cell(&p.off),
                cell(&p.on),
                format!("{:.2}x{mark}", p.ratio()),
                pair(&|s| s.report.latency_ms.p50),
                pair(&|s| s.report.latency_ms.p99),
                us(&|s| s.cost.cpu_us()),
                us(&|s| s.cost.beyond_engine_us()),
            );
        }
        let errors: u64 = self
            .points
            .iter()
            .flat_map(|p| p.off.iter().chain(&p.on))
            .map(|s| s.report.failed())
            .sum();
        let _ = writeln!(
            out,
            "(server CPU and beyond engine: off/default, µs of the server process's CPU per request, and that less the engine's run time; {errors} errors in all)"
        );
    }

    fn goals(&self, out: &mut String) {
        let (lat_local, lat_server, _, _) = self.latency.medians();
        let (ips_local, ips_server, _, _) = self.throughput.medians();
        let slower: Vec<String> = self
            .points
            .iter()
            .filter(|p| !p.default_not_slower())
            .map(|p| p.concurrency.to_string())
            .collect();
        let verdict = match slower.is_empty() {
            true => "the default is never slower than batching off".to_string(),
            false => format!(
                "the default is slower than batching off's slowest round at concurrency {}",
                slower.join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "\n{verdict}\n\
             batch-1 p50: in-process {lat_local:.3} ms, default server at concurrency 1 {lat_server:.3} ms\n\
             latency added (median of the per-round differences): {:.0} us (goal <= 100 us)\n\
             throughput: in-process batch {} {ips_local:.1} images/s, default server at concurrency {} {ips_server:.1} images/s\n\
             ratio (median of the per-round ratios): {:.2}x (goal >= 0.8x)",
            self.added_us(),
            self.max_batch,
            self.top(),
            self.throughput_ratio(),
        );
        if let Some(s) = &self.soak {
            let _ = writeln!(
                out,
                "RSS after warm-up {:.1} MiB, after {:.0} s at concurrency {}: {:.1} MiB ({:+.1} %, goal < 10 %); {:.1} images/s, p99 {:.3} ms, {} errors during it",
                s.rss_before,
                s.report.seconds,
                self.top(),
                s.rss_after,
                100.0 * (s.rss_after / s.rss_before - 1.0),
                s.report.inferences_per_s,
                s.report.latency_ms.p99,
                s.report.failed()
            );
        }
    }
}

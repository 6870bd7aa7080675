//! rir-loadtest and NVIDIA's perf_analyzer in turn on one rir-serve: same
//! model, batch 1, the same closed-loop concurrency and the same stability
//! rule (windows until three agree within 10 %), so the two tools' figures
//! stand side by side.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rir_loadtest::load::{Load, RunOptions, Stability, Stop};
use rir_loadtest::report::Report;
use rir_loadtest::run::run;
use rir_loadtest::workload::Workload;

use crate::BenchError;
use crate::point::workload;
use crate::served::Served;
use rir_testkit::process::spawn;

/// Figures of perf_analyzer for one concurrency, from its CSV (µs to ms).
#[derive(Debug, Clone, Copy)]
pub struct PerfAnalyzer {
    /// Inferences per second.
    pub ips: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub avg: f64,
}

/// The parts of perf_analyzer's average latency: its CSV has no average
/// column, and its own summary prints their sum.
const LATENCY_PARTS: [&str; 7] = [
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
];

/// Parses the first data row of perf_analyzer's `-f` CSV.
pub fn parse_perf_csv(text: &str) -> Result<PerfAnalyzer, BenchError> {
    let bad = |m: String| BenchError::PerfAnalyzer(m);
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("empty CSV".into()))?
        .split(',')
        .collect();
    let row: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("CSV without a data row".into()))?
        .split(',')
        .collect();
    let col = |name: &str| -> Result<f64, BenchError> {
        let i = header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| bad(format!("column `{name}` missing")))?;
        row.get(i)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| bad(format!("column `{name}` is not a number")))
    };
    let avg_us = LATENCY_PARTS
        .iter()
        .map(|c| col(c))
        .sum::<Result<f64, _>>()?;
    Ok(PerfAnalyzer {
        ips: col("Inferences/Second")?,
        p50: col("p50 latency")? / 1e3,
        p90: col("p90 latency")? / 1e3,
        p95: col("p95 latency")? / 1e3,
        p99: col("p99 latency")? / 1e3,
        avg: avg_us / 1e3,
    })
}

/// Settings of the comparison with perf_analyzer.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Server and model.
    pub served: Served,
    /// The perf_analyzer command (a binary or a wrapper script).
    pub perf_analyzer: PathBuf,
    /// Measurement window; both tools measure windows of this length until
    /// three agree within 10 % (perf_analyzer's method), at most 10.
    pub window: Duration,
    /// Concurrencies.
    pub concurrency: Vec<usize>,
    /// Progress bars.
    pub progress: bool,
}

/// The table of both tools at every concurrency.
pub async fn compare(o: &CompareOptions) -> Result<String, BenchError> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let srv = spawn(serve_bin, models, &["--device".into(), "cpu".into()]).await?;
    let w = std::sync::Arc::new(workload(&srv.url, model).await?);
    let host = srv.url.trim_start_matches("http://").to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rir-loadtest vs perf_analyzer on one rir-serve ({}), batch 1, windows of {} ms until 3 agree within 10 %\n",
        model,
        o.window.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "concurrency", "tool", "infer/s", "avg ms", "p50", "p90", "p95", "p99"
    );
    for &c in &o.concurrency {
        let ours = ours(&w, c, o).await?;
        let theirs = perf_analyzer(o, model, &host, c)?;
        rows(&mut out, c, &ours, &theirs);
    }
    Ok(out)
}

/// rir-loadtest at concurrency `c` with perf_analyzer's stability rule.
async fn ours(
    w: &std::sync::Arc<Workload>,
    c: usize,
    o: &CompareOptions,
) -> Result<Report, BenchError> {
    let options = RunOptions {
        warmup: Duration::from_secs(1),
        stop: Stop::Duration(o.window),
        stability: Some(Stability {
            window: o.window,
            tolerance: 0.1,
            max_windows: 10,
        }),
        interval: None,
        timeline: None,
        max_in_flight: 1,
        seed: 0,
        progress: o.progress,
    };
    Ok(run(w.clone(), Load::Closed { concurrency: c }, &options)
        .await?
        .report)
}

/// perf_analyzer at concurrency `c` on `host`, read from its CSV.
fn perf_analyzer(
    o: &CompareOptions,
    model: &str,
    host: &str,
    c: usize,
) -> Result<PerfAnalyzer, BenchError> {
    let pa = o.perf_analyzer.display();
    let csv = std::env::temp_dir().join(format!("rir-perf-analyzer-{}.csv", std::process::id()));
    let status = Command::new(&o.perf_analyzer)
        .args(["-m", model, "-u", host, "-i", "grpc"])
        .args(["--concurrency-range", &c.to_string()])
        .args(["--measurement-interval", &o.window.as_millis().to_string()])
        .args(["--input-data", "zero", "-f"])
        .arg(&csv)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| BenchError::io(format!("running {pa}"), e))?;
    if !status.success() {
        return Err(BenchError::PerfAnalyzer(format!("{pa} failed ({status})")));
    }
    let text = std::fs::read_to_string(&csv)
        .map_err(|e| BenchError::io(format!("reading {}", csv.display()), e))?;
    let _ = std::fs::remove_file(&csv);
    parse_perf_csv(&text)
}

/// The two rows of concurrency `c`.
fn rows(out: &mut String, c: usize, ours: &Report, pa: &PerfAnalyzer) {
    let l = &ours.latency_ms;
    let unstable = match ours.stable {
        Some(false) => "  (not stable)",
        _ => "",
    };
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}{unstable}",
        c, "rir-loadtest", ours.inferences_per_s, l.avg, l.p50, l.p90, l.p95, l.p99,
    );
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        "", "perf_analyzer", pa.ips, pa.avg, pa.p50, pa.p90, pa.p95, pa.p99
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_analyzer_csv() {
        // The header and row perf_analyzer 2.41 writes with -f.
        let csv = "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
                   Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,\
                   p50 latency,p90 latency,p95 latency,p99 latency\n\
                   1,1342.29,0,331,109,1,300,0,0,381,647,3140,8369\n";
        let p = parse_perf_csv(csv).unwrap();
        assert_eq!(p.ips, 1342.29);
        assert_eq!((p.p50, p.p99), (0.381, 8.369));
        assert!((p.avg - 0.741).abs() < 1e-12);
        assert!(parse_perf_csv("Concurrency\n1\n").is_err());
    }
}

//! The figures of a run and their three renderings: a table for the
//! terminal, JSON and CSV for scripts and spreadsheets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::breakdown::Breakdown;
use crate::hostile::HostileCount;
use crate::load::Load;
use crate::recorder::{Recorder, histogram_text};
use rir_client::balance::{ReplicaCount, replica_table};

/// Latency summary of the successful requests, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// What one run (one load level) measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// What the run offered.
    pub load: Load,
    /// An interval row's label (its seconds, and a schedule's rates over
    /// them); `None` for a run's own row.
    pub span: Option<String>,
    /// Closed loop: outstanding requests.
    pub concurrency: Option<usize>,
    /// Open loop: offered requests per second.
    pub rate: Option<f64>,
    /// Items per request.
    pub batch: usize,
    /// Length of the measurement, seconds.
    pub seconds: f64,
    /// Requests measured (successful and failed).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by gRPC status.
    pub errors: BTreeMap<String, u64>,
    /// First message of each failing status.
    pub error_messages: BTreeMap<String, String>,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Successful items (images) per second: requests/s x batch.
    pub inferences_per_s: f64,
    /// Latency of the successful requests.
    pub latency_ms: Latency,
    /// Open loop: requests sent more than 1 ms after their intended time
    /// (the client could not keep up or the in-flight limit was reached).
    pub late_sends: u64,
    /// Open loop: requests due before the run stopped that were never sent.
    pub not_sent: u64,
    /// Stability mode: whether the last three windows agreed.
    pub stable: Option<bool>,
    /// Measurement windows (1 without stability mode).
    pub windows: usize,
    /// Requests that a replica did not answer and that were sent to another
    /// (each counted once per replica that failed it).
    pub retried: u64,
    /// Per replica, when there are several (empty for one server).
    pub replicas: Vec<ReplicaCount>,
    /// Bad requests mixed in, by class (kept out of every figure above).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bad_requests: BTreeMap<String, HostileCount>,
    /// With `--interval`: the same figures for each interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<Report>,
    /// Without --interval but with `--html`: the same figures every
    /// second or so, drawn over time and not listed as rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Report>,
    /// An interval's start, seconds from the start of the measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// The server's account of the same requests (its queue and compute
    /// per request), when it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Breakdown>,
    /// Made by `rir-loadtest merge`: how many generators' reports it adds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generators: Option<usize>,
    /// The latency histogram itself (microseconds, HDR V2 deflate, base64),
    /// so that reports from several hosts can be merged exactly.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub histogram: String,
}

impl Latency {
    /// The summary of a histogram of microseconds (zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |p: f64| ms(h.value_at_quantile(p));
        let any = !h.is_empty();
        Latency {
            min: if any { ms(h.min()) } else { 0.0 },
            avg: h.mean() / 1000.0,
            stddev: h.stdev() / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: if any { ms(h.max()) } else { 0.0 },
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// The row's label: `concurrency N`, `rate R/s constant|poisson`, a
    /// schedule, or an interval's span.
    pub fn label(&self) -> String {
        self.span.clone().unwrap_or_else(|| self.load.label())
    }

    /// Summarizes `record`, measured over `seconds` under `load`.
    pub fn new(
        load: &Load,
        batch: usize,
        seconds: f64,
        record: &Recorder,
        stable: Option<bool>,
        windows: usize,
    ) -> Self {
        let ok = record.ok();
        let rps = if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        };
        Report {
            load: load.clone(),
            span: None,
            concurrency: match load {
                Load::Closed { concurrency } => Some(*concurrency),
                Load::Open { .. } | Load::Scheduled { .. } => None,
            },
            rate: match load {
                Load::Open { rate, .. } => Some(*rate),
                Load::Scheduled { schedule, .. } => {
                    Some(schedule.mean_rate(0.0, schedule.length().as_secs_f64()))
                }
                Load::Closed { .. } => None,
            },
            batch,
            seconds,
            requests: ok + record.failed(),
            ok,
            errors: record.errors.clone(),
            error_messages: record.messages.clone(),
            requests_per_s: rps,
            inferences_per_s: rps * batch as f64,
            latency_ms: Latency::of(&record.latency),
            late_sends: record.late,
            not_sent: record.not_sent,
            stable,
            windows,
            retried: record.replicas.retries(),
            replicas: vec![],
            bad_requests: record.hostile.clone(),
            intervals: vec![],
            timeline: vec![],
            start_s: None,
            server: None,
            generators: None,
            histogram: histogram_text(&record.latency),
        }
    }

    /// Adds the per-replica counts of `record` when `addresses` names
    /// several replicas.
    pub fn with_replicas(mut self, record: &Recorder, addresses: &[String]) -> Self {
        if addresses.len() > 1 {
            self.replicas = record.replicas.by_replica(addresses);
        }
        self
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Bad requests sent.
    pub fn bad_sent(&self) -> u64 {
        self.bad_requests.values().map(|c| c.sent).sum()
    }

    /// Bad requests answered with another status than the one they are owed.
    pub fn bad_mismatched(&self) -> u64 {
        self.bad_requests
            .values()
            .map(HostileCount::mismatched)
            .sum()
    }

    fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            "0".into()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

pub(crate) const COLUMNS: [&str; 13] = [
    "load", "req/s", "infer/s", "avg ms", "stddev", "p50", "p90", "p95", "p99", "p99.9", "max",
    "requests", "errors",
];

/// The split of `avg ms`, shown when a row has the server's breakdown.
pub(crate) const SERVER_COLUMNS: [&str; 3] = ["queue", "compute", "rest"];

/// One row of the table: [`COLUMNS`], then [`SERVER_COLUMNS`] when `server`.
pub(crate) fn cells(r: &Report, server: bool) -> Vec<String> {
    let l = &r.latency_ms;
    let f = |v: f64| format!("{v:.3}");
    let mut cells = vec![
        r.label(),
        format!("{:.1}", r.requests_per_s),
        format!("{:.1}", r.inferences_per_s),
        f(l.avg),
        f(l.stddev),
        f(l.p50),
        f(l.p90),
        f(l.p95),
        f(l.p99),
        f(l.p999),
        f(l.max),
        r.requests.to_string(),
        r.errors_cell(),
    ];
    if server {
        match &r.server {
            Some(b) => cells.extend([f(b.queue_ms), f(b.compute_ms()), f(b.rest_ms())]),
            None => cells.extend(["-".to_string(), "-".into(), "-".into()]),
        }
    }
    cells
}

/// An aligned table, one row per report (latency in milliseconds), with
/// the error messages under it. When the server gave its statistics,
/// `avg ms` is split into the server's queue and compute per request and
/// the rest.
pub fn table(reports: &[Report]) -> String {
    let server = rows(reports).any(|r| r.server.is_some());
    let columns: Vec<&str> = match server {
        true => COLUMNS.iter().chain(&SERVER_COLUMNS).copied().collect(),
        false => COLUMNS.to_vec(),
    };
    let body: Vec<Vec<String>> = rows(reports).map(|r| cells(r, server)).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([columns[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{c:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {c:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, &columns);
    for r in &body {
        line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(source) = rows(reports).find_map(|r| r.server.map(|b| b.source)) {
        let _ = writeln!(
            out,
            "queue, compute: the server's own average per request ({}); rest: avg ms less both \
             (the server's handling, the network and the client)",
            source.label()
        );
    }
    for r in reports {
        notes(&mut out, r);
        bad_requests(&mut out, r);
    }
    out
}

/// What a report's row cannot show: failures with their first message,
/// late sends, an unstable measurement, retries and the replicas.
fn notes(out: &mut String, r: &Report) {
    for (code, msg) in &r.error_messages {
        let _ = writeln!(out, "{}: {code}: {msg}", r.label());
    }
    if r.late_sends > 0 {
        let _ = writeln!(
            out,
            "{}: {} requests left more than 1 ms after their intended time (client or in-flight limit saturated); their latency counts from the intended time",
            r.label(),
            r.late_sends
        );
    }
    if r.not_sent > 0 {
        let _ = writeln!(
            out,
            "{}: {} requests due before the run stopped were never sent (client or in-flight limit saturated)",
            r.label(),
            r.not_sent
        );
    }
    if r.stable == Some(false) {
        let _ = writeln!(out, "{}: not stable after {} windows", r.label(), r.windows);
    }
    if let Some(b) = &r.server {
        let _ = writeln!(
            out,
            "{}: server: {} requests in {} executions ({:.2} items each); {:.3} ms in the server = queue {:.3} + compute {:.3} (input {:.3}, infer {:.3}, output {:.3}) + handling {:.3}; {:.3} ms outside it",
            r.label(),
            b.requests,
            b.executions,
            b.avg_batch,
            b.server_ms,
            b.queue_ms,
            b.compute_ms(),
            b.compute_input_ms,
            b.compute_infer_ms,
            b.compute_output_ms,
            b.server_ms - b.queue_ms - b.compute_ms(),
            b.outside_ms
        );
    }
    if r.retried > 0 {
        let _ = writeln!(
            out,
            "{}: {} requests got no answer from a replica and were sent to another",
            r.label(),
            r.retried
        );
    }
    if !r.replicas.is_empty() {
        let _ = write!(
            out,
            "{}: per replica\n{}",
            r.label(),
            replica_table(&r.replicas)
        );
    }
}

/// The bad requests of a report, by class, against the status each is owed.
fn bad_requests(out: &mut String, r: &Report) {
    if r.bad_requests.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{}: {} bad requests, {} answered with the status they are owed",
        r.label(),
        r.bad_sent(),
        r.bad_sent() - r.bad_mismatched()
    );
    for (class, c) in &r.bad_requests {
        let _ = write!(
            out,
            "  {class:<16} {:>7} sent  {:>7} {}",
            c.sent, c.as_expected, c.expected
        );
        for (code, n) in &c.otherwise {
            let _ = write!(out, "  {n} {code} (owed {})", c.expected);
        }
        if let Some(m) = &c.message {
            let _ = write!(out, ": {m}");
        }
        out.push('\n');
    }
}

/// Each report's intervals, then the report itself.
fn rows(reports: &[Report]) -> impl Iterator<Item = &Report> {
    reports
        .iter()
        .flat_map(|r| r.intervals.iter().chain(std::iter::once(r)))
}

/// CSV with a header row; latency in milliseconds, errors as `CODE:n` pairs.
pub fn csv(reports: &[Report]) -> String {
    let mut out = String::from(
        "load,concurrency,rate,batch,seconds,requests,ok,failed,requests_per_s,inferences_per_s,\
         min_ms,avg_ms,stddev_ms,p50_ms,p90_ms,p95_ms,p99_ms,p999_ms,max_ms,late_sends,not_sent,retried,errors,\
         bad_sent,bad_mismatched,server_source,server_requests,server_executions,server_avg_batch,\
         server_queue_ms,server_compute_input_ms,server_compute_infer_ms,server_compute_output_ms,\
         server_ms,outside_ms\n",
    );
    for r in rows(reports) {
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{},{},{},{:.2},{:.2},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{}",
            r.label(),
            r.concurrency.map(|c| c.to_string()).unwrap_or_default(),
            r.rate.map(|c| c.to_string()).unwrap_or_default(),
            r.batch,
            r.seconds,
            r.requests,
            r.ok,
            r.failed(),
            r.requests_per_s,
            r.inferences_per_s,
            l.min,
            l.avg,
            l.stddev,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p999,
            l.max,
            r.late_sends,
            r.not_sent,
            r.retried,
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" "),
            r.bad_sent(),
            r.bad_mismatched(),
            server_cells(r.server.as_ref())
        );
    }
    out
}

/// The CSV cells of a server breakdown (empty when there is none).
fn server_cells(b: Option<&Breakdown>) -> String {
    let Some(b) = b else {
        return ",".repeat(9);
    };
    format!(
        "{},{},{},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}",
        b.source.name(),
        b.requests,
        b.executions,
        b.avg_batch,
        b.queue_ms,
        b.compute_input_ms,
        b.compute_infer_ms,
        b.compute_output_ms,
        b.server_ms,
        b.outside_ms
    )
}

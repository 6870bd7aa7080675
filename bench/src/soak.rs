//! The soak: a long open-loop run at a share of the capacity measured just
//! before, with bad requests mixed in, against a rir-serve this process
//! starts (so that its memory can be read). It answers four questions, each
//! with a bound: did the server stay up, did its memory stay flat, did the
//! tail latency stay put from interval to interval, and was every bad
//! request answered with the status it is owed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rir_loadtest::report::{Report, table};
use serde::Serialize;

use crate::BenchError;
use crate::point::{capacity, poisson, workload};
use crate::served::Served;
use rir_testkit::process::{rss_mib, spawn};

/// Settings of a soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Server and model.
    pub served: Served,
    /// More rir-serve arguments.
    pub server_args: Vec<String>,
    /// CPUs to pin the server to (a `taskset` list such as `1` or `2-7`).
    pub server_cpus: Option<String>,
    /// CPUs to pin this process, the load generator, to.
    pub client_cpus: Option<String>,
    /// Closed-loop concurrency the capacity is measured at.
    pub capacity_concurrency: usize,
    /// Length of the capacity measurement.
    pub capacity_duration: Duration,
    /// Share of the capacity offered in the soak (0.8 = 80 %).
    pub load: f64,
    /// Share of bad requests.
    pub bad_fraction: f64,
    /// Length of the soak.
    pub duration: Duration,
    /// Length of one interval (the unit of the p99 and memory figures).
    pub interval: Duration,
    /// Load before the soak's first interval (not measured).
    pub warmup: Duration,
    /// The bounds.
    pub bounds: Bounds,
    /// Progress bars.
    pub progress: bool,
}

/// What a soak must stay within.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bounds {
    /// Largest RSS growth from the end of the first interval to the end, %.
    pub rss_growth_pct: f64,
    /// Largest change of p99 from one interval to the next, %.
    pub p99_change_pct: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            rss_growth_pct: 5.0,
            p99_change_pct: 20.0,
        }
    }
}

/// The soak's verdict on each question.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// How the server ended: `None` while still running (as it should).
    pub server_exit: Option<String>,
    /// Good requests that failed.
    pub failed: u64,
    /// RSS at the end of the first interval and at the end, MiB.
    pub rss_mib: (f64, f64),
    /// Their change, %.
    pub rss_growth_pct: f64,
    /// The largest change of p99 between consecutive intervals, %.
    pub worst_p99_change_pct: f64,
    /// The interval it changed into, numbered from 1 (0: none compared).
    pub worst_p99_interval: usize,
    /// Bad requests sent and those answered with another status.
    pub bad: (u64, u64),
    /// Whether every bound held.
    pub passed: bool,
    /// The bounds that did not hold, in words.
    pub failures: Vec<String>,
}

/// The change of p99 into each interval from the one before, % (signed;
/// infinite after an interval whose p99 was 0): one entry per interval
/// after the first.
fn p99_changes(report: &Report) -> Vec<f64> {
    report
        .intervals
        .windows(2)
        .map(|pair| {
            let (a, b) = (pair[0].latency_ms.p99, pair[1].latency_ms.p99);
            if a > 0.0 {
                100.0 * (b / a - 1.0)
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// Judges a soak: its intervals, RSS sampled at the end of each (MiB, as
/// many as intervals), and how the server ended.
pub fn judge(report: &Report, rss: &[f64], server_exit: Option<String>, b: Bounds) -> Verdict {
    let first = rss.first().copied().unwrap_or(0.0);
    let last = rss.last().copied().unwrap_or(0.0);
    let growth = if first > 0.0 {
        100.0 * (last / first - 1.0)
    } else {
        0.0
    };
    let (mut worst, mut at) = (0.0f64, 0);
    for (k, change) in p99_changes(report).into_iter().enumerate() {
        if change.abs() > worst {
            // Numbered from 1: the later interval of the pair.
            (worst, at) = (change.abs(), k + 2);
        }
    }
    let bad = (report.bad_sent(), report.bad_mismatched());
    let mut failures = Vec::new();
    if let Some(e) = &server_exit {
        failures.push(format!("the server exited: {e}"));
    }
    if report.failed() > 0 {
        failures.push(format!("{} good requests failed", report.failed()));
    }
    if growth >= b.rss_growth_pct {
        failures.push(format!(
            "RSS grew {growth:.1} % (bound {:.0} %)",
            b.rss_growth_pct
        ));
    }
    if worst > b.p99_change_pct {
        failures.push(format!(
            "p99 changed {worst:.1} % into interval {at} (bound {:.0} %)",
            b.p99_change_pct
        ));
    }
    if bad.1 > 0 {
        failures.push(format!(
            "{} of {} bad requests got another status than the one they are owed",
            bad.1, bad.0
        ));
    }
    if report.intervals.len() < 2 {
        failures.push("fewer than two intervals: nothing to compare".into());
    }
    Verdict {
        server_exit,
        failed: report.failed(),
        rss_mib: (first, last),
        rss_growth_pct: growth,
        worst_p99_change_pct: worst,
        worst_p99_interval: at,
        bad,
        passed: failures.is_empty(),
        failures,
    }
}

/// A soak's figures: the capacity, the run with its intervals, memory and
/// the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    /// Requests/s measured in closed loop before the soak.
    pub capacity_per_s: f64,
    /// The rate offered.
    pub rate_per_s: f64,
    /// The soak (its intervals inside).
    pub report: Report,
    /// RSS at the end of each interval, MiB.
    pub rss_mib: Vec<f64>,
    /// RSS before any load, MiB.
    pub rss_idle_mib: f64,
    /// Share of the machine's CPU time stolen by the hypervisor in each
    /// interval, % (from /proc/stat): noise from outside, not the server.
    pub steal_pct: Vec<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Runs a soak.
pub async fn soak(o: &SoakOptions) -> Result<Soak, BenchError> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let mut srv = spawn(serve_bin, models, &o.server_args).await?;
    let pid = srv.pid();
    if let Some(cpus) = &o.server_cpus {
        pin(pid, cpus)?;
    }
    if let Some(cpus) = &o.client_cpus {
        pin(std::process::id(), cpus)?;
    }
    let rss_idle_mib = srv.rss_mib()?;
    let capacity = capacity(
        &srv.url,
        model,
        o.capacity_concurrency,
        (Duration::from_secs(2), o.capacity_duration),
        o.progress,
    )
    .await?;
    let rate = (capacity * o.load).round().max(1.0);
    tracing::info!(
        "capacity {capacity:.0} requests/s at concurrency {}; soaking at {rate:.0}/s for {:.0} s",
        o.capacity_concurrency,
        o.duration.as_secs_f64()
    );
    let w = workload(&srv.url, model)
        .await?
        .with_bad_fraction(o.bad_fraction, 1)
        .await?;
    let sampler = Sampler::start(pid, o.interval, o.warmup);
    let times = (o.warmup, o.duration);
    let outcome = poisson(Arc::new(w), rate, times, Some(o.interval), o.progress).await;
    let samples = sampler.finish();
    let report = outcome?.report;
    let (mut rss, mut steal): (Vec<f64>, Vec<f64>) = samples.into_iter().unzip();
    // One figure per interval: the last interval ends with the run.
    rss.truncate(report.intervals.len().saturating_sub(1));
    rss.push(rss_mib(pid).unwrap_or(0.0));
    steal.truncate(rss.len());
    let server_exit = srv.try_exit().map(|s| s.to_string());
    let verdict = judge(&report, &rss, server_exit, o.bounds);
    Ok(Soak {
        capacity_per_s: capacity,
        rate_per_s: rate,
        report,
        rss_mib: rss,
        rss_idle_mib,
        steal_pct: steal,
        verdict,
    })
}

/// Reads the server's RSS and the machine's CPU steal at the end of each
/// interval, on a thread of its own.
struct Sampler {
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    /// Samples process `pid` every `interval` from `warmup` on.
    fn start(pid: u32, interval: Duration, warmup: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let start = Instant::now() + warmup;
                let mut k = 1u32;
                let mut cpu = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    if k == 1 && Instant::now() < start {
                        cpu = cpu_times().unwrap_or_default();
                    }
                    if Instant::now() >= start + interval * k {
                        let now = cpu_times().unwrap_or_default();
                        let steal = steal_pct(cpu, now);
                        cpu = now;
                        if let Ok(m) = rss_mib(pid) {
                            lock(&samples).push((m, steal));
                        }
                        k += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            samples,
            stop,
            thread,
        }
    }

    /// Stops sampling: (RSS MiB, steal %) at the end of each interval so far.
    fn finish(self) -> Vec<(f64, f64)> {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
        lock(&self.samples).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pins every thread of process `pid` to `cpus` with util-linux's taskset.
fn pin(pid: u32, cpus: &str) -> Result<(), BenchError> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| {
            BenchError::io(
                format!("running taskset (util-linux) to pin to CPUs {cpus}"),
                e,
            )
        })?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The machine's (total, steal) CPU time so far, in clock ticks (the
/// first line of /proc/stat).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let total = v.iter().take(8).sum();
    Some((total, *v.get(7)?))
}

/// Steal between two readings, % of all CPU time.
fn steal_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.0.saturating_sub(a.0);
    if total == 0 {
        0.0
    } else {
        100.0 * b.1.saturating_sub(a.1) as f64 / total as f64
    }
}

impl Soak {
    /// The figures as a table, the bad requests by class, and the verdict.
    pub fn render(&self, o: &SoakOptions) -> String {
        let mut out = self.heading(o);
        out.push_str(&self.intervals());
        out.push('\n');
        out.push_str(&table(std::slice::from_ref(&Report {
            intervals: vec![],
            ..self.report.clone()
        })));
        out.push_str(&self.verdict_text(o));
        out
    }

    /// What was soaked, and how.
    fn heading(&self, o: &SoakOptions) -> String {
        let args = match o.server_args.is_empty() {
            true => String::new(),
            false => format!(" {}", o.server_args.join(" ")),
        };
        let pinned = match (&o.server_cpus, &o.client_cpus) {
            (None, None) => String::new(),
            (s, c) => format!(
                " (server on CPUs {}, load generator on {})",
                s.as_deref().unwrap_or("any"),
                c.as_deref().unwrap_or("any")
            ),
        };
        format!(
            "soak: {} on rir-serve{args}{pinned}: capacity {:.0} requests/s (closed loop, concurrency {}), \
             offered {:.0}/s ({:.0} %, Poisson) for {:.0} s with {:.1} % bad requests\n\n",
            o.served.model,
            self.capacity_per_s,
            o.capacity_concurrency,
            self.rate_per_s,
            o.load * 100.0,
            o.duration.as_secs_f64(),
            o.bad_fraction * 100.0
        )
    }

    /// One row per interval.
    fn intervals(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>9} {:>8}",
            "interval",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99 chg",
            "max ms",
            "bad",
            "bad owed",
            "RSS MiB",
            "steal %"
        );
        let changes = p99_changes(r);
        for (k, i) in r.intervals.iter().enumerate() {
            let change = match k {
                0 => "-".to_string(),
                _ => format!("{:+.1} %", changes[k - 1]),
            };
            let _ = writeln!(
                out,
                "{:<14} {:>9.1} {:>9.3} {:>9.3} {:>9} {:>9.3} {:>8} {:>10} {:>9.1} {:>8.2}",
                i.load,
                i.requests_per_s,
                i.latency_ms.p50,
                i.latency_ms.p99,
                change,
                i.latency_ms.max,
                i.bad_sent(),
                i.bad_sent() - i.bad_mismatched(),
                self.rss_mib.get(k).copied().unwrap_or(0.0),
                self.steal_pct.get(k).copied().unwrap_or(0.0)
            );
        }
        out
    }

    /// The verdict and the figures each bound was judged on.
    fn verdict_text(&self, o: &SoakOptions) -> String {
        let v = &self.verdict;
        let server = v
            .server_exit
            .as_deref()
            .map_or("still running".into(), |e| format!("exited ({e})"));
        let verdict = match v.passed {
            true => "PASS".to_string(),
            false => format!("FAIL: {}", v.failures.join("; ")),
        };
        format!(
            "\nserver: {server}; good requests failed: {}\n\
             RSS: idle {:.1} MiB, end of interval 1 {:.1} MiB, end {:.1} MiB: {:+.2} % (bound {:.0} %)\n\
             p99: largest change between consecutive intervals {:.1} % (into interval {}; bound {:.0} %)\n\
             bad requests: {} sent, {} answered with another status than the one they are owed\n\
             verdict: {verdict}\n",
            v.failed,
            self.rss_idle_mib,
            v.rss_mib.0,
            v.rss_mib.1,
            v.rss_growth_pct,
            o.bounds.rss_growth_pct,
            v.worst_p99_change_pct,
            v.worst_p99_interval,
            o.bounds.p99_change_pct,
            v.bad.0,
            v.bad.1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_loadtest::hostile::HostileCount;
    use rir_loadtest::load::{Arrivals, Load};
    use rir_loadtest::recorder::Recorder;

    fn interval(p99_ms: u64) -> Report {
        let mut rec = Recorder::new();
        for _ in 0..99 {
            rec.latency.record(p99_ms * 500).unwrap();
        }
        rec.latency.record(p99_ms * 1000).unwrap();
        rec.latency.record(p99_ms * 1000).unwrap();
        Report::new(
            &Load::Open {
                rate: 1.0,
                arrivals: Arrivals::Constant,
            },
            1,
            1.0,
            &rec,
            None,
            1,
        )
    }

    fn run_of(p99s: &[u64]) -> Report {
        let mut r = interval(1);
        r.intervals = p99s.iter().map(|&p| interval(p)).collect();
        r
    }

    #[test]
    fn steal_is_a_share_of_the_time_between_readings() {
        assert_eq!(steal_pct((1000, 10), (1200, 20)), 5.0);
        assert_eq!(steal_pct((1000, 10), (1000, 10)), 0.0);
        let (total, steal) = cpu_times().expect("/proc/stat on Linux");
        assert!(total > 0 && steal <= total);
    }

    #[test]
    fn a_steady_soak_passes() {
        let v = judge(
            &run_of(&[10, 11, 10]),
            &[100.0, 101.0, 102.0],
            None,
            Bounds::default(),
        );
        assert!(v.passed, "{v:?}");
        assert!((v.rss_growth_pct - 2.0).abs() < 1e-9);
        assert!((v.worst_p99_change_pct - 10.0).abs() < 1.0, "{v:?}");
    }

    #[test]
    fn each_bound_fails_the_soak_on_its_own() {
        let b = Bounds::default();
        let steady = run_of(&[10, 10, 10]);
        let v = judge(&steady, &[100.0, 100.0, 105.5], None, b);
        assert!(
            !v.passed && v.failures[0].contains("RSS grew 5.5 %"),
            "{v:?}"
        );
        let v = judge(&run_of(&[10, 10, 13]), &[100.0; 3], None, b);
        assert!(
            !v.passed && v.failures[0].contains("into interval 3"),
            "{v:?}"
        );
        // A drop counts as much as a rise.
        let v = judge(&run_of(&[10, 7, 7]), &[100.0; 3], None, b);
        assert!(!v.passed, "{v:?}");
        let v = judge(&steady, &[100.0; 3], Some("signal: 9".into()), b);
        assert!(!v.passed && v.failures[0].contains("exited"), "{v:?}");
        let mut bad = steady.clone();
        bad.bad_requests.insert(
            "wrong-shape".into(),
            HostileCount {
                expected: "INVALID_ARGUMENT".into(),
                sent: 10,
                as_expected: 9,
                ..Default::default()
            },
        );
        let v = judge(&bad, &[100.0; 3], None, b);
        assert!(!v.passed && v.failures[0].contains("1 of 10 bad"), "{v:?}");
        let mut failing = steady;
        failing.errors.insert("INTERNAL".into(), 3);
        let v = judge(&failing, &[100.0; 3], None, b);
        assert!(
            !v.passed && v.failures[0].contains("3 good requests failed"),
            "{v:?}"
        );
    }
}

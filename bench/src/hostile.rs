//! Every hostile request class at once against a rir-serve with its
//! default flags, beside good traffic at a share of the measured capacity:
//! the good requests' latency against a run without the attack, the
//! server's peak memory in each, what each attack was answered, the
//! defences' counters, and whether the server survived.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rir_loadtest::report::Report;
use serde::Serialize;

use crate::BenchError;
use crate::point::{capacity, poisson, workload};
use crate::served::Served;
use rir_testkit::attacks::{self, CLASSIFY, MODEL_INFER};
use rir_testkit::process::{ServerProcess, spawn};

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct HostileOptions {
    /// Server and model.
    pub served: Served,
    /// More rir-serve arguments (none: its defaults, as shipped).
    pub server_args: Vec<String>,
    /// Length of each phase (without and with the attack).
    pub duration: Duration,
    /// Share of the capacity the good traffic offers.
    pub load: f64,
    /// Copies of each attack running at once.
    pub per_attack: usize,
    /// Pause of each copy between two sends: a bomb costs the server CPU
    /// that the good traffic shares on a small machine.
    pub pause: Duration,
    /// Progress bars.
    pub progress: bool,
}

/// One class of hostile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Attack {
    /// ModelInfer of empty `inputs` entries, up to the message limit.
    EmptyInputs,
    /// The same with `outputs`.
    EmptyOutputs,
    /// Classify of empty images.
    EmptyImages,
    /// REST gzip body inflating to one-element arrays.
    NestedArrays,
    /// REST gzip body of requested outputs with empty parameters.
    ManyOutputs,
    /// ModelInfer naming a model of a megabyte.
    LongName,
    /// `G` and nothing more, on the REST port.
    SlowHead,
    /// A request head trickled a byte every 5 s, on the metrics port.
    TrickledHead,
    /// Half an HTTP/2 preface on the gRPC port.
    HalfPreface,
    /// A REST body trickled a byte every 5 s.
    TrickledBody,
}

impl Attack {
    /// Every class.
    pub const ALL: [Attack; 10] = [
        Attack::EmptyInputs,
        Attack::EmptyOutputs,
        Attack::EmptyImages,
        Attack::NestedArrays,
        Attack::ManyOutputs,
        Attack::LongName,
        Attack::SlowHead,
        Attack::TrickledHead,
        Attack::HalfPreface,
        Attack::TrickledBody,
    ];
}

/// Where the attacks go, and their payloads, built once: building a
/// compressed body takes the sender tens of milliseconds of CPU, which
/// would starve the good traffic's generator in the same process.
#[derive(Debug, Clone)]
struct Target {
    grpc: String,
    http: String,
    metrics: String,
    /// The REST inference route of the served model.
    infer: String,
    payloads: Arc<BTreeMap<Attack, Vec<u8>>>,
}

/// Bytes of the largest attack messages: under the smallest limit the
/// server derives (4 MiB), so that they reach its readers.
const MESSAGE: usize = (4 << 20) - 1024;

/// The head of a REST body that then trickles.
const BODY_HEAD: &[u8] =
    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n";

/// How long a held connection is waited on before it counts as open.
const HELD: Duration = Duration::from_secs(100);

/// The payload of each attack that sends one.
fn payloads(model: &str) -> BTreeMap<Attack, Vec<u8>> {
    // Field 1, a model name of 1 MiB (length 2^20 as a varint).
    let mut long_name = vec![0x0a, 0x80, 0x80, 0x40];
    long_name.extend(std::iter::repeat_n(b'm', 1 << 20));
    BTreeMap::from([
        (
            Attack::EmptyInputs,
            attacks::empty_entries(model, 5, MESSAGE),
        ),
        (
            Attack::EmptyOutputs,
            attacks::empty_entries(model, 6, MESSAGE),
        ),
        (
            Attack::EmptyImages,
            attacks::empty_entries(model, 3, MESSAGE),
        ),
        (
            Attack::NestedArrays,
            attacks::nested_arrays_gzip("image", MESSAGE),
        ),
        (Attack::ManyOutputs, attacks::many_outputs_gzip(MESSAGE)),
        (Attack::LongName, long_name),
    ])
}

impl Target {
    /// Sends one `attack`, and says how it was answered.
    async fn send(&self, attack: Attack) -> String {
        let payload = || self.payloads.get(&attack).cloned().unwrap_or_default();
        match attack {
            Attack::EmptyInputs | Attack::EmptyOutputs | Attack::LongName => {
                self.grpc(payload(), MODEL_INFER).await
            }
            Attack::EmptyImages => self.grpc(payload(), CLASSIFY).await,
            Attack::NestedArrays | Attack::ManyOutputs => self.rest(&payload()).await,
            Attack::SlowHead => held(&self.http, b"G", b"").await,
            Attack::TrickledHead => {
                held(&self.metrics, b"G", b"ET /metrics HTTP/1.1\r\nhost: x\r\n").await
            }
            Attack::HalfPreface => held(&self.grpc_addr(), b"PRI * HTTP/2.0\r\n", b"").await,
            Attack::TrickledBody => held(&self.http, BODY_HEAD, &[b' '; 64]).await,
        }
    }

    async fn grpc(&self, message: Vec<u8>, path: &'static str) -> String {
        format!(
            "{:?}",
            attacks::raw_call(&self.grpc, path, message).await.code()
        )
    }

    async fn rest(&self, body: &[u8]) -> String {
        let gzip = [
            ("content-encoding", "gzip"),
            ("content-type", "application/json"),
        ];
        match attacks::http_post(&self.http, &self.infer, &gzip, body).await {
            Ok(code) => format!("HTTP {code}"),
            Err(e) => format!("error: {}", e.kind()),
        }
    }

    fn grpc_addr(&self) -> String {
        self.grpc.trim_start_matches("http://").to_string()
    }
}

/// A connection sent `first` and then `trickle` a byte every 5 s: how
/// long until the server closed it.
async fn held(addr: &str, first: &[u8], trickle: &[u8]) -> String {
    let every = Duration::from_secs(5);
    match attacks::held_open(addr, first, trickle, every, HELD).await {
        Ok(Some(after)) => format!("closed after {:.0} s", after.as_secs_f64()),
        Ok(None) => format!("open after {} s", HELD.as_secs()),
        Err(e) => format!("error: {}", e.kind()),
    }
}

/// One phase: the good traffic's report and the server's peak memory.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Good requests.
    pub report: Report,
    /// The server's peak resident memory during the phase, MiB.
    pub peak_rss_mib: f64,
}

/// One hostile request sent alone (or several at once) to an idle server.
#[derive(Debug, Clone, Serialize)]
pub struct Single {
    /// What was sent.
    pub what: String,
    /// How it was answered.
    pub answer: String,
    /// How much it raised the server's peak resident memory, MiB.
    pub peak_growth_mib: f64,
}

/// The requests of the issue that found the server's weak points, at the
/// sizes it sent them, each alone; then sixteen bombs at once.
async fn singles(t: &Target, model: &str, pid: u32) -> Result<Vec<Single>, BenchError> {
    let model = model.to_string();
    let built = tokio::task::spawn_blocking(move || {
        vec![
            (
                "REST gzip body inflating to 16 M one-element arrays (64 MiB)",
                false,
                attacks::nested_arrays_gzip("image", 64 << 20),
            ),
            (
                "gRPC ModelInfer of 16 MiB: 8 M empty inputs",
                true,
                attacks::empty_entries(&model, 5, 16 << 20),
            ),
            (
                "gRPC ModelInfer of 16 MiB: 8 M empty outputs",
                true,
                attacks::empty_entries(&model, 6, 16 << 20),
            ),
            (
                "REST gzip body of 2.3 M outputs with empty parameters (64 MiB)",
                false,
                attacks::many_outputs_gzip(64 << 20),
            ),
        ]
    })
    .await?;
    let mut out = Vec::new();
    for (what, grpc, payload) in built {
        let base = reset_peak(pid).and_then(|()| peak_rss_mib(pid))?;
        let answer = match grpc {
            true => t.grpc(payload, MODEL_INFER).await,
            false => t.rest(&payload).await,
        };
        out.push(Single {
            what: what.into(),
            answer,
            peak_growth_mib: peak_rss_mib(pid)? - base,
        });
    }
    let base = reset_peak(pid).and_then(|()| peak_rss_mib(pid))?;
    let bomb = t
        .payloads
        .get(&Attack::EmptyInputs)
        .cloned()
        .unwrap_or_default();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (t, bomb) = (t.clone(), bomb.clone());
            tokio::spawn(async move { t.grpc(bomb, MODEL_INFER).await })
        })
        .collect();
    let mut answers = BTreeMap::<String, u64>::new();
    for c in calls {
        *answers.entry(c.await?).or_default() += 1;
    }
    out.push(Single {
        what: "16 gRPC ModelInfer at once, each 4 MiB of empty inputs (under the limit)".into(),
        answer: answers
            .iter()
            .map(|(a, n)| format!("{n} x {a}"))
            .collect::<Vec<_>>()
            .join(", "),
        peak_growth_mib: peak_rss_mib(pid)? - base,
    });
    Ok(out)
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct Hostile {
    /// Each request class alone on an idle server, and sixteen at once.
    pub singles: Vec<Single>,
    /// Closed-loop requests/s at concurrency 8 before the phases.
    pub capacity_per_s: f64,
    /// The good traffic's rate.
    pub rate_per_s: f64,
    /// The server's memory before any load, MiB.
    pub idle_rss_mib: f64,
    /// Good traffic alone.
    pub baseline: Phase,
    /// Good traffic beside every attack.
    pub attacked: Phase,
    /// Each attack's answers, counted.
    pub answers: BTreeMap<Attack, BTreeMap<String, u64>>,
    /// The defences' counters over the attacked phase.
    pub defences: BTreeMap<String, f64>,
    /// How the server ended, if it did (None: still serving).
    pub server_exit: Option<String>,
}

/// Runs the benchmark.
pub async fn hostile(o: &HostileOptions) -> Result<Hostile, BenchError> {
    let http_port = free_port()?;
    let mut args = vec!["--http-addr".to_string(), format!("127.0.0.1:{http_port}")];
    args.extend(o.server_args.iter().cloned());
    let mut srv = spawn(&o.served.serve_bin, &o.served.models, &args).await?;
    let idle_rss_mib = srv.rss_mib()?;
    let model = o.served.model.clone();
    let built = tokio::task::spawn_blocking(move || payloads(&model)).await?;
    let target = Target {
        grpc: srv.url.clone(),
        http: format!("127.0.0.1:{http_port}"),
        metrics: srv
            .metrics_url
            .trim_start_matches("http://")
            .replace("/metrics", ""),
        infer: format!("/v2/models/{}/infer", o.served.model),
        payloads: Arc::new(built),
    };
    let singles = singles(&target, &o.served.model, srv.pid()).await?;
    let measure = (Duration::from_secs(1), Duration::from_secs(3));
    let capacity = capacity(&srv.url, &o.served.model, 8, measure, o.progress).await?;
    let rate = (capacity * o.load).round().max(1.0);
    tracing::info!("capacity {capacity:.0} requests/s; good traffic at {rate:.0}/s");
    let baseline = phase(&srv, o, rate, None).await?;
    let before = counters(&srv).await?;
    let answers = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let attacked = phase(&srv, o, rate, Some((target, answers.clone()))).await?;
    let after = counters(&srv).await?;
    let defences = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    let answers = answers.lock().map(|a| a.clone()).unwrap_or_default();
    Ok(Hostile {
        singles,
        capacity_per_s: capacity,
        rate_per_s: rate,
        idle_rss_mib,
        baseline,
        attacked,
        answers,
        defences,
        server_exit: srv.try_exit().map(|s| s.to_string()),
    })
}

type Answers = Arc<std::sync::Mutex<BTreeMap<Attack, BTreeMap<String, u64>>>>;

/// Good traffic at `rate` for the phase, beside every attack when given.
async fn phase(
    srv: &ServerProcess,
    o: &HostileOptions,
    rate: f64,
    attack: Option<(Target, Answers)>,
) -> Result<Phase, BenchError> {
    reset_peak(srv.pid())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    if let Some((target, answers)) = attack {
        for kind in Attack::ALL {
            for _ in 0..o.per_attack.max(1) {
                let (t, a, stop) = (target.clone(), answers.clone(), stop.clone());
                let pause = o.pause;
                attackers.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        let answer = t.send(kind).await;
                        if let Ok(mut a) = a.lock() {
                            *a.entry(kind).or_default().entry(answer).or_default() += 1;
                        }
                        tokio::time::sleep(pause).await;
                    }
                }));
            }
        }
    }
    let w = Arc::new(workload(&srv.url, &o.served.model).await?);
    let times = (Duration::from_secs(2), o.duration);
    let report = poisson(w, rate, times, None, o.progress).await?.report;
    let peak_rss_mib = peak_rss_mib(srv.pid())?;
    stop.store(true, Ordering::Release);
    for a in attackers {
        a.abort();
    }
    Ok(Phase {
        report,
        peak_rss_mib,
    })
}

/// The defences' counters on the server's metrics page.
async fn counters(srv: &ServerProcess) -> Result<BTreeMap<String, f64>, BenchError> {
    let (client, path) = rir_client::http::HttpClient::for_page(
        &srv.metrics_url,
        "/metrics",
        Duration::from_secs(5),
    )
    .map_err(|e| BenchError::Server(e.to_string()))?;
    let page = client.get_text(&path).await.map_err(|e| {
        BenchError::Server(format!("scraping {}: {}", srv.metrics_url, e.message()))
    })?;
    let watched = [
        "rir_connections_cut_total",
        "rir_connections_refused_total",
        "rir_requests_shed_total",
        "rir_stalled_requests_total",
    ];
    Ok(page
        .lines()
        .filter(|l| watched.iter().any(|w| l.starts_with(w)))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::io("finding a free port", e))
}

/// Sets process `pid`'s peak memory back to its resident memory now.
fn reset_peak(pid: u32) -> Result<(), BenchError> {
    rir_process::reset_peak(&pid.to_string())
        .map_err(|e| BenchError::io(format!("resetting the peak memory of process {pid}"), e))
}

/// Process `pid`'s peak resident memory since the last reset, MiB (an
/// exited process has none: its status has no memory lines).
fn peak_rss_mib(pid: u32) -> Result<f64, BenchError> {
    let kib = rir_process::peak_resident_kib(&pid.to_string()).map_err(|e| {
        BenchError::io(
            format!("reading the memory of process {pid} (rir-serve: did it exit?)"),
            e,
        )
    })?;
    Ok(kib as f64 / 1024.0)
}

/// The figures as tables.
pub fn table(h: &Hostile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<75} {:>9}  answer",
        "alone, on an idle server", "peak MiB"
    );
    for s in &h.singles {
        let _ = writeln!(
            out,
            "{:<75} {:>+9.1}  {}",
            s.what, s.peak_growth_mib, s.answer
        );
    }
    let _ = writeln!(
        out,
        "capacity {:.0} requests/s (concurrency 8); good traffic {:.0}/s; server idle at {:.0} MiB",
        h.capacity_per_s, h.rate_per_s, h.idle_rss_mib
    );
    let _ = writeln!(
        out,
        "phase        good ok  failed   p50 ms   p99 ms  p99.9 ms  peak RSS MiB"
    );
    for (name, p) in [("no attack", &h.baseline), ("attacked", &h.attacked)] {
        let l = &p.report.latency_ms;
        let _ = writeln!(
            out,
            "{name:<11} {:>8} {:>7} {:>8.3} {:>8.3} {:>9.3} {:>13.0}",
            p.report.ok,
            p.report.failed(),
            l.p50,
            l.p99,
            l.p999,
            p.peak_rss_mib
        );
    }
    let _ = writeln!(out, "attack          answered (count)");
    for (attack, answers) in &h.answers {
        let list: Vec<String> = answers.iter().map(|(a, n)| format!("{a} ({n})")).collect();
        let _ = writeln!(out, "{:<15} {}", format!("{attack:?}"), list.join(", "));
    }
    for (series, delta) in &h.defences {
        let _ = writeln!(out, "{series} +{delta}");
    }
    let _ = writeln!(
        out,
        "server: {}",
        h.server_exit.as_deref().unwrap_or("still serving")
    );
    out
}

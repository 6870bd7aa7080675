//! What OpenTelemetry tracing costs rir-serve: the same server and model
//! with traces off and on (every request sampled and exported over
//! OTLP/gRPC to a receiver in this process), one server at a time, in
//! alternating rounds (each going first in turn) so that drift hits both
//! alike.

use std::fmt::Write as _;
use std::sync::Arc;

use rir_figures::median;
use rir_loadtest::report::Report;

use crate::BenchError;
use crate::point::{BenchOptions, closed, workload};
use crate::served::Served;
use rir_testkit::doubles::otlp_sink::OtlpSink;
use rir_testkit::process::spawn;

/// Settings of the tracing benchmark.
#[derive(Debug, Clone)]
pub struct TracingBenchOptions {
    /// Server and model.
    pub served: Served,
    /// Alternating rounds per concurrency.
    pub rounds: usize,
    /// More rir-serve arguments, for both servers.
    pub server_args: Vec<String>,
    /// Shared settings (warm-up, duration of each measurement, concurrencies).
    pub common: BenchOptions,
}

/// The figures of one mode at one concurrency, over the rounds.
#[derive(Debug, Default)]
struct Rounds {
    requests_per_s: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    requests: u64,
}

impl Rounds {
    fn push(&mut self, r: &Report) {
        self.requests_per_s.push(r.requests_per_s);
        self.p50.push(r.latency_ms.p50);
        self.p99.push(r.latency_ms.p99);
        self.requests += r.requests;
    }
}

/// Runs the benchmark and renders its table.
pub async fn tracing_cost(o: &TracingBenchOptions) -> Result<String, BenchError> {
    let sink = OtlpSink::start()
        .await
        .map_err(|e| BenchError::io("starting the OTLP receiver", e))?;
    let base: Vec<String> = ["--device", "cpu"]
        .map(String::from)
        .into_iter()
        .chain(o.server_args.iter().cloned())
        .collect();
    let traced: Vec<String> = base
        .iter()
        .cloned()
        .chain(["--otlp-endpoint".to_string(), sink.endpoint.clone()])
        .collect();
    let n = o.common.concurrency.len();
    let (mut off, mut on): (Vec<Rounds>, Vec<Rounds>) = (
        (0..n).map(|_| Rounds::default()).collect(),
        (0..n).map(|_| Rounds::default()).collect(),
    );
    for round in 0..o.rounds {
        // One server at a time, each first in turn: a server running
        // beside the measured one, or going first, changes the figures
        // more than tracing does.
        let order = match round % 2 {
            0 => [false, true],
            _ => [true, false],
        };
        for tracing in order {
            let (args, into) = match tracing {
                true => (&traced, &mut on),
                false => (&base, &mut off),
            };
            measure_server(o, args, into).await?;
        }
    }
    let spans = sink.count();
    sink.shutdown().await;
    let rows: Vec<(usize, Rounds, Rounds)> = o
        .common
        .concurrency
        .iter()
        .copied()
        .zip(off.into_iter().zip(on))
        .map(|(c, (off, on))| (c, off, on))
        .collect();
    Ok(render(o, &rows, spans))
}

/// Starts rir-serve with `args`, measures every concurrency into `into`,
/// and stops it with SIGTERM (which exports the spans it still holds).
async fn measure_server(
    o: &TracingBenchOptions,
    args: &[String],
    into: &mut [Rounds],
) -> Result<(), BenchError> {
    let Served {
        models,
        model,
        serve_bin,
    } = &o.served;
    let mut server = spawn(serve_bin, models, args).await?;
    let w = Arc::new(workload(&server.url, model).await?);
    for (c, f) in o.common.concurrency.iter().zip(into.iter_mut()) {
        f.push(&closed(&w, *c, &o.common).await?);
    }
    drop(w);
    server.terminate();
    tokio::task::spawn_blocking(move || server.wait())
        .await
        .map_err(|e| BenchError::Server(e.to_string()))?
        .map_err(|e| BenchError::io("waiting for rir-serve", e))?;
    Ok(())
}

fn render(o: &TracingBenchOptions, rows: &[(usize, Rounds, Rounds)], spans: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rir-serve with OpenTelemetry traces off and on (--otlp-endpoint, every request sampled, \
         OTLP/gRPC to a receiver in the benchmark's process), model {}, {} alternating rounds \
         (a fresh server each), {:.0} s per concurrency (medians)",
        o.served.model,
        o.rounds,
        o.common.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:>11}  {:<7} {:>9} {:>13} {:>9} {:>9}   {:>14} {:>10} {:>10}",
        "concurrency",
        "traces",
        "req/s",
        "(min–max)",
        "p50 ms",
        "p99 ms",
        "req/s on/off",
        "p50 on/off",
        "p99 on/off"
    );
    let mut traced_requests = 0;
    for (c, off, on) in rows {
        traced_requests += on.requests;
        let m = |v: &[f64]| median(v.to_vec());
        for (name, f) in [("off", off), ("on", on)] {
            let ratios = match name {
                "on" => format!(
                    "{:>14.3} {:>10.3} {:>10.3}",
                    m(&on.requests_per_s) / m(&off.requests_per_s),
                    m(&on.p50) / m(&off.p50),
                    m(&on.p99) / m(&off.p99)
                ),
                _ => String::new(),
            };
            let lo = f
                .requests_per_s
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let hi = f.requests_per_s.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "{c:>11}  {name:<7} {:>9.0} {:>13} {:>9.3} {:>9.3}   {ratios}",
                m(&f.requests_per_s),
                format!("{lo:.0}–{hi:.0}"),
                m(&f.p50),
                m(&f.p99)
            );
        }
    }
    let _ = writeln!(
        out,
        "spans received: {spans} for {traced_requests} traced requests (warm-ups included in the spans)"
    );
    out
}

//! Counters of what the server did: the Triton `ModelStatistics` figures per
//! model, and the Prometheus metrics exported on the metrics port. One
//! record call updates both, so they never disagree.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Counter, CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The Prometheus metrics, labelled by model.
pub struct Metrics {
    /// Registry the HTTP endpoint renders.
    pub registry: Registry,
    /// Requests by model, outcome (`ok`, `error`) and reason (gRPC code name).
    pub requests: IntCounterVec,
    /// Images inferred.
    pub inferences: IntCounterVec,
    /// Engine executions (batches).
    pub executions: IntCounterVec,
    /// Seconds successful requests spent in the server, arrival to answer
    /// (what a p99 alert reads).
    pub request_seconds: HistogramVec,
    /// Seconds requests waited in the queue.
    pub queue_seconds: HistogramVec,
    /// Seconds the engine took per batch.
    pub compute_seconds: HistogramVec,
    /// Images per executed batch.
    pub batch_size: HistogramVec,
    /// Zero images added to fill batches up to their bucket.
    pub padded: IntCounterVec,
    /// Engine executions run on the requesting thread, not an engine
    /// thread (the batcher's inline path).
    pub inline_executions: IntCounterVec,
    /// Engine executions by model and engine instance (0-based, as
    /// `--instances` or the config's `instance_group` counts them): shows
    /// that every instance takes work.
    pub instance_executions: IntCounterVec,
    /// Model version loads by model and outcome (`ready`, `failed`): a
    /// repository poll that finds nothing changed loads nothing.
    pub loads: IntCounterVec,
    /// Load calls answered with the result of a load of the same model
    /// that started after them, instead of loading again.
    pub loads_coalesced: IntCounterVec,
    /// Requests waiting in the queue.
    pub pending: IntGaugeVec,
    /// Open connections by front end (`grpc`, `http`).
    pub connections: IntGaugeVec,
    /// Connections closed on arrival, by front end and reason (`limit`:
    /// --max-connections reached; `silent`: nothing sent within
    /// --first-byte-timeout-ms).
    pub connections_refused: IntCounterVec,
    /// Requests whose body stopped arriving (nothing for the body
    /// timeout), by front end.
    pub stalled: IntCounterVec,
    /// Requests answered at once without being read or run, by front end
    /// and reason (`memory`: the budget of bytes in flight is spent;
    /// `decoders`: too many wait for a blocking thread).
    pub shed: IntCounterVec,
    /// Bytes of the in-flight budget that requests hold now.
    pub inflight_bytes: IntGauge,
    /// Connections the server closed because a phase ran past its
    /// deadline, by front end and reason (`head`: the request head or the
    /// next one on a kept-alive connection; `body`: a body past its total
    /// deadline).
    pub connections_cut: IntCounterVec,
    /// Resident memory of this process, bytes (Prometheus' standard
    /// process metric, read from /proc when scraped).
    pub resident_memory: IntGauge,
    /// Open file descriptors of this process (the same).
    pub open_fds: IntGauge,
    /// When the process started, seconds since the epoch (the name the
    /// Prometheus client libraries use): a change is a restart.
    pub start_time: IntGauge,
    /// Each model version: 1 while ready, 0 while unavailable; read from
    /// the served snapshot at every scrape.
    pub model_ready: IntGaugeVec,
    /// The same per-request figures under Triton's names.
    pub triton: TritonCounters,
    /// Held from resetting `model_ready` to rendering it: two scrapes at
    /// once never see the other's half-rebuilt gauge.
    scrape: Mutex<()>,
}

/// Triton's per-request counters under Triton's names (`nv_inference_*`,
/// labelled by model and version, durations in microseconds), so that
/// dashboards, alerts and load testers written for Triton's metrics
/// (`rir-loadtest --metrics-url`) read rir-serve's unchanged. They count
/// what `ModelStatistics` counts, in the same call.
pub struct TritonCounters {
    /// Successful requests (`nv_inference_request_success`).
    pub(crate) success: IntCounterVec,
    /// Failed requests (`nv_inference_request_failure`).
    pub(crate) failure: IntCounterVec,
    /// Images inferred (`nv_inference_count`).
    pub(crate) inferences: IntCounterVec,
    /// Engine executions (`nv_inference_exec_count`).
    pub(crate) executions: IntCounterVec,
    /// Time of successful requests, from arrival to response
    /// (`nv_inference_request_duration_us`).
    pub(crate) request_us: CounterVec,
    /// Their time in the batching queue (`nv_inference_queue_duration_us`).
    pub(crate) queue_us: CounterVec,
    /// Their time decoding input (`nv_inference_compute_input_duration_us`).
    pub(crate) input_us: CounterVec,
    /// Their time in the engine (`nv_inference_compute_infer_duration_us`).
    pub(crate) infer_us: CounterVec,
    /// Their time encoding output (`nv_inference_compute_output_duration_us`).
    pub(crate) output_us: CounterVec,
}

/// One model version's series of the Triton-named counters, looked up once
/// so that a request only adds to them.
struct TritonSeries {
    success: IntCounter,
    failure: IntCounter,
    inferences: IntCounter,
    executions: IntCounter,
    request_us: Counter,
    queue_us: Counter,
    input_us: Counter,
    infer_us: Counter,
    output_us: Counter,
}

impl TritonCounters {
    /// The series of version `version` of `model` (they show on the
    /// metrics page from then on, at zero until it serves).
    fn series(&self, model: &str, version: &str) -> TritonSeries {
        let labels = [model, version];
        TritonSeries {
            success: self.success.with_label_values(&labels),
            failure: self.failure.with_label_values(&labels),
            inferences: self.inferences.with_label_values(&labels),
            executions: self.executions.with_label_values(&labels),
            request_us: self.request_us.with_label_values(&labels),
            queue_us: self.queue_us.with_label_values(&labels),
            input_us: self.input_us.with_label_values(&labels),
            infer_us: self.infer_us.with_label_values(&labels),
            output_us: self.output_us.with_label_values(&labels),
        }
    }

    fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        use rir_contract::metrics as triton;
        const LABELS: [&str; 2] = ["model", "version"];
        let count = |name: &str, help: &str| {
            registered(r, IntCounterVec::new(Opts::new(name, help), &LABELS))
        };
        let micros =
            |name: &str, help: &str| registered(r, CounterVec::new(Opts::new(name, help), &LABELS));
        Ok(TritonCounters {
            success: count(
                triton::REQUEST_SUCCESS,
                "successful inference requests (Triton's name)",
            )?,
            failure: count(
                triton::REQUEST_FAILURE,
                "failed inference requests (Triton's name)",
            )?,
            inferences: count(triton::INFERENCE_COUNT, "images inferred (Triton's name)")?,
            executions: count(triton::EXEC_COUNT, "engine executions (Triton's name)")?,
            request_us: micros(
                triton::REQUEST_DURATION_US,
                "cumulative time of successful requests, microseconds (Triton's name)",
            )?,
            queue_us: micros(
                triton::QUEUE_DURATION_US,
                "cumulative queue time of successful requests, microseconds (Triton's name)",
            )?,
            input_us: micros(
                triton::COMPUTE_INPUT_DURATION_US,
                "cumulative input decoding time, microseconds (Triton's name)",
            )?,
            infer_us: micros(
                triton::COMPUTE_INFER_DURATION_US,
                "cumulative engine time of requests, microseconds (Triton's name)",
            )?,
            output_us: micros(
                triton::COMPUTE_OUTPUT_DURATION_US,
                "cumulative output encoding time, microseconds (Triton's name)",
            )?,
        })
    }
}

/// Makes a metric, registers it in `registry`, and hands it back.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> Result<M, prometheus::Error> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let m = Make(&r);
        // Durations: geometric buckets from 50 µs to about 6.5 s.
        let secs: Vec<f64> = (0..18).map(|i| 50e-6 * 2f64.powi(i)).collect();
        let sizes: Vec<f64> = (0..10).map(|i| 2f64.powi(i)).collect();
        let front = Front::register(&m)?;
        Ok(Metrics {
            requests: m.counter(
                "rir_requests_total",
                "gRPC inference requests by model, outcome and reason",
                &["model", "outcome", "reason"],
            )?,
            inferences: m.per_model("rir_inference_count", "images inferred")?,
            executions: m.per_model("rir_execution_count", "engine executions (batches)")?,
            request_seconds: m.histogram(
                "rir_request_seconds",
                "time successful requests spent in the server, arrival to answer",
                &secs,
            )?,
            queue_seconds: m.histogram(
                "rir_queue_seconds",
                "time requests waited in the batching queue",
                &secs,
            )?,
            compute_seconds: m.histogram("rir_compute_seconds", "engine time per batch", &secs)?,
            batch_size: m.histogram("rir_batch_size", "images per executed batch", &sizes)?,
            pending: m.gauge("rir_pending_requests", "requests waiting in the queue", "model")?,
            padded: m.per_model(
                "rir_padded_images_total",
                "zero images added to fill batches up to their bucket size",
            )?,
            inline_executions: m.per_model(
                "rir_inline_executions_total",
                "engine executions run on the thread that received the request, \
                 with no hand-off to an engine thread",
            )?,
            instance_executions: m.counter(
                "rir_instance_executions_total",
                "engine executions by model and engine instance",
                &["model", "instance"],
            )?,
            loads: m.counter(
                "rir_model_loads_total",
                "model version loads by outcome (ready, failed)",
                &["model", "outcome"],
            )?,
            loads_coalesced: m.per_model(
                "rir_model_loads_coalesced_total",
                "load calls that took the result of a load of the same model that ran while they waited",
            )?,
            connections: front.connections,
            connections_refused: front.refused,
            stalled: front.stalled,
            shed: front.shed,
            inflight_bytes: front.inflight_bytes,
            connections_cut: front.cut,
            resident_memory: m.plain_gauge(
                "process_resident_memory_bytes",
                "resident memory size in bytes",
            )?,
            open_fds: m.plain_gauge("process_open_fds", "number of open file descriptors")?,
            start_time: {
                let g = m.plain_gauge(
                    "process_start_time_seconds",
                    "start time of the process since the epoch, seconds",
                )?;
                let now = SystemTime::now().duration_since(UNIX_EPOCH);
                g.set(now.map_or(0, |d| d.as_secs() as i64));
                g
            },
            model_ready: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rir_model_ready",
                        "1 while a model version serves, 0 while it is unavailable",
                    ),
                    &["model", "version"],
                ),
            )?,
            triton: TritonCounters::new(&r)?,
            scrape: Mutex::new(()),
            registry: r,
        })
    }

    /// The text exposition format of every metric, `rir_model_ready` set
    /// first to the versions listed as `(model, version, ready)` (the
    /// series of versions no longer listed dropped), under one lock.
    pub(crate) fn render_with_ready<'a>(
        &self,
        versions: impl Iterator<Item = (&'a str, u64, bool)>,
    ) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.set_ready(versions);
        self.render()
    }

    /// Sets `rir_model_ready` to the versions listed (see
    /// [`Metrics::render_with_ready`]).
    fn set_ready<'a>(&self, versions: impl Iterator<Item = (&'a str, u64, bool)>) {
        self.model_ready.reset();
        for (model, version, ready) in versions {
            self.model_ready
                .with_label_values(&[model, &version.to_string()])
                .set(i64::from(ready));
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        self.read_process();
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

/// Makes metrics and registers them in one registry.
struct Make<'r>(&'r Registry);

impl Make<'_> {
    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        registered(self.0, IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn per_model(&self, name: &str, help: &str) -> Result<IntCounterVec, prometheus::Error> {
        self.counter(name, help, &["model"])
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<HistogramVec, prometheus::Error> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        registered(self.0, HistogramVec::new(opts, &["model"]))
    }

    fn gauge(&self, name: &str, help: &str, label: &str) -> Result<IntGaugeVec, prometheus::Error> {
        registered(self.0, IntGaugeVec::new(Opts::new(name, help), &[label]))
    }

    fn plain_gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        registered(self.0, IntGauge::new(name, help))
    }
}

/// The metrics of connections and of requests refused before they run.
struct Front {
    connections: IntGaugeVec,
    refused: IntCounterVec,
    stalled: IntCounterVec,
    shed: IntCounterVec,
    inflight_bytes: IntGauge,
    cut: IntCounterVec,
}

impl Front {
    fn register(m: &Make) -> Result<Self, prometheus::Error> {
        Ok(Front {
            connections: m.gauge("rir_open_connections", "open client connections", "front")?,
            refused: m.counter(
                "rir_connections_refused_total",
                "connections closed on arrival: over the limit, or silent",
                &["front", "reason"],
            )?,
            stalled: m.counter(
                "rir_stalled_requests_total",
                "requests whose body stopped arriving for the body timeout",
                &["front"],
            )?,
            shed: m.counter(
                "rir_requests_shed_total",
                "requests answered at once, unread and unrun: memory budget spent, or decoders busy",
                &["reason"],
            )?,
            inflight_bytes: m.plain_gauge(
                "rir_inflight_request_bytes",
                "bytes of the in-flight budget (--max-inflight-mb) held by requests",
            )?,
            cut: m.counter(
                "rir_connections_cut_total",
                "connections closed by the server when a phase passed its deadline",
                &["front", "reason"],
            )?,
        })
    }
}

impl Metrics {
    /// Updates the process gauges from /proc (Linux; elsewhere they stay 0).
    fn read_process(&self) {
        if let Ok(kib) = rir_process::resident_kib("self") {
            self.resident_memory.set(kib.saturating_mul(1024) as i64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
}

/// A count and a total duration, as Triton reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatisticDuration {
    /// How many times.
    pub(crate) count: u64,
    /// Nanoseconds in total.
    pub(crate) ns: u64,
}

impl StatisticDuration {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns += d.as_nanos() as u64;
    }
}

/// Cumulative request statistics, as Triton's `InferStatistics` has them
/// (and as its REST JSON names them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InferStatistics {
    /// Successful requests and their total time.
    pub(crate) success: StatisticDuration,
    /// Failed requests and their total time.
    pub(crate) fail: StatisticDuration,
    /// Queue time of requests that ran.
    pub(crate) queue: StatisticDuration,
    /// Time spent turning requests into engine input (decoding tensors or images).
    pub(crate) compute_input: StatisticDuration,
    /// Engine time of requests that ran.
    pub(crate) compute_infer: StatisticDuration,
    /// Time spent turning engine output into responses.
    pub(crate) compute_output: StatisticDuration,
}

/// Triton-style cumulative statistics of one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per-request counts and times.
    pub requests: InferStatistics,
    /// Images inferred.
    pub inference_count: u64,
    /// Engine executions.
    pub execution_count: u64,
    /// Last inference, milliseconds since the Unix epoch.
    pub last_inference_ms: u64,
    /// Executions and engine time per batch size (real images, padding
    /// excluded).
    pub batches: BTreeMap<usize, StatisticDuration>,
    /// Zero images added to fill batches up to their bucket. Triton's
    /// ModelStatistics has no field for it: it is in this snapshot and in
    /// the Prometheus metric `rir_padded_images_total`.
    pub padded_count: u64,
    /// Successful requests per latency bucket ([`crate::latency`]), arrival
    /// to answer: what the live view reads percentiles from.
    pub latency: Vec<u64>,
    /// Failed requests by gRPC code name (`InvalidArgument`, ...).
    pub failures: BTreeMap<String, u64>,
}

/// Where a successful request's time went, as Triton reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTimes {
    /// From the handler's start to the response.
    pub(crate) total: Duration,
    /// Decoding the request into engine input.
    pub(crate) input: Duration,
    /// Waiting in the batcher's queue.
    pub(crate) queue: Duration,
    /// In the engine.
    pub(crate) infer: Duration,
    /// Encoding the response.
    pub(crate) output: Duration,
}

/// One model's series of the `rir_*` metrics that carry only its name,
/// looked up once so that a request only adds to them.
struct ModelSeries {
    inferences: IntCounter,
    executions: IntCounter,
    padded: IntCounter,
    inline_executions: IntCounter,
    succeeded: IntCounter,
    request_seconds: prometheus::Histogram,
    queue_seconds: prometheus::Histogram,
    compute_seconds: prometheus::Histogram,
    batch_size: prometheus::Histogram,
    pending: IntGauge,
}

impl ModelSeries {
    fn of(m: &Metrics, model: &str) -> Self {
        let one = [model];
        ModelSeries {
            inferences: m.inferences.with_label_values(&one),
            executions: m.executions.with_label_values(&one),
            padded: m.padded.with_label_values(&one),
            inline_executions: m.inline_executions.with_label_values(&one),
            succeeded: m.requests.with_label_values(&[model, "ok", "OK"]),
            request_seconds: m.request_seconds.with_label_values(&one),
            queue_seconds: m.queue_seconds.with_label_values(&one),
            compute_seconds: m.compute_seconds.with_label_values(&one),
            batch_size: m.batch_size.with_label_values(&one),
            pending: m.pending.with_label_values(&one),
        }
    }
}

/// One model's statistics, shared by the service and the batcher.
pub struct ModelStats {
    model: String,
    /// Its series of the Triton-named counters.
    triton: TritonSeries,
    /// Its series of the `rir_*` metrics.
    series: ModelSeries,
    metrics: std::sync::Arc<Metrics>,
    inner: Mutex<Snapshot>,
}

impl ModelStats {
    /// Statistics for version `version` of `model`, reporting into
    /// `metrics` too.
    pub fn new(model: &str, version: u64, metrics: std::sync::Arc<Metrics>) -> Self {
        ModelStats {
            model: model.to_string(),
            triton: metrics.triton.series(model, &version.to_string()),
            series: ModelSeries::of(&metrics, model),
            metrics,
            inner: Mutex::new(Snapshot {
                latency: vec![0; crate::latency::BUCKETS],
                ..Snapshot::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Engine instance `instance` ran `images` real images padded with
    /// `padded` zero images up to its bucket, in `compute`; `inline` if on
    /// the requesting thread.
    pub(crate) fn record_execution(
        &self,
        instance: usize,
        images: usize,
        padded: usize,
        compute: Duration,
        inline: bool,
    ) {
        self.with(|s| {
            s.execution_count += 1;
            s.padded_count += padded as u64;
            s.batches.entry(images).or_default().add(compute);
        });
        let m = &self.series;
        m.padded.inc_by(padded as u64);
        m.executions.inc();
        self.triton.executions.inc();
        self.metrics
            .instance_executions
            .with_label_values(&[self.model.as_str(), &instance.to_string()])
            .inc();
        if inline {
            m.inline_executions.inc();
        }
        m.compute_seconds.observe(compute.as_secs_f64());
        m.batch_size.observe(images as f64);
    }

    /// A request of `n` images succeeded; `t` says where its time went. The
    /// phases are counted together, under one lock, because Triton clients
    /// (perf_analyzer) require equal counts of compute input, infer and
    /// output in every snapshot.
    pub(crate) fn record_success(&self, n: usize, t: &RequestTimes) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.with(|s| {
            let r = &mut s.requests;
            r.success.add(t.total);
            r.queue.add(t.queue);
            r.compute_input.add(t.input);
            r.compute_infer.add(t.infer);
            r.compute_output.add(t.output);
            s.inference_count += n as u64;
            s.last_inference_ms = now_ms;
            if let Some(c) = s.latency.get_mut(crate::latency::bucket(t.total)) {
                *c += 1;
            }
        });
        let m = &self.series;
        m.inferences.inc_by(n as u64);
        m.queue_seconds.observe(t.queue.as_secs_f64());
        m.request_seconds.observe(t.total.as_secs_f64());
        m.succeeded.inc();
        let tr = &self.triton;
        tr.success.inc();
        tr.inferences.inc_by(n as u64);
        for (counter, d) in [
            (&tr.request_us, t.total),
            (&tr.queue_us, t.queue),
            (&tr.input_us, t.input),
            (&tr.infer_us, t.infer),
            (&tr.output_us, t.output),
        ] {
            counter.inc_by(d.as_secs_f64() * 1e6);
        }
    }

    /// A request failed with gRPC code `reason` after `total`.
    pub(crate) fn record_failure(&self, reason: &str, total: Duration) {
        self.with(|s| {
            s.requests.fail.add(total);
            match s.failures.get_mut(reason) {
                Some(n) => *n += 1,
                None => drop(s.failures.insert(reason.to_string(), 1)),
            }
        });
        self.metrics
            .requests
            .with_label_values(&[&self.model, "error", reason])
            .inc();
        self.triton.failure.inc();
    }

    /// A request expired in the queue after `queued` (recorded as a failure by the caller).
    pub(crate) fn record_expired(&self, queued: Duration) {
        self.series.queue_seconds.observe(queued.as_secs_f64());
    }

    /// Sets the queue-length gauge.
    pub(crate) fn set_pending(&self, n: usize) {
        self.series.pending.set(n as i64);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_at_once_each_see_every_ready_version() {
        // Two scrapes racing: without the scrape lock, one renders while
        // the other has just reset the gauge, and a ready version vanishes
        // from its page.
        let m = std::sync::Arc::new(Metrics::new().unwrap());
        let series = "rir_model_ready{model=\"m\",version=\"1\"} 1";
        let scrapers: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    (0..5000)
                        .filter(|_| {
                            let page = m.render_with_ready([("m", 1, true)].into_iter());
                            !page.contains(series)
                        })
                        .count()
                })
            })
            .collect();
        let missing: usize = scrapers.into_iter().map(|s| s.join().unwrap()).sum();
        assert_eq!(missing, 0, "{missing} of 10000 pages lacked {series}");
    }
}

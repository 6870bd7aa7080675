//! A model's cumulative counters as a server reports them: KServe v2
//! statistics over gRPC or REST, or Triton's `nv_inference_*` counters on
//! a Prometheus metrics page, summed over versions and replicas. What the
//! load tester reads before and after each measurement.
//!
//! The counters are Triton's: each request's queue and compute times count
//! in full for every request of a batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rir_contract::metrics as triton;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rir_proto::inference::{ModelStatisticsRequest, ModelStatisticsResponse};
use serde::{Deserialize, Serialize};

use crate::connect::Chan;
use crate::http::{HttpClient, model_path};

/// Why a server's counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// A REST statistics answer of another shape.
    #[error("not KServe v2 statistics: {0}")]
    NotStatistics(#[source] serde_json::Error),
    /// A page that is not Prometheus text.
    #[error("not a Prometheus metrics page: {0}")]
    NotMetrics(#[source] std::io::Error),
    /// A page without the model's success counter.
    #[error("no {} counter{} on the page", triton::REQUEST_SUCCESS, match model.as_str() {
        "" => String::new(),
        m => format!(" of model {m:?}"),
    })]
    NoCounter {
        /// The model asked for (empty: any).
        model: String,
    },
    /// A `--metrics-url` that is not a page address.
    #[error("--metrics-url {0}")]
    Url(#[source] crate::ClientError),
    /// The server refused or failed the read.
    #[error("{what}: {message}")]
    Refused {
        /// What was read (`ModelStatistics`, `GET PATH`, the page).
        what: String,
        /// Why, as the server or the transport said.
        message: String,
    },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How long one read of the counters may take before the run goes on
/// without them.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A model's cumulative counters, summed over its versions and the
/// replicas (or metrics pages) read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful requests.
    pub requests: u64,
    /// Their time in the server, nanoseconds.
    pub request_ns: u64,
    /// Their time queued.
    pub queue_ns: u64,
    /// Their time preparing inputs.
    pub input_ns: u64,
    /// Their time in the engine.
    pub infer_ns: u64,
    /// Their time preparing outputs.
    pub output_ns: u64,
    /// Items (images) inferred.
    pub inferences: u64,
    /// Engine executions (batches).
    pub executions: u64,
}

impl Counters {
    /// Adds `o` (another replica's or version's).
    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.request_ns += o.request_ns;
        self.queue_ns += o.queue_ns;
        self.input_ns += o.input_ns;
        self.infer_ns += o.infer_ns;
        self.output_ns += o.output_ns;
        self.inferences += o.inferences;
        self.executions += o.executions;
    }

    /// What was counted after `earlier` (zero where a counter went back,
    /// as after a restart).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            requests: self.requests.saturating_sub(earlier.requests),
            request_ns: self.request_ns.saturating_sub(earlier.request_ns),
            queue_ns: self.queue_ns.saturating_sub(earlier.queue_ns),
            input_ns: self.input_ns.saturating_sub(earlier.input_ns),
            infer_ns: self.infer_ns.saturating_sub(earlier.infer_ns),
            output_ns: self.output_ns.saturating_sub(earlier.output_ns),
            inferences: self.inferences.saturating_sub(earlier.inferences),
            executions: self.executions.saturating_sub(earlier.executions),
        }
    }

    /// The sum of a gRPC `ModelStatistics` answer (every version listed).
    pub fn of_statistics(r: &ModelStatisticsResponse) -> Counters {
        let mut sum = Counters::default();
        for m in &r.model_stats {
            let s = m.inference_stats.unwrap_or_default();
            let d = |x: Option<rir_proto::inference::StatisticDuration>| x.unwrap_or_default();
            sum.add(&Counters {
                requests: d(s.success).count,
                request_ns: d(s.success).ns,
                queue_ns: d(s.queue).ns,
                input_ns: d(s.compute_input).ns,
                infer_ns: d(s.compute_infer).ns,
                output_ns: d(s.compute_output).ns,
                inferences: m.inference_count,
                executions: m.execution_count,
            });
        }
        sum
    }

    /// The sum of a REST `GET .../stats` answer.
    pub fn of_statistics_json(v: &serde_json::Value) -> Result<Counters, CountersError> {
        let r: StatsJson =
            serde_json::from_value(v.clone()).map_err(CountersError::NotStatistics)?;
        let mut sum = Counters::default();
        for m in r.model_stats {
            let s = m.inference_stats;
            sum.add(&Counters {
                requests: s.success.count,
                request_ns: s.success.ns,
                queue_ns: s.queue.ns,
                input_ns: s.compute_input.ns,
                infer_ns: s.compute_infer.ns,
                output_ns: s.compute_output.ns,
                inferences: m.inference_count,
                executions: m.execution_count,
            });
        }
        Ok(sum)
    }

    /// The sum of the `nv_inference_*` counters of a Prometheus text page
    /// whose `model` label is `model` (any, when empty) and `version` label
    /// is `version` (any, when empty).
    pub fn of_metrics(text: &str, model: &str, version: &str) -> Result<Counters, CountersError> {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(CountersError::NotMetrics)?;
        let mut sum = Counters::default();
        let mut seen = false;
        for s in &scrape.samples {
            let wanted = |label: &str, want: &str| {
                want.is_empty() || s.labels.get(label).is_some_and(|v| v == want)
            };
            if !(wanted("model", model) && wanted("version", version)) {
                continue;
            }
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let (field, micros) = match s.metric.as_str() {
                triton::REQUEST_SUCCESS => {
                    seen = true;
                    (&mut sum.requests, false)
                }
                triton::INFERENCE_COUNT => (&mut sum.inferences, false),
                triton::EXEC_COUNT => (&mut sum.executions, false),
                triton::REQUEST_DURATION_US => (&mut sum.request_ns, true),
                triton::QUEUE_DURATION_US => (&mut sum.queue_ns, true),
                triton::COMPUTE_INPUT_DURATION_US => (&mut sum.input_ns, true),
                triton::COMPUTE_INFER_DURATION_US => (&mut sum.infer_ns, true),
                triton::COMPUTE_OUTPUT_DURATION_US => (&mut sum.output_ns, true),
                _ => continue,
            };
            let value = value.max(0.0);
            *field += match micros {
                true => (value * 1000.0).round() as u64,
                false => value.round() as u64,
            };
        }
        match seen {
            true => Ok(sum),
            false => Err(CountersError::NoCounter {
                model: model.to_string(),
            }),
        }
    }
}

/// The REST statistics answer, as far as the breakdown reads it.
#[derive(Deserialize)]
struct StatsJson {
    model_stats: Vec<ModelJson>,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(default)]
    inference_count: u64,
    #[serde(default)]
    execution_count: u64,
    inference_stats: InferJson,
}

#[derive(Deserialize)]
struct InferJson {
    success: DurationJson,
    queue: DurationJson,
    compute_input: DurationJson,
    compute_infer: DurationJson,
    compute_output: DurationJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DurationJson {
    count: u64,
    ns: u64,
}

/// Where the server's counters are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The KServe v2 statistics extension (`ModelStatistics`, `GET .../stats`).
    Statistics,
    /// Triton's `nv_inference_*` counters on a Prometheus metrics page.
    Metrics,
}

impl Source {
    /// Its name in JSON and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Source::Statistics => "statistics",
            Source::Metrics => "metrics",
        }
    }

    /// How a report's table names it.
    pub fn label(self) -> &'static str {
        match self {
            Source::Statistics => "KServe statistics",
            Source::Metrics => "Prometheus metrics",
        }
    }
}

/// Reads one model's counters from the servers a run drives. After the
/// first failed read it says so once in the log and reads no more.
pub struct Probe {
    /// Where it reads.
    pub source: Source,
    reader: Reader,
    /// Set by the first read that failed.
    failed: AtomicBool,
}

enum Reader {
    /// `ModelStatistics` of each replica.
    Grpc {
        clients: Vec<GrpcInferenceServiceClient<Chan>>,
        model: String,
        version: String,
    },
    /// `GET PATH` of each replica.
    Rest {
        clients: Vec<HttpClient>,
        path: String,
    },
    /// Each metrics page: its client and path.
    Metrics {
        pages: Vec<(HttpClient, String)>,
        model: String,
        version: String,
    },
}

impl Probe {
    /// Reads `ModelStatistics` of `model` (every model when empty) from
    /// each replica.
    pub fn grpc(
        clients: Vec<GrpcInferenceServiceClient<Chan>>,
        model: &str,
        version: &str,
    ) -> Probe {
        Probe {
            source: Source::Statistics,
            reader: Reader::Grpc {
                clients,
                model: model.into(),
                version: version.into(),
            },
            failed: AtomicBool::new(false),
        }
    }

    /// Reads `GET /v2/models/MODEL[/versions/V]/stats` (or every model's)
    /// from each replica.
    pub fn rest(clients: Vec<HttpClient>, model: &str, version: &str) -> Probe {
        let path = match model {
            "" => "/v2/models/stats".to_string(),
            m => format!("{}/stats", model_path(m, version)),
        };
        Probe {
            source: Source::Statistics,
            reader: Reader::Rest { clients, path },
            failed: AtomicBool::new(false),
        }
    }

    /// Scrapes each of `urls` (`http://host:port[/path]`, path default
    /// `/metrics`) for the `nv_inference_*` counters of `model`.
    pub fn metrics(urls: &[String], model: &str, version: &str) -> Result<Probe, CountersError> {
        let pages = urls
            .iter()
            .map(|u| HttpClient::for_page(u, "/metrics", READ_TIMEOUT).map_err(CountersError::Url))
            .collect::<Result<_, _>>()?;
        Ok(Probe {
            source: Source::Metrics,
            reader: Reader::Metrics {
                pages,
                model: model.into(),
                version: version.into(),
            },
            failed: AtomicBool::new(false),
        })
    }

    /// The counters now, summed over every server read; none when a
    /// server does not give them (logged the first time).
    pub async fn read(&self) -> Option<Counters> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let read = tokio::time::timeout(READ_TIMEOUT, self.read_all())
            .await
            .unwrap_or(Err(CountersError::Timeout(READ_TIMEOUT)));
        match read {
            Ok(c) => Some(c),
            Err(e) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "no server statistics ({}: {e}); the reports carry no server breakdown",
                        self.source.label()
                    );
                }
                None
            }
        }
    }

    async fn read_all(&self) -> Result<Counters, CountersError> {
        let mut sum = Counters::default();
        match &self.reader {
            Reader::Grpc {
                clients,
                model,
                version,
            } => {
                for c in clients {
                    let r = c
                        .clone()
                        .model_statistics(ModelStatisticsRequest {
                            name: model.clone(),
                            version: version.clone(),
                        })
                        .await
                        .map_err(|s| CountersError::Refused {
                            what: "ModelStatistics".into(),
                            message: format!(
                                "{}: {}",
                                crate::error::code_name(s.code()),
                                s.message()
                            ),
                        })?;
                    sum.add(&Counters::of_statistics(r.get_ref()));
                }
            }
            Reader::Rest { clients, path } => {
                for c in clients {
                    let v = c.get_json(path).await.map_err(|s| CountersError::Refused {
                        what: format!("GET {path}"),
                        message: s.message().to_string(),
                    })?;
                    sum.add(&Counters::of_statistics_json(&v)?);
                }
            }
            Reader::Metrics {
                pages,
                model,
                version,
            } => {
                for (c, path) in pages {
                    let text = c.get_text(path).await.map_err(|s| CountersError::Refused {
                        what: format!("{}{path}", c.base()),
                        message: s.message().to_string(),
                    })?;
                    let counters = Counters::of_metrics(&text, model, version).map_err(|e| {
                        CountersError::Refused {
                            what: format!("{}{path}", c.base()),
                            message: e.to_string(),
                        }
                    })?;
                    sum.add(&counters);
                }
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statistics_map_field_by_field_and_add_every_version() {
        use rir_proto::inference::{
            InferStatistics, ModelStatistics, ModelStatisticsResponse, StatisticDuration,
        };
        let d = |count, ns| Some(StatisticDuration { count, ns });
        // Every field a different number, so a field read in another's
        // place shows; the failures must not count as successes.
        let version = |k: u64| ModelStatistics {
            name: "a".into(),
            version: k.to_string(),
            inference_count: 100 * k,
            execution_count: 10 * k,
            inference_stats: Some(InferStatistics {
                success: d(k, 1_000 * k),
                fail: d(7, 7_777),
                queue: d(k, 20 * k),
                compute_input: d(k, 30 * k),
                compute_infer: d(k, 40 * k),
                compute_output: d(k, 50 * k),
            }),
            ..Default::default()
        };
        let r = ModelStatisticsResponse {
            model_stats: vec![version(1), version(2)],
        };
        assert_eq!(
            Counters::of_statistics(&r),
            Counters {
                requests: 3,
                request_ns: 3_000,
                queue_ns: 60,
                input_ns: 90,
                infer_ns: 120,
                output_ns: 150,
                inferences: 300,
                executions: 30,
            }
        );
    }

    const PAGE: &str = "\
# HELP nv_inference_request_success Successful requests.
# TYPE nv_inference_request_success counter
nv_inference_request_success{model=\"a\",version=\"1\"} 10
nv_inference_request_success{model=\"a\",version=\"2\"} 30
nv_inference_request_success{model=\"b\",version=\"1\"} 7
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model=\"a\",version=\"1\"} 2000
nv_inference_request_duration_us{model=\"a\",version=\"2\"} 6000.5
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model=\"a\",version=\"2\"} 1000
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model=\"a\",version=\"2\"} 4000
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model=\"a\",version=\"2\"} 300
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model=\"a\",version=\"2\"} 500
# TYPE nv_inference_count counter
nv_inference_count{model=\"a\",version=\"2\"} 60
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model=\"a\",version=\"2\"} 20
# TYPE rir_requests_total counter
rir_requests_total{model=\"a\"} 99
";

    #[test]
    fn metrics_pages_add_the_model_s_versions_and_leave_the_rest_out() {
        let a = Counters::of_metrics(PAGE, "a", "").unwrap();
        assert_eq!(a.requests, 40);
        assert_eq!(a.request_ns, 8_000_500);
        let v2 = Counters::of_metrics(PAGE, "a", "2").unwrap();
        assert_eq!(
            v2,
            Counters {
                requests: 30,
                request_ns: 6_000_500,
                queue_ns: 1_000_000,
                input_ns: 300_000,
                infer_ns: 4_000_000,
                output_ns: 500_000,
                inferences: 60,
                executions: 20,
            }
        );
        assert_eq!(Counters::of_metrics(PAGE, "", "").unwrap().requests, 47);
        let none = Counters::of_metrics(PAGE, "c", "").unwrap_err();
        assert_eq!(
            none.to_string(),
            "no nv_inference_request_success counter of model \"c\" on the page"
        );
    }

    #[test]
    fn a_run_s_counters_are_the_differences_field_by_field() {
        let earlier = Counters {
            requests: 1,
            request_ns: 2,
            queue_ns: 3,
            input_ns: 4,
            infer_ns: 5,
            output_ns: 6,
            inferences: 7,
            executions: 8,
        };
        let now = Counters {
            requests: 11,
            request_ns: 22,
            queue_ns: 33,
            input_ns: 44,
            infer_ns: 55,
            output_ns: 66,
            inferences: 77,
            executions: 88,
        };
        let want = Counters {
            requests: 10,
            request_ns: 20,
            queue_ns: 30,
            input_ns: 40,
            infer_ns: 50,
            output_ns: 60,
            inferences: 70,
            executions: 80,
        };
        assert_eq!(now.since(&earlier), want);
        // A counter that went back (a restart) counts zero, not a wrap.
        assert_eq!(earlier.since(&now), Counters::default());
    }

    #[test]
    fn sources_are_named_as_json_csv_and_the_table_show_them() {
        assert_eq!(Source::Statistics.name(), "statistics");
        assert_eq!(Source::Metrics.name(), "metrics");
        assert_eq!(Source::Statistics.label(), "KServe statistics");
        assert_eq!(Source::Metrics.label(), "Prometheus metrics");
        let json = serde_json::to_string(&[Source::Statistics, Source::Metrics]).unwrap();
        assert_eq!(
            json, r#"["statistics","metrics"]"#,
            "the serde names are the same"
        );
    }

    #[tokio::test]
    async fn a_probe_that_cannot_read_says_so_once_and_reads_no_more() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _on = tracing::subscriber::set_default(subscriber);
        // Nothing listens on port 9 of the loopback: the read is refused.
        let dead = HttpClient::new("127.0.0.1:9", None, Duration::from_secs(1)).unwrap();
        let probe = Probe::rest(vec![dead], "m", "");
        for _ in 0..3 {
            assert_eq!(probe.read().await, None);
        }
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("no server statistics").count(), 1, "{text}");
        assert!(
            text.contains("KServe statistics: "),
            "names the source: {text}"
        );
    }

    #[test]
    fn rest_statistics_add_every_version() {
        let v = serde_json::json!({"model_stats": [
            {"name": "a", "version": "1", "inference_count": 4, "execution_count": 2,
             "inference_stats": {"success": {"count": 2, "ns": 100}, "fail": {"count": 1, "ns": 5},
               "queue": {"count": 2, "ns": 10}, "compute_input": {"count": 2, "ns": 20},
               "compute_infer": {"count": 2, "ns": 30}, "compute_output": {"count": 2, "ns": 40}}},
            {"name": "a", "version": "2", "inference_count": 1, "execution_count": 1,
             "inference_stats": {"success": {"count": 1, "ns": 50}, "fail": {"count": 0, "ns": 0},
               "queue": {"count": 1, "ns": 1}, "compute_input": {"count": 1, "ns": 2},
               "compute_infer": {"count": 1, "ns": 3}, "compute_output": {"count": 1, "ns": 4}}}
        ]});
        let c = Counters::of_statistics_json(&v).unwrap();
        assert_eq!(
            c,
            Counters {
                requests: 3,
                request_ns: 150,
                queue_ns: 11,
                input_ns: 22,
                infer_ns: 33,
                output_ns: 44,
                inferences: 5,
                executions: 3,
            }
        );
        assert!(Counters::of_statistics_json(&serde_json::json!({"x": 1})).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_probe_reads_what_a_real_server_counted() {
        use crate::connect::{ConnectOptions, connect};
        use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
        let server = rir_testserver::server::TestServer::start(None, &[]).await;
        // The measurement: 7 requests of 3 images each to gray's latest
        // version, and nothing else to it.
        let mut kserve = server.kserve().await;
        let images = vec![0.5f32; 3 * 28 * 28];
        for _ in 0..7 {
            let request = rir_testkit::requests::fp32_request("gray", 3, &images, true);
            kserve.model_infer(request).await.unwrap();
        }
        let options = ConnectOptions {
            url: server.url.clone(),
            ..Default::default()
        };
        let channel = connect(&options).await.unwrap().remove(0);
        let grpc = GrpcInferenceServiceClient::new(channel);
        let http = || HttpClient::new(&server.http_url, None, Duration::from_secs(5)).unwrap();
        let metrics = std::slice::from_ref(&server.metrics_url);
        // Each source, one replica; the same server read twice counts twice.
        let probes = [
            Probe::grpc(vec![grpc.clone()], "gray", ""),
            Probe::grpc(vec![grpc.clone(), grpc.clone()], "gray", ""),
            Probe::rest(vec![http()], "gray", ""),
            Probe::rest(vec![http(), http()], "gray", ""),
            Probe::metrics(metrics, "gray", "").unwrap(),
            Probe::metrics(&[metrics[0].clone(), metrics[0].clone()], "gray", "").unwrap(),
        ];
        for (probe, times) in probes.iter().zip([1, 2, 1, 2, 1, 2]) {
            let c = probe.read().await.expect("the server gives its counters");
            assert_eq!(
                (c.requests, c.inferences),
                (7 * times, 21 * times),
                "{:?}",
                probe.source
            );
            assert!(
                c.request_ns >= c.queue_ns + c.infer_ns && c.infer_ns > 0,
                "{c:?}"
            );
        }
        assert_eq!(probes[0].source, Source::Statistics);
        assert_eq!(probes[4].source, Source::Metrics);
        // Version 1 was never asked for: it counts nothing.
        let v1 = Probe::rest(vec![http()], "gray", "1").read().await.unwrap();
        assert_eq!(v1.requests, 0);
        // A model the server lacks: no counters, and none from then on.
        for probe in [
            Probe::grpc(vec![grpc.clone()], "nothing", ""),
            Probe::rest(vec![http()], "nothing", ""),
            Probe::metrics(metrics, "nothing", "").unwrap(),
        ] {
            assert_eq!(probe.read().await, None, "{:?}", probe.source);
            assert!(probe.failed.load(Ordering::Relaxed));
        }
        server.shutdown().await.unwrap();
    }
}

//! What the server process spends per request: its CPU time (all threads,
//! from the kernel) against the engine's own run time (from its
//! statistics), read before and after a measurement.

use std::time::Duration;

use rir_client::connect::Chan;
use rir_client::server_counters::Counters;
use rir_proto::inference::ModelStatisticsRequest;
use rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::BenchError;

/// The server's CPU over one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    /// Requests the server answered successfully in it.
    pub requests: u64,
    /// CPU time of the server process (user and system, every thread).
    pub cpu: Duration,
    /// Time its engine ran batches (each batch once, not once per request
    /// in it).
    pub engine: Duration,
}

impl Cost {
    /// Server CPU per request, µs.
    pub fn cpu_us(&self) -> f64 {
        self.per_request(self.cpu)
    }

    /// Engine run time per request, µs.
    pub fn engine_us(&self) -> f64 {
        self.per_request(self.engine)
    }

    /// CPU per request beyond the engine's run, µs: decoding, batching,
    /// hand-offs, encoding, the gRPC stack, metrics. The engine's run time
    /// counts one core per run (one intra-op thread); with more threads,
    /// their CPU beyond the wall time shows up here too.
    pub fn beyond_engine_us(&self) -> f64 {
        self.cpu_us() - self.engine_us()
    }

    fn per_request(&self, d: Duration) -> f64 {
        match self.requests {
            0 => 0.0,
            n => d.as_secs_f64() * 1e6 / n as f64,
        }
    }
}

/// One reading of the server's counters.
#[derive(Debug, Clone, Copy)]
struct Reading {
    cpu: Duration,
    engine_ns: u64,
    requests: u64,
}

/// Reads a server process's CPU time and its model's statistics.
pub(crate) struct Meter {
    pid: String,
    model: String,
    stats: GrpcInferenceServiceClient<Chan>,
    start: Option<Reading>,
}

impl Meter {
    /// A meter of process `pid` serving `model` over `chan`.
    pub(crate) fn new(pid: u32, model: &str, chan: Chan) -> Meter {
        Meter {
            pid: pid.to_string(),
            model: model.into(),
            stats: GrpcInferenceServiceClient::new(chan),
            start: None,
        }
    }

    async fn read(&mut self) -> Result<Reading, BenchError> {
        let answer = self
            .stats
            .model_statistics(ModelStatisticsRequest {
                name: self.model.clone(),
                version: String::new(),
            })
            .await
            .map_err(|s| BenchError::Server(format!("reading statistics: {}", s.message())))?
            .into_inner();
        // Each batch's engine time once: the per-request counters credit a
        // batch's run to every request in it.
        let engine_ns = answer
            .model_stats
            .iter()
            .flat_map(|m| &m.batch_stats)
            .map(|b| b.compute_infer.unwrap_or_default().ns)
            .sum();
        Ok(Reading {
            cpu: rir_process::cpu::cpu_time(&self.pid)
                .map_err(|e| BenchError::io(format!("reading the CPU time of {}", self.pid), e))?,
            engine_ns,
            requests: Counters::of_statistics(&answer).requests,
        })
    }

    /// Starts a measurement.
    pub(crate) async fn start(&mut self) -> Result<(), BenchError> {
        self.start = Some(self.read().await?);
        Ok(())
    }

    /// What the server spent since [`Meter::start`].
    pub(crate) async fn stop(&mut self) -> Result<Cost, BenchError> {
        let end = self.read().await?;
        let start = self.start.take().unwrap_or(end);
        Ok(Cost {
            requests: end.requests.saturating_sub(start.requests),
            cpu: end.cpu.saturating_sub(start.cpu),
            engine: Duration::from_nanos(end.engine_ns.saturating_sub(start.engine_ns)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_figures_divide_by_the_requests() {
        // 2,000 requests, 1.5 s of CPU, 1.1 s of engine runs: 750 µs and
        // 550 µs per request, 200 µs beyond the engine.
        let c = Cost {
            requests: 2000,
            cpu: Duration::from_millis(1500),
            engine: Duration::from_millis(1100),
        };
        assert!((c.cpu_us() - 750.0).abs() < 1e-9);
        assert!((c.engine_us() - 550.0).abs() < 1e-9);
        assert!((c.beyond_engine_us() - 200.0).abs() < 1e-9);
        assert_eq!(Cost::default().cpu_us(), 0.0);
    }
}

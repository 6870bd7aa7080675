//! The server's side of each measured latency: the model's counters read
//! before and after a measurement (`rir_client::server_counters`), their
//! difference turned into the time an average request spent queued, in
//! compute and outside the server. Dividing by the successful requests
//! gives the average request's figures, as perf_analyzer does.

use rir_client::server_counters::{Counters, Source};
use serde::{Deserialize, Serialize};

/// What the server says an average successful request of a measurement
/// did, in milliseconds, beside the latency the client measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Where the figures come from.
    pub source: Source,
    /// Successful requests the server counted over the measurement.
    pub requests: u64,
    /// Engine executions over it.
    pub executions: u64,
    /// Items per execution (the batches the server formed).
    pub avg_batch: f64,
    /// Waiting in the server's queue for a batch slot.
    pub queue_ms: f64,
    /// Turning the request into the engine's input.
    pub compute_input_ms: f64,
    /// The engine's run of the batch the request was in.
    pub compute_infer_ms: f64,
    /// Turning the engine's output into the answer.
    pub compute_output_ms: f64,
    /// From the request's arrival in the server to its answer: the queue,
    /// the compute and the server's own handling.
    pub server_ms: f64,
    /// The client's average latency less `server_ms`: the network, the
    /// protocol stacks on both sides and the client (in open loop, a send
    /// the client made late too). Negative only through the counters' and
    /// the client's windows not lining up exactly.
    pub outside_ms: f64,
}

impl Breakdown {
    /// The breakdown of `delta`, the counters over a measurement whose
    /// successful requests averaged `client_avg_ms`; none when the server
    /// counted no request.
    pub fn of(delta: &Counters, source: Source, client_avg_ms: f64) -> Option<Breakdown> {
        if delta.requests == 0 {
            return None;
        }
        let per_request = |ns: u64| ns as f64 / delta.requests as f64 / 1e6;
        let server_ms = per_request(delta.request_ns);
        Some(Breakdown {
            source,
            requests: delta.requests,
            executions: delta.executions,
            avg_batch: match delta.executions {
                0 => 0.0,
                e => delta.inferences as f64 / e as f64,
            },
            queue_ms: per_request(delta.queue_ns),
            compute_input_ms: per_request(delta.input_ns),
            compute_infer_ms: per_request(delta.infer_ns),
            compute_output_ms: per_request(delta.output_ns),
            server_ms,
            outside_ms: client_avg_ms - server_ms,
        })
    }

    /// The three compute parts together.
    pub fn compute_ms(&self) -> f64 {
        self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms
    }

    /// The client's average latency less the queue and the compute: the
    /// server's own handling and everything outside the server.
    pub fn rest_ms(&self) -> f64 {
        self.server_ms - self.queue_ms - self.compute_ms() + self.outside_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters as a server reports them, by hand.
    fn counters(requests: u64, request_us: u64, queue_us: u64, infer_us: u64) -> Counters {
        Counters {
            requests,
            request_ns: request_us * 1000,
            queue_ns: queue_us * 1000,
            infer_ns: infer_us * 1000,
            // A tenth of the engine's time on each side of it.
            input_ns: infer_us * 100,
            output_ns: infer_us * 100,
            inferences: 3 * requests,
            executions: requests,
        }
    }

    #[test]
    fn the_breakdown_is_per_request_and_the_rest_is_the_client_s() {
        let before = counters(10, 2000, 0, 0);
        let after = counters(40, 8000, 1000, 4000);
        let d = after.since(&before);
        assert_eq!(d.requests, 30);
        let b = Breakdown::of(&d, Source::Metrics, 0.5).unwrap();
        // 6000 us over 30 requests; 1000 us of queue, 4000 of engine, 400
        // each of input and output.
        assert!((b.server_ms - 6.0 / 30.0).abs() < 1e-9, "{b:?}");
        assert!((b.queue_ms - 1.0 / 30.0).abs() < 1e-9);
        assert!((b.compute_input_ms - 0.4 / 30.0).abs() < 1e-9);
        assert!((b.compute_output_ms - 0.4 / 30.0).abs() < 1e-9);
        assert!((b.compute_ms() - 4.8 / 30.0).abs() < 1e-9);
        assert!((b.avg_batch - 3.0).abs() < 1e-9);
        assert!((b.outside_ms - (0.5 - b.server_ms)).abs() < 1e-12);
        // The table's `rest`: the client's 0.5 ms less queue and compute.
        assert!((b.rest_ms() - (0.5 - 5.8 / 30.0)).abs() < 1e-12, "{b:?}");
        assert_eq!(
            Breakdown::of(&Counters::default(), Source::Metrics, 1.0),
            None
        );
        // A counter that went back (a restart) counts as nothing, not as a wrap.
        assert_eq!(before.since(&after).requests, 0);
    }
}

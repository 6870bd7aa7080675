//! The batcher with a real ONNX Runtime engine: deadlines are honoured
//! before anything runs, and batches never exceed their limit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_infer::{Engine, OrtEngine, OrtOptions};
use rir_server::batcher::{BatchConfig, Batcher, Job, JobError};
use rir_server::repository::describe;
use rir_server::stats::{Metrics, ModelStats};
use rir_spec::InputSpec;
use tokio::sync::oneshot;

fn setup(max_batch: usize, delay: Duration) -> (Batcher, Arc<ModelStats>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    common::write_model(dir.path(), "m", 1, InputSpec::new(1, 28, 28), 4);
    let path = dir.path().join("m/1/model.onnx");
    let desc = describe("m", 1, &path).unwrap();
    let engine: Box<dyn Engine> = Box::new(OrtEngine::load(&path, &OrtOptions::default()).unwrap());
    let stats = Arc::new(ModelStats::new("m", Arc::new(Metrics::new().unwrap())));
    let config = BatchConfig {
        max_batch,
        max_delay: delay,
        queue_capacity: 64,
    };
    (
        Batcher::start(&desc, vec![engine], config, stats.clone()),
        stats,
        dir,
    )
}

fn job(
    n: usize,
    deadline: Option<Instant>,
) -> (
    Job,
    oneshot::Receiver<Result<rir_server::batcher::JobOutput, JobError>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        Job {
            images: vec![0.5; n * 784],
            n,
            deadline,
            enqueued: Instant::now(),
            reply: tx,
        },
        rx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_answered_deadline_exceeded_and_not_run() {
    let (b, stats, _dir) = setup(8, Duration::ZERO);
    let (j, rx) = job(2, Some(Instant::now() - Duration::from_millis(1)));
    b.try_submit(j).unwrap();
    assert_eq!(rx.await.unwrap().unwrap_err(), JobError::DeadlineExceeded);
    let (j, rx) = job(2, Some(Instant::now() + Duration::from_secs(30)));
    b.try_submit(j).unwrap();
    let out = rx.await.unwrap().unwrap();
    assert_eq!(out.outputs[0].len(), 2 * 10);
    let s = stats.snapshot();
    assert_eq!(
        s.execution_count, 1,
        "the expired request must not have run"
    );
    assert_eq!(s.batches.keys().copied().collect::<Vec<_>>(), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_batch_up_to_the_limit_and_no_further() {
    let (b, stats, _dir) = setup(4, Duration::from_millis(50));
    let mut rxs = vec![];
    for n in [1, 2, 1, 3, 2] {
        let (j, rx) = job(n, None);
        b.try_submit(j).unwrap();
        rxs.push((n, rx));
    }
    for (n, rx) in rxs {
        let out = rx.await.unwrap().unwrap();
        assert_eq!(out.outputs[1].len(), n * 10);
        assert!(out.batch_size <= 4);
    }
    let s = stats.snapshot();
    assert!(s.batches.keys().all(|&k| k <= 4), "{:?}", s.batches);
    assert!(
        s.execution_count < 5,
        "nothing was batched: {:?}",
        s.batches
    );
}

//! The batcher with a real ONNX Runtime engine: deadlines are honoured
//! before anything runs, and batches never exceed their limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_arch::InputSpec;
use rir_infer::{Engine, OrtEngine, OrtOptions};
use rir_server::batcher::{BatchConfig, Batcher, INLINE_MAX_RUN, Job, JobError};
use rir_server::scan::describe;
use rir_server::stats::{Metrics, ModelStats};
use rir_testserver::models::write_model;
use tokio::sync::oneshot;

/// Held by each test for its whole run. The inline path is one turn per
/// process and bounded by how long the last run took, so a test that
/// expects a run on its own thread must not share the process, or the two
/// cores, with another test's runs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn setup(max_batch: usize, delay: Duration) -> (Batcher, Arc<ModelStats>, tempfile::TempDir) {
    setup_with(max_batch, delay, |e| e)
}

/// [`setup`] with the engine wrapped by `wrap` (fault injection).
fn setup_with(
    max_batch: usize,
    delay: Duration,
    wrap: impl FnOnce(Box<dyn Engine>) -> Box<dyn Engine>,
) -> (Batcher, Arc<ModelStats>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "m", 1, InputSpec::new(1, 28, 28), 4);
    let path = dir.path().join("m/1/model.onnx");
    let desc = describe("m", 1, &path).unwrap();
    let engine: Box<dyn Engine> = Box::new(OrtEngine::load(&path, &OrtOptions::default()).unwrap());
    let stats = Arc::new(ModelStats::new("m", 1, Arc::new(Metrics::new().unwrap())));
    let config = BatchConfig {
        buckets: rir_infer::Buckets::every(max_batch),
        max_delay: delay,
        queue_capacity: 64,
        inline: false,
    };
    (
        Batcher::start(&desc, vec![wrap(engine)], config, stats.clone()),
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
            trace: None,
        },
        rx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_answered_deadline_exceeded_and_not_run() {
    let _one = ONE_AT_A_TIME.lock().await;
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
    let _one = ONE_AT_A_TIME.lock().await;
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

/// One engine call: its batch size and the thread it ran on.
#[derive(Debug, Clone)]
struct Call {
    batch: usize,
    thread: String,
}

/// A real engine that records every call it gets, asks for fixed batch
/// sizes (as ONNX Runtime on CUDA does) or not, and takes at least
/// `min_run` per call.
struct Recording {
    inner: Box<dyn Engine>,
    calls: Arc<std::sync::Mutex<Vec<Call>>>,
    fixed: bool,
    min_run: Duration,
}

impl Engine for Recording {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn fixed_batch_sizes(&self) -> bool {
        self.fixed
    }

    fn run(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<Vec<rir_infer::Output>, rir_infer::InferError> {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        self.calls.lock().unwrap().push(Call {
            batch: shape[0],
            thread,
        });
        std::thread::sleep(self.min_run);
        self.inner.run(input, shape)
    }
}

/// How [`recorded`] sets its batcher up.
struct Setup {
    fixed: bool,
    buckets: rir_infer::Buckets,
    max_delay: Duration,
    inline: bool,
    min_run: Duration,
}

impl Default for Setup {
    /// Requests sent together within 100 ms batch; never inline.
    fn default() -> Self {
        Setup {
            fixed: false,
            buckets: rir_infer::Buckets::powers_of_two(8),
            max_delay: Duration::from_millis(100),
            inline: false,
            min_run: Duration::ZERO,
        }
    }
}

/// A batcher over a micro model (engine thread "m-0") whose one engine
/// records its calls.
struct Recorded {
    batcher: Batcher,
    calls: Arc<std::sync::Mutex<Vec<Call>>>,
    stats: Arc<ModelStats>,
    metrics: Arc<Metrics>,
    desc: rir_server::scan::ModelDescriptor,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Recorded {
    fn batches(&self) -> Vec<usize> {
        self.calls.lock().unwrap().iter().map(|c| c.batch).collect()
    }

    fn threads(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.thread.clone())
            .collect()
    }
}

fn recorded(setup: Setup) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "m", 1, InputSpec::new(1, 28, 28), 4);
    let path = dir.path().join("m/1/model.onnx");
    let desc = describe("m", 1, &path).unwrap();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let engine: Box<dyn Engine> = Box::new(Recording {
        inner: Box::new(OrtEngine::load(&path, &OrtOptions::default()).unwrap()),
        calls: calls.clone(),
        fixed: setup.fixed,
        min_run: setup.min_run,
    });
    let metrics = Arc::new(Metrics::new().unwrap());
    let stats = Arc::new(ModelStats::new("m", 1, metrics.clone()));
    let config = BatchConfig {
        buckets: setup.buckets,
        max_delay: setup.max_delay,
        queue_capacity: 64,
        inline: setup.inline,
    };
    Recorded {
        batcher: Batcher::start(&desc, vec![engine], config, stats.clone()),
        calls,
        stats,
        metrics,
        desc,
        path,
        _dir: dir,
    }
}

/// `n` images of seeded noise.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = seed;
    (0..n * 784)
        .map(|_| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_padded_to_buckets_and_padding_never_reaches_a_response() {
    let _one = ONE_AT_A_TIME.lock().await;
    let buckets = rir_infer::Buckets::new(vec![1, 4], 8).unwrap();
    let r = recorded(Setup {
        fixed: true,
        buckets: buckets.clone(),
        ..Setup::default()
    });
    let (batcher, stats, desc, path) = (&r.batcher, &r.stats, &r.desc, &r.path);
    // The reference: the same images, each request run alone at its own
    // (unpadded) size, in a separate session.
    let mut reference = OrtEngine::load(path, &OrtOptions::default()).unwrap();
    let mut requests = vec![];
    // 3 + 2 = 5 images arrive within the delay: one batch of 5 padded to 8;
    // then 2 alone: padded to 4; then 1: bucket 1, no padding.
    for group in [vec![3, 2], vec![2], vec![1]] {
        let mut rxs = vec![];
        for n in group {
            let images = noise(n, requests.len() as u64 + n as u64);
            let (tx, rx) = oneshot::channel();
            batcher
                .try_submit(Job {
                    images: images.clone(),
                    n,
                    deadline: None,
                    enqueued: Instant::now(),
                    reply: tx,
                    trace: None,
                })
                .unwrap();
            rxs.push((n, images, rx));
        }
        for r in rxs {
            let (n, images, rx) = r;
            requests.push((n, images, rx.await.unwrap().unwrap()));
        }
    }
    let seen = r.batches();
    assert!(
        seen.iter().all(|n| buckets.sizes().contains(n)),
        "the engine ran at a size that is not a bucket: {seen:?}"
    );
    assert_eq!(seen, vec![8, 4, 1], "batches of 5, 2 and 1 images");
    for (n, images, out) in &requests {
        let want = reference.run(images, &[*n, 1, 28, 28]).unwrap();
        for (k, name) in desc.outputs.iter().enumerate() {
            let want = &rir_infer::engine::output(&want, name).unwrap().data;
            assert_eq!(
                out.outputs[k].len(),
                want.len(),
                "padded rows in output {name}"
            );
            let diff = rir_infer::engine::max_abs_diff(&out.outputs[k], want);
            assert!(
                diff <= 1e-5,
                "output {name} differs from the unpadded run by {diff}"
            );
        }
    }
    let s = stats.snapshot();
    assert_eq!(s.padded_count, 3 + 2, "8 - 5 and 4 - 2 zero images");
    assert_eq!(
        s.batches.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 5],
        "batch statistics count real images, not padding"
    );
}

#[test]
fn device_auto_falls_back_to_the_cpu_and_cuda_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "m", 1, InputSpec::new(1, 28, 28), 4);
    let path = dir.path().join("m/1/model.onnx");
    let with = |device| OrtOptions {
        device,
        ..OrtOptions::default()
    };
    let auto = OrtEngine::load(&path, &with(rir_infer::Device::Auto)).unwrap();
    let cuda = OrtEngine::load(&path, &with(rir_infer::Device::Cuda));
    if auto.on_cuda() {
        // A machine with a GPU and the CUDA provider: both take it.
        assert_eq!(auto.name(), "onnxruntime-cuda");
        assert!(cuda.unwrap().on_cuda());
        return;
    }
    assert_eq!(auto.name(), "onnxruntime-cpu");
    let err = cuda
        .err()
        .expect("--device cuda must fail without CUDA")
        .to_string();
    assert!(
        err.contains("cuda") && err.contains("unavailable"),
        "the error must say CUDA is unavailable and why: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_without_fixed_sizes_runs_batches_unpadded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let r = recorded(Setup::default());
    let mut rxs = vec![];
    for n in [3, 2] {
        let (j, rx) = job(n, None);
        r.batcher.try_submit(j).unwrap();
        rxs.push(rx);
    }
    for rx in rxs {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(r.batches(), vec![5], "one batch of 5, not padded to 8");
    assert_eq!(r.stats.snapshot().padded_count, 0);
}

/// Fails every batch that holds the value [`POISON`], with its own message;
/// runs the others on the real engine.
struct Faulty(Box<dyn Engine>);

const POISON: f32 = 7.0;

impl Engine for Faulty {
    fn name(&self) -> String {
        "faulty".into()
    }

    fn run(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<Vec<rir_infer::Output>, rir_infer::InferError> {
        if input.contains(&POISON) {
            return Err(rir_infer::InferError::Run {
                engine: "faulty",
                detail: "injected fault: CUDA out of memory".into(),
            });
        }
        self.0.run(input, shape)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_error_fails_only_its_batch_with_the_engines_message() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A queue delay of 200 ms makes two requests sent together one batch.
    let (b, _stats, _dir) = setup_with(8, Duration::from_millis(200), |e| Box::new(Faulty(e)));
    let (a, ra) = job(1, None);
    b.try_submit(a).unwrap();
    assert!(ra.await.unwrap().is_ok(), "a batch before the fault");

    let (mut poisoned, rp) = job(1, None);
    poisoned.images[100] = POISON;
    let (beside, rb) = job(2, None);
    b.try_submit(poisoned).unwrap();
    b.try_submit(beside).unwrap();
    for (what, rx) in [
        ("the poisoned request", rp),
        ("the one batched with it", rb),
    ] {
        match rx.await.unwrap() {
            Err(JobError::Engine(m)) => {
                assert!(
                    m.contains("injected fault: CUDA out of memory"),
                    "{what}: {m}"
                )
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The engine and its worker go on: the next batch runs.
    let (c, rc) = job(3, None);
    b.try_submit(c).unwrap();
    let out = rc.await.unwrap().unwrap();
    assert_eq!(out.batch_size, 3, "it ran alone");
}

/// Submits `images` (`n` of them) through `submit` and waits for the answer.
async fn answer(b: &Batcher, images: Vec<f32>, n: usize) -> rir_server::batcher::JobOutput {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        images,
        n,
        deadline: None,
        enqueued: Instant::now(),
        reply: tx,
        trace: None,
    };
    b.submit(job).unwrap();
    rx.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_model_runs_a_request_on_the_calling_thread_with_the_same_outputs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t = recorded(Setup {
        max_delay: Duration::ZERO,
        inline: true,
        ..Setup::default()
    });
    let here = std::thread::current().name().unwrap().to_string();
    let mut reference = OrtEngine::load(&t.path, &OrtOptions::default()).unwrap();
    // The first request has no run time to go by: an engine thread runs it.
    // The rest find the queue empty and the engine idle, and run here when
    // the run before took less than INLINE_MAX_RUN (the engine reports
    // each run's time; a busy machine can stretch one past the bound, and
    // then the next goes to the engine thread, as it should).
    let mut want_threads = vec!["m-0".to_string()];
    let mut previous: Option<Duration> = None;
    for (i, n) in [1, 1, 3, 2, 1].into_iter().enumerate() {
        let images = noise(n, i as u64 + 1);
        let want = reference.run(&images, &[n, 1, 28, 28]).unwrap();
        // Time for the engine thread to let go of its instance after replying.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = answer(&t.batcher, images, n).await;
        if let Some(p) = previous {
            want_threads.push(match p < INLINE_MAX_RUN {
                true => here.clone(),
                false => "m-0".to_string(),
            });
        }
        previous = Some(out.compute);
        assert_eq!(out.batch_size, n);
        let want = &want.iter().find(|o| o.name == "logits").unwrap().data;
        assert_eq!(out.outputs[0].len(), want.len());
        for (a, b) in out.outputs[0].iter().zip(want) {
            assert!((a - b).abs() <= 1e-5, "request {i}: {a} vs {b}");
        }
    }
    assert_eq!(t.threads(), want_threads);
    let inline = want_threads.iter().filter(|n| **n == here).count();
    assert!(
        inline >= 1,
        "no run was under {INLINE_MAX_RUN:?}: {want_threads:?}"
    );
    let counted = t.metrics.inline_executions.with_label_values(&["m"]).get();
    assert_eq!(counted, inline as u64);
    assert!(t.metrics.render().contains(&format!(
        "rir_inline_executions_total{{model=\"m\"}} {inline}"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_engine_thread_with_a_queue_delay_switched_off_or_for_a_slow_model() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (what, delay, inline, min_run) in [
        (
            "a queue delay",
            Duration::from_millis(5),
            true,
            Duration::ZERO,
        ),
        ("--run-inline false", Duration::ZERO, false, Duration::ZERO),
        (
            "runs over 1 ms",
            Duration::ZERO,
            true,
            Duration::from_millis(2),
        ),
    ] {
        let t = recorded(Setup {
            max_delay: delay,
            inline,
            min_run,
            ..Setup::default()
        });
        for i in 0..4 {
            answer(&t.batcher, noise(1, i), 1).await;
        }
        let threads = t.threads();
        assert!(threads.iter().all(|n| n == "m-0"), "{what}: {threads:?}");
        let inline = t.metrics.inline_executions.with_label_values(&["m"]).get();
        assert_eq!(inline, 0, "{what}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_runtime_with_one_thread_never_runs_inference_on_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Blocking the only thread would stop every other connection.
    let t = recorded(Setup {
        max_delay: Duration::ZERO,
        inline: true,
        ..Setup::default()
    });
    for i in 0..4 {
        answer(&t.batcher, noise(1, i), 1).await;
    }
    let threads = t.threads();
    assert!(threads.iter().all(|n| n == "m-0"), "{threads:?}");
}

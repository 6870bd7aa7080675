//! Dynamic batching, one batcher per model.
//!
//! Requests enter a bounded queue (full: the caller answers
//! RESOURCE_EXHAUSTED). Each engine instance runs on its own OS thread, so
//! inference never blocks the async runtime, and no engine is ever shared:
//! ONNX Runtime's `run` takes `&mut self`. A free instance takes the queue
//! (one at a time), waits for a request, takes what is queued behind it up
//! to the maximum batch size, waiting at most the maximum queue delay for
//! more (default 0: batch only what is already there), lets the queue go,
//! answers requests whose deadline has passed without running them, and
//! runs the rest. Taking work straight from the queue, with no scheduler
//! task between, saves a cross-thread hand-off on every request.
//!
//! An engine that wants fixed batch sizes ([`Engine::fixed_batch_sizes`]:
//! ONNX Runtime on CUDA, one engine per bucket) only ever sees the sizes in
//! [`BatchConfig::buckets`]: a batch of 5 with buckets 1, 2, 4, 8, ... runs
//! as 8, the three extra rows zeros, and their outputs are dropped. A new
//! batch size costs ONNX Runtime's CUDA provider hundreds of milliseconds,
//! so a fixed set that is warmed before the server reports ready keeps it
//! off the request path. Other engines (ONNX Runtime on the CPU) run each
//! batch at its own size: there, padding would only add work.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rir_infer::{Buckets, Engine};
use tokio::sync::{mpsc, oneshot};

use crate::repository::ModelDescriptor;
use crate::stats::ModelStats;

/// How a model's requests are batched.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The batch sizes the engine runs at; a batch is padded up to the
    /// smallest that holds it. The largest is the most images in one
    /// engine call (and in one request).
    pub buckets: Buckets,
    /// How long the first request of a batch may wait for company.
    pub max_delay: Duration,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
}

impl BatchConfig {
    /// Most images in one engine call: the largest bucket.
    pub fn max_batch(&self) -> usize {
        self.buckets.max()
    }
}

/// One request: `n` images, already NCHW float32.
pub struct Job {
    /// `n * C * H * W` floats.
    pub images: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// When it entered the queue.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<JobOutput, JobError>>,
}

/// A request's share of a batch's outputs.
#[derive(Debug)]
pub struct JobOutput {
    /// One `n * k` block per model output, in graph order.
    pub outputs: Vec<Vec<f32>>,
    /// Time spent queued.
    pub queue: Duration,
    /// Time the engine took for the whole batch.
    pub compute: Duration,
    /// Images in the batch this request rode in.
    pub batch_size: usize,
}

/// Why a queued request was not answered with outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Its deadline passed while it was queued; it was not run.
    DeadlineExceeded,
    /// The engine failed on the batch.
    Engine(String),
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    QueueFull,
    /// The batcher has stopped.
    Closed,
}

/// The handle requests are submitted through.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    /// Limits of this batcher.
    pub config: BatchConfig,
}

struct Batch {
    jobs: Vec<Job>,
    images: usize,
}

/// The queue and the request that did not fit the last batch; the engine
/// thread holding the lock is the one forming the next batch.
struct Queue {
    rx: mpsc::Receiver<Job>,
    carry: Option<Job>,
}

impl Batcher {
    /// Starts one engine thread per engine; they take batches straight from
    /// the queue in turn.
    pub fn start(
        desc: &ModelDescriptor,
        engines: Vec<Box<dyn Engine>>,
        config: BatchConfig,
        stats: Arc<ModelStats>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let queue = Arc::new(Mutex::new(Queue { rx, carry: None }));
        let runtime = tokio::runtime::Handle::current();
        for (id, engine) in engines.into_iter().enumerate() {
            let (queue, desc, stats, runtime, config) = (
                queue.clone(),
                desc.clone(),
                stats.clone(),
                runtime.clone(),
                config.clone(),
            );
            std::thread::Builder::new()
                .name(format!("{}-{id}", desc.name))
                .spawn(move || worker(engine, &queue, &config, &runtime, &desc, &stats))
                .expect("spawning an inference thread");
        }
        Batcher { tx, config }
    }

    /// Queues a job without waiting for room.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })
    }

    /// Requests waiting in the queue now.
    pub fn pending(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Waits for the next request and takes what is queued behind it, up to the
/// maximum batch, waiting at most the maximum delay for more. `None` when
/// the queue is closed and empty.
fn next_batch(
    q: &mut Queue,
    config: &BatchConfig,
    runtime: &tokio::runtime::Handle,
) -> Option<Batch> {
    let first = match q.carry.take() {
        Some(j) => j,
        None => q.rx.blocking_recv()?,
    };
    let mut batch = Batch {
        images: first.n,
        jobs: vec![first],
    };
    let close_at = Instant::now() + config.max_delay;
    loop {
        while batch.images < config.max_batch() {
            match q.rx.try_recv() {
                Ok(j) if batch.images + j.n <= config.max_batch() => {
                    batch.images += j.n;
                    batch.jobs.push(j);
                }
                Ok(j) => {
                    q.carry = Some(j);
                    break;
                }
                Err(_) => break,
            }
        }
        if q.carry.is_some() || batch.images >= config.max_batch() || Instant::now() >= close_at {
            return Some(batch);
        }
        // The timer must be created inside the runtime's context.
        let next =
            runtime.block_on(async { tokio::time::timeout_at(close_at.into(), q.rx.recv()).await });
        match next {
            Ok(Some(j)) if batch.images + j.n <= config.max_batch() => {
                batch.images += j.n;
                batch.jobs.push(j);
            }
            Ok(Some(j)) => {
                q.carry = Some(j);
                return Some(batch);
            }
            _ => return Some(batch),
        }
    }
}

fn worker(
    mut engine: Box<dyn Engine>,
    queue: &Mutex<Queue>,
    config: &BatchConfig,
    runtime: &tokio::runtime::Handle,
    desc: &ModelDescriptor,
    stats: &ModelStats,
) {
    let [c, h, w] = desc.chw;
    let per = c * h * w;
    let mut input = Vec::new();
    let pad = engine.fixed_batch_sizes();
    loop {
        let batch = {
            let mut q = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match next_batch(&mut q, config, runtime) {
                Some(b) => b,
                None => return,
            }
        };
        // Requests whose deadline passed in the queue are answered, not run.
        let now = Instant::now();
        let (expired, live): (Vec<Job>, Vec<Job>) = batch
            .jobs
            .into_iter()
            .partition(|j| j.deadline.is_some_and(|d| d <= now));
        for j in expired {
            stats.record_expired(now - j.enqueued);
            let _ = j.reply.send(Err(JobError::DeadlineExceeded));
        }
        let batch = Batch {
            images: live.iter().map(|j| j.n).sum(),
            jobs: live,
        };
        if !batch.jobs.is_empty() {
            let started = Instant::now();
            // A batch never exceeds max_batch(), the largest bucket.
            let rows = match pad {
                true => config.buckets.fit(batch.images).unwrap_or(batch.images),
                false => batch.images,
            };
            input.clear();
            input.reserve(rows * per);
            for j in &batch.jobs {
                input.extend_from_slice(&j.images);
            }
            input.resize(rows * per, 0.0);
            let result = engine.run(&input, &[rows, c, h, w]);
            let compute = started.elapsed();
            match result {
                Ok(outs) => {
                    stats.record_execution(batch.images, rows - batch.images, compute);
                    let by_name: Vec<Option<&rir_infer::Output>> = desc
                        .outputs
                        .iter()
                        .map(|n| outs.iter().find(|o| &o.name == n))
                        .collect();
                    let mut row = 0;
                    for j in batch.jobs {
                        let mut outputs = vec![];
                        for (k, o) in by_name.iter().enumerate() {
                            let width = desc.output_widths[k];
                            outputs.push(o.map_or_else(Vec::new, |o| {
                                o.data[row * width..(row + j.n) * width].to_vec()
                            }));
                        }
                        row += j.n;
                        let _ = j.reply.send(Ok(JobOutput {
                            outputs,
                            queue: started.saturating_duration_since(j.enqueued),
                            compute,
                            batch_size: batch.images,
                        }));
                    }
                }
                Err(e) => {
                    tracing::error!(model = %desc.name, "inference failed: {e}");
                    for j in batch.jobs {
                        let _ = j.reply.send(Err(JobError::Engine(e.to_string())));
                    }
                }
            }
        }
    }
}

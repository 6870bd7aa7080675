//! Dynamic batching, one batcher per model.
//!
//! Requests enter a bounded queue (full: the caller answers
//! RESOURCE_EXHAUSTED). A scheduler task owns the queue: whenever an engine
//! instance is free it takes what is queued, up to the maximum batch size,
//! waiting at most the maximum queue delay for more (default 0: batch only
//! what is already there), drops requests whose deadline has passed, and
//! hands the batch to that instance. Each instance is an engine on its own
//! OS thread, so inference never blocks the async runtime, and no engine is
//! ever shared: ONNX Runtime's `run` takes `&mut self`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_infer::Engine;
use tokio::sync::{mpsc, oneshot};

use crate::repository::ModelDescriptor;
use crate::stats::ModelStats;

/// How a model's requests are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most images in one engine call.
    pub max_batch: usize,
    /// How long the first request of a batch may wait for company.
    pub max_delay: Duration,
    /// Requests that may wait in the queue before new ones are refused.
    pub queue_capacity: usize,
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

impl Batcher {
    /// Starts the scheduler task and one worker thread per engine.
    pub fn start(
        desc: &ModelDescriptor,
        engines: Vec<Box<dyn Engine>>,
        config: BatchConfig,
        stats: Arc<ModelStats>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (free_tx, free_rx) = mpsc::unbounded_channel::<usize>();
        let mut workers = vec![];
        for (id, engine) in engines.into_iter().enumerate() {
            let (wtx, wrx) = std::sync::mpsc::channel::<Batch>();
            let free = free_tx.clone();
            let desc = desc.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("{}-{id}", desc.name))
                .spawn(move || worker(id, engine, wrx, free, desc, stats))
                .expect("spawning an inference thread");
            workers.push(wtx);
            let _ = free_tx.send(id);
        }
        tokio::spawn(schedule(rx, free_rx, workers, config, stats));
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

async fn schedule(
    mut rx: mpsc::Receiver<Job>,
    mut free: mpsc::UnboundedReceiver<usize>,
    workers: Vec<std::sync::mpsc::Sender<Batch>>,
    config: BatchConfig,
    stats: Arc<ModelStats>,
) {
    let mut carry: Option<Job> = None;
    loop {
        let Some(worker) = free.recv().await else {
            return;
        };
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut batch = Batch {
            images: first.n,
            jobs: vec![first],
        };
        let close_at = Instant::now() + config.max_delay;
        loop {
            while batch.images < config.max_batch {
                match rx.try_recv() {
                    Ok(j) if batch.images + j.n <= config.max_batch => {
                        batch.images += j.n;
                        batch.jobs.push(j);
                    }
                    Ok(j) => {
                        carry = Some(j);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if carry.is_some() || batch.images >= config.max_batch || Instant::now() >= close_at {
                break;
            }
            match tokio::time::timeout_at(close_at.into(), rx.recv()).await {
                Ok(Some(j)) if batch.images + j.n <= config.max_batch => {
                    batch.images += j.n;
                    batch.jobs.push(j);
                }
                Ok(Some(j)) => {
                    carry = Some(j);
                    break;
                }
                _ => break,
            }
        }
        let now = Instant::now();
        let (expired, live): (Vec<Job>, Vec<Job>) = batch
            .jobs
            .into_iter()
            .partition(|j| j.deadline.is_some_and(|d| d <= now));
        for j in expired {
            stats.record_expired(now - j.enqueued);
            let _ = j.reply.send(Err(JobError::DeadlineExceeded));
        }
        if live.is_empty() {
            // Nothing to run: the instance is still free.
            let _ = workers[worker].send(Batch {
                jobs: vec![],
                images: 0,
            });
            continue;
        }
        let images = live.iter().map(|j| j.n).sum();
        if workers[worker].send(Batch { jobs: live, images }).is_err() {
            return;
        }
    }
}

fn worker(
    id: usize,
    mut engine: Box<dyn Engine>,
    rx: std::sync::mpsc::Receiver<Batch>,
    free: mpsc::UnboundedSender<usize>,
    desc: ModelDescriptor,
    stats: Arc<ModelStats>,
) {
    let [c, h, w] = desc.chw;
    let per = c * h * w;
    let mut input = Vec::new();
    for batch in rx {
        if !batch.jobs.is_empty() {
            let started = Instant::now();
            input.clear();
            input.reserve(batch.images * per);
            for j in &batch.jobs {
                input.extend_from_slice(&j.images);
            }
            let result = engine.run(&input, &[batch.images, c, h, w]);
            let compute = started.elapsed();
            match result {
                Ok(outs) => {
                    stats.record_execution(batch.images, compute);
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
        if free.send(id).is_err() {
            return;
        }
    }
}

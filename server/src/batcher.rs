//! Dynamic batching, one batcher per model.
//!
//! Requests enter a bounded queue (full: the caller answers
//! RESOURCE_EXHAUSTED). Each engine instance has its own OS thread, so
//! batches never block the async runtime, and each sits behind a lock, so
//! no two runs share one: ONNX Runtime's `run` takes `&mut self` (the one
//! exception to the first rule, a lone request run inline, is below). A
//! free instance takes the queue
//! (one at a time), waits for a request, takes what is queued behind it up
//! to the maximum batch size, waiting at most the maximum queue delay for
//! more (default 0: batch only what is already there), lets the queue go,
//! answers requests whose deadline has passed without running them, and
//! runs the rest. Taking work straight from the queue, with no scheduler
//! task between, saves a cross-thread hand-off on every request.
//!
//! An engine that wants fixed batch sizes ([`Engine::fixed_batch_sizes`]:
//! ONNX Runtime on CUDA or with bound buffers, one engine per bucket) only
//! ever sees the sizes in [`BatchConfig::buckets`]: a batch of 5 with
//! buckets 1, 2, 4, 8, ... runs as 8, the three extra rows zeros, and their
//! outputs are dropped. A new batch size costs ONNX Runtime's CUDA provider
//! hundreds of milliseconds, so a fixed set that is warmed before the
//! server reports ready keeps it off the request path. Other engines (ONNX Runtime on the CPU) run each
//! batch at its own size: there, padding would only add work.
//!
//! A request that finds nothing queued and an engine instance idle runs on
//! the thread that decoded it ([`Batcher::submit`], when
//! [`BatchConfig::inline`] is on): handing it to an engine thread and the
//! answer back wakes two sleeping threads, about 80 µs on a 2-core virtual
//! machine, which is most of what the server adds at concurrency 1. That
//! blocks an async worker thread for one run, so it is bounded: only with
//! no queue delay (a delay asks requests to wait for company), only while
//! the model's last run took under [`INLINE_MAX_RUN`], only on a runtime
//! with another worker to keep serving, and one such run at a time in the
//! process. Under load the queue is rarely empty and the engine threads
//! batch as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rir_infer::{Buckets, Engine};
use tokio::sync::{mpsc, oneshot};

use crate::scan::ModelDescriptor;
use crate::stats::ModelStats;
use crate::trace::{self, BatchLink};
use opentelemetry::KeyValue;

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
    /// Let a request that finds the queue empty and an engine idle run on
    /// the calling thread (see the module's documentation).
    pub inline: bool,
}

/// Runs longer than this never go inline: an async worker thread blocked
/// for longer would hold up the other connections it serves more than the
/// hand-off it saves (tens of microseconds) is worth.
pub const INLINE_MAX_RUN: Duration = Duration::from_millis(1);

/// Set while some request runs inline: at most one async worker thread in
/// the process is blocked by inference at a time.
static INLINE_BUSY: AtomicBool = AtomicBool::new(false);

/// The process's one inline run, held while it lasts; let go on drop, so
/// a run that unwinds does not keep every later one off the inline path.
struct InlineTurn;

impl InlineTurn {
    fn take() -> Option<InlineTurn> {
        INLINE_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(InlineTurn)
    }
}

impl Drop for InlineTurn {
    fn drop(&mut self) {
        INLINE_BUSY.store(false, Ordering::Release);
    }
}

impl BatchConfig {
    /// Most images in one engine call: the largest bucket.
    pub(crate) fn max_batch(&self) -> usize {
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
    /// The request's span, when it is traced: the batch's span links to it.
    pub trace: Option<Box<BatchLink>>,
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
    /// When the engine run began (its queue wait ended).
    pub ran_at: Instant,
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
    pub(crate) config: BatchConfig,
    /// The engine instances; instance `i` is run by engine thread `i`, or
    /// by a caller running inline while that thread waits for work.
    instances: Arc<[Mutex<Instance>]>,
    shared: Arc<Shared>,
    /// What of the inline bounds is fixed at start: switched on, no queue
    /// delay, and a runtime with more than one worker thread.
    may_inline: bool,
}

/// An engine with the buffer its batches are assembled in.
struct Instance {
    /// Its place among the model's instances, for the metrics.
    id: usize,
    engine: Box<dyn Engine>,
    input: Vec<f32>,
}

/// What every thread running this model's batches needs to read or record.
struct Shared {
    desc: ModelDescriptor,
    stats: Arc<ModelStats>,
    /// The last run's duration, nanoseconds (0: none yet, so the first
    /// request goes to an engine thread and measures it): the inline bound.
    last_run_ns: AtomicU64,
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
        let instances: Arc<[Mutex<Instance>]> = engines
            .into_iter()
            .enumerate()
            .map(|(id, engine)| {
                Mutex::new(Instance {
                    id,
                    engine,
                    input: Vec::new(),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            desc: desc.clone(),
            stats,
            last_run_ns: AtomicU64::new(0),
        });
        for id in 0..instances.len() {
            let (queue, instances, shared, runtime, config) = (
                queue.clone(),
                instances.clone(),
                shared.clone(),
                runtime.clone(),
                config.clone(),
            );
            std::thread::Builder::new()
                .name(format!("{}-{id}", desc.name))
                .spawn(move || worker(&instances[id], &queue, &config, &runtime, &shared))
                .expect("spawning an inference thread");
        }
        let may_inline =
            config.inline && config.max_delay.is_zero() && runtime.metrics().num_workers() >= 2;
        Batcher {
            tx,
            config,
            instances,
            shared,
            may_inline,
        }
    }

    /// Runs `job` on this thread if it may go inline (see the module's
    /// documentation), or else queues it without waiting for room. Either
    /// way the answer comes on the job's `reply`.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        match self.try_inline(job) {
            Ok(()) => Ok(()),
            Err(job) => self.try_submit(job),
        }
    }

    /// Runs `job` here, now, if nothing is queued, an instance is idle and
    /// the bounds allow; gives it back otherwise.
    fn try_inline(&self, job: Job) -> Result<(), Job> {
        let allowed = self.may_inline
            && self.pending() == 0
            && (1..INLINE_MAX_RUN.as_nanos() as u64)
                .contains(&self.shared.last_run_ns.load(Ordering::Relaxed));
        let Some(_busy) = allowed.then(InlineTurn::take).flatten() else {
            return Err(job);
        };
        let Some(mut instance) = self.instances.iter().find_map(|i| i.try_lock().ok()) else {
            return Err(job);
        };
        let batch = Batch {
            images: job.n,
            jobs: vec![job],
        };
        execute(&mut instance, batch, &self.config, &self.shared, true);
        Ok(())
    }

    /// Queues a job for the engine threads without waiting for room.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })
    }

    /// Requests waiting in the queue now.
    pub(crate) fn pending(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The engine instances this model runs on.
    pub(crate) fn instances(&self) -> usize {
        self.instances.len()
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

/// Engine thread `instance`: forms batches from the queue and runs them.
fn worker(
    instance: &Mutex<Instance>,
    queue: &Mutex<Queue>,
    config: &BatchConfig,
    runtime: &tokio::runtime::Handle,
    shared: &Shared,
) {
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            match next_batch(&mut q, config, runtime) {
                Some(b) => b,
                None => return,
            }
        };
        let mut instance = instance.lock().unwrap_or_else(PoisonError::into_inner);
        execute(&mut instance, batch, config, shared, false);
    }
}

/// Answers a batch: requests whose deadline passed in the queue are
/// answered, not run; the rest run as one engine call, padded up to a
/// bucket where the engine wants fixed sizes, and each gets its rows;
/// `inline` when on the requesting thread.
fn execute(
    instance: &mut Instance,
    batch: Batch,
    config: &BatchConfig,
    shared: &Shared,
    inline: bool,
) {
    let (desc, stats) = (&shared.desc, &shared.stats);
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
        return;
    }
    let images: usize = live.iter().map(|j| j.n).sum();
    let [c, h, w] = desc.chw;
    let per = c * h * w;
    let started = Instant::now();
    // A batch never exceeds max_batch(), the largest bucket.
    let rows = match instance.engine.fixed_batch_sizes() {
        true => config.buckets.fit(images).unwrap_or(images),
        false => images,
    };
    let Instance { id, engine, input } = instance;
    input.clear();
    input.reserve(rows * per);
    for j in &live {
        input.extend_from_slice(&j.images);
    }
    input.resize(rows * per, 0.0);
    let result = engine.run(input, &[rows, c, h, w]);
    let compute = started.elapsed();
    shared
        .last_run_ns
        .store(compute.as_nanos() as u64, Ordering::Relaxed);
    let links = live.iter().filter_map(|j| j.trace.as_deref());
    trace::record_batch(links, started, started + compute, || {
        vec![
            KeyValue::new("rir.model", desc.name.clone()),
            KeyValue::new("rir.batch.size", images as i64),
            KeyValue::new("rir.batch.padding", (rows - images) as i64),
            KeyValue::new("rir.batch.requests", live.len() as i64),
            KeyValue::new("rir.engine.instance", *id as i64),
            KeyValue::new("rir.inline", inline),
            KeyValue::new("error", result.is_err()),
        ]
    });
    match result {
        Ok(outs) => {
            stats.record_execution(*id, images, rows - images, compute, inline);
            let run = Ran {
                started,
                compute,
                images,
            };
            answer(live, &outs, desc, run);
        }
        Err(e) => {
            tracing::error!(model = %desc.name, "inference failed: {e}");
            for j in live {
                let _ = j.reply.send(Err(JobError::Engine(e.to_string())));
            }
        }
    }
}

/// One engine run: when it began, how long it took, the images it held.
#[derive(Clone, Copy)]
struct Ran {
    started: Instant,
    compute: Duration,
    images: usize,
}

/// Hands each job its rows of the batch's outputs, in the order the jobs
/// were batched.
fn answer(live: Vec<Job>, outs: &[rir_infer::Output], desc: &ModelDescriptor, run: Ran) {
    let by_name: Vec<Option<&rir_infer::Output>> = desc
        .outputs
        .iter()
        .map(|n| outs.iter().find(|o| &o.name == n))
        .collect();
    let mut row = 0;
    for j in live {
        let outputs = by_name
            .iter()
            .zip(&desc.output_widths)
            .map(|(o, &width)| {
                o.map_or_else(Vec::new, |o| {
                    o.data[row * width..(row + j.n) * width].to_vec()
                })
            })
            .collect();
        row += j.n;
        let _ = j.reply.send(Ok(JobOutput {
            outputs,
            queue: run.started.saturating_duration_since(j.enqueued),
            compute: run.compute,
            batch_size: run.images,
            ran_at: run.started,
        }));
    }
}

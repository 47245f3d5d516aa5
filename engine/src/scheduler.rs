//! Continuous batching: one thread owns the model and a running batch; at every step it admits
//! waiting requests, prefills them in chunks under a per-step token budget (so a long prompt does
//! not stall the others), decodes one token for every running sequence in one batched forward,
//! streams the tokens, and retires finished, stopped or cancelled sequences.
//!
//! KV memory is paged ([`crate::kv_cache`]): a pool of `kv_cache_bytes / block_bytes` blocks shared
//! by all sequences, each taking blocks as it grows. The policy when the pool is full:
//! - **admission waits**: a request is admitted only while the free blocks cover its whole prompt
//!   (plus what sequences still prefilling will take, plus one token's worth of headroom);
//! - **the newest is preempted**: when a step needs more blocks than are free (running sequences
//!   grew), the most recently admitted sequence gives all its blocks back and goes to the front of
//!   the queue; when admitted again its prompt and the tokens it already produced are recomputed
//!   (its sampler state is kept, no token is sent twice).
//!
//! A request that could not fit even alone fails at once with a clear error. Callers hold a
//! [`SchedulerHandle`]; the request queue is bounded and a full queue is an overload error at once.

use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerateRequest, MAX_NEW_TOKENS_LIMIT};
use crate::kv_cache::{BlockPool, DEFAULT_BLOCK_ROWS, KvCache};
use crate::model::{LogitsWanted, Model, SeqStep};
use crate::sampler::Sampler;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

/// Limits of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most.
    pub max_batch_size: usize,
    /// Tokens (prefill chunks + decodes) in one forward step at most.
    pub max_batch_tokens: usize,
    /// Bytes of the KV block pool shared by all sequences.
    pub kv_cache_bytes: usize,
    /// Positions per KV block.
    pub kv_block_rows: usize,
    /// Requests waiting for admission at most; beyond, submit fails with an overload error.
    pub queue_capacity: usize,
    /// CPU kernel threads of a pool of this engine's own (`None`: the process-wide pool). A
    /// process running several engines gives each its share, so they do not take turns on one.
    pub kernel_threads: Option<usize>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_tokens: 512,
            kv_cache_bytes: 1 << 30,
            kv_block_rows: DEFAULT_BLOCK_ROWS,
            queue_capacity: 256,
            kernel_threads: None,
        }
    }
}

/// What a request's receiver gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One new token.
    Token(u32),
    /// The end: why, and the new tokens.
    Done { reason: FinishReason, output_ids: Vec<u32> },
    /// The request failed (bad input found late, engine error).
    Failed(String),
}

/// A submitted request: its events and its cancel switch.
pub struct RequestHandle {
    pub events: mpsc::Receiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl RequestHandle {
    /// Asks the scheduler to stop this request (its KV blocks are freed at the next step).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the end and returns the new tokens and why generation stopped.
    pub fn wait(self) -> Result<(Vec<u32>, FinishReason)> {
        for ev in self.events.iter() {
            match ev {
                Event::Token(_) => {}
                Event::Done { reason, output_ids } => return Ok((output_ids, reason)),
                Event::Failed(e) => return Err(Error::Request(e)),
            }
        }
        Err(Error::Request("the scheduler stopped".into()))
    }
}

struct Job {
    req: GenerateRequest,
    tx: mpsc::Sender<Event>,
    cancel: Arc<AtomicBool>,
}

/// Counters the scheduler publishes (for tests, metrics and benchmarks).
#[derive(Default, Debug)]
pub struct SchedulerStats {
    pub running: AtomicUsize,
    /// The most sequences ever in one step.
    pub peak_running: AtomicUsize,
    pub waiting: AtomicUsize,
    /// KV blocks in the pool, held by sequences now, and the most ever held.
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    pub peak_kv_blocks_used: AtomicUsize,
    /// Bytes of one KV block.
    pub kv_block_bytes: AtomicUsize,
    /// Sequences preempted (blocks given back, recomputed later) because the pool was full.
    pub preemptions: AtomicUsize,
    pub steps: AtomicUsize,
    /// Steps that only decoded (no prompt tokens), their tokens and their time: the steady decode
    /// throughput is `decode_tokens / decode_nanos`.
    pub decode_steps: AtomicUsize,
    pub decode_tokens: AtomicUsize,
    pub decode_nanos: AtomicU64,
}

impl SchedulerStats {
    /// KV bytes held by sequences now.
    pub fn kv_bytes_used(&self) -> usize {
        self.kv_blocks_used.load(Ordering::Relaxed) * self.kv_block_bytes.load(Ordering::Relaxed)
    }

    /// Blocks that can still be handed out.
    pub fn kv_blocks_free(&self) -> usize {
        self.kv_blocks_total.load(Ordering::Relaxed).saturating_sub(self.kv_blocks_used.load(Ordering::Relaxed))
    }
}

/// Handle to the scheduler thread (cheap to clone).
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::SyncSender<Job>,
    capacity: usize,
    paused: Arc<AtomicBool>,
    pub stats: Arc<SchedulerStats>,
}

impl SchedulerHandle {
    /// Starts the scheduler thread, which owns `model`. Fails when the KV pool cannot be made
    /// (a device reserves it at once: too little device memory shows here).
    pub fn start(model: Arc<Model>, cfg: SchedulerConfig) -> Result<Self> {
        let pool = model.new_pool(cfg.kv_block_rows, Some(cfg.kv_cache_bytes))?;
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
        let stats = Arc::new(SchedulerStats::default());
        let st = stats.clone();
        let capacity = cfg.queue_capacity.max(1);
        let paused = Arc::new(AtomicBool::new(false));
        let p = paused.clone();
        std::thread::Builder::new()
            .name("herd-scheduler".into())
            .spawn(move || {
                if let Some(n) = cfg.kernel_threads {
                    herd_kernels::pool::use_own_pool(n);
                }
                run(&model, &pool, &cfg, &rx, &st, &p)
            })
            .map_err(|e| Error::Request(format!("starting the scheduler thread: {e}")))?;
        Ok(Self { tx, capacity, paused, stats })
    }

    /// Stops taking steps (the step in progress finishes; requests still queue, up to the
    /// bound) until [`SchedulerHandle::resume`]: for maintenance, and for tests that need several
    /// requests admitted together.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Takes steps again after [`SchedulerHandle::pause`].
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Queues a request; fails at once when the queue is full.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestHandle> {
        if req.prompt.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if req.max_new_tokens > MAX_NEW_TOKENS_LIMIT {
            return Err(Error::Request(format!("`max_new_tokens` must be <= {MAX_NEW_TOKENS_LIMIT}, got {}", req.max_new_tokens)));
        }
        let (tx, events) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.tx.try_send(Job { req, tx, cancel: cancel.clone() }).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => Error::Overloaded(self.capacity),
            mpsc::TrySendError::Disconnected(_) => Error::Request("the scheduler stopped".into()),
        })?;
        Ok(RequestHandle { events, cancel })
    }
}

/// A request with its generation state (kept across a preemption).
struct Seq {
    job: Job,
    sampler: Sampler,
    /// Tokens to compute before decoding: the prompt, and after a preemption also the tokens
    /// already produced.
    feed: Vec<u32>,
    history: Vec<u32>,
    output: Vec<u32>,
}

impl Seq {
    fn finish(&self, reason: FinishReason) {
        let _ = self.job.tx.send(Event::Done { reason, output_ids: self.output.clone() });
    }

    fn fail(&self, message: String) {
        let _ = self.job.tx.send(Event::Failed(message));
    }

    fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed)
    }
}

struct Running {
    seq: Seq,
    cache: KvCache,
    /// Tokens of `seq.feed` computed so far.
    fed: usize,
    next: Option<u32>,
}

impl Running {
    fn prefilling(&self) -> bool {
        self.fed < self.seq.feed.len()
    }
}

/// Receives a job: a ready sequence, or `None` when it ended at once (answered already).
fn intake(j: Job) -> Option<Seq> {
    if j.req.max_new_tokens == 0 {
        let _ = j.tx.send(Event::Done { reason: FinishReason::Length, output_ids: vec![] });
        return None;
    }
    match Sampler::new(j.req.sampling.clone()) {
        Ok(sampler) => {
            let feed = j.req.prompt.clone();
            Some(Seq { history: feed.clone(), feed, sampler, job: j, output: vec![] })
        }
        Err(e) => {
            let _ = j.tx.send(Event::Failed(e.to_string()));
            None
        }
    }
}

fn run(model: &Model, pool: &Arc<BlockPool>, cfg: &SchedulerConfig, rx: &mpsc::Receiver<Job>, stats: &SchedulerStats, paused: &AtomicBool) {
    let mc = model.config();
    let br = pool.block_rows();
    let step_tokens = cfg.max_batch_tokens.max(1);
    // Blocks a sequence of `n` positions holds at most, prefilled `step_tokens` at a time.
    let blocks_for = |n: usize| KvCache::max_blocks_for(mc, br, n, step_tokens);
    // One token's worth of blocks per layer, kept free at admission for running sequences' growth.
    let headroom = mc.num_hidden_layers;
    stats.kv_blocks_total.store(pool.capacity(), Ordering::Relaxed);
    stats.kv_block_bytes.store(pool.block_bytes(), Ordering::Relaxed);
    let mut waiting: VecDeque<Seq> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let wait_resumed = || {
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    loop {
        wait_resumed();
        // Take requests from the bounded queue only while they can be admitted, so the queue's
        // bound is the whole backlog. Block only when there is nothing to do.
        if running.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(j) => waiting.extend(intake(j)),
                Err(_) => return,
            }
            wait_resumed();
        }
        while waiting.is_empty() && running.len() < cfg.max_batch_size {
            match rx.try_recv() {
                Ok(j) => waiting.extend(intake(j)),
                Err(_) => break,
            }
        }
        // Cancelled requests leave (waiting or running); dropping a cache gives its blocks back.
        waiting.retain(|w| {
            let c = w.cancelled();
            if c {
                w.finish(FinishReason::Cancelled);
            }
            !c
        });
        running.retain(|r| {
            let c = r.seq.cancelled();
            if c {
                r.seq.finish(FinishReason::Cancelled);
            }
            !c
        });
        // Admit in arrival order while the batch and the free blocks allow.
        while running.len() < cfg.max_batch_size {
            if waiting.is_empty() {
                match rx.try_recv() {
                    Ok(j) => waiting.extend(intake(j)),
                    Err(_) => break,
                }
                continue;
            }
            let w = waiting.front().expect("not empty");
            let worst = blocks_for(w.job.req.prompt.len() + w.job.req.max_new_tokens);
            if worst > pool.capacity() {
                let w = waiting.pop_front().expect("not empty");
                w.fail(format!(
                    "the request needs up to {worst} KV cache blocks ({} bytes); the KV cache holds {} blocks (`kv_cache_bytes` = {})",
                    worst * pool.block_bytes(),
                    pool.capacity(),
                    cfg.kv_cache_bytes
                ));
                continue;
            }
            let promised: usize =
                running.iter().filter(|r| r.prefilling()).map(|r| blocks_for(r.seq.feed.len()).saturating_sub(r.cache.blocks())).sum();
            let need = blocks_for(w.feed.len()) + if running.is_empty() { 0 } else { headroom };
            if need + promised > pool.free() {
                break;
            }
            let w = waiting.pop_front().expect("not empty");
            running.push(Running { seq: w, cache: KvCache::new(mc, pool.clone()), fed: 0, next: None });
        }
        publish(stats, pool, running.len(), waiting.len());
        if running.is_empty() {
            continue;
        }
        // Plan one step: every decoding sequence one token; prefills share what is left of the
        // token budget. Then make sure the pool has the blocks, preempting the newest if not.
        let plan = loop {
            let plan = plan_step(&running, step_tokens);
            let need: usize = plan.iter().map(|&(i, from, to)| running[i].cache.blocks_to_append((to - from).max(1))).sum();
            if need <= pool.free() || running.len() <= 1 {
                break plan;
            }
            let r = running.pop().expect("more than one");
            stats.preemptions.fetch_add(1, Ordering::Relaxed);
            waiting.push_front(preempt(r));
        };
        let need: usize = plan.iter().map(|&(i, from, to)| running[i].cache.blocks_to_append((to - from).max(1))).sum();
        if need > pool.free() {
            // A lone sequence that does not fit (only when other pools' use is miscounted).
            let r = running.pop().expect("one");
            r.seq.fail(format!("the KV cache is full: {need} blocks needed, {} free", pool.free()));
            continue;
        }
        let decode_only = plan.iter().all(|&(_, from, to)| from == to);
        let started = std::time::Instant::now();
        let logits = {
            // `plan` lists running sequences in order, each at most once.
            let mut next_plan = plan.iter().peekable();
            let mut steps: Vec<SeqStep<'_>> = Vec::with_capacity(plan.len());
            for (i, r) in running.iter_mut().enumerate() {
                let Some(&(_, from, to)) = next_plan.next_if(|p| p.0 == i) else { continue };
                if from == to {
                    steps.push(SeqStep { tokens: r.next.as_slice(), cache: &mut r.cache, logits: LogitsWanted::Last });
                } else {
                    let want = if to == r.seq.feed.len() { LogitsWanted::Last } else { LogitsWanted::None };
                    steps.push(SeqStep { tokens: &r.seq.feed[from..to], cache: &mut r.cache, logits: want });
                }
            }
            model.forward(&mut steps)
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        if decode_only {
            stats.decode_steps.fetch_add(1, Ordering::Relaxed);
            stats.decode_tokens.fetch_add(plan.len(), Ordering::Relaxed);
            stats.decode_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                for &(i, _, _) in plan.iter().rev() {
                    running.remove(i).seq.fail(e.to_string());
                }
                continue;
            }
        };
        // Sample where logits came back; retire what finished.
        let mut finished = Vec::new();
        for (&(i, from, to), mut row) in plan.iter().zip(logits) {
            let r = &mut running[i];
            if from != to {
                r.fed = to;
                if r.prefilling() {
                    continue;
                }
            }
            let s = &mut r.seq;
            let tok = s.sampler.sample(&mut row, &s.history);
            s.history.push(tok);
            s.output.push(tok);
            r.next = Some(tok);
            let _ = s.job.tx.send(Event::Token(tok));
            let reason = if s.job.req.stop_ids.contains(&tok) {
                Some(FinishReason::StopToken)
            } else if s.output.len() >= s.job.req.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                s.finish(reason);
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            running.remove(i);
        }
        publish(stats, pool, running.len(), waiting.len());
    }
}

/// `(index, from, to)` per sequence in this step: feed tokens `[from, to)` to prefill, or
/// `from == to` for a decode.
fn plan_step(running: &[Running], step_tokens: usize) -> Vec<(usize, usize, usize)> {
    let decoding = running.iter().filter(|r| !r.prefilling()).count();
    let mut budget = step_tokens.saturating_sub(decoding);
    let mut plan = Vec::with_capacity(running.len());
    for (i, r) in running.iter().enumerate() {
        if !r.prefilling() {
            plan.push((i, 0, 0));
        } else if budget > 0 {
            let take = (r.seq.feed.len() - r.fed).min(budget);
            budget -= take;
            plan.push((i, r.fed, r.fed + take));
        }
    }
    plan
}

/// Gives a running sequence's blocks back; it will recompute its prompt and output when admitted
/// again.
fn preempt(r: Running) -> Seq {
    let Running { mut seq, cache, .. } = r;
    drop(cache);
    seq.feed = seq.job.req.prompt.iter().chain(&seq.output).copied().collect();
    seq
}

fn publish(stats: &SchedulerStats, pool: &BlockPool, running: usize, waiting: usize) {
    stats.running.store(running, Ordering::Relaxed);
    stats.peak_running.fetch_max(running, Ordering::Relaxed);
    stats.waiting.store(waiting, Ordering::Relaxed);
    stats.kv_blocks_used.store(pool.used(), Ordering::Relaxed);
    stats.peak_kv_blocks_used.store(pool.peak(), Ordering::Relaxed);
}

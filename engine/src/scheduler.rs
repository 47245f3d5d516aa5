//! Continuous batching: one thread owns the model and a running batch; at every step it admits
//! waiting requests, prefills them in chunks under a per-step token budget (so a long prompt does
//! not stall the others), decodes one token for every running sequence in one batched forward,
//! streams the tokens, and retires finished, stopped or cancelled sequences.
//!
//! Admission reserves each request's worst-case KV cache (`prompt + max_new_tokens` positions, with
//! chunked layers capped at the chunk): a request that does not fit waits until others finish, so
//! the budget is never exceeded and nothing has to be preempted. Callers hold a
//! [`SchedulerHandle`]; the request queue is bounded and a full queue is an overload error at once.

use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerateRequest, MAX_NEW_TOKENS_LIMIT};
use crate::kv_cache::KvCache;
use crate::model::{LogitsWanted, Model, SeqStep};
use crate::sampler::Sampler;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

/// Limits of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most.
    pub max_batch_size: usize,
    /// Tokens (prefill chunks + decodes) in one forward step at most.
    pub max_batch_tokens: usize,
    /// KV cache bytes all running sequences may reserve together.
    pub kv_cache_bytes: usize,
    /// Requests waiting for admission at most; beyond, submit fails with an overload error.
    pub queue_capacity: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_batch_size: 32, max_batch_tokens: 512, kv_cache_bytes: 1 << 30, queue_capacity: 256 }
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
    /// Asks the scheduler to stop this request (its KV reservation is freed at the next step).
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
    /// KV bytes reserved by running sequences now.
    pub reserved_kv_bytes: AtomicUsize,
    /// The most ever reserved.
    pub peak_reserved_kv_bytes: AtomicUsize,
    pub steps: AtomicUsize,
}

/// Handle to the scheduler thread (cheap to clone).
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::SyncSender<Job>,
    capacity: usize,
    pub stats: Arc<SchedulerStats>,
}

impl SchedulerHandle {
    /// Starts the scheduler thread, which owns `model`.
    pub fn start(model: Arc<Model>, cfg: SchedulerConfig) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
        let stats = Arc::new(SchedulerStats::default());
        let st = stats.clone();
        let capacity = cfg.queue_capacity.max(1);
        std::thread::Builder::new()
            .name("herd-scheduler".into())
            .spawn(move || run(&model, &cfg, &rx, &st))
            .expect("spawning the scheduler thread");
        Self { tx, capacity, stats }
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

struct Running {
    job: Job,
    sampler: Sampler,
    cache: KvCache,
    /// Prompt tokens fed so far.
    fed: usize,
    history: Vec<u32>,
    output: Vec<u32>,
    next: Option<u32>,
    reserved: usize,
}

fn run(model: &Model, cfg: &SchedulerConfig, rx: &mpsc::Receiver<Job>, stats: &SchedulerStats) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut reserved = 0usize;
    loop {
        // Take requests from the bounded queue only while they can be admitted, so the queue's
        // bound is the whole backlog. Block only when there is nothing to do.
        if running.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while waiting.is_empty() && running.len() < cfg.max_batch_size {
            match rx.try_recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => break,
            }
        }
        // Cancelled requests leave (waiting or running) and free their reservation.
        waiting.retain(|j| {
            let c = j.cancel.load(Ordering::Relaxed);
            if c {
                let _ = j.tx.send(Event::Done { reason: FinishReason::Cancelled, output_ids: vec![] });
            }
            !c
        });
        running.retain(|r| {
            let c = r.job.cancel.load(Ordering::Relaxed);
            if c {
                reserved -= r.reserved;
                let _ = r.job.tx.send(Event::Done { reason: FinishReason::Cancelled, output_ids: r.output.clone() });
            }
            !c
        });
        // Admit in arrival order while the batch and the KV budget allow.
        while running.len() < cfg.max_batch_size {
            if waiting.is_empty()
                && let Ok(j) = rx.try_recv()
            {
                waiting.push_back(j);
            }
            let Some(j) = waiting.front() else { break };
            if j.req.max_new_tokens == 0 {
                let j = waiting.pop_front().expect("front exists");
                let _ = j.tx.send(Event::Done { reason: FinishReason::Length, output_ids: vec![] });
                continue;
            }
            let need = KvCache::bytes_for(model.config(), j.req.prompt.len() + j.req.max_new_tokens);
            if need > cfg.kv_cache_bytes {
                let j = waiting.pop_front().expect("front exists");
                let _ = j.tx.send(Event::Failed(format!("the request needs {need} bytes of KV cache; the budget is {}", cfg.kv_cache_bytes)));
                continue;
            }
            if reserved + need > cfg.kv_cache_bytes {
                break;
            }
            let j = waiting.pop_front().expect("front exists");
            let sampler = match Sampler::new(j.req.sampling.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = j.tx.send(Event::Failed(e.to_string()));
                    continue;
                }
            };
            reserved += need;
            let history = j.req.prompt.clone();
            running.push(Running { job: j, sampler, cache: model.new_cache(), fed: 0, history, output: vec![], next: None, reserved: need });
        }
        stats.running.store(running.len(), Ordering::Relaxed);
        stats.peak_running.fetch_max(running.len(), Ordering::Relaxed);
        stats.waiting.store(waiting.len(), Ordering::Relaxed);
        stats.reserved_kv_bytes.store(reserved, Ordering::Relaxed);
        stats.peak_reserved_kv_bytes.fetch_max(reserved, Ordering::Relaxed);
        if running.is_empty() {
            continue;
        }
        // One step: every decoding sequence one token; prefills share what is left of the budget.
        let decoding = running.iter().filter(|r| r.fed == r.job.req.prompt.len()).count();
        let mut budget = cfg.max_batch_tokens.max(1).saturating_sub(decoding);
        // (index, from, to): prompt tokens [from, to) to prefill, or from == to for a decode.
        let mut plan: Vec<(usize, usize, usize)> = Vec::new();
        for (i, r) in running.iter().enumerate() {
            let len = r.job.req.prompt.len();
            if r.fed == len {
                plan.push((i, 0, 0));
            } else if budget > 0 {
                let take = (len - r.fed).min(budget);
                budget -= take;
                plan.push((i, r.fed, r.fed + take));
            }
        }
        let logits = {
            // `plan` lists running sequences in order, each at most once.
            let mut next_plan = plan.iter().peekable();
            let mut steps: Vec<SeqStep<'_>> = Vec::with_capacity(plan.len());
            for (i, r) in running.iter_mut().enumerate() {
                let Some(&(_, from, to)) = next_plan.next_if(|p| p.0 == i) else { continue };
                let len = r.job.req.prompt.len();
                if from == to {
                    steps.push(SeqStep { tokens: r.next.as_slice(), cache: &mut r.cache, logits: LogitsWanted::Last });
                } else {
                    let want = if to == len { LogitsWanted::Last } else { LogitsWanted::None };
                    steps.push(SeqStep { tokens: &r.job.req.prompt[from..to], cache: &mut r.cache, logits: want });
                }
            }
            model.forward(&mut steps)
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                for &(i, _, _) in &plan {
                    let _ = running[i].job.tx.send(Event::Failed(e.to_string()));
                    running[i].job.cancel.store(true, Ordering::Relaxed);
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
                if to < r.job.req.prompt.len() {
                    continue;
                }
            }
            let tok = r.sampler.sample(&mut row, &r.history);
            r.history.push(tok);
            r.output.push(tok);
            r.next = Some(tok);
            let _ = r.job.tx.send(Event::Token(tok));
            let reason = if r.job.req.stop_ids.contains(&tok) {
                Some(FinishReason::StopToken)
            } else if r.output.len() >= r.job.req.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                let _ = r.job.tx.send(Event::Done { reason, output_ids: r.output.clone() });
                finished.push(i);
            }
        }
        finished.sort_unstable();
        for i in finished.into_iter().rev() {
            reserved -= running[i].reserved;
            running.remove(i);
        }
        stats.running.store(running.len(), Ordering::Relaxed);
        stats.reserved_kv_bytes.store(reserved, Ordering::Relaxed);
    }
}

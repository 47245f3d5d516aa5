//! The engine of one worker: the model owned by herd-engine's continuous-batching scheduler
//! (one thread, many conversations per forward step), fed through its bounded queue — callers
//! hold a cheap handle; a full queue is an overload error at once.

use herd_engine::generate::GenerateRequest;
use herd_engine::sampler::SamplingParams;
use herd_engine::scheduler::{Event, SchedulerConfig, SchedulerHandle};
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer};
use herd_engine::{Device, Model, parse_dtype};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A finished generation.
#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub tokens_in: usize,
    pub tokens_out: usize,
    pub ttft_ms: u64,
    pub generation_ms: u64,
}

/// A rendered prompt, and whether the newest message had to be cut to fit.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub cut: Option<Cut>,
}

/// The newest message was cut from `from_tokens` to `to_tokens` tokens to fit `budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub from_tokens: usize,
    pub to_tokens: usize,
    pub budget: usize,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cut from {} to {} tokens to fit the prompt budget of {} tokens", self.from_tokens, self.to_tokens, self.budget)
    }
}

/// Why the engine could not answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine overloaded: {0} requests already waiting")]
    Overloaded(usize),
    #[error("engine stopped")]
    Stopped,
    #[error("{0}")]
    Engine(#[from] herd_engine::Error),
}

/// Tokens per expert of each MoE layer: `(layer, counts)`.
type ExpertCounts = Vec<(usize, Vec<u64>)>;

/// Handle to the engine (cheap to clone).
#[derive(Clone)]
pub struct EngineHandle {
    scheduler: SchedulerHandle,
    model: Arc<Model>,
    /// Expert counts already handed out by [`EngineHandle::take_expert_counts`].
    experts_taken: Arc<std::sync::Mutex<ExpertCounts>>,
    tokenizer: Arc<ChatTokenizer>,
    context_tokens: usize,
}

/// Batching limits of the engine.
#[derive(Clone, Debug)]
pub struct EngineLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub kv_cache_bytes: usize,
    pub queue: usize,
    /// CPU kernel threads of this engine's own pool (`None`: the process-wide pool).
    pub kernel_threads: Option<usize>,
}

impl EngineHandle {
    /// Loads the model in `dir` onto `device` (`cpu`, `cuda[:N]`, `auto`) and starts its
    /// scheduler; `queue` bounds waiting requests.
    pub fn start(dir: &Path, dtype: &str, device: &str, queue: usize, context_tokens: usize) -> Result<Self, herd_engine::Error> {
        let limits = EngineLimits { max_batch_size: 32, max_batch_tokens: 512, kv_cache_bytes: 1 << 30, queue, kernel_threads: None };
        Self::start_with(dir, dtype, device, context_tokens, &limits)
    }

    /// Loads the model in `dir` onto `device` and starts its scheduler with these limits.
    pub fn start_with(
        dir: &Path,
        dtype: &str,
        device: &str,
        context_tokens: usize,
        limits: &EngineLimits,
    ) -> Result<Self, herd_engine::Error> {
        let model = Model::load_on(dir, parse_dtype(dtype)?, Device::parse(device)?)?;
        let tokenizer = Arc::new(ChatTokenizer::load(dir, model.config())?);
        let cfg = SchedulerConfig {
            max_batch_size: limits.max_batch_size.max(1),
            max_batch_tokens: limits.max_batch_tokens.max(1),
            kv_cache_bytes: limits.kv_cache_bytes,
            queue_capacity: limits.queue.max(1),
            kernel_threads: limits.kernel_threads,
            ..Default::default()
        };
        let model = Arc::new(model);
        let scheduler = SchedulerHandle::start(model.clone(), cfg)?;
        Ok(Self { scheduler, model, experts_taken: Default::default(), tokenizer, context_tokens })
    }

    /// The scheduler's counters.
    pub fn stats(&self) -> &herd_engine::scheduler::SchedulerStats {
        &self.scheduler.stats
    }

    /// Tokens routed to each expert of each MoE layer since the last call: `(layer, expert,
    /// tokens)` for the non-zero ones.
    pub fn take_expert_counts(&self) -> Vec<(i32, i32, i64)> {
        // A device that cannot answer fails the next generation loudly; the counts wait for then.
        let Ok(now) = self.model.expert_counts() else { return vec![] };
        let mut taken = self.experts_taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        for (layer, counts) in &now {
            let before = taken.iter().find(|(l, _)| l == layer).map(|(_, c)| c.as_slice()).unwrap_or(&[]);
            for (e, n) in counts.iter().enumerate() {
                let d = n.saturating_sub(before.get(e).copied().unwrap_or(0));
                if d > 0 {
                    out.push((*layer as i32, e as i32, d as i64));
                }
            }
        }
        *taken = now;
        out
    }

    /// The model's tokenizer and chat template.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// Renders the conversation to fit the prompt budget (`context_tokens`, and the model's own
    /// context, less room for `max_new_tokens`): the oldest turns go first (a system prompt
    /// stays); when the newest message alone is still too long, its end is cut, and the prompt
    /// says so ([`Prompt::cut`]).
    pub fn prompt(&self, mut messages: Vec<ChatMessage>, max_new_tokens: usize) -> Result<Prompt, herd_engine::Error> {
        let window = self.context_tokens.min(self.model.config().max_position_embeddings);
        let budget = window.saturating_sub(max_new_tokens).max(1);
        let first_turn = usize::from(messages.first().is_some_and(|m| m.role == "system"));
        loop {
            let ids = self.tokenizer.encode_chat(&messages, true)?;
            if ids.len() <= budget {
                return Ok(Prompt { ids, cut: None });
            }
            if messages.len() > first_turn + 1 {
                messages.remove(first_turn);
                continue;
            }
            return self.cut_newest(messages, budget, ids.len());
        }
    }

    /// Cuts the end of the last message until the rendered prompt fits `budget` tokens.
    fn cut_newest(&self, mut messages: Vec<ChatMessage>, budget: usize, rendered: usize) -> Result<Prompt, herd_engine::Error> {
        let Some(last) = messages.last().map(|m| m.content.clone()) else {
            return Err(herd_engine::Error::Request("an empty conversation does not fit the prompt budget".into()));
        };
        let text = self.tokenizer.encode(&last, false)?;
        let mut keep = text.len().saturating_sub(rendered - budget);
        loop {
            let kept = self.tokenizer.decode(&text[..keep], false)?;
            if let Some(m) = messages.last_mut() {
                m.content = kept;
            }
            let ids = self.tokenizer.encode_chat(&messages, true)?;
            if ids.len() <= budget {
                return Ok(Prompt { ids, cut: Some(Cut { from_tokens: text.len(), to_tokens: keep, budget }) });
            }
            if keep == 0 {
                return Err(herd_engine::Error::Request(format!(
                    "the system prompt alone is {} tokens, more than the prompt budget of {budget}",
                    ids.len()
                )));
            }
            // Decoding and encoding again may merge tokens differently: step down by the overflow.
            keep = keep.saturating_sub((ids.len() - budget).max(1));
        }
    }

    /// Generates a reply to `prompt` (batched with the other conversations in flight).
    pub async fn generate(&self, prompt: Vec<u32>, max_new_tokens: usize, temperature: f32) -> Result<Reply, EngineError> {
        let tokens_in = prompt.len();
        let sampling = SamplingParams { temperature, top_p: if temperature > 0.0 { 0.9 } else { 1.0 }, ..SamplingParams::default() };
        let req = GenerateRequest { prompt, max_new_tokens, sampling, stop_ids: self.tokenizer.stop_ids().to_vec(), stop_strings: vec![] };
        let t0 = Instant::now();
        // Prefill (waiting for admission included) ends at the first token; decode at the last.
        let parent = tracing::Span::current();
        let prefill = tracing::info_span!(parent: &parent, "engine.prefill", tokens_in);
        let handle = self.scheduler.submit(req).map_err(|e| match e {
            herd_engine::Error::Overloaded(n) => EngineError::Overloaded(n),
            other => EngineError::Engine(other),
        })?;
        let (ids, ttft_ms) = tokio::task::spawn_blocking(move || {
            let mut first = None;
            let mut prefill = Some(prefill);
            let mut decode = None;
            for ev in handle.events.iter() {
                match ev {
                    Event::Token(_) => {
                        if first.is_none() {
                            first = Some(t0.elapsed().as_millis() as u64);
                            drop(prefill.take());
                            decode = Some(tracing::info_span!(parent: &parent, "engine.decode", tokens_out = tracing::field::Empty));
                        }
                    }
                    Event::Done { output_ids, .. } => {
                        if let Some(d) = &decode {
                            d.record("tokens_out", output_ids.len());
                        }
                        return Ok((output_ids, first.unwrap_or(0)));
                    }
                    Event::Failed(e) => return Err(EngineError::Engine(herd_engine::Error::Request(e))),
                }
            }
            Err(EngineError::Stopped)
        })
        .await
        .map_err(|_| EngineError::Stopped)??;
        let text = self.tokenizer.decode(&ids, true)?;
        Ok(Reply {
            text: text.trim().to_string(),
            tokens_in,
            tokens_out: ids.len(),
            ttft_ms,
            generation_ms: t0.elapsed().as_millis() as u64,
        })
    }
}

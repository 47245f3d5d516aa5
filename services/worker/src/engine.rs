//! The engine of one worker: a model owned by one thread, fed through a bounded channel
//! (callers hold a cheap handle; a full queue is an overload error at once).

use herd_engine::generate::{GenerateRequest, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer};
use herd_engine::{Model, parse_dtype};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A finished generation.
#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub tokens_in: usize,
    pub tokens_out: usize,
    pub ttft_ms: u64,
    pub generation_ms: u64,
}

/// Why the engine could not answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine overloaded: {0} requests already queued")]
    Overloaded(usize),
    #[error("engine stopped")]
    Stopped,
    #[error("{0}")]
    Engine(#[from] herd_engine::Error),
}

struct Job {
    prompt: Vec<u32>,
    max_new_tokens: usize,
    temperature: f32,
    reply: oneshot::Sender<Result<Reply, EngineError>>,
}

/// Handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    tokenizer: Arc<ChatTokenizer>,
    context_tokens: usize,
}

impl EngineHandle {
    /// Loads the model in `dir` and starts its thread; `queue` bounds waiting requests.
    pub fn start(dir: &Path, dtype: &str, queue: usize, context_tokens: usize) -> Result<Self, herd_engine::Error> {
        let model = Model::load(dir, parse_dtype(dtype)?)?;
        let tokenizer = Arc::new(ChatTokenizer::load(dir, model.config())?);
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let tok = tokenizer.clone();
        std::thread::Builder::new()
            .name("herd-engine".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    let _ = job.reply.send(run(&model, &tok, job.prompt, job.max_new_tokens, job.temperature));
                }
            })
            .map_err(|e| herd_engine::Error::Request(format!("starting the engine thread: {e}")))?;
        Ok(Self { tx, capacity: queue.max(1), tokenizer, context_tokens })
    }

    /// The model's tokenizer and chat template.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// Renders the conversation, dropping the oldest turns (keeping a system prompt) until it
    /// fits the context budget with room for `max_new_tokens`.
    pub fn prompt(&self, mut messages: Vec<ChatMessage>, max_new_tokens: usize) -> Result<Vec<u32>, herd_engine::Error> {
        let budget = self.context_tokens.saturating_sub(max_new_tokens).max(1);
        loop {
            let ids = self.tokenizer.encode_chat(&messages, true)?;
            let first_turn = usize::from(messages.first().is_some_and(|m| m.role == "system"));
            if ids.len() <= budget || messages.len() <= first_turn + 1 {
                return Ok(ids);
            }
            messages.remove(first_turn);
        }
    }

    /// Generates a reply to `prompt`.
    pub async fn generate(&self, prompt: Vec<u32>, max_new_tokens: usize, temperature: f32) -> Result<Reply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { prompt, max_new_tokens, temperature, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::Overloaded(self.capacity),
                mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
            })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

fn run(model: &Model, tok: &ChatTokenizer, prompt: Vec<u32>, max_new: usize, temperature: f32) -> Result<Reply, EngineError> {
    let t0 = Instant::now();
    let mut first: Option<u64> = None;
    let tokens_in = prompt.len();
    let sampling = SamplingParams { temperature, top_p: if temperature > 0.0 { 0.9 } else { 1.0 }, ..SamplingParams::default() };
    let req = GenerateRequest { prompt, max_new_tokens: max_new, sampling, stop_ids: tok.stop_ids().to_vec(), stop_strings: vec![] };
    let g = generate(model, Some(tok), &req, &AtomicBool::new(false), &mut |_| {
        first.get_or_insert(t0.elapsed().as_millis() as u64);
        true
    })?;
    Ok(Reply {
        text: g.text.unwrap_or_default().trim().to_string(),
        tokens_in,
        tokens_out: g.output_ids.len(),
        ttft_ms: first.unwrap_or(0),
        generation_ms: t0.elapsed().as_millis() as u64,
    })
}

//! Single-sequence generation: prefill, then decode through the KV cache until a stop token, a
//! stop string, `max_new_tokens` or cancellation; tokens are streamed through a callback.

use crate::error::{Error, Result};
use crate::model::{LogitsWanted, Model, SeqStep};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::ChatTokenizer;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Largest `max_new_tokens` accepted.
pub const MAX_NEW_TOKENS_LIMIT: usize = 32_768;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Ids that end generation (kept in the output); empty to ignore EOS.
    pub stop_ids: Vec<u32>,
    /// Texts that end generation (needs a tokenizer); the text is cut before them.
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Length,
    StopToken,
    StopString,
    Cancelled,
}

/// The result of [`generate`].
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// New tokens only (a final stop token included).
    pub output_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Decoded text without special tokens, cut at a stop string (when a tokenizer was given).
    pub text: Option<String>,
    pub prompt_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// Generates a continuation of `req.prompt`. `on_token` sees every new id and may return
/// `false` to stop (reported as `Cancelled`, like `cancel` being set).
pub fn generate(
    model: &Model,
    tokenizer: Option<&ChatTokenizer>,
    req: &GenerateRequest,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    if req.prompt.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    if req.max_new_tokens > MAX_NEW_TOKENS_LIMIT {
        return Err(Error::Request(format!("`max_new_tokens` must be <= {MAX_NEW_TOKENS_LIMIT}, got {}", req.max_new_tokens)));
    }
    if !req.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(Error::Request("stop strings need the model's tokenizer".into()));
    }
    let mut sampler = Sampler::new(req.sampling.clone())?;
    let mut cache = model.new_cache();
    let mut history = req.prompt.clone();
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut logits = {
        let mut steps = [SeqStep { tokens: &req.prompt, cache: &mut cache, logits: LogitsWanted::Last }];
        model.forward(&mut steps)?.pop().unwrap_or_default()
    };
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut finish = FinishReason::Length;
    let mut text = None;
    while out.len() < req.max_new_tokens {
        if cancel.load(Ordering::Relaxed) {
            finish = FinishReason::Cancelled;
            break;
        }
        let next = sampler.sample(&mut logits, &history);
        out.push(next);
        history.push(next);
        if !on_token(next) {
            finish = FinishReason::Cancelled;
            break;
        }
        if req.stop_ids.contains(&next) {
            finish = FinishReason::StopToken;
            break;
        }
        if let Some(tok) = tokenizer
            && !req.stop_strings.is_empty()
        {
            let t = tok.decode(&out, true)?;
            if let Some(cut) = req.stop_strings.iter().filter_map(|s| t.find(s.as_str())).min() {
                text = Some(t[..cut].to_string());
                finish = FinishReason::StopString;
                break;
            }
        }
        if out.len() == req.max_new_tokens {
            break;
        }
        let mut steps = [SeqStep { tokens: std::slice::from_ref(&next), cache: &mut cache, logits: LogitsWanted::Last }];
        logits = model.forward(&mut steps)?.pop().unwrap_or_default();
    }
    if text.is_none()
        && let Some(tok) = tokenizer
    {
        text = Some(tok.decode(&out, true)?);
    }
    Ok(Generation {
        output_ids: out,
        finish_reason: finish,
        text,
        prompt_tokens: req.prompt.len(),
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    })
}

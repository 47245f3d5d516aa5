//! `herd engine bench`: prefill and decode throughput of a model with random weights built from a
//! `config.json`, at one or more batch sizes.

use crate::config::TextConfig;
use crate::error::Result;
use crate::model::{LogitsWanted, Model, SeqStep};
use crate::sampler::{Rng, argmax};
use crate::weights::RandomWeights;
use candle_core::DType;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Throughput at one batch size.
#[derive(Debug, Serialize)]
pub struct BatchResult {
    pub batch: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Mean time of one decode step (all sequences of the batch), milliseconds.
    pub decode_step_ms: f64,
}

/// The whole report, printed as JSON.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The config file or checkpoint folder measured.
    pub config: String,
    pub dtype: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub weight_bytes: usize,
    /// Weight bytes read per decoded token at batch 1 (attention, routed + shared experts, head).
    pub active_weight_bytes_per_token: usize,
    pub results: Vec<BatchResult>,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// KV cache bytes of one sequence at the end of the run.
    pub kv_cache_bytes_per_sequence: usize,
}

/// What to benchmark.
pub enum BenchModel<'a> {
    /// Random weights built from a `config.json`.
    Config(&'a Path),
    /// A checkpoint folder (the same weights another engine reads).
    Checkpoint(&'a Path),
}

/// The model to measure, and the file or folder it came from.
fn build<'a>(what: BenchModel<'a>, dtype: DType, seed: u64) -> Result<(Model, &'a Path)> {
    Ok(match what {
        BenchModel::Config(path) => (Model::from_source(TextConfig::from_path(path)?, &RandomWeights { seed, std: 0.02 }, dtype)?, path),
        BenchModel::Checkpoint(dir) => (Model::load(dir, dtype)?, dir),
    })
}

/// Runs the benchmark.
pub fn run(what: BenchModel<'_>, dtype: DType, prompt: usize, new: usize, batches: &[usize], seed: u64) -> Result<BenchReport> {
    let (model, source) = build(what, dtype, seed)?;
    let cfg = model.config().clone();
    let mut rng = Rng::new(seed ^ 0xBE7C);
    // Warm-up (thread start, first-touch of scratch buffers), not timed.
    {
        let mut cache = model.new_cache();
        let warm: Vec<u32> = (0..16).map(|i| i % cfg.vocab_size as u32).collect();
        model.forward(&mut [SeqStep { tokens: &warm, cache: &mut cache, logits: LogitsWanted::Last }])?;
        model.forward(&mut [SeqStep { tokens: &warm[..1], cache: &mut cache, logits: LogitsWanted::Last }])?;
    }
    let mut results = Vec::new();
    let mut kv_bytes = 0;
    for &b in batches {
        let prompts: Vec<Vec<u32>> =
            (0..b).map(|_| (0..prompt.max(1)).map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32).collect()).collect();
        let mut caches: Vec<_> = (0..b).map(|_| model.new_cache()).collect();
        let t0 = Instant::now();
        let logits = {
            let mut steps: Vec<SeqStep<'_>> =
                prompts.iter().zip(caches.iter_mut()).map(|(p, c)| SeqStep { tokens: p, cache: c, logits: LogitsWanted::Last }).collect();
            model.forward(&mut steps)?
        };
        let prefill = t0.elapsed().as_secs_f64();
        let mut next: Vec<u32> = logits.iter().map(|l| argmax(l)).collect();
        let t1 = Instant::now();
        for _ in 0..new {
            let mut steps: Vec<SeqStep<'_>> = next
                .iter()
                .zip(caches.iter_mut())
                .map(|(t, c)| SeqStep { tokens: std::slice::from_ref(t), cache: c, logits: LogitsWanted::Last })
                .collect();
            let logits = model.forward(&mut steps)?;
            next = logits.iter().map(|l| argmax(l)).collect();
        }
        let decode = t1.elapsed().as_secs_f64();
        kv_bytes = caches.first().map_or(0, |c| c.bytes());
        results.push(BatchResult {
            batch: b,
            prefill_tokens_per_s: (b * prompt.max(1)) as f64 / prefill,
            decode_tokens_per_s: (b * new) as f64 / decode.max(1e-9),
            decode_step_ms: decode * 1e3 / new.max(1) as f64,
        });
    }
    Ok(BenchReport {
        config: source.display().to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        threads: herd_kernels::pool::threads(),
        prompt_tokens: prompt.max(1),
        new_tokens: new,
        weight_bytes: model.weight_bytes(),
        active_weight_bytes_per_token: model.active_weight_bytes(),
        results,
        peak_rss_bytes: peak_rss(),
        kv_cache_bytes_per_sequence: kv_bytes,
    })
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Serving throughput through the continuous-batching scheduler.
#[derive(Debug, Serialize)]
pub struct ServingReport {
    pub config: String,
    pub dtype: String,
    pub threads: usize,
    pub concurrency: usize,
    pub requests: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Output tokens per second over the whole run.
    pub output_tokens_per_s: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
    /// Inter-token latency.
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    /// Output tokens per second of the steps that only decoded (no prompt tokens in the step):
    /// the steady decode throughput of the batch.
    pub decode_tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub scheduler_steps: usize,
    /// KV blocks: pool size, most held at once, bytes per block; sequences preempted.
    pub kv_blocks_total: usize,
    pub kv_blocks_peak: usize,
    pub kv_block_bytes: usize,
    pub preemptions: usize,
}

/// Runs `requests` requests with at most `concurrency` in flight through the scheduler.
#[allow(clippy::too_many_arguments)]
pub fn run_serving(
    what: BenchModel<'_>,
    dtype: DType,
    prompt: usize,
    new: usize,
    concurrency: usize,
    requests: usize,
    kv_cache_bytes: usize,
    seed: u64,
) -> Result<ServingReport> {
    use crate::generate::GenerateRequest;
    use crate::sampler::SamplingParams;
    use crate::scheduler::{Event, SchedulerConfig, SchedulerHandle};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    let (model, source) = build(what, dtype, seed)?;
    let vocab = model.config().vocab_size as u64;
    let model = Arc::new(model);
    let cfg = SchedulerConfig { max_batch_size: concurrency.max(1), kv_cache_bytes, queue_capacity: requests.max(1), ..Default::default() };
    let sched = SchedulerHandle::start(model, cfg);
    let mut rng = Rng::new(seed ^ 0x5E);
    let prompts: Vec<Vec<u32>> = (0..requests).map(|_| (0..prompt.max(1)).map(|_| (rng.next_u64() % vocab) as u32).collect()).collect();
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prompts = Arc::new(prompts);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (sched, next, prompts) = (sched.clone(), next.clone(), prompts.clone());
            std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>, usize)> {
                let (mut ttft, mut itl, mut tokens) = (Vec::new(), Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= prompts.len() {
                        return Ok((ttft, itl, tokens));
                    }
                    let req = GenerateRequest {
                        prompt: prompts[i].clone(),
                        max_new_tokens: new,
                        sampling: SamplingParams::greedy(),
                        stop_ids: vec![],
                        stop_strings: vec![],
                    };
                    let start = Instant::now();
                    let h = sched.submit(req)?;
                    let mut last: Option<Instant> = None;
                    for ev in h.events.iter() {
                        match ev {
                            Event::Token(_) => {
                                let now = Instant::now();
                                match last {
                                    None => ttft.push((now - start).as_secs_f64() * 1e3),
                                    Some(l) => itl.push((now - l).as_secs_f64() * 1e3),
                                }
                                last = Some(now);
                                tokens += 1;
                            }
                            Event::Done { .. } => break,
                            Event::Failed(e) => return Err(crate::Error::Request(e)),
                        }
                    }
                }
            })
        })
        .collect();
    let (mut ttft, mut itl, mut tokens) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        let (a, b, n) = w.join().map_err(|_| crate::Error::Request("a benchmark thread panicked".into()))??;
        ttft.extend(a);
        itl.extend(b);
        tokens += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0.0)
    };
    Ok(ServingReport {
        config: source.display().to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        threads: herd_kernels::pool::threads(),
        concurrency,
        requests,
        prompt_tokens: prompt.max(1),
        new_tokens: new,
        output_tokens_per_s: tokens as f64 / secs,
        ttft_ms_p50: pct(&mut ttft, 0.5),
        ttft_ms_p99: pct(&mut ttft, 0.99),
        itl_ms_p50: pct(&mut itl, 0.5),
        itl_ms_p99: pct(&mut itl, 0.99),
        decode_tokens_per_s: {
            let st = &sched.stats;
            let nanos = st.decode_nanos.load(Relaxed).max(1) as f64;
            st.decode_tokens.load(Relaxed) as f64 / (nanos / 1e9)
        },
        peak_rss_bytes: peak_rss(),
        scheduler_steps: sched.stats.steps.load(Relaxed),
        kv_blocks_total: sched.stats.kv_blocks_total.load(Relaxed),
        kv_blocks_peak: sched.stats.peak_kv_blocks_used.load(Relaxed),
        kv_block_bytes: sched.stats.kv_block_bytes.load(Relaxed),
        preemptions: sched.stats.preemptions.load(Relaxed),
    })
}

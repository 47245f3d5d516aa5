//! `herd engine bench`: prefill and decode throughput of a model with random weights built from a
//! `config.json` (or a checkpoint), on a device, at one or more batch sizes — or through the
//! continuous-batching scheduler.

use crate::config::TextConfig;
use crate::device::{Device, DeviceReport};
use crate::error::{Error, Result};
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
    /// Arithmetic rate of the prefill: weight products of every prompt token (routed experts only,
    /// LM head once per sequence) and attention scores and values, over the prefill time.
    pub prefill_tflops: f64,
    pub decode_tokens_per_s: f64,
    /// Mean time of one decode step (all sequences of the batch), milliseconds.
    pub decode_step_ms: f64,
    /// Kernel launches and cuBLAS calls per decode step (0 on the CPU).
    pub launches_per_decode_step: f64,
    /// Time of the one logits copy of a decode step (device to host), milliseconds (0 on the CPU).
    pub logits_copy_ms_per_decode_step: f64,
}

/// The whole report, printed as JSON.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The config file or checkpoint folder measured.
    pub config: String,
    pub device: DeviceReport,
    pub dtype: String,
    pub threads: usize,
    /// Decoder layers of the measured stack (a config's count, or `--layers`).
    pub layers: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub weight_bytes: usize,
    /// Weight bytes read per decoded token at batch 1 (attention, routed + shared experts, head).
    pub active_weight_bytes_per_token: usize,
    /// `active_weight_bytes_per_token` over the batch-1 decode step time: the weight bandwidth
    /// single-stream decode reaches (compare with the device's memory bandwidth).
    pub decode_weight_gb_per_s_at_batch_1: Option<f64>,
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

/// How many decoder layers to build from a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// The config's own count.
    AsConfigured,
    /// Exactly this many (the per-layer pattern repeated or cut).
    Exactly(usize),
    /// As many as fit the device's free memory (GPU), leaving room for activations and KV.
    Fit,
}

/// The model under test.
pub struct Subject<'a> {
    pub what: BenchModel<'a>,
    pub device: Device,
    pub dtype: DType,
    pub layers: Layers,
    pub seed: u64,
}

/// Device memory kept free beside the weights when sizing a stack to fit: activations of a
/// 2,048-token prefill at Scout's width, the KV cache, cuBLAS's workspace.
const FIT_RESERVE_BYTES: usize = 12 << 30;

/// The decoder layers of `cfg` whose weights fit in `free` bytes beside embeddings, head and
/// [`FIT_RESERVE_BYTES`].
pub fn layers_that_fit(cfg: &TextConfig, elem_bytes: usize, free: usize) -> usize {
    let tables = cfg.vocab_size * cfg.hidden_size * if cfg.tie_word_embeddings { 1 } else { 2 };
    let mut left = free.saturating_sub(FIT_RESERVE_BYTES + tables * elem_bytes);
    let mut n = 0;
    while n < 4 * cfg.num_hidden_layers.max(1) {
        let need = cfg.layer_params(n % cfg.num_hidden_layers.max(1)) * elem_bytes;
        if need > left {
            break;
        }
        left -= need;
        n += 1;
    }
    n
}

/// The model to measure, and the file or folder it came from.
fn build<'a>(s: &Subject<'a>) -> Result<(Model, &'a Path)> {
    Ok(match s.what {
        BenchModel::Config(path) => {
            let base = TextConfig::from_path(path)?;
            let cfg = match s.layers {
                Layers::AsConfigured => base,
                Layers::Exactly(n) => base.with_layers(n.max(1)),
                Layers::Fit => {
                    let free = crate::device::free_memory(s.device)?;
                    let n = layers_that_fit(&base, s.dtype.size_in_bytes(), free);
                    if n == 0 {
                        return Err(Error::Device { device: s.device.name(), message: format!("not one layer fits in {free} free bytes") });
                    }
                    base.with_layers(n)
                }
            };
            (Model::from_source_on(cfg, &RandomWeights { seed: s.seed, std: 0.02 }, s.dtype, s.device)?, path)
        }
        BenchModel::Checkpoint(dir) => (Model::load_on(dir, s.dtype, s.device)?, dir),
    })
}

/// Multiply-adds of a prefill of `t` tokens of one sequence: every token's weight products and
/// its attention over the positions it sees; the LM head once.
fn prefill_flops(cfg: &TextConfig, t: usize) -> f64 {
    let mut flops = 2.0 * (cfg.vocab_size * cfg.hidden_size) as f64;
    for l in 0..cfg.num_hidden_layers {
        flops += 2.0 * (cfg.layer_active_params(l) * t) as f64;
        let seen: usize = (0..t).map(|p| cfg.chunk_of(l).map_or(p + 1, |c| p % c + 1)).sum();
        flops += 4.0 * (cfg.num_attention_heads * cfg.head_dim * seen) as f64;
    }
    flops
}

/// Runs the benchmark: for each batch size, one prefill of `prompt` tokens per sequence, then
/// `new` greedy decode steps.
pub fn run(subject: &Subject<'_>, prompt: usize, new: usize, batches: &[usize]) -> Result<BenchReport> {
    let (model, source) = build(subject)?;
    let cfg = model.config().clone();
    let mut rng = Rng::new(subject.seed ^ 0xBE7C);
    // Warm-up (thread start, first-touch of scratch buffers, device workspace), not timed.
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
        let before = model.report();
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
        let after = model.report();
        let launches = after.launches - before.launches;
        kv_bytes = caches.first().map_or(0, |c| c.bytes());
        results.push(BatchResult {
            batch: b,
            prefill_tokens_per_s: (b * prompt.max(1)) as f64 / prefill,
            prefill_tflops: b as f64 * prefill_flops(&cfg, prompt.max(1)) / prefill / 1e12,
            decode_tokens_per_s: (b * new) as f64 / decode.max(1e-9),
            decode_step_ms: decode * 1e3 / new.max(1) as f64,
            launches_per_decode_step: launches as f64 / new.max(1) as f64,
            logits_copy_ms_per_decode_step: (after.logits_copy_ms - before.logits_copy_ms) / new.max(1) as f64,
        });
    }
    let active = model.active_weight_bytes();
    let decode_weight_gb_per_s_at_batch_1 =
        results.iter().find(|r| r.batch == 1 && r.decode_step_ms > 0.0).map(|r| active as f64 / (r.decode_step_ms / 1e3) / 1e9);
    Ok(BenchReport {
        config: source.display().to_string(),
        device: model.report(),
        dtype: format!("{:?}", subject.dtype).to_lowercase(),
        threads: herd_kernels::pool::threads(),
        layers: cfg.num_hidden_layers,
        prompt_tokens: prompt.max(1),
        new_tokens: new,
        weight_bytes: model.weight_bytes(),
        active_weight_bytes_per_token: active,
        decode_weight_gb_per_s_at_batch_1,
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
    pub device: DeviceReport,
    pub dtype: String,
    pub threads: usize,
    pub layers: usize,
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
    /// The greedy output of every request, in request order (to compare runs at different
    /// concurrencies: continuous batching must not change them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Vec<u32>>,
}

/// A serving run: `requests` requests, at most `concurrency` in flight.
pub struct Serving {
    pub prompt: usize,
    pub new: usize,
    pub concurrency: usize,
    pub requests: usize,
    pub kv_cache_bytes: usize,
    /// Keep every request's output tokens in the report.
    pub keep_outputs: bool,
}

/// Runs the requests through the scheduler, `concurrency` client threads submitting in turn.
pub fn run_serving(subject: &Subject<'_>, s: &Serving) -> Result<ServingReport> {
    use crate::generate::GenerateRequest;
    use crate::sampler::SamplingParams;
    use crate::scheduler::{Event, SchedulerConfig, SchedulerHandle};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    let (model, source) = build(subject)?;
    let (vocab, layers) = (model.config().vocab_size as u64, model.config().num_hidden_layers);
    let model = Arc::new(model);
    let cfg = SchedulerConfig {
        max_batch_size: s.concurrency.max(1),
        kv_cache_bytes: s.kv_cache_bytes,
        queue_capacity: s.requests.max(1),
        ..Default::default()
    };
    let sched = SchedulerHandle::start(model.clone(), cfg)?;
    let mut rng = Rng::new(subject.seed ^ 0x5E);
    let prompts: Vec<Vec<u32>> = (0..s.requests).map(|_| (0..s.prompt.max(1)).map(|_| (rng.next_u64() % vocab) as u32).collect()).collect();
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prompts = Arc::new(prompts);
    let new = s.new;
    type Client = (Vec<f64>, Vec<f64>, usize, Vec<(usize, Vec<u32>)>);
    let workers: Vec<_> = (0..s.concurrency.max(1))
        .map(|_| {
            let (sched, next, prompts) = (sched.clone(), next.clone(), prompts.clone());
            std::thread::spawn(move || -> Result<Client> {
                let (mut ttft, mut itl, mut tokens, mut outs) = (Vec::new(), Vec::new(), 0, Vec::new());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= prompts.len() {
                        return Ok((ttft, itl, tokens, outs));
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
                            Event::Done { output_ids, .. } => {
                                outs.push((i, output_ids));
                                break;
                            }
                            Event::Failed(e) => return Err(Error::Request(e)),
                        }
                    }
                }
            })
        })
        .collect();
    let (mut ttft, mut itl, mut tokens, mut outs) = (Vec::new(), Vec::new(), 0, Vec::new());
    for w in workers {
        let (a, b, n, o) = w.join().map_err(|_| Error::Request("a benchmark thread panicked".into()))??;
        ttft.extend(a);
        itl.extend(b);
        tokens += n;
        outs.extend(o);
    }
    let secs = t0.elapsed().as_secs_f64();
    outs.sort_by_key(|(i, _)| *i);
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0.0)
    };
    let st = &sched.stats;
    Ok(ServingReport {
        config: source.display().to_string(),
        device: model.report(),
        dtype: format!("{:?}", subject.dtype).to_lowercase(),
        threads: herd_kernels::pool::threads(),
        layers,
        concurrency: s.concurrency,
        requests: s.requests,
        prompt_tokens: s.prompt.max(1),
        new_tokens: s.new,
        output_tokens_per_s: tokens as f64 / secs,
        ttft_ms_p50: pct(&mut ttft, 0.5),
        ttft_ms_p99: pct(&mut ttft, 0.99),
        itl_ms_p50: pct(&mut itl, 0.5),
        itl_ms_p99: pct(&mut itl, 0.99),
        decode_tokens_per_s: {
            let nanos = st.decode_nanos.load(Relaxed).max(1) as f64;
            st.decode_tokens.load(Relaxed) as f64 / (nanos / 1e9)
        },
        peak_rss_bytes: peak_rss(),
        scheduler_steps: st.steps.load(Relaxed),
        kv_blocks_total: st.kv_blocks_total.load(Relaxed),
        kv_blocks_peak: st.peak_kv_blocks_used.load(Relaxed),
        kv_block_bytes: st.kv_block_bytes.load(Relaxed),
        preemptions: st.preemptions.load(Relaxed),
        outputs: if s.keep_outputs { outs.into_iter().map(|(_, o)| o).collect() } else { vec![] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_sized_to_fit_counts_whole_layers_beside_the_reserve() {
        let cfg = TextConfig::from_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scout-shaped/config.json")).expect("config");
        let per_layer = cfg.layer_params(0) * 2;
        // Scout's layer is ~4.4 GB in bf16: the embeddings and head take ~4.1 GB.
        assert!((4_000_000_000..5_000_000_000).contains(&per_layer), "{per_layer}");
        let free = 140_000_000_000;
        let n = layers_that_fit(&cfg, 2, free);
        let tables = 2 * cfg.vocab_size * cfg.hidden_size * 2;
        assert!(n * per_layer + tables + FIT_RESERVE_BYTES <= free, "{n} layers fit");
        assert!((n + 1) * per_layer + tables + FIT_RESERVE_BYTES > free, "one more does not");
        assert_eq!(layers_that_fit(&cfg, 2, 1 << 30), 0);
    }

    #[test]
    fn prefill_work_counts_routed_experts_and_the_causal_attention() {
        let cfg = TextConfig::from_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bench16/config.json")).expect("config");
        let one = prefill_flops(&cfg, 1);
        let two = prefill_flops(&cfg, 2);
        // The second token adds its products and attends over 2 positions (the first over 1).
        let per_token: f64 = (0..cfg.num_hidden_layers).map(|l| 2.0 * cfg.layer_active_params(l) as f64).sum();
        let attn_one = 4.0 * (cfg.num_attention_heads * cfg.head_dim) as f64 * cfg.num_hidden_layers as f64;
        assert!((two - one - per_token - 2.0 * attn_one).abs() < 1.0, "{one} {two}");
    }
}

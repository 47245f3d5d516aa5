//! `herd engine …`: the engine checked from outside (JSON on stdout), an interactive chat and a
//! benchmark.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use herd_engine::generate::{GenerateRequest, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer, TextStreamer};
use herd_engine::{DType, Device, Model, bench, parse_dtype};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Args)]
pub struct EngineArgs {
    /// Threads for the kernels (default: HERD_THREADS, RAYON_NUM_THREADS, or all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: EngineCommand,
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Print the logits of every input position as JSON: {"logits": [[...], ...]}.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
    },
    /// Generate a continuation and print {"output_ids": [...]} (new tokens only).
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated prompt token ids.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["prompt", "user"])]
        ids: Option<Vec<u32>>,
        /// Prompt text (encoded with the tokenizer's special tokens).
        #[arg(long)]
        prompt: Option<String>,
        /// A user message, rendered with the chat template.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Do not stop on end-of-turn / end-of-text tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Stop when the text contains this string (repeatable).
        #[arg(long = "stop")]
        stop: Vec<String>,
        /// Also print the decoded text and timings to stderr.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Chat in the terminal with the model's chat template, streaming tokens as they come.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Measure prefill and decode speed on random weights built from a config.json (or a checkpoint).
    Bench {
        /// A Llama 4 config.json (random weights).
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        config: Option<PathBuf>,
        /// A checkpoint folder instead of random weights.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Where to run: cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Decoder layers to build from --config: a number (the config's layer pattern repeated
        /// or cut), or `auto` for as many as fit the GPU's free memory. Default: the config's.
        #[arg(long)]
        layers: Option<String>,
        /// Print every request's output ids (with --concurrency), to compare runs.
        #[arg(long)]
        outputs: bool,
        /// Prompt tokens per sequence.
        #[arg(long, default_value_t = 128)]
        prompt: usize,
        /// New tokens per sequence.
        #[arg(long, default_value_t = 64)]
        new: usize,
        /// Batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        batch: Vec<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Serve requests through the continuous-batching scheduler with this many in flight.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Requests to serve (with --concurrency).
        #[arg(long, default_value_t = 64)]
        requests: usize,
        /// Bytes of the KV block pool (with --concurrency); a small pool shows preemption.
        #[arg(long, default_value_t = 1 << 30)]
        kv_cache_bytes: usize,
    },
    /// Print what this machine has of the CUDA libraries herd opens at run time (the driver,
    /// NVRTC, cuBLAS) and compile herd's kernels with NVRTC; no GPU needed. Exits 1 when NVRTC,
    /// the kernels or cuBLAS fail (the driver comes with a GPU host, so its absence is reported
    /// only): the check of a GPU image.
    CudaLibs {
        /// Target architecture of the kernels (sm_90: H100/H200).
        #[arg(long, default_value = "sm_90")]
        arch: String,
    },
    /// Print what the engine understood of a model folder.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Dtype the weights are held in: f32, bf16 or f16 (f16 on the CPU only).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where to run: cpu, cuda, cuda:N or auto (the GPU when one answers).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct SamplingArgs {
    /// Greedy decoding (overrides the sampling settings).
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        if self.greedy {
            return SamplingParams { repetition_penalty: self.repetition_penalty, ..SamplingParams::greedy() };
        }
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

fn load(m: &ModelArgs) -> Result<(Model, DType)> {
    let dtype = parse_dtype(&m.dtype)?;
    let device = Device::parse(&m.device)?;
    let model =
        Model::load_on(&m.model, dtype, device).with_context(|| format!("loading the model in {} onto {device}", m.model.display()))?;
    Ok((model, dtype))
}

fn load_tokenizer(dir: &Path, model: &Model) -> Result<ChatTokenizer> {
    ChatTokenizer::load(dir, model.config()).with_context(|| format!("loading the tokenizer of {}", dir.display()))
}

pub fn run(args: EngineArgs) -> Result<()> {
    if let Some(n) = args.threads
        && (n == 0 || !herd_engine::set_threads(n))
    {
        bail!("--threads must be >= 1 and given before any work starts, got {n}");
    }
    match args.command {
        EngineCommand::Logits { model, ids } => {
            let (m, _) = load(&model)?;
            let logits = m.logits(&ids)?;
            let rows: Vec<&[f32]> = logits.chunks(m.config().vocab_size).collect();
            println!("{}", serde_json::json!({ "logits": rows }));
        }
        EngineCommand::Generate { model, ids, prompt, user, max_new_tokens, ignore_eos, stop, verbose, sampling } => {
            let (m, _) = load(&model)?;
            let tok = if ids.is_none() || !stop.is_empty() || verbose || !ignore_eos {
                ChatTokenizer::load(&model.model, m.config()).ok()
            } else {
                None
            };
            let prompt_ids = match (ids, prompt, user) {
                (Some(ids), _, _) => ids,
                (None, Some(text), _) => tok.as_ref().context("no tokenizer.json for --prompt")?.encode(&text, true)?,
                (None, None, Some(text)) => {
                    tok.as_ref().context("no tokenizer.json for --user")?.encode_chat(&[ChatMessage::new("user", &text)], true)?
                }
                (None, None, None) => bail!("give the prompt with --ids, --prompt or --user"),
            };
            let stop_ids = if ignore_eos {
                vec![]
            } else {
                tok.as_ref().map(|t| t.stop_ids().to_vec()).unwrap_or_else(|| m.config().eos_token_ids.clone())
            };
            let req = GenerateRequest { prompt: prompt_ids, max_new_tokens, sampling: sampling.params(), stop_ids, stop_strings: stop };
            let g = generate(&m, tok.as_ref(), &req, &AtomicBool::new(false), &mut |_| true)?;
            println!("{}", serde_json::json!({ "output_ids": g.output_ids }));
            if verbose {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "text": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                        "prefill_seconds": g.prefill_seconds, "decode_seconds": g.decode_seconds,
                        "weight_bytes": m.weight_bytes(), "peak_rss_bytes": bench::peak_rss(),
                    })
                );
            }
        }
        EngineCommand::Chat { model, system, max_new_tokens, sampling } => {
            let (m, _) = load(&model)?;
            let tok = load_tokenizer(&model.model, &m)?;
            chat(&m, &tok, system, max_new_tokens, sampling.params())?;
        }
        EngineCommand::Bench {
            config,
            model,
            dtype,
            device,
            layers,
            outputs,
            prompt,
            new,
            batch,
            seed,
            concurrency,
            requests,
            kv_cache_bytes,
        } => {
            let dtype = parse_dtype(&dtype)?;
            let device = Device::parse(&device)?;
            let layers = match layers.as_deref() {
                None => bench::Layers::AsConfigured,
                Some("auto") => bench::Layers::Fit,
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => bench::Layers::Exactly(n),
                    _ => bail!("--layers must be a number >= 1 or `auto`, got {n:?}"),
                },
            };
            if batch.is_empty() || batch.contains(&0) {
                bail!("--batch must list batch sizes >= 1");
            }
            let what = match (&config, &model) {
                (Some(c), _) => bench::BenchModel::Config(c),
                (None, Some(m)) => bench::BenchModel::Checkpoint(m),
                (None, None) => bail!("give --config or --model"),
            };
            let subject = bench::Subject { what, device, dtype, layers, seed };
            if let Some(c) = concurrency {
                if c == 0 || requests == 0 {
                    bail!("--concurrency and --requests must be >= 1");
                }
                let serving = bench::Serving { prompt, new, concurrency: c, requests, kv_cache_bytes, keep_outputs: outputs };
                let report = bench::run_serving(&subject, &serving)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            let report = bench::run(&subject, prompt, new, &batch)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        EngineCommand::CudaLibs { arch } => {
            let l = herd_kernels::cuda::libraries(&arch);
            let text = |r: &std::result::Result<String, String>| match r {
                Ok(v) => serde_json::json!({"ok": true, "value": v}),
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            };
            let report = serde_json::json!({
                "driver": l.driver,
                "nvrtc": text(&l.nvrtc.clone().map(|(a, b)| format!("{a}.{b}"))),
                "kernels": text(&l.kernels.clone().map(|n| format!("{n} bytes of cubin for {arch}"))),
                "cublas": l.cublas,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !l.ready_but_driver() {
                bail!(
                    "the CUDA libraries are incomplete (see above): NVRTC 13, CUDA's headers (HERD_CUDA_INCLUDE) and cuBLAS 13 must be on LD_LIBRARY_PATH"
                );
            }
        }
        EngineCommand::Info { model } => {
            let (m, dtype) = load(&model)?;
            let c = m.config();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "dtype": format!("{dtype:?}").to_lowercase(),
                    "layers": c.num_hidden_layers,
                    "hidden_size": c.hidden_size,
                    "experts": c.num_local_experts,
                    "experts_per_token": c.num_experts_per_tok,
                    "moe_layers": c.moe.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect::<Vec<_>>(),
                    "rope_layers": c.rope.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect::<Vec<_>>(),
                    "chunked_layers": c.chunked.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect::<Vec<_>>(),
                    "attention_chunk_size": c.attention_chunk_size,
                    "rope_scaling": format!("{:?}", c.rope_scaling),
                    "weight_bytes": m.weight_bytes(),
                    "active_weight_bytes_per_token": m.active_weight_bytes(),
                    "kv_cache_bytes_per_sequence_at_4096_tokens": m.kv_bytes_for(4096),
                    "device": m.report(),
                }))?
            );
        }
    }
    Ok(())
}

/// The interactive chat: one line per user turn; `/reset` starts over, `/quit` (or end of input) ends.
fn chat(m: &Model, tok: &ChatTokenizer, system: Option<String>, max_new: usize, sampling: SamplingParams) -> Result<()> {
    let mut history: Vec<ChatMessage> = system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!("herd chat — type a message; /reset starts over, /quit ends.");
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(out)?;
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", line));
        let req = GenerateRequest {
            prompt: tok.encode_chat(&history, true)?,
            max_new_tokens: max_new,
            sampling: sampling.clone(),
            stop_ids: tok.stop_ids().to_vec(),
            stop_strings: vec![],
        };
        let mut streamer = TextStreamer::default();
        let mut failed = None;
        let g = generate(m, Some(tok), &req, &AtomicBool::new(false), &mut |id| {
            match streamer.push(tok, id) {
                Ok(Some(piece)) => {
                    let _ = write!(out, "{piece}");
                    let _ = out.flush();
                }
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        writeln!(out)?;
        history.push(ChatMessage::new("assistant", g.text.as_deref().unwrap_or("").trim()));
    }
    Ok(())
}

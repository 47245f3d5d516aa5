//! Continuous batching: results equal single-sequence generation, the KV budget holds, the queue
//! is bounded, cancellation frees, and chunked prefill keeps decoding going.

mod common;

use common::*;
use herd_engine::KvCache;
use herd_engine::generate::{FinishReason, GenerateRequest, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::scheduler::{Event, SchedulerConfig, SchedulerHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn req(prompt: Vec<u32>, n: usize) -> GenerateRequest {
    GenerateRequest { prompt, max_new_tokens: n, sampling: SamplingParams::greedy(), stop_ids: vec![], stop_strings: vec![] }
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 8 + (i * 53 + salt * 97) % 480).collect()
}

/// The scheduler publishes freed blocks right after the step that retired a request, which may be
/// just after the request's last event: poll briefly.
fn all_blocks_come_back(sched: &SchedulerHandle) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sched.stats.kv_blocks_used.load(Ordering::Relaxed) != 0 {
        assert!(std::time::Instant::now() < deadline, "the blocks were not freed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn batched_greedy_results_equal_each_sequence_alone() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model.clone(), SchedulerConfig { max_batch_size: 8, max_batch_tokens: 16, ..Default::default() })
        .expect("scheduler starts");
    let prompts: Vec<Vec<u32>> = [3usize, 40, 7, 18, 25, 1].iter().enumerate().map(|(i, n)| prompt(*n, i as u32)).collect();
    let handles: Vec<_> = prompts.iter().map(|p| sched.submit(req(p.clone(), 12)).expect("queued")).collect();
    for (p, h) in prompts.iter().zip(handles) {
        let (out, reason) = h.wait().expect("finishes");
        let alone = generate(&model, None, &req(p.clone(), 12), &AtomicBool::new(false), &mut |_| true).expect("alone").output_ids;
        assert_eq!(out, alone, "prompt of {} tokens", p.len());
        assert_eq!(reason, FinishReason::Length);
    }
    // the golden greedy case through the scheduler too
    let g = golden(&fixture("llama4-tiny-scout"));
    for case in cases(&g, "greedy") {
        let want = ids(&case["output_ids"]);
        let (out, _) = sched.submit(req(ids(&case["input_ids"]), want.len())).expect("queued").wait().expect("finishes");
        assert_eq!(out, want);
    }
}

#[test]
fn admission_never_exceeds_the_kv_budget() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let cfg = model.config().clone();
    let block = model.kv_block_bytes(16);
    // room for about two of these sequences at once (each up to 20 positions: 2 blocks a layer)
    let budget = 2 * KvCache::max_blocks_for(&cfg, 16, 20, 512) * block + block;
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 8, kv_cache_bytes: budget, ..Default::default() })
        .expect("scheduler starts");
    let handles: Vec<_> = (0..6).map(|i| sched.submit(req(prompt(10, i), 10)).expect("queued")).collect();
    for h in handles {
        assert_eq!(h.wait().expect("finishes").0.len(), 10);
    }
    let st = &sched.stats;
    let (total, peak) = (st.kv_blocks_total.load(Ordering::Relaxed), st.peak_kv_blocks_used.load(Ordering::Relaxed));
    assert_eq!(total, budget / block);
    assert!(peak <= total && peak > 0, "peak {peak} of {total} blocks");
    assert!(st.peak_running.load(Ordering::Relaxed) < 6, "the budget must have held some back");
    all_blocks_come_back(&sched);
    // a request larger than the whole budget fails clearly instead of waiting forever
    let e = sched.submit(req(prompt(200, 9), 200)).expect("queued").wait().expect_err("too big");
    assert!(e.to_string().contains("KV cache"), "{e}");
}

#[test]
fn a_full_queue_is_an_overload_error_at_once() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 1, queue_capacity: 2, ..Default::default() })
        .expect("scheduler starts");
    let long = sched.submit(req(prompt(5, 1), 20_000)).expect("runs");
    // wait until it runs, so the next ones stay in the queue
    assert!(matches!(long.events.recv(), Ok(Event::Token(_))));
    let a = sched.submit(req(prompt(5, 2), 5)).expect("queued");
    let b = sched.submit(req(prompt(5, 3), 5)).expect("queued");
    let e = sched.submit(req(prompt(5, 4), 5)).err().expect("overloaded");
    assert!(e.to_string().contains("overloaded"), "{e}");
    long.cancel();
    assert_eq!(a.wait().expect("done").0.len(), 5);
    assert_eq!(b.wait().expect("done").0.len(), 5);
}

#[test]
fn cancelling_stops_the_request_and_frees_its_blocks() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig::default()).expect("scheduler starts");
    let h = sched.submit(req(prompt(5, 1), 20_000)).expect("runs");
    for _ in 0..3 {
        assert!(matches!(h.events.recv(), Ok(Event::Token(_))));
    }
    assert!(sched.stats.kv_blocks_used.load(Ordering::Relaxed) > 0);
    h.cancel();
    let (out, reason) = h.wait().expect("ends");
    assert_eq!(reason, FinishReason::Cancelled);
    assert!(out.len() >= 3 && out.len() < 20_000);
    all_blocks_come_back(&sched);
    assert_eq!(sched.stats.running.load(Ordering::Relaxed), 0);
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_while_short_ones_keep_decoding() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 8, max_batch_tokens: 8, ..Default::default() })
        .expect("scheduler starts");
    let short = sched.submit(req(prompt(4, 1), 40)).expect("queued");
    assert!(matches!(short.events.recv(), Ok(Event::Token(_))), "the short one is decoding");
    let long = sched.submit(req(prompt(320, 2), 2)).expect("queued");
    // 320 prompt tokens at most 7 per step (one slot goes to the short one's decode): the long
    // one's first token needs ~46 steps, and the short one decodes one token in each of them.
    let first_long = long.events.recv().expect("a token");
    assert!(matches!(first_long, Event::Token(_)));
    let mut short_tokens = 1;
    while let Ok(Event::Token(_)) = short.events.try_recv() {
        short_tokens += 1;
    }
    assert!(short_tokens >= 30, "the short request made {short_tokens} tokens while the long prompt was prefilled");
}

#[test]
fn a_full_pool_preempts_the_newest_and_its_recomputed_output_is_unchanged() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let cfg = model.config().clone();
    let block = model.kv_block_bytes(16);
    // Four sequences of 8-token prompts fit at admission (1 block a layer each), but each grows to
    // 8 + 40 positions (up to 3 blocks a layer on full layers): the pool runs out mid-decode.
    let one_max = KvCache::max_blocks_for(&cfg, 16, 48, 512);
    let budget = (one_max + 2 * cfg.num_hidden_layers) * block;
    let sched = SchedulerHandle::start(model.clone(), SchedulerConfig { max_batch_size: 4, kv_cache_bytes: budget, ..Default::default() })
        .expect("scheduler starts");
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| prompt(8, 10 + i)).collect();
    // All four are admitted together (paused while they queue), so they grow together.
    sched.pause();
    let handles: Vec<_> = prompts.iter().map(|p| sched.submit(req(p.clone(), 40)).expect("queued")).collect();
    sched.resume();
    for (p, h) in prompts.iter().zip(handles) {
        let mut streamed = vec![];
        let out = loop {
            match h.events.recv().expect("an event") {
                Event::Token(t) => streamed.push(t),
                Event::Done { output_ids, reason } => {
                    assert_eq!(reason, FinishReason::Length);
                    break output_ids;
                }
                Event::Failed(e) => panic!("failed: {e}"),
            }
        };
        assert_eq!(streamed, out, "each token streamed once, in order");
        let alone = generate(&model, None, &req(p.clone(), 40), &AtomicBool::new(false), &mut |_| true).expect("alone").output_ids;
        assert_eq!(out, alone);
    }
    let st = &sched.stats;
    assert_eq!(st.peak_running.load(Ordering::Relaxed), 4, "all four ran together");
    assert!(st.preemptions.load(Ordering::Relaxed) > 0, "the pool was meant to run out");
    assert!(st.peak_kv_blocks_used.load(Ordering::Relaxed) <= st.kv_blocks_total.load(Ordering::Relaxed));
    all_blocks_come_back(&sched);
}

#[test]
fn chunked_layers_give_blocks_back_as_a_long_prompt_moves_past_them() {
    let model = load(&fixture("llama4-tiny-scout"));
    let cfg = model.config().clone();
    let chunk = cfg.attention_chunk_size.expect("chunked");
    let pool = model.new_pool(8, Some(10_000 * model.kv_block_bytes(8))).expect("pool");
    let mut cache = KvCache::new(&cfg, pool.clone());
    let ids = prompt(200, 5);
    for piece in ids.chunks(24) {
        let mut s = [herd_engine::SeqStep { tokens: piece, cache: &mut cache, logits: herd_engine::LogitsWanted::None }];
        model.forward(&mut s).expect("forward");
    }
    for l in 0..cfg.num_hidden_layers {
        let blocks = cache.layer_blocks(l);
        if cfg.chunked[l] {
            assert!(blocks <= chunk.div_ceil(8) + 1, "chunked layer {l} holds {blocks} blocks");
        } else {
            assert_eq!(blocks, 200usize.div_ceil(8), "full layer {l}");
        }
    }
    assert_eq!(pool.used(), cache.blocks());
    drop(cache);
    assert_eq!(pool.used(), 0, "dropping a cache gives its blocks back");
}

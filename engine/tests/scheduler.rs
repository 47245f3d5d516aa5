//! Continuous batching: results equal single-sequence generation, the KV budget holds, the queue
//! is bounded, cancellation frees, and chunked prefill keeps decoding going.

mod common;

use common::*;
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

#[test]
fn batched_greedy_results_equal_each_sequence_alone() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model.clone(), SchedulerConfig { max_batch_size: 8, max_batch_tokens: 16, ..Default::default() });
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
    let one = herd_engine::KvCache::bytes_for(model.config(), 10 + 10);
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 8, kv_cache_bytes: 2 * one, ..Default::default() });
    let handles: Vec<_> = (0..6).map(|i| sched.submit(req(prompt(10, i), 10)).expect("queued")).collect();
    for h in handles {
        assert_eq!(h.wait().expect("finishes").0.len(), 10);
    }
    let peak = sched.stats.peak_reserved_kv_bytes.load(Ordering::Relaxed);
    assert!(peak <= 2 * one && peak > 0, "peak {peak} of budget {}", 2 * one);
    // a request larger than the whole budget fails clearly instead of waiting forever
    let e = sched.submit(req(prompt(200, 9), 200)).expect("queued").wait().expect_err("too big");
    assert!(e.to_string().contains("KV cache"), "{e}");
}

#[test]
fn a_full_queue_is_an_overload_error_at_once() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 1, queue_capacity: 2, ..Default::default() });
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
fn cancelling_stops_the_request_and_frees_its_reservation() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig::default());
    let h = sched.submit(req(prompt(5, 1), 20_000)).expect("runs");
    for _ in 0..3 {
        assert!(matches!(h.events.recv(), Ok(Event::Token(_))));
    }
    assert!(sched.stats.reserved_kv_bytes.load(Ordering::Relaxed) > 0);
    h.cancel();
    let (out, reason) = h.wait().expect("ends");
    assert_eq!(reason, FinishReason::Cancelled);
    assert!(out.len() >= 3 && out.len() < 20_000);
    // the scheduler publishes the freed reservation right after the step (poll briefly)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sched.stats.reserved_kv_bytes.load(Ordering::Relaxed) != 0 {
        assert!(std::time::Instant::now() < deadline, "the reservation was not freed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(sched.stats.running.load(Ordering::Relaxed), 0);
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_while_short_ones_keep_decoding() {
    let model = Arc::new(load(&fixture("llama4-tiny-scout")));
    let sched = SchedulerHandle::start(model, SchedulerConfig { max_batch_size: 8, max_batch_tokens: 8, ..Default::default() });
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

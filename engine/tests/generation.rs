//! Generation: stop tokens, stop strings, cancellation, reproducible sampling, request limits.

mod common;

use common::*;
use herd_engine::generate::{FinishReason, GenerateRequest, Generation, MAX_NEW_TOKENS_LIMIT, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer, TextStreamer};
use herd_engine::{Model, Result};
use std::sync::atomic::{AtomicBool, Ordering};

fn demo() -> (Model, ChatTokenizer) {
    let dir = demo_model();
    let m = load(&dir);
    let t = ChatTokenizer::load(&dir, m.config()).expect("tokenizer");
    (m, t)
}

fn request(tok: &ChatTokenizer, user: &str, sampling: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        prompt: tok.encode_chat(&[ChatMessage::new("user", user)], true).expect("encodes"),
        max_new_tokens: 32,
        sampling,
        stop_ids: tok.stop_ids().to_vec(),
        stop_strings: vec![],
    }
}

fn run(m: &Model, t: &ChatTokenizer, req: &GenerateRequest) -> Result<Generation> {
    generate(m, Some(t), req, &AtomicBool::new(false), &mut |_| true)
}

#[test]
fn stop_tokens_include_llama4_end_tokens_and_the_configured_eos() {
    let (m, t) = demo();
    for name in ["<|eot|>", "<|eom|>", "<|end_of_text|>"] {
        let id = t.token_id(name).expect("special token in vocabulary");
        assert!(t.stop_ids().contains(&id), "{name}");
    }
    for id in &m.config().eos_token_ids {
        assert!(t.stop_ids().contains(id));
    }
}

#[test]
fn a_stop_string_cuts_the_text_before_it() {
    let (m, t) = demo();
    let full = run(&m, &t, &request(&t, "Tell me a joke", SamplingParams::greedy())).expect("generates");
    let text = full.text.expect("text");
    assert!(text.contains(" cross"), "{text}");
    let mut req = request(&t, "Tell me a joke", SamplingParams::greedy());
    req.stop_strings = vec![" cross".into()];
    let cut = run(&m, &t, &req).expect("generates");
    assert_eq!(cut.finish_reason, FinishReason::StopString);
    assert_eq!(cut.text.as_deref(), Some(&text[..text.find(" cross").expect("found")]));
    assert!(cut.output_ids.len() < full.output_ids.len());
}

#[test]
fn the_callback_and_the_cancel_flag_stop_generation() {
    let (m, t) = demo();
    let req = GenerateRequest { stop_ids: vec![], ..request(&t, "What is AI?", SamplingParams::greedy()) };
    let mut seen = Vec::new();
    let g = generate(&m, Some(&t), &req, &AtomicBool::new(false), &mut |id| {
        seen.push(id);
        seen.len() < 3
    })
    .expect("generates");
    assert_eq!((g.output_ids.len(), g.finish_reason.clone()), (3, FinishReason::Cancelled));
    assert_eq!(seen, g.output_ids);
    let cancel = AtomicBool::new(false);
    cancel.store(true, Ordering::Relaxed);
    let g = generate(&m, Some(&t), &req, &cancel, &mut |_| true).expect("generates");
    assert_eq!((g.output_ids.len(), g.finish_reason), (0, FinishReason::Cancelled));
}

#[test]
fn max_new_tokens_is_honoured_and_bounded() {
    let (m, t) = demo();
    let mut req = GenerateRequest { stop_ids: vec![], ..request(&t, "Hello", SamplingParams::greedy()) };
    req.max_new_tokens = 5;
    let g = run(&m, &t, &req).expect("generates");
    assert_eq!((g.output_ids.len(), g.finish_reason), (5, FinishReason::Length));
    req.max_new_tokens = MAX_NEW_TOKENS_LIMIT + 1;
    let e = run(&m, &t, &req).expect_err("too many");
    assert!(e.to_string().contains("max_new_tokens"), "{e}");
    req.prompt.clear();
    assert!(run(&m, &t, &req).expect_err("empty").to_string().contains("prompt is empty"));
}

#[test]
fn seeded_sampling_is_reproducible_and_the_seed_matters() {
    let (m, t) = demo();
    let s = |seed| SamplingParams { temperature: 1.5, top_p: 0.95, seed: Some(seed), ..Default::default() };
    let mut a = request(&t, "Do you like music?", s(7));
    a.stop_ids.clear();
    let g1 = run(&m, &t, &a).expect("generates").output_ids;
    let g2 = run(&m, &t, &a).expect("generates").output_ids;
    assert_eq!(g1, g2);
    let others: Vec<Vec<u32>> =
        (8..12).map(|seed| run(&m, &t, &GenerateRequest { sampling: s(seed), ..a.clone() }).expect("g").output_ids).collect();
    assert!(others.iter().any(|o| *o != g1), "four other seeds all gave the same 32 tokens");
}

#[test]
fn the_streamer_yields_exactly_the_decoded_text() {
    let (m, t) = demo();
    let g = run(&m, &t, &request(&t, "How are you?", SamplingParams::greedy())).expect("generates");
    let mut s = TextStreamer::default();
    let mut text = String::new();
    for id in &g.output_ids {
        if let Some(piece) = s.push(&t, *id).expect("decodes") {
            text.push_str(&piece);
        }
    }
    assert_eq!(Some(text), g.text);
}

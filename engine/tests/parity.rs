//! Parity with the Hugging Face reference (transformers' `Llama4ForCausalLM`, float32) on the
//! golden files of every fixture: logits at every position, greedy continuations through the KV
//! cache, the chat template and the tokenizer.

mod common;

use common::*;
use herd_engine::generate::{FinishReason, GenerateRequest, generate};
use herd_engine::sampler::SamplingParams;
use herd_engine::tokenizer::{ChatMessage, ChatTokenizer};
use std::sync::atomic::AtomicBool;

fn greedy(model: &herd_engine::Model, prompt: Vec<u32>, n: usize, stop_ids: Vec<u32>) -> Vec<u32> {
    let req = GenerateRequest { prompt, max_new_tokens: n, sampling: SamplingParams::greedy(), stop_ids, stop_strings: vec![] };
    generate(model, None, &req, &AtomicBool::new(false), &mut |_| true).expect("generation runs").output_ids
}

#[test]
fn prefill_logits_match_the_reference_at_every_position() {
    for name in FIXTURES {
        let dir = fixture(name);
        let g = golden(&dir);
        let model = load(&dir);
        let tol = tolerance(&g);
        for case in cases(&g, "logits") {
            let input = ids(&case["input_ids"]);
            let got = model.logits(&input).expect("forward runs");
            let want = case["logits"].as_array().expect("rows");
            assert_eq!(got.len(), want.len() * model.config().vocab_size, "{name} {}", case["name"]);
            for (pos, row) in want.iter().enumerate() {
                let row: Vec<f32> = row.as_array().expect("row").iter().map(|v| v.as_f64().expect("f") as f32).collect();
                let v = row.len();
                let diff = max_abs_diff(&got[pos * v..(pos + 1) * v], &row);
                assert!(diff <= tol, "{name} {} position {pos}: max |Δlogit| {diff} > {tol}", case["name"]);
            }
        }
    }
}

#[test]
fn greedy_continuations_through_the_kv_cache_equal_the_reference() {
    for name in FIXTURES {
        let dir = fixture(name);
        let g = golden(&dir);
        let model = load(&dir);
        for case in cases(&g, "greedy") {
            let want = ids(&case["output_ids"]);
            let got = greedy(&model, ids(&case["input_ids"]), want.len(), vec![]);
            assert_eq!(got, want, "{name} {}", case["name"]);
        }
    }
}

#[test]
fn chat_template_and_tokenizer_reproduce_the_reference_ids() {
    for name in FIXTURES {
        let dir = fixture(name);
        let g = golden(&dir);
        let model = load(&dir);
        let tok = ChatTokenizer::load(&dir, model.config()).expect("tokenizer loads");
        for case in cases(&g, "chat_template") {
            let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).expect("messages");
            let agp = case["add_generation_prompt"].as_bool().expect("flag");
            let text = tok.apply_chat_template(&msgs, agp).expect("template renders");
            assert_eq!(text, case["text"].as_str().expect("text"), "{name}");
            assert_eq!(tok.encode_chat(&msgs, agp).expect("encodes"), ids(&case["input_ids"]), "{name}");
        }
        for case in cases(&g, "tokenize") {
            let got = tok.encode(case["text"].as_str().expect("text"), false).expect("encodes");
            assert_eq!(got, ids(&case["input_ids"]), "{name}");
            let back = tok.decode(&got, false).expect("decodes");
            assert_eq!(back, case["text"].as_str().expect("text"), "{name}: decode(encode(x)) == x");
        }
    }
}

#[test]
fn demo_chat_model_in_bf16_answers_like_the_reference() {
    let dir = demo_model();
    let g = golden(&dir);
    let tol = tolerance(&g);
    let model = load(&dir);
    let tok = ChatTokenizer::load(&dir, model.config()).expect("tokenizer loads");
    for case in cases(&g, "chat_greedy") {
        let name = case["name"].as_str().expect("name");
        let prompt = ids(&case["input_ids"]);
        // The chat template gives the golden prompt ids for the user message.
        assert_eq!(tok.encode_chat(&[ChatMessage::new("user", name)], true).expect("encodes"), prompt, "{name}");
        let logits = model.logits(&prompt).expect("forward");
        let v = model.config().vocab_size;
        let last = &logits[logits.len() - v..];
        for pair in case["last_logits_top5"].as_array().expect("top5") {
            let (id, want) = (pair[0].as_u64().expect("id") as usize, pair[1].as_f64().expect("logit") as f32);
            assert!((last[id] - want).abs() <= tol.max(1e-4) + 1e-4, "{name}: logit of {id} is {} not {want}", last[id]);
        }
        let want = ids(&case["output_ids"]);
        let req = GenerateRequest {
            prompt,
            max_new_tokens: 32,
            sampling: SamplingParams::greedy(),
            stop_ids: tok.stop_ids().to_vec(),
            stop_strings: vec![],
        };
        let out = generate(&model, Some(&tok), &req, &AtomicBool::new(false), &mut |_| true).expect("generates");
        assert_eq!(out.output_ids, want, "{name}");
        if want.last() == tok.token_id("<|eot|>").as_ref() {
            assert_eq!(out.finish_reason, FinishReason::StopToken, "{name}");
        }
        assert_eq!(out.text.as_deref(), case["reply"].as_str(), "{name}");
    }
}

#[test]
fn half_precision_weights_stay_close_to_the_f32_reference() {
    // bf16/f16 hold the weights at half the bytes; activations stay f32. The logits move by the
    // weight rounding only.
    let dir = fixture("llama4-tiny-scout");
    let g = golden(&dir);
    let case = cases(&g, "logits")[0];
    let input = ids(&case["input_ids"]);
    let f32_logits = load(&dir).logits(&input).expect("f32");
    for dt in [herd_engine::DType::BF16, herd_engine::DType::F16] {
        let m = herd_engine::Model::load(&dir, dt).expect("loads");
        let l = m.logits(&input).expect("forward");
        let diff = max_abs_diff(&l, &f32_logits);
        assert!(diff > 0.0 && diff < 0.5, "{dt:?}: max |Δ| {diff}");
    }
}

//! The KV cache and the batched forward: incremental decode equals a full prefill at every
//! position, chunked layers keep one chunk, a mixed batch equals each sequence alone, and the
//! MoE layers run routed experts only.

mod common;

use candle_core::DType;
use common::*;
use herd_engine::weights::Checkpoint;
use herd_engine::{KvCache, LogitsWanted, Model, SeqStep};

const TOL: f32 = 1e-4;

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 8 + (i * 37 + salt * 101) % 480).collect()
}

fn step(model: &Model, tokens: &[u32], cache: &mut KvCache, logits: LogitsWanted) -> Vec<f32> {
    let mut s = [SeqStep { tokens, cache, logits }];
    model.forward(&mut s).expect("forward").pop().expect("one sequence")
}

#[test]
fn token_by_token_decode_equals_full_prefill_across_chunk_boundaries() {
    for name in FIXTURES {
        let model = load(&fixture(name));
        let v = model.config().vocab_size;
        let ids = prompt(45, 1); // chunk 16: crosses two chunk boundaries
        let full = model.logits(&ids).expect("prefill");
        let mut cache = model.new_cache();
        for (pos, tok) in ids.iter().enumerate() {
            let row = step(&model, std::slice::from_ref(tok), &mut cache, LogitsWanted::Last);
            let d = max_abs_diff(&row, &full[pos * v..(pos + 1) * v]);
            assert!(d <= TOL, "{name} position {pos}: |Δ| {d}");
        }
        assert_eq!(cache.seen(), ids.len());
    }
}

#[test]
fn prefill_in_pieces_equals_prefill_at_once() {
    let model = load(&fixture("llama4-tiny-scout"));
    let v = model.config().vocab_size;
    let ids = prompt(40, 2);
    let full = model.logits(&ids).expect("prefill");
    let mut cache = model.new_cache();
    let mut at = 0;
    for piece in [5usize, 13, 1, 21] {
        let rows = step(&model, &ids[at..at + piece], &mut cache, LogitsWanted::All);
        let d = max_abs_diff(&rows, &full[at * v..(at + piece) * v]);
        assert!(d <= TOL, "piece at {at}: |Δ| {d}");
        at += piece;
    }
}

#[test]
fn chunked_layers_keep_only_the_current_chunk_and_full_layers_keep_everything() {
    let model = load(&fixture("llama4-tiny-scout"));
    let cfg = model.config().clone();
    let chunk = cfg.attention_chunk_size.expect("chunked");
    let mut cache = model.new_cache();
    let ids = prompt(100, 3);
    for (i, tok) in ids.iter().enumerate() {
        step(&model, std::slice::from_ref(tok), &mut cache, LogitsWanted::None);
        let seen = i + 1;
        for l in 0..cfg.num_hidden_layers {
            let rows = cache.layer_rows(l);
            if cfg.chunked[l] {
                assert_eq!(rows, seen % chunk, "layer {l} after {seen} tokens");
            } else {
                assert_eq!(rows, seen, "layer {l} after {seen} tokens");
            }
        }
    }
    // paged: each layer holds whole blocks covering its rows, and the pool counts them
    let br = cache.pool().block_rows();
    for l in 0..cfg.num_hidden_layers {
        assert_eq!(cache.layer_blocks(l), cache.layer_rows(l).div_ceil(br), "layer {l}");
    }
    let block_bytes = 2 * br * cfg.kv_dim() * 4;
    assert_eq!(cache.pool().block_bytes(), block_bytes);
    assert_eq!(cache.bytes(), cache.blocks() * block_bytes);
    assert_eq!(cache.pool().used(), cache.blocks());
    assert!(cache.bytes() <= model.kv_bytes_for(100));
    cache.clear();
    assert_eq!((cache.bytes(), cache.seen(), cache.pool().used()), (0, 0, 0));
}

#[test]
fn a_mixed_batch_of_prefill_and_decode_gives_each_sequence_its_solo_logits() {
    for name in FIXTURES {
        let model = load(&fixture(name));
        let v = model.config().vocab_size;
        let (a, b, c) = (prompt(30, 4), prompt(12, 5), prompt(9, 6));
        let (fa, fb, fc) = (model.logits(&a).expect("a"), model.logits(&b).expect("b"), model.logits(&c).expect("c"));
        // A: 29 tokens already seen, decodes its last; B: 5 seen, prefills 7 more; C: fresh.
        let (mut ca, mut cb, mut cc) = (model.new_cache(), model.new_cache(), model.new_cache());
        step(&model, &a[..29], &mut ca, LogitsWanted::None);
        step(&model, &b[..5], &mut cb, LogitsWanted::None);
        let out = {
            let mut batch = [
                SeqStep { tokens: &a[29..], cache: &mut ca, logits: LogitsWanted::Last },
                SeqStep { tokens: &b[5..], cache: &mut cb, logits: LogitsWanted::All },
                SeqStep { tokens: &c, cache: &mut cc, logits: LogitsWanted::Last },
            ];
            model.forward(&mut batch).expect("batched forward")
        };
        assert!(max_abs_diff(&out[0], &fa[29 * v..]) <= TOL, "{name}: A");
        assert!(max_abs_diff(&out[1], &fb[5 * v..]) <= TOL, "{name}: B");
        assert!(max_abs_diff(&out[2], &fc[8 * v..]) <= TOL, "{name}: C");
        assert_eq!((ca.seen(), cb.seen(), cc.seen()), (30, 12, 9));
    }
}

#[test]
fn moe_layers_run_only_the_routed_experts() {
    for name in ["llama4-tiny-scout", "maverick-like"] {
        let dir = fixture(name);
        let model = load(&dir);
        let ids = prompt(6, 7);
        let want = model.logits(&ids).expect("forward");
        let counts = model.expert_counts().expect("counts");
        let top_k = model.config().num_experts_per_tok as u64;
        for (layer, c) in &counts {
            assert_eq!(c.iter().sum::<u64>(), ids.len() as u64 * top_k, "{name} layer {layer}: tokens × top_k");
        }
        let unrouted: usize = counts.iter().map(|(_, c)| c.iter().filter(|n| **n == 0).count()).sum();
        assert!(unrouted > 0, "{name}: the test needs experts no token was routed to");
        let cfg = model.config().clone();
        let src = Poisoned { inner: Checkpoint::open(&dir).expect("opens"), never_routed: &counts };
        let poisoned = Model::from_source(cfg, &src, DType::F32).expect("builds");
        let got = poisoned.logits(&ids).expect("forward");
        assert!(got.iter().all(|v| v.is_finite()), "{name}: an unrouted expert was computed");
        assert!(max_abs_diff(&got, &want) == 0.0, "{name}: same routing, same logits");
    }
}

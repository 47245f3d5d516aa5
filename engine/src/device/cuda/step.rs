//! A step's bookkeeping for the device: every small array the kernels need (tokens, positions,
//! each layer's block tables, which tokens take which attention kernel, the wanted rows), packed
//! on the host into one array of i32 and one of u64, so a step costs two small uploads.

use crate::device::StepPlan;
use herd_kernels::cuda::ops::FLASH_ROWS;

/// Sequences with at least this many new tokens in a step (a prefill) go through flash attention
/// when the device can; shorter runs and decodes through the per-token kernel.
pub const FLASH_MIN_TOKENS: usize = 16;

/// Where a sequence's KV arena keeps its slab table.
#[derive(Clone, Copy, Debug)]
pub struct SeqArena {
    pub table: u64,
    pub shift: u32,
}

/// The packed arrays and where each starts (in elements of its array).
#[derive(Debug, Default)]
pub struct Meta {
    pub ints: Vec<i32>,
    /// `[S]` slab table of each sequence.
    pub longs: Vec<u64>,
    /// `[T]` token ids, positions, sequences.
    pub tok: usize,
    pub pos: usize,
    pub seq: usize,
    /// `[layers][S]` position of cache row 0, and where the sequence's block ids start in `tab`.
    pub start: usize,
    pub tab_off: usize,
    /// Block ids of every layer of every sequence.
    pub tab: usize,
    /// `[S]` slab shift of each sequence's arena.
    pub shift: usize,
    /// Tokens for the per-token attention kernel.
    pub items: usize,
    pub n_items: usize,
    /// `[n_tiles][3]` flash tiles: (sequence, first token, count).
    pub tiles: usize,
    pub n_tiles: usize,
    /// Rows whose logits are wanted.
    pub wanted: usize,
    pub n_wanted: usize,
    pub seqs: usize,
}

impl Meta {
    /// Offset of layer `l`'s `[S]` slice of a per-layer section.
    pub fn layer(&self, section: usize, l: usize) -> usize {
        section + l * self.seqs
    }
}

/// Packs `plan` for a model of `layers` layers; `flash` says whether long runs may use flash
/// attention.
pub fn pack(plan: &StepPlan<'_>, layers: usize, arenas: &[SeqArena], flash: bool) -> Meta {
    let (t, s) = (plan.tokens.len(), plan.caches.len());
    let mut m = Meta { seqs: s, ..Default::default() };
    let put = |m: &mut Meta, v: &mut dyn Iterator<Item = i32>| {
        let at = m.ints.len();
        m.ints.extend(v);
        at
    };
    m.tok = put(&mut m, &mut plan.tokens.iter().map(|&x| x as i32));
    m.pos = put(&mut m, &mut plan.pos.iter().map(|&x| x as i32));
    m.seq = put(&mut m, &mut plan.seq.iter().map(|&x| x as i32));
    let mut starts = Vec::with_capacity(layers * s);
    let mut offs = Vec::with_capacity(layers * s);
    let mut tab = Vec::new();
    for l in 0..layers {
        for c in &plan.caches {
            let lc = c.layer(l);
            starts.push(lc.start() as i32);
            offs.push(tab.len() as i32);
            tab.extend(lc.block_ids().iter().map(|&b| b as i32));
        }
    }
    m.start = put(&mut m, &mut starts.into_iter());
    m.tab_off = put(&mut m, &mut offs.into_iter());
    m.tab = put(&mut m, &mut tab.into_iter());
    m.shift = put(&mut m, &mut arenas.iter().map(|a| a.shift as i32));
    let (mut items, mut tiles) = (Vec::new(), Vec::new());
    for (i, &(a, b)) in plan.ranges.iter().enumerate() {
        if flash && b - a >= FLASH_MIN_TOKENS {
            let mut at = a;
            while at < b {
                let n = (b - at).min(FLASH_ROWS);
                tiles.extend([i as i32, at as i32, n as i32]);
                at += n;
            }
        } else {
            items.extend((a..b).map(|x| x as i32));
        }
    }
    m.n_items = items.len();
    m.n_tiles = tiles.len() / 3;
    m.items = put(&mut m, &mut items.into_iter());
    m.tiles = put(&mut m, &mut tiles.into_iter());
    m.n_wanted = plan.wanted.len();
    m.wanted = put(&mut m, &mut plan.wanted.iter().map(|&x| x as i32));
    m.longs = arenas.iter().map(|a| a.table).collect();
    debug_assert!(m.ints.len() >= 3 * t);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TextConfig;
    use crate::kv_cache::test_arena::Ids;
    use crate::kv_cache::{BlockPool, KvCache};
    use std::sync::Arc;

    fn cfg() -> TextConfig {
        let json = r#"{"model_type": "llama4_text", "vocab_size": 100, "hidden_size": 8, "intermediate_size": 8,
            "intermediate_size_mlp": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 4, "num_local_experts": 2, "attention_chunk_size": 32, "no_rope_layers": [1, 0]}"#;
        TextConfig::from_json_str(json, std::path::Path::new("config.json")).expect("config")
    }

    #[test]
    fn a_mixed_step_packs_tables_per_layer_and_splits_attention_between_the_kernels() {
        let cfg = cfg();
        let pool = BlockPool::new(Arc::new(Ids::new(64, usize::MAX)), 16, 1000);
        let (mut a, mut b) = (KvCache::new(&cfg, pool.clone()), KvCache::new(&cfg, pool.clone()));
        // a: 40 positions seen, decodes one; b: a fresh prefill of 70 tokens.
        a.reserve(40).expect("room");
        a.commit();
        a.reserve(1).expect("room");
        b.reserve(70).expect("room");
        let mut tokens = vec![7u32];
        tokens.extend(0..70);
        let plan = StepPlan {
            tokens,
            pos: std::iter::once(40).chain(0..70).collect(),
            seq: std::iter::once(0).chain(std::iter::repeat_n(1, 70)).collect(),
            ranges: vec![(0, 1), (1, 71)],
            caches: vec![&a, &b],
            block_rows: 16,
            wanted: vec![0, 70],
        };
        let arenas = [SeqArena { table: 0xA000, shift: 6 }, SeqArena { table: 0xB000, shift: 31 }];
        let m = pack(&plan, 2, &arenas, true);
        let ints = &m.ints;
        assert_eq!(&ints[m.pos..m.pos + 3], &[40, 0, 1]);
        assert_eq!(&ints[m.seq..m.seq + 2], &[0, 1]);
        // layer 0 is chunked (32): a's cache starts at 32 after the commit; layer 1 keeps all.
        assert_eq!((ints[m.layer(m.start, 0)], ints[m.layer(m.start, 0) + 1]), (32, 0));
        assert_eq!((ints[m.layer(m.start, 1)], ints[m.layer(m.start, 1) + 1]), (0, 0));
        for l in 0..2 {
            for (s, c) in [&a, &b].iter().enumerate() {
                let off = ints[m.layer(m.tab_off, l) + s] as usize;
                let ids: Vec<u32> = ints[m.tab + off..][..c.layer(l).block_ids().len()].iter().map(|&x| x as u32).collect();
                assert_eq!(ids, c.layer(l).block_ids(), "layer {l} sequence {s}");
            }
        }
        assert_eq!(&ints[m.shift..m.shift + 2], &[6, 31]);
        assert_eq!(m.longs, vec![0xA000, 0xB000]);
        // the decode goes to the per-token kernel; the 70-token prefill to flash tiles of 64 + 6
        assert_eq!((m.n_items, &ints[m.items..m.items + 1]), (1, &[0][..]));
        assert_eq!(m.n_tiles, 2);
        assert_eq!(&ints[m.tiles..m.tiles + 6], &[1, 1, 64, 1, 65, 6]);
        assert_eq!(&ints[m.wanted..m.wanted + 2], &[0, 70]);
        // without flash every token takes the per-token kernel
        let m = pack(&plan, 2, &arenas, false);
        assert_eq!((m.n_items, m.n_tiles), (71, 0));
    }
}

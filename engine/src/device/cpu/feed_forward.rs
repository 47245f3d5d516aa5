//! Feed-forward blocks on the CPU: the dense gated MLP and the mixture of experts.
//!
//! Reference: `Llama4TextMLP`, `Llama4Router`, `Llama4TextMoe`, `Llama4TextExperts` in
//! transformers' `modeling_llama4.py`. The reference runs every expert on every token (with a
//! zero score for unrouted ones); herd groups tokens by expert and runs each expert on its own
//! tokens only, so the cost grows with `num_experts_per_tok`, not `num_local_experts`.

use crate::device::{Held, MlpSpec, MoeSpec, MoeWeights};
use crate::error::Result;
use crate::weights::{Weight, WeightSource};
use candle_core::DType;
use herd_kernels::activation::{sigmoid, silu_mul};
use herd_kernels::matmul::{Layout, Product, linear, products};
use herd_kernels::{WeightRef, scratch};
use std::sync::atomic::{AtomicU64, Ordering};

/// `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    gate_proj: Weight, // [inter, hidden]
    up_proj: Weight,   // [inter, hidden]
    down_proj: Weight, // [hidden, inter]
    inter: usize,
    hidden: usize,
}

impl Mlp {
    /// Loads the gate, up and down projections `spec` names.
    pub fn new(src: &dyn WeightSource, spec: &MlpSpec, dtype: DType) -> Result<Self> {
        let (hidden, inter) = (spec.hidden, spec.inter);
        Ok(Self {
            gate_proj: src.get(&spec.gate, &[inter, hidden], dtype)?,
            up_proj: src.get(&spec.up, &[inter, hidden], dtype)?,
            down_proj: src.get(&spec.down, &[hidden, inter], dtype)?,
            inter,
            hidden,
        })
    }

    /// `y [T, hidden] += mlp(x [T, hidden])`.
    pub fn forward_add(&self, x: &[f32], t: usize, y: &mut [f32]) {
        let i = self.inter;
        let (mut gate, mut up) = (scratch::zeroed(t * i), scratch::zeroed(t * i));
        products(&mut self.gate_up(x, t, &mut gate, &mut up));
        let mut act = scratch::zeroed(t * i);
        silu_mul(&gate, &up, &mut act); // silu(gate) * up
        products(&mut [self.down(&act, t, y)]);
    }

    /// The products `gate += x · gate_projᵀ` and `up += x · up_projᵀ` (`[T, inter]` each), to run
    /// in one parallel loop, possibly with others.
    fn gate_up<'a>(&'a self, x: &'a [f32], t: usize, gate: &'a mut [f32], up: &'a mut [f32]) -> [Product<'a>; 2] {
        let (h, i) = (self.hidden, self.inter);
        [
            Product { x, t, w: self.gate_proj.view(), layout: Layout::OutIn, in_dim: h, out_dim: i, y: gate },
            Product { x, t, w: self.up_proj.view(), layout: Layout::OutIn, in_dim: h, out_dim: i, y: up },
        ]
    }

    /// The product `y [T, hidden] += act · down_projᵀ`.
    fn down<'a>(&'a self, act: &'a [f32], t: usize, y: &'a mut [f32]) -> Product<'a> {
        Product { x: act, t, w: self.down_proj.view(), layout: Layout::OutIn, in_dim: self.inter, out_dim: self.hidden, y }
    }
}

impl Held for Mlp {
    /// Bytes of weights (all read per token).
    fn bytes(&self) -> usize {
        self.gate_proj.bytes() + self.up_proj.bytes() + self.down_proj.bytes()
    }
}

/// Router + routed experts + shared expert.
pub struct Moe {
    router: Weight,       // [experts, hidden]
    gate_up_proj: Weight, // [experts, hidden, 2 * inter]; gate is the first half of the last dim
    down_proj: Weight,    // [experts, inter, hidden]
    shared_expert: Mlp,
    experts: usize,
    top_k: usize,
    inter: usize,
    hidden: usize,
    /// Tokens routed to each expert since load (for expert-utilization analytics).
    counts: Vec<AtomicU64>,
}

impl Moe {
    /// Loads the router, the stacked experts and the shared expert `spec` names.
    pub fn new(src: &dyn WeightSource, spec: &MoeSpec, dtype: DType) -> Result<Self> {
        let (e, h, i) = (spec.experts, spec.hidden, spec.inter);
        Ok(Self {
            router: src.get(&spec.router, &[e, h], dtype)?,
            gate_up_proj: src.get(&spec.gate_up, &[e, h, 2 * i], dtype)?,
            down_proj: src.get(&spec.down, &[e, i, h], dtype)?,
            shared_expert: Mlp::new(src, &spec.shared, dtype)?,
            experts: e,
            top_k: spec.top_k,
            inter: i,
            hidden: h,
            counts: (0..e).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// `y [T, hidden] += moe(x [T, hidden])`.
    pub fn forward_add(&self, x: &[f32], t: usize, y: &mut [f32]) {
        let (e, h, i) = (self.experts, self.hidden, self.inter);
        // router_logits [T, E]; top-k per token; score = sigmoid(logit) of the selected ones.
        let mut logits = vec![0f32; t * e];
        linear(x, t, self.router.view(), e, h, &mut logits);
        let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e];
        let mut order: Vec<usize> = Vec::with_capacity(e);
        for (tok, row) in logits.chunks_exact(e).enumerate() {
            order.clear();
            order.extend(0..e);
            // Highest logit first; ties go to the lower expert index.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &ex in &order[..self.top_k] {
                routed[ex].push((tok, sigmoid(row[ex])));
            }
        }
        // Each expert on its tokens only: expert(score * x) (the score scales the expert's input).
        // The rows of all experts are laid out one expert after the other (`starts`). Each of the
        // two stages runs as one parallel loop over every routed expert and the shared expert,
        // whose products (compute-bound for a batch) run beside the experts' (memory-bound).
        let mut starts = Vec::with_capacity(e + 1);
        let mut xs = scratch::empty(t * self.top_k * h);
        for (ex, toks) in routed.iter().enumerate() {
            starts.push(xs.len() / h);
            if !toks.is_empty() {
                self.counts[ex].fetch_add(toks.len() as u64, Ordering::Relaxed);
            }
            for &(tok, score) in toks {
                xs.extend(x[tok * h..(tok + 1) * h].iter().map(|v| v * score));
            }
        }
        let rows = xs.len() / h;
        starts.push(rows);
        let (gu_w, down_w) = (self.gate_up_proj.view(), self.down_proj.view());
        let shared_i = self.shared_expert.inter;
        let mut gu = scratch::zeroed(rows * 2 * i);
        let (mut s_gate, mut s_up) = (scratch::zeroed(t * shared_i), scratch::zeroed(t * shared_i));
        {
            let mut stage = jobs(&xs, &mut gu, &starts, h, 2 * i, |ex| gu_w.slice(ex * h * 2 * i, h * 2 * i));
            stage.extend(self.shared_expert.gate_up(x, t, &mut s_gate, &mut s_up));
            products(&mut stage);
        }
        let mut act = scratch::zeroed(rows * i);
        for (row, a) in gu.chunks_exact(2 * i).zip(act.chunks_exact_mut(i)) {
            silu_mul(&row[..i], &row[i..], a); // up * silu(gate)
        }
        let mut s_act = scratch::zeroed(t * shared_i);
        silu_mul(&s_gate, &s_up, &mut s_act);
        let mut out = scratch::zeroed(rows * h);
        {
            let mut stage = jobs(&act, &mut out, &starts, i, h, |ex| down_w.slice(ex * i * h, i * h));
            stage.push(self.shared_expert.down(&s_act, t, y));
            products(&mut stage);
        }
        for (ex, toks) in routed.iter().enumerate() {
            for (r, &(tok, _)) in toks.iter().enumerate() {
                let src = &out[(starts[ex] + r) * h..(starts[ex] + r + 1) * h];
                for (a, b) in y[tok * h..(tok + 1) * h].iter_mut().zip(src) {
                    *a += b;
                }
            }
        }
    }
}

impl Held for Moe {
    fn bytes(&self) -> usize {
        self.router.bytes() + self.gate_up_proj.bytes() + self.down_proj.bytes() + self.shared_expert.bytes()
    }
}

impl MoeWeights for Moe {
    fn active_bytes(&self) -> usize {
        self.router.bytes() + self.top_k * (self.gate_up_proj.bytes() + self.down_proj.bytes()) / self.experts + self.shared_expert.bytes()
    }

    fn expert_counts(&self) -> Result<Vec<u64>> {
        Ok(self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect())
    }
}

/// One `y += x · W` product per expert with rows: expert `ex` owns rows
/// `starts[ex]..starts[ex + 1]` of `x [rows, in]` and `y [rows, out]`, and the weight `w(ex)`.
fn jobs<'a>(
    x: &'a [f32],
    y: &'a mut [f32],
    starts: &[usize],
    in_dim: usize,
    out_dim: usize,
    w: impl Fn(usize) -> WeightRef<'a>,
) -> Vec<Product<'a>> {
    let mut out = Vec::new();
    let mut rest = y;
    for (ex, pair) in starts.windows(2).enumerate() {
        let n = pair[1] - pair[0];
        let (mine, tail) = rest.split_at_mut(n * out_dim);
        rest = tail;
        if n > 0 {
            out.push(Product {
                x: &x[pair[0] * in_dim..pair[1] * in_dim],
                t: n,
                w: w(ex),
                layout: Layout::InOut,
                in_dim,
                out_dim,
                y: mine,
            });
        }
    }
    out
}

//! Typed launches of every kernel in `kernels/cuda/`: names, argument order and launch shapes
//! live here and nowhere else. Addresses are device addresses (`u64`); shapes are in elements.
//! Each function only queues work on the device's stream. The wrappers mirror their kernels'
//! signatures, device addresses and all, so they take many arguments.
#![allow(clippy::too_many_arguments)]

use super::{Arg, Error, Gemm, GemmType, Gpu, Result};

/// Element type of weights, of the KV cache and of the activations fed to products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dt {
    F32,
    Bf16,
}

impl Dt {
    /// Kernel name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::Bf16 => 2,
        }
    }

    /// Elements in 16 bytes (the vector width of the kernels' loads).
    pub fn per_16_bytes(self) -> usize {
        16 / self.size()
    }

    /// The cuBLAS operand type.
    pub fn gemm(self) -> GemmType {
        match self {
            Dt::F32 => GemmType::F32,
            Dt::Bf16 => GemmType::Bf16,
        }
    }
}

/// Element type of a checkpoint tensor being loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcDt {
    F32,
    Bf16,
    F16,
}

impl SrcDt {
    fn suffix(self) -> &'static str {
        match self {
            SrcDt::F32 => "f32",
            SrcDt::Bf16 => "bf16",
            SrcDt::F16 => "f16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SrcDt::F32 => 4,
            SrcDt::Bf16 | SrcDt::F16 => 2,
        }
    }
}

fn blocks(n: usize, per: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(per)).map_err(|_| Error::Invalid(format!("{n} elements need more than 2^32 blocks")))
}

fn int(name: &str, v: usize) -> Result<Arg> {
    i32::try_from(v).map(Arg::I32).map_err(|_| Error::Invalid(format!("{name} = {v} does not fit a 32-bit int")))
}

/// Grid of a grid-stride loop over `n` elements: enough blocks to fill a large GPU, no more.
fn stride_grid(n: usize) -> Result<[u32; 3]> {
    Ok([blocks(n, 256)?.clamp(1, 65_535), 1, 1])
}

/// `out = in` converted from `src` to `dst` (`n` elements). Same types: a device copy is cheaper.
pub fn convert(gpu: &Gpu, src: SrcDt, dst: Dt, input: u64, output: u64, n: usize) -> Result<()> {
    let name = format!("convert_{}_{}", src.suffix(), dst.suffix());
    gpu.launch(&name, stride_grid(n)?, [256, 1, 1], 0, &[Arg::Ptr(input), Arg::Ptr(output), Arg::U64(n as u64)])
}

/// `out[b][c][r] = in[b][r][c]` for `batches` matrices `[rows, cols]`, converting the elements.
pub fn transpose(gpu: &Gpu, src: SrcDt, dst: Dt, input: u64, output: u64, batches: usize, rows: usize, cols: usize) -> Result<()> {
    let name = format!("transpose_{}_{}", src.suffix(), dst.suffix());
    let grid = [blocks(cols, 32)?, blocks(rows, 32)?, u32::try_from(batches).map_err(|_| Error::Invalid("batches".into()))?];
    gpu.launch(&name, grid, [32, 8, 1], 0, &[Arg::Ptr(input), Arg::Ptr(output), int("rows", rows)?, int("cols", cols)?])
}

/// `n` values `mean + std · N(0, 1)` drawn from `seed` (each element's value depends on its index
/// only).
pub fn fill_random(gpu: &Gpu, dt: Dt, out: u64, n: usize, seed: u64, mean: f32, std: f32) -> Result<()> {
    let name = format!("fill_random_{}", dt.suffix());
    gpu.launch(&name, stride_grid(n)?, [256, 1, 1], 0, &[Arg::Ptr(out), Arg::U64(n as u64), Arg::U64(seed), Arg::F32(mean), Arg::F32(std)])
}

/// RMSNorm of `rows` rows of `x [*, dim]` f32 into `out [rows, dim]` (dtype `dt`); row `r` reads
/// `x[gather[r]]` when a gather list is given.
pub fn rms_norm(gpu: &Gpu, dt: Dt, x: u64, weight: u64, out: u64, gather: Option<u64>, rows: usize, dim: usize, eps: f32) -> Result<()> {
    let name = format!("rms_norm_{}", dt.suffix());
    let args = [Arg::Ptr(x), Arg::Ptr(weight), Arg::Ptr(out), Arg::Ptr(gather.unwrap_or(0)), int("dim", dim)?, Arg::F32(eps)];
    gpu.launch(&name, [blocks(rows, 1)?, 1, 1], [256, 1, 1], 0, &args)
}

/// `x [tokens, dim]` f32 = rows `ids` of `table`.
pub fn embed(gpu: &Gpu, dt: Dt, ids: u64, table: u64, x: u64, tokens: usize, dim: usize) -> Result<()> {
    let name = format!("embed_{}", dt.suffix());
    gpu.launch(&name, [blocks(tokens, 1)?, 1, 1], [256, 1, 1], 0, &[Arg::Ptr(ids), Arg::Ptr(table), Arg::Ptr(x), int("dim", dim)?])
}

/// One layer's view of the paged KV cache in a step (see `Kv` in `common.cuh`): per sequence its
/// slab table and shift, the position of cache row 0 and where its block ids start in `tab`.
#[derive(Clone, Copy, Debug)]
pub struct KvArgs {
    pub slab_tab: u64,
    pub shift: u64,
    pub start: u64,
    pub tab_off: u64,
    pub tab: u64,
    pub block_rows: usize,
}

impl KvArgs {
    fn args(&self) -> Result<[Arg; 6]> {
        Ok([
            Arg::Ptr(self.slab_tab),
            Arg::Ptr(self.shift),
            Arg::Ptr(self.start),
            Arg::Ptr(self.tab_off),
            Arg::Ptr(self.tab),
            int("block_rows", self.block_rows)?,
        ])
    }
}

/// Head counts and width of an attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn args(&self) -> Result<[Arg; 3]> {
        Ok([int("heads", self.heads)?, int("kv_heads", self.kv_heads)?, int("head_dim", self.head_dim)?])
    }

    /// Checks what the attention kernels assume.
    pub fn check(&self, dt: Dt) -> Result<()> {
        let Heads { heads, kv_heads, head_dim: d } = *self;
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::Invalid(format!("{heads} heads do not group over {kv_heads} key/value heads")));
        }
        if !d.is_multiple_of(2) || !d.is_multiple_of(dt.per_16_bytes()) || (heads / kv_heads) * d > 1024 {
            return Err(Error::Invalid(format!(
                "head_dim {d} with {} query heads per key/value head: the CUDA kernels need an even head_dim that is a multiple of {} and a group of at most 1024 values",
                heads / kv_heads,
                dt.per_16_bytes()
            )));
        }
        Ok(())
    }
}

/// The per-layer switches of `attn_prep`.
#[derive(Clone, Copy, Debug)]
pub struct Prep {
    pub rope: bool,
    pub qk_norm: bool,
    pub temperature_tuning: bool,
    pub eps: f32,
    pub floor_scale: f64,
    pub attn_scale: f64,
}

/// RoPE, QK norm and temperature of `qkv [tokens, (nh + 2 nkv) d]` (q in place), keys and values
/// into the cache rows of each token's position.
pub fn attn_prep(
    gpu: &Gpu,
    dt: Dt,
    qkv: u64,
    pos: u64,
    seq: u64,
    kv: &KvArgs,
    inv_freq: u64,
    h: &Heads,
    p: &Prep,
    tokens: usize,
) -> Result<()> {
    let name = format!("attn_prep_{}", dt.suffix());
    let mut args = vec![Arg::Ptr(qkv), Arg::Ptr(pos), Arg::Ptr(seq)];
    args.extend(kv.args()?);
    args.push(Arg::Ptr(inv_freq));
    args.extend(h.args()?);
    args.extend([
        Arg::I32(p.rope as i32),
        Arg::I32(p.qk_norm as i32),
        Arg::I32(p.temperature_tuning as i32),
        Arg::F32(p.eps),
        Arg::F64(p.floor_scale),
        Arg::F64(p.attn_scale),
    ]);
    gpu.launch(&name, [blocks(tokens, 1)?, 1, 1], [128, 1, 1], 0, &args)
}

/// Dynamic shared memory of `attend` for this head layout, bytes: a tile's 128 value-row
/// addresses, then the queries, scores and softmax state.
pub fn attend_smem(h: &Heads) -> usize {
    let g = h.heads / h.kv_heads;
    128 * 8 + (g * h.head_dim + g * 128 + 3 * g) * 4
}

/// Attention of the tokens `items` (a device list of token indices, or all `n` tokens when
/// `None`) over their sequences' cached rows; `out [tokens, nh d]` in dtype `dt`. `chunk` is the
/// layer's attention chunk (0: full attention).
pub fn attend(
    gpu: &Gpu,
    dt: Dt,
    qkv: u64,
    items: Option<u64>,
    n: usize,
    pos: u64,
    seq: u64,
    kv: &KvArgs,
    out: u64,
    h: &Heads,
    chunk: usize,
    scale: f32,
) -> Result<()> {
    let name = format!("attend_{}", dt.suffix());
    let mut args = vec![Arg::Ptr(qkv), Arg::Ptr(items.unwrap_or(0)), Arg::Ptr(pos), Arg::Ptr(seq)];
    args.extend(kv.args()?);
    args.push(Arg::Ptr(out));
    args.extend(h.args()?);
    args.extend([int("chunk", chunk)?, Arg::F32(scale)]);
    let smem = attend_smem(h) as u32;
    gpu.launch(&name, [blocks(n, 1)?, h.kv_heads as u32, 1], [128, 1, 1], smem, &args)
}

/// Query rows of a flash-attention tile.
pub const FLASH_ROWS: usize = 64;

/// Dynamic shared memory of `flash_prefill_bf16` for head width `d`, bytes.
pub fn flash_smem(d: usize) -> usize {
    let (q, k) = (FLASH_ROWS, 64);
    3 * q * (d + 8) * 2 + q * (k + 4) * 4 + q * (k + 8) * 2 + q * (d + 4) * 4 + 3 * q * 4
}

/// Whether `flash_prefill_bf16` handles this head layout (bf16, head_dim a multiple of 16).
pub fn flash_fits(dt: Dt, h: &Heads) -> bool {
    dt == Dt::Bf16 && h.head_dim.is_multiple_of(16) && h.head_dim <= 256
}

/// Flash attention of prefill tiles: `tiles [n_tiles][3]` = (sequence, first token index, count
/// ≤ 64) of consecutive positions. bf16 only.
pub fn flash_prefill(
    gpu: &Gpu,
    qkv: u64,
    tiles: u64,
    n_tiles: usize,
    pos: u64,
    kv: &KvArgs,
    out: u64,
    h: &Heads,
    chunk: usize,
    scale: f32,
) -> Result<()> {
    let mut args = vec![Arg::Ptr(qkv), Arg::Ptr(tiles), Arg::Ptr(pos)];
    args.extend(kv.args()?);
    args.push(Arg::Ptr(out));
    args.extend(h.args()?);
    args.extend([int("chunk", chunk)?, Arg::F32(scale)]);
    let smem = flash_smem(h.head_dim) as u32;
    gpu.allow_smem("flash_prefill_bf16", smem)?;
    gpu.launch("flash_prefill_bf16", [blocks(n_tiles, 1)?, h.heads as u32, 1], [128, 1, 1], smem, &args)
}

/// Tokens the GEMV kernels take per pass over the weights.
pub const GEMV_MAX_TOKENS: usize = 16;

/// The GEMV instance for at most `rows` rows per weight matrix: 1, 2, 4, 8 or 16.
pub fn gemv_width(rows: usize) -> usize {
    rows.clamp(1, GEMV_MAX_TOKENS).next_power_of_two()
}

/// The experts' row segments of a grouped product (from `moe_align`).
#[derive(Clone, Copy, Debug)]
pub struct Segments {
    /// `[E + 1]` first row of each expert.
    pub off: u64,
    /// `[E]` experts with rows, in order.
    pub active: u64,
    /// Device scalar: how many are active.
    pub n_active: u64,
    /// Upper bound of the active experts (the grid's y extent).
    pub max_active: usize,
    /// Upper bound of the rows of one expert (picks the GEMV instance).
    pub max_rows: usize,
}

/// `y [rows, n] (+)= x [rows, k] · Wᵀ` by GEMV: dense over `t` rows (`group` None, `w [n, k]`), or
/// grouped (`w [E, n, k]`, expert e on its segment's rows).
pub fn gemv(
    gpu: &Gpu,
    dt: Dt,
    w: u64,
    x: u64,
    y: u64,
    group: Option<&Segments>,
    t: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    if !k.is_multiple_of(dt.per_16_bytes()) {
        return Err(Error::Invalid(format!("GEMV over k = {k}: k must be a multiple of {}", dt.per_16_bytes())));
    }
    let width = gemv_width(group.map_or(t, |g| g.max_rows));
    let name = format!("gemv_{}_t{width}", dt.suffix());
    let (off, active, n_active, slots) = match group {
        Some(g) => (g.off, g.active, g.n_active, g.max_active),
        None => (0, 0, 0, 1),
    };
    let args = [
        Arg::Ptr(w),
        Arg::U64((n * k) as u64),
        Arg::Ptr(x),
        Arg::Ptr(y),
        Arg::Ptr(off),
        Arg::Ptr(active),
        Arg::Ptr(n_active),
        int("n", n)?,
        int("k", k)?,
        int("t", t)?,
        Arg::F32(if accumulate { 1.0 } else { 0.0 }),
    ];
    gpu.launch(&name, [blocks(n, 8)?, blocks(slots, 1)?, 1], [256, 1, 1], 0, &args)
}

/// `y [t, n] (+)= x [t, k] · Wᵀ`, `W [n, k]`: GEMV for up to [`GEMV_MAX_TOKENS`] rows, cuBLAS
/// beyond.
pub fn linear(gpu: &Gpu, dt: Dt, x: u64, w: u64, y: u64, t: usize, n: usize, k: usize, accumulate: bool) -> Result<()> {
    if t <= GEMV_MAX_TOKENS && k.is_multiple_of(dt.per_16_bytes()) {
        gemv(gpu, dt, w, x, y, None, t, n, k, accumulate)
    } else {
        gpu.gemm(&Gemm::linear(dt.gemm(), x, w, y, t, n, k, accumulate))
    }
}

/// Router top-k: `topk_id`/`topk_w [t, k]`, `counts [E]` incremented (zero it first), `totals
/// [E]` (u64) too.
pub fn moe_route(
    gpu: &Gpu,
    logits: u64,
    t: usize,
    experts: usize,
    k: usize,
    topk_id: u64,
    topk_w: u64,
    counts: u64,
    totals: u64,
) -> Result<()> {
    if experts > 64 * 32 || k > experts || k > 16 {
        return Err(Error::Invalid(format!("router of {experts} experts choosing {k}: at most 2048 experts and 16 choices")));
    }
    let args = [
        Arg::Ptr(logits),
        int("t", t)?,
        int("experts", experts)?,
        int("k", k)?,
        Arg::Ptr(topk_id),
        Arg::Ptr(topk_w),
        Arg::Ptr(counts),
        Arg::Ptr(totals),
    ];
    gpu.launch("moe_route", [blocks(t, 8)?, 1, 1], [256, 1, 1], 0, &args)
}

/// Where `moe_align` writes.
#[derive(Clone, Copy, Debug)]
pub struct AlignOut {
    pub off: u64,
    pub active: u64,
    pub n_active: u64,
    pub fill: u64,
    pub tile_expert: u64,
    pub max_tiles: usize,
}

/// Segments of each expert padded to `align` rows (see `moe_align` in moe.cu).
pub fn moe_align(gpu: &Gpu, counts: u64, experts: usize, align: usize, o: &AlignOut) -> Result<()> {
    if experts > 1024 {
        return Err(Error::Invalid(format!("{experts} experts: moe_align handles at most 1024")));
    }
    let args = [
        Arg::Ptr(counts),
        int("experts", experts)?,
        int("align", align)?,
        Arg::Ptr(o.off),
        Arg::Ptr(o.active),
        Arg::Ptr(o.n_active),
        Arg::Ptr(o.fill),
        Arg::Ptr(o.tile_expert),
        int("max_tiles", o.max_tiles)?,
    ];
    gpu.launch("moe_align", [1, 1, 1], [1024, 1, 1], 0, &args)
}

/// Places each (token, choice) in its expert's segment (`sorted_tok` must hold -1 beforehand).
pub fn moe_scatter(
    gpu: &Gpu,
    topk_id: u64,
    topk_w: u64,
    pairs: usize,
    k: usize,
    off: u64,
    fill: u64,
    sorted_tok: u64,
    sorted_w: u64,
    row_of: u64,
) -> Result<()> {
    let args = [
        Arg::Ptr(topk_id),
        Arg::Ptr(topk_w),
        int("pairs", pairs)?,
        int("k", k)?,
        Arg::Ptr(off),
        Arg::Ptr(fill),
        Arg::Ptr(sorted_tok),
        Arg::Ptr(sorted_w),
        Arg::Ptr(row_of),
    ];
    gpu.launch("moe_scatter", [blocks(pairs, 256)?, 1, 1], [256, 1, 1], 0, &args)
}

/// `xs[row] = xn[token] · score` for the rows `< *rows` (`row_bound` is their upper bound).
pub fn moe_gather(
    gpu: &Gpu,
    dt: Dt,
    xn: u64,
    sorted_tok: u64,
    sorted_w: u64,
    rows: u64,
    row_bound: usize,
    xs: u64,
    dim: usize,
) -> Result<()> {
    let name = format!("moe_gather_{}", dt.suffix());
    let args = [Arg::Ptr(xn), Arg::Ptr(sorted_tok), Arg::Ptr(sorted_w), Arg::Ptr(rows), Arg::Ptr(xs), int("dim", dim)?];
    gpu.launch(&name, [blocks(row_bound, 1)?, 1, 1], [256, 1, 1], 0, &args)
}

/// `act [rows, inter] = silu(gate) · up` from `gu [rows, 2 inter]` (gate first); the rows past
/// `*rows` (when given) are skipped.
pub fn silu_mul(gpu: &Gpu, dt: Dt, gu: u64, act: u64, inter: usize, rows: Option<u64>, row_bound: usize) -> Result<()> {
    let name = format!("silu_mul_{}", dt.suffix());
    let args = [Arg::Ptr(gu), Arg::Ptr(act), int("inter", inter)?, Arg::Ptr(rows.unwrap_or(0))];
    gpu.launch(&name, [blocks(row_bound, 1)?, 1, 1], [256, 1, 1], 0, &args)
}

/// `x[t] += Σ out[row]` over token t's `k` expert rows, lowest expert first.
pub fn moe_combine(gpu: &Gpu, x: u64, out: u64, row_of: u64, topk_id: u64, t: usize, k: usize, dim: usize) -> Result<()> {
    let args = [Arg::Ptr(x), Arg::Ptr(out), Arg::Ptr(row_of), Arg::Ptr(topk_id), int("k", k)?, int("dim", dim)?];
    gpu.launch("moe_combine", [blocks(t, 1)?, 1, 1], [256, 1, 1], 0, &args)
}

/// Rows of one tile of the grouped GEMM (the alignment its segments need).
pub const GEMM_TILE_ROWS: usize = 64;

/// Whether the tensor-core grouped GEMM takes these shapes.
pub fn grouped_gemm_fits(dt: Dt, n: usize, k: usize) -> bool {
    dt == Dt::Bf16 && k.is_multiple_of(32) && n.is_multiple_of(16)
}

/// `c [rows, n] = a [rows, k] · B_eᵀ` over 64-row tiles, tile i of expert `tile_expert[i]`.
pub fn grouped_gemm(gpu: &Gpu, a: u64, b: u64, c: u64, tile_expert: u64, max_tiles: usize, n: usize, k: usize) -> Result<()> {
    if !grouped_gemm_fits(Dt::Bf16, n, k) {
        return Err(Error::Invalid(format!("grouped GEMM of n = {n}, k = {k}: needs k % 32 == 0 and n % 16 == 0")));
    }
    let args = [Arg::Ptr(a), Arg::Ptr(b), Arg::U64((n * k) as u64), Arg::Ptr(c), Arg::Ptr(tile_expert), int("n", n)?, int("k", k)?];
    gpu.launch("grouped_gemm_bf16", [blocks(n, 128)?, blocks(max_tiles, 1)?, 1], [256, 1, 1], 0, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_instances_cover_every_row_count() {
        let widths: Vec<usize> = [0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 64].iter().map(|&r| gemv_width(r)).collect();
        assert_eq!(widths, vec![1, 1, 2, 4, 4, 8, 8, 16, 16, 16, 16]);
    }

    #[test]
    fn head_layouts_the_kernels_cannot_take_are_refused_with_the_reason() {
        let ok = Heads { heads: 40, kv_heads: 8, head_dim: 128 };
        assert!(ok.check(Dt::Bf16).is_ok());
        let e = Heads { heads: 6, kv_heads: 4, head_dim: 64 }.check(Dt::Bf16).expect_err("6 over 4");
        assert!(e.to_string().contains("do not group"), "{e}");
        let e = Heads { heads: 4, kv_heads: 2, head_dim: 12 }.check(Dt::Bf16).expect_err("12 is no multiple of 8");
        assert!(e.to_string().contains("head_dim 12"), "{e}");
        assert!(Heads { heads: 4, kv_heads: 2, head_dim: 12 }.check(Dt::F32).is_ok(), "f32 loads 4 at a time");
    }

    #[test]
    fn flash_attention_fits_hoppers_shared_memory_at_scouts_head_width() {
        // Scout: head_dim 128 -> ~111 KB of the 227 KB a block may have on an H100/H200.
        assert!(flash_smem(128) < 227 * 1024, "{}", flash_smem(128));
        assert!(flash_fits(Dt::Bf16, &Heads { heads: 40, kv_heads: 8, head_dim: 128 }));
        assert!(!flash_fits(Dt::F32, &Heads { heads: 40, kv_heads: 8, head_dim: 128 }), "flash is bf16 only");
        assert!(!flash_fits(Dt::Bf16, &Heads { heads: 4, kv_heads: 2, head_dim: 40 }));
        assert_eq!(attend_smem(&Heads { heads: 40, kv_heads: 8, head_dim: 128 }), 1024 + (5 * 128 + 5 * 128 + 15) * 4);
    }

    #[test]
    fn the_grouped_gemm_takes_scouts_expert_shapes_only_in_bf16() {
        assert!(grouped_gemm_fits(Dt::Bf16, 16384, 5120) && grouped_gemm_fits(Dt::Bf16, 5120, 8192));
        assert!(!grouped_gemm_fits(Dt::F32, 16384, 5120));
        assert!(!grouped_gemm_fits(Dt::Bf16, 100, 5120), "n % 16");
        assert!(!grouped_gemm_fits(Dt::Bf16, 128, 40), "k % 32");
    }
}

//! Speed of the CUDA kernels at Llama 4 Scout's shapes, one JSON line per measurement:
//! `cargo run --release --example cuda_kbench` on a GPU machine (`--emulated` runs tiny shapes on
//! the CPU emulation, to check the program itself). Weights rotate among several copies larger than
//! the L2 cache, so bandwidth figures are HBM's.

use herd_kernels::cuda::ops::{self, Dt};
use herd_kernels::cuda::{DevBuf, Gemm, Gpu};
use std::sync::Arc;
use std::time::Instant;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> R<()> {
    let emulated = std::env::args().any(|a| a == "--emulated");
    let gpu = if emulated { Gpu::emulated()? } else { Gpu::open(0)? };
    let info = gpu.info();
    println!(
        "{}",
        serde_line(&[("device", info.name.clone()), ("arch", format!("{:?}", info.arch)), ("sms", info.multiprocessors.to_string())])
    );
    // Scout: hidden 5120, expert width 8192 (gate+up 16384), 40/8 heads of 128.
    let (h, inter, reps) = if emulated { (256, 128, 2) } else { (5120, 8192, 20) };
    gemv_bandwidth(&gpu, h, 2 * inter, reps)?;
    gemm_rate(&gpu, h, 2 * inter, if emulated { 128 } else { 2048 }, reps)?;
    grouped_rate(&gpu, h, 2 * inter, 16, if emulated { 128 } else { 2048 }, reps)?;
    flash_rate(
        &gpu,
        if emulated { 128 } else { 2048 },
        if emulated { 4 } else { 40 },
        if emulated { 2 } else { 8 },
        if emulated { 32 } else { 128 },
        reps,
    )?;
    Ok(())
}

fn serde_line(kv: &[(&str, String)]) -> String {
    let body: Vec<String> =
        kv.iter().map(|(k, v)| format!("\"{k}\": {}", if v.parse::<f64>().is_ok() { v.clone() } else { format!("\"{v}\"") })).collect();
    format!("{{{}}}", body.join(", "))
}

/// Seconds per call of `f` (mean of `reps` after one warm-up), the device drained before and after.
fn time(gpu: &Gpu, reps: usize, mut f: impl FnMut(usize) -> R<()>) -> R<f64> {
    f(0)?;
    gpu.sync()?;
    let t = Instant::now();
    for i in 0..reps {
        f(i)?;
    }
    gpu.sync()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

fn random(gpu: &Arc<Gpu>, dt: Dt, n: usize, seed: u64) -> R<DevBuf> {
    let b = gpu.alloc(n * dt.size())?;
    ops::fill_random(gpu, dt, b.ptr(), n, seed, 0.0, 0.02)?;
    Ok(b)
}

fn gemv_bandwidth(gpu: &Arc<Gpu>, k: usize, n: usize, reps: usize) -> R<()> {
    let dt = Dt::Bf16;
    let copies = 4; // 4 x 168 MB: larger than the L2
    let ws: Vec<DevBuf> = (0..copies).map(|i| random(gpu, dt, n * k, i as u64)).collect::<R<_>>()?;
    for t in [1usize, 2, 4, 8, 16, 32, 64] {
        let x = random(gpu, dt, t * k, 99)?;
        let y = gpu.alloc(t * n * 4)?;
        let secs = time(gpu, reps, |i| Ok(ops::linear(gpu, dt, x.ptr(), ws[i % copies].ptr(), y.ptr(), t, n, k, false)?))?;
        let bytes = (n * k * 2) as f64;
        let path = if t <= ops::GEMV_MAX_TOKENS { "gemv" } else { "cublas" };
        println!(
            "{}",
            serde_line(&[
                ("kernel", format!("linear_{path}_bf16")),
                ("tokens", t.to_string()),
                ("n", n.to_string()),
                ("k", k.to_string()),
                ("us", format!("{:.1}", secs * 1e6)),
                ("weight_gb_per_s", format!("{:.0}", bytes / secs / 1e9)),
            ])
        );
    }
    Ok(())
}

fn gemm_rate(gpu: &Arc<Gpu>, k: usize, n: usize, m: usize, reps: usize) -> R<()> {
    let dt = Dt::Bf16;
    let (x, w) = (random(gpu, dt, m * k, 1)?, random(gpu, dt, n * k, 2)?);
    let y = gpu.alloc(m * n * 4)?;
    let secs = time(gpu, reps, |_| Ok(gpu.gemm(&Gemm::linear(dt.gemm(), x.ptr(), w.ptr(), y.ptr(), m, n, k, false))?))?;
    let flops = 2.0 * (m * n * k) as f64;
    println!(
        "{}",
        serde_line(&[
            ("kernel", "cublas_gemm_bf16".into()),
            ("m", m.to_string()),
            ("n", n.to_string()),
            ("k", k.to_string()),
            ("us", format!("{:.1}", secs * 1e6)),
            ("tflops", format!("{:.1}", flops / secs / 1e12))
        ])
    );
    Ok(())
}

fn grouped_rate(gpu: &Arc<Gpu>, k: usize, n: usize, experts: usize, tokens: usize, reps: usize) -> R<()> {
    let dt = Dt::Bf16;
    let per = tokens / experts; // every expert gets the same share, a multiple of 64 here
    let tiles_per = per.div_ceil(ops::GEMM_TILE_ROWS);
    let tiles: Vec<i32> = (0..experts).flat_map(|e| std::iter::repeat_n(e as i32, tiles_per)).collect();
    let rows = tiles.len() * ops::GEMM_TILE_ROWS;
    let (x, w) = (random(gpu, dt, rows * k, 3)?, random(gpu, dt, experts * n * k, 4)?);
    let (y, td) = (gpu.alloc(rows * n * 4)?, gpu.upload(&tiles)?);
    let secs = time(gpu, reps, |_| Ok(ops::grouped_gemm(gpu, x.ptr(), w.ptr(), y.ptr(), td.ptr(), tiles.len(), n, k)?))?;
    let flops = 2.0 * (tokens * n * k) as f64;
    println!(
        "{}",
        serde_line(&[
            ("kernel", "grouped_gemm_bf16".into()),
            ("tokens", tokens.to_string()),
            ("experts", experts.to_string()),
            ("n", n.to_string()),
            ("k", k.to_string()),
            ("us", format!("{:.1}", secs * 1e6)),
            ("tflops", format!("{:.1}", flops / secs / 1e12)),
        ])
    );
    Ok(())
}

/// One sequence of `t` new tokens (a prefill) attending causally over itself.
fn flash_rate(gpu: &Arc<Gpu>, t: usize, nh: usize, nkv: usize, d: usize, reps: usize) -> R<()> {
    let dt = Dt::Bf16;
    let (br, kvd) = (16usize, nkv * d);
    let blocks = t.div_ceil(br);
    let slab = gpu.zeros(blocks * 2 * br * kvd * 2)?;
    let slab_tab = gpu.upload(&[slab.ptr()])?;
    let (seq_tab, shift, start) = (gpu.upload(&[slab_tab.ptr()])?, gpu.upload(&[31i32])?, gpu.upload(&[0i32])?);
    let tab = gpu.upload(&(0..blocks as i32).collect::<Vec<_>>())?;
    let kv = ops::KvArgs {
        slab_tab: seq_tab.ptr(),
        shift: shift.ptr(),
        start: start.ptr(),
        tab_off: start.ptr(),
        tab: tab.ptr(),
        block_rows: br,
    };
    let heads = ops::Heads { heads: nh, kv_heads: nkv, head_dim: d };
    let qkv = random(gpu, Dt::F32, t * (nh + 2 * nkv) * d, 5)?;
    let pos = gpu.upload(&(0..t as i32).collect::<Vec<_>>())?;
    let seq = gpu.upload(&vec![0i32; t])?;
    let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / d as f32)).collect();
    let inv = gpu.upload(&inv)?;
    let prep = ops::Prep { rope: true, qk_norm: true, temperature_tuning: false, eps: 1e-5, floor_scale: 8192.0, attn_scale: 0.1 };
    ops::attn_prep(gpu, dt, qkv.ptr(), pos.ptr(), seq.ptr(), &kv, inv.ptr(), &heads, &prep, t)?;
    let tiles: Vec<i32> = (0..t).step_by(ops::FLASH_ROWS).flat_map(|i| [0, i as i32, (t - i).min(ops::FLASH_ROWS) as i32]).collect();
    let td = gpu.upload(&tiles)?;
    let out = gpu.alloc(t * nh * d * 2)?;
    let scale = (d as f32).powf(-0.5);
    let secs = time(gpu, reps, |_| {
        Ok(ops::flash_prefill(gpu, qkv.ptr(), td.ptr(), tiles.len() / 3, pos.ptr(), &kv, out.ptr(), &heads, 0, scale)?)
    })?;
    let flops = 4.0 * (nh * d) as f64 * (t * (t + 1) / 2) as f64;
    println!(
        "{}",
        serde_line(&[
            ("kernel", "flash_prefill_bf16".into()),
            ("tokens", t.to_string()),
            ("heads", nh.to_string()),
            ("us", format!("{:.1}", secs * 1e6)),
            ("tflops", format!("{:.1}", flops / secs / 1e12))
        ])
    );
    let secs =
        time(gpu, reps.min(3), |_| Ok(ops::attend(gpu, dt, qkv.ptr(), None, t, pos.ptr(), seq.ptr(), &kv, out.ptr(), &heads, 0, scale)?))?;
    println!(
        "{}",
        serde_line(&[
            ("kernel", "attend_bf16_same_work".into()),
            ("tokens", t.to_string()),
            ("us", format!("{:.1}", secs * 1e6)),
            ("tflops", format!("{:.1}", flops / secs / 1e12))
        ])
    );
    drop((slab, slab_tab, seq_tab, shift, start, tab));
    Ok(())
}

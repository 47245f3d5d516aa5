//! Kernel micro-benchmark on bench16 shapes (2 threads: `HERD_THREADS=2`): weight bandwidth and
//! GFLOP/s of `matmul_xw` and `linear` at a few token counts, weights cycled through 64 copies so
//! they come from memory, not cache. `cargo run --release -p herd-kernels --example kbench`.
use herd_kernels::WeightRef;
use herd_kernels::matmul::{linear, matmul_xw};
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "attention") {
        return attention();
    }
    let copies = 64; // 64 × 8 MB > L3
    // expert gate_up [512, 2048] with T=1 and T=2
    let (inn, out) = (512usize, 2048usize);
    let ws: Vec<Vec<f32>> = (0..copies).map(|c| (0..inn * out).map(|i| ((i * 7 + c) % 13) as f32 * 0.01).collect()).collect();
    for t in [1usize, 2] {
        let x: Vec<f32> = (0..t * inn).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut y = vec![0f32; t * out];
        let reps = 640;
        let t0 = Instant::now();
        for r in 0..reps {
            matmul_xw(&x, t, WeightRef::F32(&ws[r % copies]), inn, out, &mut y, false);
        }
        let dt = t0.elapsed().as_secs_f64();
        let bytes = (reps * inn * out * 4) as f64;
        println!(
            "matmul_xw T={t:2} [{inn},{out}]: {:.1} GB/s  {:.1} GFLOP/s  {:.3} ms/call",
            bytes / dt / 1e9,
            2.0 * t as f64 * (reps * inn * out) as f64 / dt / 1e9,
            dt * 1e3 / reps as f64
        );
    }
    for (o, i) in [(2048usize, 512usize), (512, 1024), (512, 512), (128, 512)] {
        let ws: Vec<Vec<f32>> = (0..copies).map(|c| (0..o * i).map(|k| ((k * 7 + c) % 13) as f32 * 0.01).collect()).collect();
        for t in [1usize, 4, 16] {
            let x: Vec<f32> = (0..t * i).map(|k| (k % 5) as f32 * 0.1).collect();
            let mut y = vec![0f32; t * o];
            let reps = 640;
            let t0 = Instant::now();
            for r in 0..reps {
                linear(&x, t, WeightRef::F32(&ws[r % copies]), o, i, &mut y);
            }
            let dt = t0.elapsed().as_secs_f64();
            let bytes = (reps * i * o * 4) as f64;
            println!(
                "linear T={t:2} [{o},{i}]: {:.1} GB/s  {:.1} GFLOP/s  {:.3} ms/call",
                bytes / dt / 1e9,
                2.0 * t as f64 * (reps * i * o) as f64 / dt / 1e9,
                dt * 1e3 / reps as f64
            );
        }
    }
}

#[allow(dead_code)]
fn attention() {
    use herd_kernels::attention::{KvBlocks, attend, attend_group};
    let (br, st, d, n) = (16usize, 128usize, 64usize, 512usize);
    let blocks: Vec<Vec<f32>> = (0..n / br).map(|b| (0..2 * br * st).map(|i| ((i + b) % 17) as f32 * 0.01).collect()).collect();
    let q: Vec<f32> = (0..4 * d).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut scores = vec![0f32; 4 * n];
    let mut out = vec![0f32; 4 * d];
    let reps = 2000;
    let t0 = Instant::now();
    for _ in 0..reps {
        let kv = KvBlocks { blocks: &blocks, block_rows: br, stride: st, col: 64, first: 0, n };
        attend_group(&q, 4, kv, 0.125, &mut scores, &mut out);
    }
    println!("attend_group g=4 n={n}: {:.1} us/call", t0.elapsed().as_secs_f64() * 1e6 / reps as f64);
    let t0 = Instant::now();
    for _ in 0..reps {
        for h in 0..4 {
            let kv = KvBlocks { blocks: &blocks, block_rows: br, stride: st, col: 64, first: 0, n };
            attend(&q[h * d..(h + 1) * d], kv, 0.125, &mut scores, &mut out[h * d..(h + 1) * d]);
        }
    }
    println!("attend x4 n={n}: {:.1} us/call", t0.elapsed().as_secs_f64() * 1e6 / reps as f64);
}

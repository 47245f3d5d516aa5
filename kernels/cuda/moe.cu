// Mixture of experts on the device, without a host round trip: the sigmoid top-k router, the
// permutation of (token, expert) pairs by expert (count -> prefix sum -> segments aligned to the
// GEMM tile, as vLLM's moe_align_block_size), the gather of routed inputs scaled by their score,
// SiLU·mul, and the un-permute that adds each token's expert outputs in expert order.

// Top-k of each token's router logits [T, E] (ties to the lower expert), score = sigmoid(logit).
// counts[e] (zeroed before) gets the tokens of each expert, totals[e] the running count since
// load. Grid (ceil(T / 8)), block 256: one warp per token.
extern "C" __global__ void __launch_bounds__(256)
    moe_route(const float* logits, int T, int E, int k, int* topk_id, float* topk_w, int* counts, u64* totals) {
  const int lane = threadIdx.x % 32, t = blockIdx.x * 8 + threadIdx.x / 32;
  if (t >= T) return;
  const float* row = logits + static_cast<long long>(t) * E;
  u64 taken = 0;  // bit j: this lane's expert lane + 32 j is chosen already
  for (int r = 0; r < k; r++) {
    float bv = -HERD_INF;
    int bi = 0x7fffffff;
    for (int j = 0; lane + 32 * j < E; j++) {
      const float v = row[lane + 32 * j];
      if (!((taken >> j) & 1ull) && (v > bv || (v == bv && lane + 32 * j < bi))) {
        bv = v;
        bi = lane + 32 * j;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (bi % 32 == lane) taken |= 1ull << (bi / 32);
    if (lane == 0) {
      topk_id[t * k + r] = bi;
      topk_w[t * k + r] = 1.0f / (1.0f + expf(-bv));
      atomicAdd(&counts[bi], 1);
      atomicAdd(&totals[bi], 1ull);
    }
  }
}

// Exclusive prefix sum over the block (blockDim.x <= 1024 values, one per thread).
__device__ int block_scan(int v, int* buf) {
  const int tid = threadIdx.x;
  buf[tid] = v;
  __syncthreads();
  for (int o = 1; o < static_cast<int>(blockDim.x); o <<= 1) {
    const int add = tid >= o ? buf[tid - o] : 0;
    __syncthreads();
    buf[tid] += add;
    __syncthreads();
  }
  const int inclusive = buf[tid];
  __syncthreads();
  return inclusive - v;
}

// Segments: expert e owns rows off[e] .. off[e] + counts[e], its segment padded to a multiple of
// `align` (off[E] = all rows, padding included); active[] lists the experts with tokens, in
// order, *n_active of them; fill[] is zeroed for moe_scatter; tile_expert[i] is the expert of
// `align`-row tile i, or -1 past the last (max_tiles entries). Grid 1, block 1024 (E <= 1024).
extern "C" __global__ void __launch_bounds__(1024)
    moe_align(const int* counts, int E, int align, int* off, int* active, int* n_active, int* fill, int* tile_expert,
              int max_tiles) {
  __shared__ int buf[1024];
  const int e = threadIdx.x;
  const int c = e < E ? counts[e] : 0;
  const int padded = (c + align - 1) / align * align;
  const int start = block_scan(padded, buf);
  const int slot = block_scan(c > 0 ? 1 : 0, buf);
  if (e < E) {
    off[e] = start;
    fill[e] = 0;
    if (c > 0) active[slot] = e;
    if (e == E - 1) {
      off[E] = start + padded;
      *n_active = slot + (c > 0 ? 1 : 0);
    }
    for (int i = 0; i < padded / align; i++)
      if (start / align + i < max_tiles) tile_expert[start / align + i] = e;
  }
  __syncthreads();
  const int used = off[E] / align;
  for (int i = used + e; i < max_tiles; i += blockDim.x) tile_expert[i] = -1;
}

// Each (token, choice) i < n takes the next row of its expert's segment: sorted_tok[row] = token,
// sorted_w[row] = score, row_of[i] = row. Rows no pair takes keep the -1 set before.
extern "C" __global__ void __launch_bounds__(256)
    moe_scatter(const int* topk_id, const float* topk_w, int n, int k, const int* off, int* fill, int* sorted_tok,
                float* sorted_w, int* row_of) {
  const int i = blockIdx.x * 256 + threadIdx.x;
  if (i >= n) return;
  const int e = topk_id[i];
  const int row = off[e] + atomicAdd(&fill[e], 1);
  sorted_tok[row] = i / k;
  sorted_w[row] = topk_w[i];
  row_of[i] = row;
}

// xs[row] = xn[sorted_tok[row]] * sorted_w[row] (zeros on padding rows), rows < off[E].
// Grid (row bound), block 256.
template <typename W>
__device__ void moe_gather_impl(const W* __restrict__ xn, const int* __restrict__ sorted_tok, const float* __restrict__ sorted_w,
                                const int* __restrict__ rows, W* __restrict__ xs, int h) {
  const int row = blockIdx.x;
  if (row >= *rows) return;
  const int tok = sorted_tok[row];
  W* o = xs + static_cast<long long>(row) * h;
  if (tok < 0) {
    for (int i = threadIdx.x; i < h; i += blockDim.x) o[i] = from_f<W>(0.0f);
    return;
  }
  const W* src = xn + static_cast<long long>(tok) * h;
  const float w = sorted_w[row];
  for (int i = threadIdx.x; i < h; i += blockDim.x) o[i] = from_f<W>(to_f(src[i]) * w);
}
extern "C" __global__ void __launch_bounds__(256)
    moe_gather_f32(const float* xn, const int* sorted_tok, const float* sorted_w, const int* rows, float* xs, int h) {
  moe_gather_impl(xn, sorted_tok, sorted_w, rows, xs, h);
}
extern "C" __global__ void __launch_bounds__(256)
    moe_gather_bf16(const bf16* xn, const int* sorted_tok, const float* sorted_w, const int* rows, bf16* xs, int h) {
  moe_gather_impl(xn, sorted_tok, sorted_w, rows, xs, h);
}

// act[r][i] = silu(gu[r][i]) * gu[r][inter + i] (gate first, up second), rows r < *rows (or the
// row bound when rows is null). Grid (row bound), block 256.
template <typename W>
__device__ void silu_mul_impl(const float* __restrict__ gu, W* __restrict__ act, int inter, const int* __restrict__ rows) {
  const int r = blockIdx.x;
  if (rows && r >= *rows) return;
  const float* g = gu + static_cast<long long>(r) * 2 * inter;
  W* o = act + static_cast<long long>(r) * inter;
  for (int i = threadIdx.x; i < inter; i += blockDim.x) {
    const float x = g[i];
    o[i] = from_f<W>(x / (1.0f + expf(-x)) * g[inter + i]);
  }
}
extern "C" __global__ void __launch_bounds__(256) silu_mul_f32(const float* gu, float* act, int inter, const int* rows) {
  silu_mul_impl(gu, act, inter, rows);
}
extern "C" __global__ void __launch_bounds__(256) silu_mul_bf16(const float* gu, bf16* act, int inter, const int* rows) {
  silu_mul_impl(gu, act, inter, rows);
}

// x[t] += out[row_of[t k + j]] for the token's k experts, lowest expert first (the CPU engine's
// order). Grid (T), block 256; k <= 16.
extern "C" __global__ void __launch_bounds__(256)
    moe_combine(float* x, const float* out, const int* row_of, const int* topk_id, int k, int h) {
  const int t = blockIdx.x;
  int rows[16], ex[16];
  for (int j = 0; j < k; j++) {
    ex[j] = topk_id[t * k + j];
    rows[j] = row_of[t * k + j];
  }
  for (int a = 1; a < k; a++)
    for (int b = a; b > 0 && ex[b - 1] > ex[b]; b--) {
      const int te = ex[b], tr = rows[b];
      ex[b] = ex[b - 1];
      rows[b] = rows[b - 1];
      ex[b - 1] = te;
      rows[b - 1] = tr;
    }
  float* xr = x + static_cast<long long>(t) * h;
  for (int i = threadIdx.x; i < h; i += blockDim.x) {
    float v = xr[i];
    for (int j = 0; j < k; j++) v += out[static_cast<long long>(rows[j]) * h + i];
    xr[i] = v;
  }
}

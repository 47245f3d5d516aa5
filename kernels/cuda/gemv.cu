// Matrix-vector products for small batches (decode): y [rows, N] (+)= x [rows, K] · W^T with W
// [N, K] (K contiguous), one warp per output row, 16-byte weight loads, each weight vector used
// for up to TT tokens before the next is read. Memory-bound: every weight byte is read once per
// TT tokens.
//
// Grouped (experts): W is [E, N, K] and the rows of expert e are off[e] .. off[e + 1]; grid.y runs
// over the active experts (active[slot], slot < *n_active), so experts no token chose cost
// nothing. Dense: off is null and the rows are 0 .. T.
// Grid (ceil(N / 8), slots), block 256 (8 warps).

template <typename W, int TT>
__device__ void gemv_impl(const W* __restrict__ w, long long w_stride, const W* __restrict__ x, float* __restrict__ y,
                          const int* __restrict__ off, const int* __restrict__ active, const int* __restrict__ n_active,
                          int N, int K, int T, float beta) {
  constexpr int V = Vec16<W>::N;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n = blockIdx.x * 8 + warp;
  int r0 = 0, cnt = T;
  const W* wm = w;
  if (off) {
    const int slot = blockIdx.y;
    if (slot >= *n_active) return;
    const int e = active[slot];
    r0 = off[e];
    cnt = off[e + 1] - r0;
    wm = w + static_cast<long long>(e) * w_stride;
  }
  if (n >= N) return;
  const W* wr = wm + static_cast<long long>(n) * K;
  for (int tb = 0; tb < cnt; tb += TT) {
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; t++) acc[t] = 0.0f;
#pragma unroll 4
    for (int k0 = lane * V; k0 < K; k0 += 32 * V) {
      float wv[V];
      load16(wr + k0, wv);
#pragma unroll
      for (int t = 0; t < TT; t++) {
        if (tb + t < cnt) {
          float xv[V];
          load16(x + static_cast<long long>(r0 + tb + t) * K + k0, xv);
#pragma unroll
          for (int u = 0; u < V; u++) acc[t] += wv[u] * xv[u];
        }
      }
    }
#pragma unroll
    for (int t = 0; t < TT; t++) acc[t] = warp_sum(acc[t]);
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < TT; t++) {
        if (tb + t < cnt) {
          float* yp = y + static_cast<long long>(r0 + tb + t) * N + n;
          *yp = beta != 0.0f ? acc[t] + beta * *yp : acc[t];
        }
      }
    }
  }
}

// One declaration per instance (the host reads kernel names from `extern "C" __global__ void`).
extern "C" __global__ void __launch_bounds__(256) gemv_f32_t1(const float* w, long long w_stride, const float* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<float, 1>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_f32_t2(const float* w, long long w_stride, const float* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<float, 2>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_f32_t4(const float* w, long long w_stride, const float* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<float, 4>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_f32_t8(const float* w, long long w_stride, const float* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<float, 8>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_f32_t16(const float* w, long long w_stride, const float* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<float, 16>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_bf16_t1(const bf16* w, long long w_stride, const bf16* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<bf16, 1>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_bf16_t2(const bf16* w, long long w_stride, const bf16* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<bf16, 2>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_bf16_t4(const bf16* w, long long w_stride, const bf16* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<bf16, 4>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_bf16_t8(const bf16* w, long long w_stride, const bf16* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<bf16, 8>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }
extern "C" __global__ void __launch_bounds__(256) gemv_bf16_t16(const bf16* w, long long w_stride, const bf16* x, float* y, const int* off, const int* active, const int* n_active, int N, int K, int T, float beta) { gemv_impl<bf16, 16>(w, w_stride, x, y, off, active, n_active, N, K, T, beta); }

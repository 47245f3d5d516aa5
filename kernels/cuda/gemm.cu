// Grouped expert GEMM for prefill, bf16 on the tensor cores (wmma 16x16x16, f32 accumulation):
// C [rows, N] f32 = A [rows, K] · B_e^T, B_e = b + e * b_stride holding [N, K]. The rows are the
// experts' segments cut into 64-row tiles (moe_align with align 64); tile i belongs to expert
// tile_expert[i], -1 past the last. A block computes a 64 x 128 tile of C over K in steps of 32,
// loading the next step's A and B with cp.async while it multiplies this one (two stages).
// Grid (ceil(N / 128), max tiles), block 256 (8 warps as 2 x 4, 32 x 32 each). Needs K % 32 == 0
// and N % 16 == 0.

#define GG_BM 64
#define GG_BN 128
#define GG_BK 32
#define GG_LD (GG_BK + 8)

extern "C" __global__ void __launch_bounds__(256)
    grouped_gemm_bf16(const bf16* a, const bf16* b, long long b_stride, float* c, const int* tile_expert, int N, int K) {
  using namespace nvcuda;
  __shared__ __align__(128) bf16 As[2][GG_BM * GG_LD];
  __shared__ __align__(128) bf16 Bs[2][GG_BN * GG_LD];
  const int tile = blockIdx.y;
  const int e = tile_expert[tile];
  if (e < 0) return;
  const int n0 = blockIdx.x * GG_BN;
  const long long r0 = static_cast<long long>(tile) * GG_BM;
  const bf16* A = a + r0 * K;
  const bf16* B = b + static_cast<long long>(e) * b_stride;
  const int tid = threadIdx.x, warp = tid / 32, wm = warp / 4, wn = warp % 4;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);

  auto load = [&](int kt, int st) {
    {
      const int row = tid / 4, ch = (tid % 4) * 8;
      HERD_CP_ASYNC16(&As[st][row * GG_LD + ch], A + static_cast<long long>(row) * K + kt * GG_BK + ch);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int idx = tid + 256 * i, row = idx / 4, ch = (idx % 4) * 8, n = n0 + row;
      bf16* dst = &Bs[st][row * GG_LD + ch];
      if (n < N) {
        HERD_CP_ASYNC16(dst, B + static_cast<long long>(n) * K + kt * GG_BK + ch);
      } else {
        const uint4 z = {0u, 0u, 0u, 0u};
        *reinterpret_cast<uint4*>(dst) = z;
      }
    }
  };

  const int KT = K / GG_BK;
  load(0, 0);
  HERD_CP_ASYNC_COMMIT();
  for (int kt = 0; kt < KT; kt++) {
    if (kt + 1 < KT) {
      load(kt + 1, (kt + 1) & 1);
      HERD_CP_ASYNC_COMMIT();
      HERD_CP_ASYNC_WAIT(1);
    } else {
      HERD_CP_ASYNC_WAIT(0);
    }
    __syncthreads();
    const int st = kt & 1;
#pragma unroll
    for (int kk = 0; kk < GG_BK / 16; kk++) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], &As[st][(wm * 32 + i * 16) * GG_LD + kk * 16], GG_LD);
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &Bs[st][(wn * 32 + j * 16) * GG_LD + kk * 16], GG_LD);
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int col = n0 + wn * 32 + j * 16;
      if (col < N)
        wmma::store_matrix_sync(c + (r0 + wm * 32 + i * 16) * N + col, acc[i][j], N, wmma::mem_row_major);
    }
}

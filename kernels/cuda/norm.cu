// RMSNorm (Llama4TextRMSNorm) of f32 rows into the compute dtype, and the embedding lookup.

// out[r] = x[src] * rsqrt(mean(x[src]^2) + eps) * weight, src = rows ? rows[r] : r.
// Grid (output rows), block 256.
template <typename W>
__device__ void rms_norm_impl(const float* __restrict__ x, const W* __restrict__ weight, W* __restrict__ out,
                              const int* __restrict__ rows, int dim, float eps) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const float* row = x + static_cast<long long>(rows ? rows[r] : r) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  W* o = out + static_cast<long long>(r) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f<W>(row[i] * inv * to_f(weight[i]));
}
extern "C" __global__ void __launch_bounds__(256) rms_norm_f32(const float* x, const float* weight, float* out,
                                                               const int* rows, int dim, float eps) {
  rms_norm_impl(x, weight, out, rows, dim, eps);
}
extern "C" __global__ void __launch_bounds__(256) rms_norm_bf16(const float* x, const bf16* weight, bf16* out,
                                                                const int* rows, int dim, float eps) {
  rms_norm_impl(x, weight, out, rows, dim, eps);
}

// x[t] = table[ids[t]] widened to f32. Grid (tokens), block 256.
template <typename W>
__device__ void embed_impl(const int* __restrict__ ids, const W* __restrict__ table, float* __restrict__ x, int dim) {
  const W* row = table + static_cast<long long>(ids[blockIdx.x]) * dim;
  float* o = x + static_cast<long long>(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = to_f(row[i]);
}
extern "C" __global__ void __launch_bounds__(256) embed_f32(const int* ids, const float* table, float* x, int dim) {
  embed_impl(ids, table, x, dim);
}
extern "C" __global__ void __launch_bounds__(256) embed_bf16(const int* ids, const bf16* table, float* x, int dim) {
  embed_impl(ids, table, x, dim);
}

// Loading weights: dtype conversion, the expert transposition [E, K, N] -> [E, N, K], and random
// weights made on the device (benchmarks).

template <typename S, typename D>
__device__ void convert_impl(const S* __restrict__ in, D* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < n; i += 256LL * gridDim.x) out[i] = from_f<D>(to_f(in[i]));
}
extern "C" __global__ void __launch_bounds__(256) convert_f32_bf16(const float* in, bf16* out, long long n) {
  convert_impl(in, out, n);
}
extern "C" __global__ void __launch_bounds__(256) convert_bf16_f32(const bf16* in, float* out, long long n) {
  convert_impl(in, out, n);
}
extern "C" __global__ void __launch_bounds__(256) convert_f16_f32(const half_bits* in, float* out, long long n) {
  convert_impl(in, out, n);
}
extern "C" __global__ void __launch_bounds__(256) convert_f16_bf16(const half_bits* in, bf16* out, long long n) {
  convert_impl(in, out, n);
}

// out[b][c][r] = in[b][r][c] for in [batches][rows][cols], through a 32x32 shared tile (coalesced
// reads and writes). Grid (ceil(cols/32), ceil(rows/32), batches), block 32x8.
template <typename S, typename D>
__device__ void transpose_impl(const S* __restrict__ in, D* __restrict__ out, int rows, int cols) {
  __shared__ float tile[32][33];
  const long long b = blockIdx.z;
  const S* src = in + b * rows * static_cast<long long>(cols);
  D* dst = out + b * rows * static_cast<long long>(cols);
  const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = to_f(src[static_cast<long long>(r) * cols + c]);
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[static_cast<long long>(c) * rows + r] = from_f<D>(tile[threadIdx.x][i]);
  }
}
extern "C" __global__ void __launch_bounds__(256) transpose_f32_f32(const float* in, float* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256) transpose_f32_bf16(const float* in, bf16* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256) transpose_bf16_f32(const bf16* in, float* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256) transpose_bf16_bf16(const bf16* in, bf16* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256) transpose_f16_f32(const half_bits* in, float* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256) transpose_f16_bf16(const half_bits* in, bf16* out, int rows, int cols) {
  transpose_impl(in, out, rows, cols);
}

// splitmix64: a counter-based generator, so element i's value does not depend on the launch shape.
__device__ __forceinline__ u64 mix64(u64 z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// out[i] = mean + std * N(0, 1), Box-Muller over two uniforms drawn from (seed, i).
template <typename W>
__device__ void fill_random_impl(W* __restrict__ out, long long n, u64 seed, float mean, float std) {
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < n; i += 256LL * gridDim.x) {
    const u64 r = mix64(seed ^ mix64(static_cast<u64>(i)));
    const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
    const float u2 = static_cast<float>((r >> 16) & 0xFFFFFFull) * (1.0f / 16777216.0f);
    const float z = sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
    out[i] = from_f<W>(mean + std * z);
  }
}
extern "C" __global__ void __launch_bounds__(256) fill_random_f32(float* out, long long n, u64 seed, float mean, float std) {
  fill_random_impl(out, n, seed, mean, std);
}
extern "C" __global__ void __launch_bounds__(256) fill_random_bf16(bf16* out, long long n, u64 seed, float mean, float std) {
  fill_random_impl(out, n, seed, mean, std);
}

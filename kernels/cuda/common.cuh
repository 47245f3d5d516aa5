// Helpers shared by every kernel: element conversions (bit-exact on the device and in the
// emulator), 16-byte vector loads, warp and block reductions, and the paged KV cache layout.
typedef __nv_bfloat16 bf16;
typedef unsigned long long u64;

#define HERD_INF __uint_as_float(0x7f800000u)

// f16 as raw bits: checkpoints may hold f16; the engine keeps f32 or bf16.
struct half_bits {
  unsigned short x;
};

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) {
  return __uint_as_float(static_cast<unsigned>(__bfloat16_as_ushort(v)) << 16);
}
__device__ __forceinline__ float to_f(half_bits h) {
  unsigned sign = static_cast<unsigned>(h.x & 0x8000u) << 16;
  unsigned e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24
    float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13));
  return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

template <typename W>
__device__ __forceinline__ W from_f(float f);
template <>
__device__ __forceinline__ float from_f<float>(float f) {
  return f;
}
// Round to nearest even, NaN kept quiet (as the host's half::bf16::from_f32).
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __ushort_as_bfloat16(static_cast<unsigned short>((u >> 16) | 0x40u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return __ushort_as_bfloat16(static_cast<unsigned short>(u >> 16));
}

// Elements of W in 16 bytes.
template <typename W>
struct Vec16;
template <>
struct Vec16<float> {
  static constexpr int N = 4;
};
template <>
struct Vec16<bf16> {
  static constexpr int N = 8;
};

// 16 bytes at p (16-byte aligned) widened to floats.
__device__ __forceinline__ void load16(const float* p, float* o) {
  float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
}
__device__ __forceinline__ void load16(const bf16* p, float* o) {
  uint4 v = *reinterpret_cast<const uint4*>(p);
  o[0] = __uint_as_float(v.x << 16);
  o[1] = __uint_as_float(v.x & 0xffff0000u);
  o[2] = __uint_as_float(v.y << 16);
  o[3] = __uint_as_float(v.y & 0xffff0000u);
  o[4] = __uint_as_float(v.z << 16);
  o[5] = __uint_as_float(v.z & 0xffff0000u);
  o[6] = __uint_as_float(v.w << 16);
  o[7] = __uint_as_float(v.w & 0xffff0000u);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (every thread calls it; every thread gets the total). `scratch` holds 32
// floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? scratch[lane] : 0.0f);
}

// The paged KV cache of one layer, as a step sees it. Blocks live in slabs (a sequence's pool has
// a table of slab addresses); a block holds `br` keys [br][kvd] followed by `br` values. Cache
// row r of sequence s (position start[s] + r) is in block tab[tab_off[s] + r / br], slot r % br.
struct Kv {
  const u64* slab_tab;  // [S] device address of each sequence's slab table
  const int* shift;     // [S] block id >> shift = slab index
  const int* start;     // [S] position of cache row 0
  const int* tab_off;   // [S] where the sequence's block ids start in `tab`
  const int* tab;       // block ids
  int br, kvd;

  template <typename W>
  __device__ __forceinline__ W* block(int s, int row) const {
    const unsigned id = static_cast<unsigned>(tab[tab_off[s] + row / br]);
    const unsigned sh = static_cast<unsigned>(shift[s]);
    const u64* slabs = reinterpret_cast<const u64*>(slab_tab[s]);
    W* slab = reinterpret_cast<W*>(slabs[id >> sh]);
    return slab + static_cast<long long>(id & ((1u << sh) - 1u)) * (2LL * br * kvd);
  }
  // Key row `row` of sequence s (kvd elements); the value row is `br * kvd` further.
  template <typename W>
  __device__ __forceinline__ W* key(int s, int row) const {
    return block<W>(s, row) + static_cast<long long>(row % br) * kvd;
  }
};

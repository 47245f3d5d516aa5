// Attention of Llama 4 over the paged KV cache.
//
// attn_prep: per token, RoPE on interleaved pairs (llama3-scaled frequencies come from the host),
// the weightless QK L2 norm, NoPE temperature tuning, and the new keys and values written into
// the cache. attend: the queries of one token sharing a key/value head against that sequence's
// cached rows (the chunk only, on chunked layers), with an online softmax over tiles of 128 rows.

// qkv [T, (nh + 2 nkv) d] f32 in place for q; k and v go to the cache. Grid (T), block 128.
template <typename W>
__device__ void attn_prep_impl(float* __restrict__ qkv, const int* __restrict__ pos, const int* __restrict__ seq, Kv kv,
                               const float* __restrict__ inv_freq, int nh, int nkv, int d, int use_rope, int qk_norm,
                               int temp_tuning, float eps, double floor_scale, double attn_scale) {
  const int t = blockIdx.x;
  const int p = pos[t], s = seq[t];
  float* row = qkv + static_cast<long long>(t) * (nh + 2 * nkv) * d;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  W* krow = kv.key<W>(s, p - kv.start[s]);
  W* vrow = krow + static_cast<long long>(kv.br) * kv.kvd;
  // q *= log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1, in f64 as the reference.
  const float temp = temp_tuning ? static_cast<float>(log1p(floor((static_cast<double>(p) + 1.0) / floor_scale)) * attn_scale + 1.0) : 1.0f;
  for (int h = warp; h < nh + 2 * nkv; h += warps) {
    float* x = row + h * d;
    if (h >= nh + nkv) {  // a value head: into the cache as it is
      for (int e = lane; e < d; e += 32) vrow[(h - nh - nkv) * d + e] = from_f<W>(x[e]);
      continue;
    }
    float ss = 0.0f;
    for (int i = lane; i < d / 2; i += 32) {
      float x0 = x[2 * i], x1 = x[2 * i + 1];
      if (use_rope) {
        // The reference multiplies in f32 (inv_freq @ positions), then takes cos/sin.
        const float a = inv_freq[i] * static_cast<float>(p);
        const float c = static_cast<float>(cos(static_cast<double>(a))), sn = static_cast<float>(sin(static_cast<double>(a)));
        const float y0 = x0 * c - x1 * sn, y1 = x0 * sn + x1 * c;
        x0 = y0;
        x1 = y1;
        x[2 * i] = x0;
        x[2 * i + 1] = x1;
      }
      ss += x0 * x0 + x1 * x1;
    }
    ss = warp_sum(ss);
    __syncwarp();
    const float inv = qk_norm ? 1.0f / sqrtf(ss / static_cast<float>(d) + eps) : 1.0f;
    if (h < nh) {
      for (int e = lane; e < d; e += 32) x[e] = (x[e] * inv) * temp;
    } else {
      for (int e = lane; e < d; e += 32) krow[(h - nh) * d + e] = from_f<W>(x[e] * inv);
    }
  }
}
extern "C" __global__ void __launch_bounds__(128)
    attn_prep_f32(float* qkv, const int* pos, const int* seq, const u64* slab_tab, const int* shift, const int* start,
                  const int* tab_off, const int* tab, int br, const float* inv_freq, int nh, int nkv, int d, int use_rope,
                  int qk_norm, int temp_tuning, float eps, double floor_scale, double attn_scale) {
  Kv kv{slab_tab, shift, start, tab_off, tab, br, nkv * d};
  attn_prep_impl<float>(qkv, pos, seq, kv, inv_freq, nh, nkv, d, use_rope, qk_norm, temp_tuning, eps, floor_scale, attn_scale);
}
extern "C" __global__ void __launch_bounds__(128)
    attn_prep_bf16(float* qkv, const int* pos, const int* seq, const u64* slab_tab, const int* shift, const int* start,
                   const int* tab_off, const int* tab, int br, const float* inv_freq, int nh, int nkv, int d, int use_rope,
                   int qk_norm, int temp_tuning, float eps, double floor_scale, double attn_scale) {
  Kv kv{slab_tab, shift, start, tab_off, tab, br, nkv * d};
  attn_prep_impl<bf16>(qkv, pos, seq, kv, inv_freq, nh, nkv, d, use_rope, qk_norm, temp_tuning, eps, floor_scale, attn_scale);
}

// Outputs each thread accumulates at most: g * d <= 8 * 128 (Scout and Maverick: 5 * 128).
#define ATTEND_MAX_OUT 8

// out [T, nh d] (compute dtype) for the tokens items[i] (or i). Grid (items, nkv), block 128,
// dynamic shared memory: 128 value-row addresses, then (g*d + g*128 + 3*g) floats.
template <typename W>
__device__ void attend_impl(const float* __restrict__ qkv, const int* __restrict__ items, const int* __restrict__ pos,
                            const int* __restrict__ seq, Kv kv, W* __restrict__ out, int nh, int nkv, int d, int chunk,
                            float scale) {
  HERD_DYN_SMEM(unsigned char, raw);
  const W** vrows = reinterpret_cast<const W**>(raw);  // [128] this tile's value rows (this head)
  float* sm = reinterpret_cast<float*>(raw + 128 * sizeof(void*));
  const int g = nh / nkv, gd = g * d;
  float* qs = sm;          // [g][d]
  float* sc = qs + gd;     // [g][128] scores, then probabilities
  float* mx = sc + g * 128;  // running max per head
  float* sum = mx + g;     // running sum per head
  float* al = sum + g;     // rescale factor of this tile per head
  const int t = items ? items[blockIdx.x] : blockIdx.x;
  const int kvh = blockIdx.y;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const float* q = qkv + static_cast<long long>(t) * (nh + 2 * nkv) * d + kvh * gd;
  for (int i = tid; i < gd; i += 128) qs[i] = q[i];
  for (int h = tid; h < g; h += 128) {
    mx[h] = -HERD_INF;
    sum[h] = 0.0f;
  }
  const int p = pos[t], s = seq[t], start = kv.start[s];
  const int lo = chunk > 0 ? max(p / chunk * chunk, start) : start;
  const int n = p + 1 - lo, first = lo - start;
  const int nout = (gd + 127) / 128;
  float acc[ATTEND_MAX_OUT];
#pragma unroll
  for (int k = 0; k < ATTEND_MAX_OUT; k++) acc[k] = 0.0f;
  __syncthreads();
  for (int j0 = 0; j0 < n; j0 += 128) {
    const int j = j0 + tid;
    if (j < n) {
      const W* krow = kv.key<W>(s, first + j) + kvh * d;
      vrows[tid] = krow + static_cast<long long>(kv.br) * kv.kvd;
      for (int h = 0; h < g; h++) {
        float dot = 0.0f;
        for (int e = 0; e < d; e += Vec16<W>::N) {
          float kk[Vec16<W>::N];
          load16(krow + e, kk);
#pragma unroll
          for (int u = 0; u < Vec16<W>::N; u++) dot += qs[h * d + e + u] * kk[u];
        }
        sc[h * 128 + tid] = dot * scale;
      }
    } else {
      for (int h = 0; h < g; h++) sc[h * 128 + tid] = -HERD_INF;
    }
    __syncthreads();
    for (int h = warp; h < g; h += 4) {
      float tm = -HERD_INF;
      for (int i = lane; i < 128; i += 32) tm = fmaxf(tm, sc[h * 128 + i]);
      tm = warp_max(tm);
      const float mn = fmaxf(mx[h], tm);  // finite: this tile holds at least one row
      float ps = 0.0f;
      for (int i = lane; i < 128; i += 32) {
        const float e = expf(sc[h * 128 + i] - mn);
        sc[h * 128 + i] = e;
        ps += e;
      }
      ps = warp_sum(ps);
      if (lane == 0) {
        al[h] = expf(mx[h] - mn);
        sum[h] = sum[h] * al[h] + ps;
        mx[h] = mn;
      }
    }
    __syncthreads();
    const int cnt = min(128, n - j0);
#pragma unroll
    for (int k = 0; k < ATTEND_MAX_OUT; k++) {
      const int idx = tid + k * 128;
      if (k < nout && idx < gd) {
        const int h = idx / d, e = idx % d;
        float a = acc[k] * al[h];
        for (int jj = 0; jj < cnt; jj++) a += sc[h * 128 + jj] * to_f(vrows[jj][e]);
        acc[k] = a;
      }
    }
    __syncthreads();
  }
  W* o = out + static_cast<long long>(t) * nh * d + kvh * gd;
#pragma unroll
  for (int k = 0; k < ATTEND_MAX_OUT; k++) {
    const int idx = tid + k * 128;
    if (k < nout && idx < gd) o[idx] = from_f<W>(acc[k] / sum[idx / d]);
  }
}
extern "C" __global__ void __launch_bounds__(128)
    attend_f32(const float* qkv, const int* items, const int* pos, const int* seq, const u64* slab_tab, const int* shift,
               const int* start, const int* tab_off, const int* tab, int br, float* out, int nh, int nkv, int d, int chunk,
               float scale) {
  Kv kv{slab_tab, shift, start, tab_off, tab, br, nkv * d};
  attend_impl<float>(qkv, items, pos, seq, kv, out, nh, nkv, d, chunk, scale);
}
extern "C" __global__ void __launch_bounds__(128)
    attend_bf16(const float* qkv, const int* items, const int* pos, const int* seq, const u64* slab_tab, const int* shift,
                const int* start, const int* tab_off, const int* tab, int br, bf16* out, int nh, int nkv, int d, int chunk,
                float scale) {
  Kv kv{slab_tab, shift, start, tab_off, tab, br, nkv * d};
  attend_impl<bf16>(qkv, items, pos, seq, kv, out, nh, nkv, d, chunk, scale);
}

// Flash-style causal attention for prefill runs, bf16 on the tensor cores (wmma 16x16x16).
//
// A tile is up to 64 consecutive positions of one sequence (tiles[i] = sequence, index of its
// first token in the step, count). Its queries meet the cached keys 64 rows at a time, from the
// first row any of them sees (its chunk's start on chunked layers) to the last query's own
// position; scores go through shared memory for the masked online softmax, probabilities are
// rounded to bf16 for P·V, and the output rows are kept in f32 in shared memory.
// Grid (tiles, nh), block 128 (4 warps, 16 query rows each); dynamic shared memory: flash_smem(d).

#define FL_Q 64
#define FL_K 64

extern "C" __global__ void __launch_bounds__(128)
    flash_prefill_bf16(const float* qkv, const int* tiles, const int* pos, const u64* slab_tab, const int* shift,
                       const int* start, const int* tab_off, const int* tab, int br, bf16* out, int nh, int nkv, int d,
                       int chunk, float scale) {
  using namespace nvcuda;
  HERD_DYN_SMEM(unsigned char, smem);
  const int ldh = d + 8;     // bf16 rows of Q, K, V
  const int lds = FL_K + 4;  // f32 rows of S
  const int ldp = FL_K + 8;  // bf16 rows of P
  const int ldo = d + 4;     // f32 rows of O
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + FL_Q * ldh;
  bf16* Vs = Ks + FL_K * ldh;
  float* S = reinterpret_cast<float*>(Vs + FL_K * ldh);
  bf16* P = reinterpret_cast<bf16*>(S + FL_Q * lds);
  float* O = reinterpret_cast<float*>(P + FL_Q * ldp);
  float* m = O + FL_Q * ldo;
  float* l = m + FL_Q;
  float* al = l + FL_Q;

  const int g = nh / nkv, h = blockIdx.y, kvh = h / g;
  const int s = tiles[3 * blockIdx.x], t0 = tiles[3 * blockIdx.x + 1], cnt = tiles[3 * blockIdx.x + 2];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int width = (nh + 2 * nkv) * d, kvd = nkv * d;
  const Kv kv{slab_tab, shift, start, tab_off, tab, br, kvd};
  const int st = start[s];
  const int p0 = pos[t0], hi = p0 + cnt - 1;
  const int lo0 = chunk > 0 ? max(p0 / chunk * chunk, st) : st;

  for (int i = tid; i < FL_Q * d; i += 128) {
    const int r = i / d, e = i % d;
    Qs[r * ldh + e] = from_f<bf16>(r < cnt ? qkv[static_cast<long long>(t0 + r) * width + h * d + e] : 0.0f);
    O[r * ldo + e] = 0.0f;
  }
  for (int r = tid; r < FL_Q; r += 128) {
    m[r] = -HERD_INF;
    l[r] = 0.0f;
  }
  __syncthreads();

  const int chunks = d / 8;  // 16-byte pieces of a row
  for (int kb = lo0; kb <= hi; kb += FL_K) {
    for (int i = tid; i < FL_K * chunks; i += 128) {
      const int j = i / chunks, c = (i % chunks) * 8, kp = kb + j;
      uint4 k4 = {0u, 0u, 0u, 0u}, v4 = {0u, 0u, 0u, 0u};
      if (kp <= hi) {
        const bf16* kr = kv.key<bf16>(s, kp - st) + kvh * d + c;
        k4 = *reinterpret_cast<const uint4*>(kr);
        v4 = *reinterpret_cast<const uint4*>(kr + static_cast<long long>(br) * kvd);
      }
      *reinterpret_cast<uint4*>(Ks + j * ldh + c) = k4;
      *reinterpret_cast<uint4*>(Vs + j * ldh + c) = v4;
    }
    __syncthreads();

    // S [16 rows of this warp][64] = Q K^T
    for (int nt = 0; nt < FL_K / 16; nt++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < d / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, Qs + 16 * warp * ldh + kk * 16, ldh);
        wmma::load_matrix_sync(b, Ks + nt * 16 * ldh + kk * 16, ldh);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(S + 16 * warp * lds + nt * 16, acc, lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Masked online softmax of the warp's rows: two lanes per row, 32 columns each.
    {
      const int r = 16 * warp + lane / 2, c0 = (lane % 2) * 32;
      const int pr = p0 + r;
      const int lor = chunk > 0 ? max(pr / chunk * chunk, st) : st;
      float tm = -HERD_INF;
      for (int c = c0; c < c0 + 32; c++) {
        const int kp = kb + c;
        const float v = (r < cnt && kp >= lor && kp <= pr) ? S[r * lds + c] * scale : -HERD_INF;
        S[r * lds + c] = v;
        tm = fmaxf(tm, v);
      }
      tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
      const float mo = m[r], mn = fmaxf(mo, tm);
      float a = 1.0f, ps = 0.0f;
      if (mn == -HERD_INF) {
        for (int c = c0; c < c0 + 32; c++) P[r * ldp + c] = from_f<bf16>(0.0f);
      } else {
        a = expf(mo - mn);
        for (int c = c0; c < c0 + 32; c++) {
          const bf16 e = from_f<bf16>(expf(S[r * lds + c] - mn));
          P[r * ldp + c] = e;
          ps += to_f(e);
        }
      }
      ps += __shfl_xor_sync(0xffffffffu, ps, 1);
      __syncwarp();
      if (lane % 2 == 0) {
        m[r] = mn;
        l[r] = l[r] * a + ps;
        al[r] = a;
      }
    }
    __syncwarp();
    for (int i = lane; i < 16 * d; i += 32) {
      const int r = 16 * warp + i / d;
      O[r * ldo + i % d] *= al[r];
    }
    __syncwarp();

    // O [16 rows][d] += P V
    for (int nt = 0; nt < d / 16; nt++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, O + 16 * warp * ldo + nt * 16, ldo, wmma::mem_row_major);
      for (int kk = 0; kk < FL_K / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, P + 16 * warp * ldp + kk * 16, ldp);
        wmma::load_matrix_sync(b, Vs + kk * 16 * ldh + nt * 16, ldh);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(O + 16 * warp * ldo + nt * 16, acc, ldo, wmma::mem_row_major);
    }
    __syncthreads();
  }

  for (int i = tid; i < FL_Q * d; i += 128) {
    const int r = i / d, e = i % d;
    if (r < cnt) out[static_cast<long long>(t0 + r) * nh * d + h * d + e] = from_f<bf16>(O[r * ldo + e] / l[r]);
  }
}

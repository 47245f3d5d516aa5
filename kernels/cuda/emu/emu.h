// CUDA C on the CPU: just enough of the CUDA device language to run herd's kernels in tests on
// machines without a GPU. Not a general emulator; it covers what kernels/cuda/*.cu use.
//
// - Every thread of a block is a fiber run by one OS thread; fibers switch only at
//   __syncthreads() and at warp-level operations, so a block runs deterministically. Atomics are
//   real atomics (blocks may run on several threads).
// - __shared__ variables are `static thread_local`: shared by the fibers of one block, private to
//   the OS thread running it. Dynamic shared memory is filled with 0xFF bytes (NaN as floats) at
//   the start of every block, so a kernel reading shared memory it never wrote shows it.
// - Blocks run one after another on the calling thread (HERD_EMU_THREADS=N spreads them over N
//   threads, fresh for each launch: worth it for large grids only).
// - Warp shuffles exchange values through per-warp slots with a warp barrier; the whole warp must
//   take part (mask 0xffffffff), as in herd's kernels.
// - wmma fragments hold whole 16x16 tiles in every thread (the real element-to-lane mapping is
//   unspecified, so kernels may only load, store, fill, scale and multiply fragments).
// - A barrier some live thread never reaches is reported and the process aborts.
#pragma once
#define HERD_EMU 1

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct __attribute__((aligned(16))) uint4 {
  unsigned x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
  unsigned x, y;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline float2 make_float2(float a, float b) { return float2{a, b}; }

namespace emu {

enum State { RUN, AT_BLOCK, AT_WARP, DONE };

// Switching fibers: on x86-64 a hand-written switch of the callee-saved registers and the stack
// pointer (swapcontext also saves the signal mask, a system call per switch); elsewhere ucontext.
#if defined(__x86_64__) && !defined(HERD_EMU_NO_FAST_SWITCH)
#define HERD_EMU_FAST_SWITCH 1
extern "C" void herd_emu_swap(void** save_sp, void* load_sp);
asm(R"(
.text
.globl herd_emu_swap
.type herd_emu_swap,@function
herd_emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size herd_emu_swap, .-herd_emu_swap
)");
#endif

struct Fiber {
  ucontext_t ctx;
  void* sp;
  uint3 tid;
  unsigned lane, warp, parity;
  State state;
};

struct Block {
  uint3 bidx;
  dim3 bdim, gdim;
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;
  ucontext_t sched;
  void* sched_sp = nullptr;
  Fiber* cur = nullptr;
  std::vector<uint64_t> shfl;  // [warps][2 parities][32 lanes]
  std::vector<unsigned char> dyn;
  const std::function<void()>* body = nullptr;
};

inline thread_local Block* blk = nullptr;
// 0: threads of a block run in index order between barriers; 1: reversed; 2: shuffled.
inline std::atomic<int> thread_order{0};
constexpr size_t STACK = 256 * 1024;

inline void yield() {
#ifdef HERD_EMU_FAST_SWITCH
  herd_emu_swap(&blk->cur->sp, blk->sched_sp);
#else
  swapcontext(&blk->cur->ctx, &blk->sched);
#endif
}
inline void block_barrier() {
  blk->cur->state = AT_BLOCK;
  yield();
}
inline void warp_barrier() {
  blk->cur->state = AT_WARP;
  yield();
}

inline void trampoline(int i) {
  (*blk->body)();
  blk->fibers[i].state = DONE;  // uc_link returns to the scheduler
}

#ifdef HERD_EMU_FAST_SWITCH
// First code of a fiber (reached by herd_emu_swap's `ret`): runs the kernel, then hands the
// thread back to the scheduler for good.
inline void fiber_entry() {
  (*blk->body)();
  blk->cur->state = DONE;
  for (;;) herd_emu_swap(&blk->cur->sp, blk->sched_sp);
}

// A fresh stack whose first switch-in `ret`s into fiber_entry with the ABI's alignment.
inline void* fresh_stack(char* base, size_t size) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(base) + size) & ~static_cast<uintptr_t>(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // fiber_entry's return address: never used
  *--sp = reinterpret_cast<void*>(&fiber_entry);
  for (int r = 0; r < 6; r++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  return sp;
}
#endif

inline void run_block(Block& b) {
  const unsigned n = b.bdim.x * b.bdim.y * b.bdim.z;
  if (n % 32 != 0 || n == 0 || n > 1024) {
    fprintf(stderr, "emu: block of %u threads (herd's kernels use 32..1024, a multiple of 32)\n", n);
    abort();
  }
  b.fibers.resize(n);
  while (b.stacks.size() < n) b.stacks.push_back(static_cast<char*>(malloc(STACK)));
  b.shfl.assign((n / 32) * 2 * 32, 0);
  for (unsigned i = 0; i < n; i++) {
    Fiber& f = b.fibers[i];
    f.tid = uint3{i % b.bdim.x, (i / b.bdim.x) % b.bdim.y, i / (b.bdim.x * b.bdim.y)};
    f.lane = i % 32;
    f.warp = i / 32;
    f.parity = 0;
    f.state = RUN;
#ifdef HERD_EMU_FAST_SWITCH
    f.sp = fresh_stack(b.stacks[i], STACK);
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = b.stacks[i];
    f.ctx.uc_stack.ss_size = STACK;
    f.ctx.uc_link = &b.sched;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(trampoline), 1, static_cast<int>(i));
#endif
  }
  // The threads of each phase run in order 0..n-1, in reverse, or shuffled (herd_emu_set_order):
  // a kernel missing a barrier between one thread's write and another's read fails in some order.
  const int order_mode = thread_order.load(std::memory_order_relaxed);
  std::vector<unsigned> order(n);
  for (unsigned i = 0; i < n; i++) order[i] = order_mode == 1 ? n - 1 - i : i;
  uint64_t rng = 0x9E3779B97F4A7C15ull ^ (b.bidx.x * 0x100000001B3ull + b.bidx.y);
  for (;;) {
    if (order_mode == 2)
      for (unsigned i = n - 1; i > 0; i--) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        std::swap(order[i], order[rng % (i + 1)]);
      }
    bool ran = false;
    for (unsigned oi = 0; oi < n; oi++) {
      Fiber& f = b.fibers[order[oi]];
      if (f.state == RUN) {
        b.cur = &f;
#ifdef HERD_EMU_FAST_SWITCH
        herd_emu_swap(&b.sched_sp, f.sp);
#else
        swapcontext(&b.sched, &f.ctx);
#endif
        ran = true;
      }
    }
    if (ran) continue;
    bool released = false;
    for (unsigned w = 0; w < n / 32; w++) {
      bool live = false, all = true;
      for (unsigned l = 0; l < 32; l++) {
        Fiber& f = b.fibers[w * 32 + l];
        if (f.state == DONE) continue;
        live = true;
        if (f.state != AT_WARP) all = false;
      }
      if (live && all) {
        for (unsigned l = 0; l < 32; l++)
          if (b.fibers[w * 32 + l].state == AT_WARP) b.fibers[w * 32 + l].state = RUN;
        released = true;
      }
    }
    if (released) continue;
    bool live = false, all = true;
    for (auto& f : b.fibers) {
      if (f.state == DONE) continue;
      live = true;
      if (f.state != AT_BLOCK) all = false;
    }
    if (!live) break;
    if (!all) {
      fprintf(stderr, "emu: deadlock in block (%u,%u,%u): threads wait at different barriers\n", b.bidx.x,
              b.bidx.y, b.bidx.z);
      abort();
    }
    for (auto& f : b.fibers) f.state = RUN;
  }
}

inline void run_grid(dim3 grid, dim3 block, unsigned smem, const std::function<void()>& body) {
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  if (blocks == 0) return;
  unsigned threads = 1;
  if (const char* e = getenv("HERD_EMU_THREADS")) threads = static_cast<unsigned>(atoi(e));
  if (threads < 1) threads = 1;
  if (threads > blocks) threads = static_cast<unsigned>(blocks);
  std::atomic<unsigned long long> next{0};
  auto work = [&] {
    static thread_local Block b;
    Block* saved = blk;
    blk = &b;
    b.bdim = block;
    b.gdim = grid;
    b.body = &body;
    for (;;) {
      unsigned long long i = next.fetch_add(1);
      if (i >= blocks) break;
      b.bidx = uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
                     static_cast<unsigned>(i / (1ull * grid.x * grid.y))};
      b.dyn.assign(smem, 0xFF);
      run_block(b);
    }
    blk = saved;
  };
  if (threads == 1) {
    work();
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; t++) pool.emplace_back(work);
  for (auto& t : pool) t.join();
}

template <typename T>
inline T shfl(T v, unsigned src_of_lane_fn_unused, unsigned src) {
  Fiber* f = blk->cur;
  uint64_t* slots = &blk->shfl[(f->warp * 2 + f->parity) * 32];
  uint64_t bits = 0;
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  memcpy(&bits, &v, sizeof(T));
  slots[f->lane] = bits;
  warp_barrier();
  T r;
  memcpy(&r, &slots[src % 32], sizeof(T));
  f->parity ^= 1;
  return r;
}

}  // namespace emu

#define threadIdx (emu::blk->cur->tid)
#define blockIdx (emu::blk->bidx)
#define blockDim (emu::blk->bdim)
#define gridDim (emu::blk->gdim)
#define warpSize 32

inline void __syncthreads() { emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
  return emu::shfl(v, 0, emu::blk->cur->lane ^ static_cast<unsigned>(mask));
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int = 32) {
  return emu::shfl(v, 0, static_cast<unsigned>(src));
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
  unsigned lane = emu::blk->cur->lane;
  T r = emu::shfl(v, 0, lane + delta < 32 ? lane + delta : lane);
  return r;
}

// ---- atomics ----
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  auto* u = reinterpret_cast<uint32_t*>(p);
  uint32_t old = __atomic_load_n(u, __ATOMIC_RELAXED);
  for (;;) {
    float f;
    memcpy(&f, &old, 4);
    f += v;
    uint32_t nw;
    memcpy(&nw, &f, 4);
    if (__atomic_compare_exchange_n(u, &old, nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      memcpy(&f, &old, 4);
      return f;
    }
  }
}
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// ---- math and bit casts ----
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) {
  int u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T min(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
inline T max(T a, T b) {
  return a > b ? a : b;
}

// ---- bfloat16 (storage type; kernels convert with their own helpers) ----
struct __nv_bfloat16 {
  unsigned short __x;
};
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) {
  __nv_bfloat16 h;
  h.__x = x;
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float(static_cast<unsigned>(h.__x) << 16); }

// ---- asynchronous copies: done at once ----
#define HERD_CP_ASYNC16(dst, src) memcpy((dst), (src), 16)
#define HERD_CP_ASYNC_COMMIT()
#define HERD_CP_ASYNC_WAIT(n)
#define HERD_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(emu::blk->dyn.data())

// ---- wmma: whole tiles in every thread ----
// Loads and stores are warp-collective: every lane reads (writes) between two warp barriers, so
// all lanes of a warp read before any of them writes, as on the device, where a fragment loaded
// from memory, updated and stored back is one collective read and one collective write.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K>
struct shape_of;
template <int M, int N, int K>
struct shape_of<matrix_a, M, N, K> {
  static constexpr int R = M, C = K;
};
template <int M, int N, int K>
struct shape_of<matrix_b, M, N, K> {
  static constexpr int R = K, C = N;
};
template <int M, int N, int K>
struct shape_of<accumulator, M, N, K> {
  static constexpr int R = M, C = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int R = shape_of<Use, M, N, K>::R, C = shape_of<Use, M, N, K>::C;
  static constexpr int num_elements = R * C;
  using elem = typename std::conditional<std::is_same<T, __nv_bfloat16>::value, float, T>::type;
  elem x[R * C];  // logical [row][col]
};

inline float elem_f(float v) { return v; }
inline float elem_f(__nv_bfloat16 v) { return __bfloat162float(v); }
struct Collective {
  Collective() { emu::warp_barrier(); }
  ~Collective() { emu::warp_barrier(); }
};

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}
template <typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const T* p, unsigned ldm) {
  Collective sync;
  for (int r = 0; r < f.R; r++)
    for (int c = 0; c < f.C; c++) f.x[r * f.C + c] = elem_f(p[r * ldm + c]);
}
template <typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const T* p, unsigned ldm) {
  Collective sync;
  for (int r = 0; r < f.R; r++)
    for (int c = 0; c < f.C; c++) f.x[r * f.C + c] = elem_f(p[c * ldm + r]);
}
template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float, void>& f, const float* p, unsigned ldm,
                             layout_t l) {
  Collective sync;
  for (int r = 0; r < f.R; r++)
    for (int c = 0; c < f.C; c++) f.x[r * f.C + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float, void>& f, unsigned ldm,
                              layout_t l) {
  Collective sync;
  for (int r = 0; r < f.R; r++)
    for (int c = 0; c < f.C; c++) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * f.C + c];
}
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, float, void>& c) {
  float out[M * N];
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      float s = c.x[m * N + n];
      for (int k = 0; k < K; k++) s += a.x[m * K + k] * b.x[k * N + n];
      out[m * N + n] = s;
    }
  memcpy(d.x, out, sizeof(out));
}
}  // namespace wmma
}  // namespace nvcuda

// ---- launching from the host: extern "C" entry points, one per kernel ----
extern "C" void herd_emu_set_order(int mode) { emu::thread_order.store(mode); }

template <typename... A, std::size_t... I>
inline void emu_call(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <typename... A>
inline void emu_launch(void (*k)(A...), const unsigned* g, const unsigned* b, unsigned smem, void** args) {
  std::function<void()> body = [=] { emu_call(k, args, std::index_sequence_for<A...>{}); };
  emu::run_grid(dim3(g[0], g[1], g[2]), dim3(b[0], b[1], b[2]), smem, body);
}
#define HERD_EMU_ENTRY(name)                                                                        \
  extern "C" void herd_emu_##name(const unsigned* g, const unsigned* b, unsigned smem, void** args) { \
    emu_launch(name, g, b, smem, args);                                                            \
  }

// Prelude of the NVRTC translation unit (the emulator has emu/emu.h instead): CUDA's headers and
// the device versions of herd's portability macros.
#include <cuda_bf16.h>
#include <mma.h>

__device__ __forceinline__ void herd_cp_async16(void* smem, const void* gmem) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
// 16-byte asynchronous copy global -> shared; commit a group; wait until at most n groups pend.
#define HERD_CP_ASYNC16(dst, src) herd_cp_async16((dst), (src))
#define HERD_CP_ASYNC_COMMIT() asm volatile("cp.async.commit_group;\n" ::)
#define HERD_CP_ASYNC_WAIT(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n))
// Dynamic shared memory as an array of T (128-byte aligned: wmma wants 32).
extern __shared__ __align__(128) unsigned char herd_dyn_smem_[];
#define HERD_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(herd_dyn_smem_)

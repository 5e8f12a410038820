// emu_ptx_gen.h — emulated replacements for the PTX wrappers of templates/attention_gen.cuh (see emu.h).
#include <cmath>
__device__ __forceinline__ void ag_cp_async16(void* s, const void* g, int n) { emu::cp_async(s, g, 16, n); }
__device__ __forceinline__ void ag_cp_async4(void* s, const void* g, int n) { emu::cp_async(s, g, 4, n); }
__device__ __forceinline__ void ag_cp_commit() { emu::cp_commit(); }
template <int K> __device__ __forceinline__ void ag_cp_wait() { emu::cp_wait(K); }
__device__ __forceinline__ void ag_ldsm_x4(unsigned r[4], const bf16* p) { emu::ldsm(r, p, false); }
__device__ __forceinline__ void ag_ldsm_x4_t(unsigned r[4], const bf16* p) { emu::ldsm(r, p, true); }
__device__ __forceinline__ void ag_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) { emu::mma(c, a, b0, b1); }
__device__ __forceinline__ void ag_cluster_sync() { emu::cluster_sync(); }
__device__ __forceinline__ float4 ag_cluster_ld4(const float* p, unsigned rank) { return emu::cluster_ld4(p, rank); }

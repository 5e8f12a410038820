// emu_ptx.h — emulated replacements for the PTX wrappers of templates/attention.cuh (see emu.h).
__device__ __forceinline__ void mf_cp_async16(void* s, const void* g, int n) { emu::cp_async(s, g, 16, n); }
__device__ __forceinline__ void mf_cp_async4(void* s, const void* g, int n) { emu::cp_async(s, g, 4, n); }
__device__ __forceinline__ void mf_cp_commit() { emu::cp_commit(); }
template <int K> __device__ __forceinline__ void mf_cp_wait() { emu::cp_wait(K); }
__device__ __forceinline__ void mf_ldsm_x4(unsigned r[4], const bf16* p) { emu::ldsm(r, p, false); }
__device__ __forceinline__ void mf_ldsm_x4_t(unsigned r[4], const bf16* p) { emu::ldsm(r, p, true); }
__device__ __forceinline__ void mf_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) { emu::mma(c, a, b0, b1); }

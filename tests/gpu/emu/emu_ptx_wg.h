// emu_ptx_wg.h — emulated replacements for the PTX wrappers of templates/attention_wg.cuh (see emu.h).
// Descriptors carry offsets into the block's dynamic shared memory; wgmma runs at issue, so the fences,
// commit and wait are no-ops.
__device__ __forceinline__ void wg_fence() {}
__device__ __forceinline__ void wg_commit() {}
__device__ __forceinline__ void wg_wait0() {}
__device__ __forceinline__ void wg_fence_proxy() {}
template <int N> __device__ __forceinline__ void wg_keep(float (*)[4]) {}
__device__ __forceinline__ unsigned long long wg_desc(const bf16* p, int lbo) {
  const size_t off = (const unsigned char*)p - emu::cur_smem();
  if (!emu::in_smem(p, 16) || (off & 15)) emu::die("wgmma descriptor outside dynamic smem or misaligned");
  return (unsigned long long)((off >> 4) & 0x3FFF) | ((unsigned long long)(lbo >> 4) << 16) | (64ull << 32) | (1ull << 62);
}
__device__ __forceinline__ unsigned char* wg_align(unsigned char* p) {
  const size_t off = p - emu::cur_smem();
  return p + ((1024 - (off & 1023)) & 1023);
}
template <int TB> __device__ __forceinline__ void wg_ss_n32(float* d, unsigned long long a, unsigned long long b) { emu::wgmma(d, 32, nullptr, a, b, TB); }
template <int TB> __device__ __forceinline__ void wg_ss_n64(float* d, unsigned long long a, unsigned long long b) { emu::wgmma(d, 64, nullptr, a, b, TB); }
template <int TB> __device__ __forceinline__ void wg_rs_n64(float* d, const unsigned a[4], unsigned long long b) { emu::wgmma(d, 64, a, 0, b, TB); }

// common.cuh — types and helpers shared by every kernel template (docs/ir.md, "Kernel templates").
// Emitted first in model.cu and compiled by NVRTC, so: device code only, no host headers.
#ifndef MF_COMMON_CUH
#define MF_COMMON_CUH
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

#ifndef MF_INF
#define MF_INF __int_as_float(0x7f800000)
#endif

// ceil(a / b) for positive integers; usable in template arguments.
__host__ __device__ constexpr long long mf_cdiv(long long a, long long b) { return (a + b - 1) / b; }

// ---- RoPE angles -------------------------------------------------------------------------------
// Pair p (0 ≤ p < R/2) of an R-dim rotated slice turns by t·θ_p, θ_p = 1 / base^(2p/R) in fp32, as the
// Hugging Face inv_freq (runtime/cpu_ops.c attn_rope is the reference). The kernels take cos and sin of
// t·θ_p with sincospif(t·θ_p/π): exact range reduction, no local memory.
#define MF_INV_PI 0.3183098861837907f
template <int R>
__device__ __forceinline__ float mf_rope_theta(int p, float base) {
  return 1.f / powf(base, (float)(2 * p) / (float)R);
}

// ---- conversions ---------------------------------------------------------------------------
__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

// Two floats -> one 32-bit register holding bf16x2 (lo in the low half, as mma/ldmatrix expect).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}

// ---- 16-byte vectors of 8 bf16 (pointer must be 16-byte aligned) ---------------------------
__device__ __forceinline__ void load8(const bf16* p, float f[8]) {
  uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void unpack8(uint4 u, float f[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ uint4 pack8(const float f[8]) {
  uint4 u;
  u.x = pack_bf16x2(f[0], f[1]);
  u.y = pack_bf16x2(f[2], f[3]);
  u.z = pack_bf16x2(f[4], f[5]);
  u.w = pack_bf16x2(f[6], f[7]);
  return u;
}
__device__ __forceinline__ void store8(bf16* p, const float f[8]) {
  *reinterpret_cast<uint4*>(p) = pack8(f);
}
// 8 consecutive f32 (32-byte aligned pointer): two float4 accesses.
__device__ __forceinline__ void load8f(const float* p, float f[8]) {
  float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
__device__ __forceinline__ void store8f(float* p, const float f[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// ---- reductions (butterfly shuffles: a fixed order, so results repeat bit for bit) ----------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `red` is caller-provided shared scratch of 32 floats. Order: warp butterflies, then
// warp 0 sums the per-warp totals by a butterfly — fixed, hence deterministic.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();                       // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : 0.f;
  t = warp_sum(t);
  return t;                              // every warp computes the same butterfly
}
__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : -MF_INF;
  return warp_max(t);
}

// ---- GELU, tanh form ---------------------------------------------------------------------
//   gelu(x)  = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³)
//   gelu'(x) = 0.5·(1 + tanh(u)) + 0.5·x·(1 − tanh²(u))·√(2/π)·(1 + 3·0.044715·x²)
#define MF_GELU_K0 0.7978845608028654f
#define MF_GELU_K1 0.044715f
__device__ __forceinline__ float gelu_f(float x) {
  float u = MF_GELU_K0 * (x + MF_GELU_K1 * x * x * x);
  return 0.5f * x * (1.f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  float u = MF_GELU_K0 * (x + MF_GELU_K1 * x * x * x);
  float th = tanhf(u);
  return 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * MF_GELU_K0 * (1.f + 3.f * MF_GELU_K1 * x * x);
}

// 2^x with the hardware approximation (rel. error ~2^-22; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
#define MF_LOG2E 1.4426950408889634f
#define MF_LN2 0.6931471805599453f

// ---- column reductions without atomics -----------------------------------------------------
// mf_col_sums: K column sums of per-element terms over all N rows,
//     S_j[c] = Σ_n term_j(n, c)        (j < K; term 0 is usually dout itself)
// One launch, deterministic: block s owns the column slab [s·SC, s·SC + SC) and loops over all N
// rows (thread = (row group, 8-column chunk)), then reduces in a fixed order: butterfly within the
// warp, then warp totals summed in warp order. Launch: grid C/SC, block MF_COLRED_THREADS.
// SC = 16 columns (32-byte sectors) when C % 16 == 0, else 8; C must be a multiple of 8.
// `term(r, col, g, t)` fills t[j][k] for columns col … col+7 of row r, g = dout[r, col …];
// `emit(j, c, S)` is then called once per (j, column c of the slab) by thread j·SC + (c mod SC).
#define MF_COLRED_THREADS 1024
template <int C> __host__ __device__ constexpr int mf_colred_slab() { return (C % 16 == 0) ? 16 : 8; }
template <int N, int C, int K, class Term, class Emit>
__device__ __forceinline__ void mf_col_sums(const bf16* __restrict__ dout, const Term& term, const Emit& emit) {
  static_assert(C % 8 == 0, "column reduction: C must be a multiple of 8");
  constexpr int SC = mf_colred_slab<C>();          // columns per block
  constexpr int CPS = SC / 8;                     // 8-column chunks per slab
  constexpr int NT = MF_COLRED_THREADS, RG = NT / CPS, NW = NT / 32;
  static_assert(K >= 1 && K * SC <= NT, "column reduction: K·SC must fit in the block");
  __shared__ float red[K][NW][SC];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ch = tid % CPS, rg = tid / CPS;
  const int col = blockIdx.x * SC + ch * 8;
  float acc[K][8];
#pragma unroll
  for (int j = 0; j < K; ++j)
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[j][k] = 0.f;
  constexpr int UNR = K >= 3 ? 2 : 4;              // rows in flight: 1024 threads leave 64 registers
#pragma unroll UNR
  for (int r = rg; r < N; r += RG) {
    float g[8], t[K][8];
    load8(dout + (long long)r * C + col, g);
    term(r, col, g, t);
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[j][k] += t[j][k];
  }
  // butterfly over the row groups inside the warp (lanes with equal ch)
#pragma unroll
  for (int o = 16; o >= CPS; o >>= 1) {
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[j][k] += __shfl_xor_sync(0xffffffffu, acc[j][k], o);
  }
  if (lane < CPS) {
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
      for (int k = 0; k < 8; ++k) red[j][warp][lane * 8 + k] = acc[j][k];
  }
  __syncthreads();
  if (tid < K * SC) {
    const int j = tid / SC, c = tid % SC;
    float s = 0.f;
    for (int w = 0; w < NW; ++w) s += red[j][w][c];
    emit(j, blockIdx.x * SC + c, s);
  }
}

// For bias_grad and layernorm_bwd_params:   db[c] += Σ_n dout[n,c]
//                                  (LN only) dw[c] += Σ_n dout[n,c]·(x[n,c] − mean[n])·rstd[n]
template <int N, int C, bool LN>
__device__ __forceinline__ void mf_col_reduce(const bf16* __restrict__ dout, const bf16* __restrict__ x,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              float* __restrict__ dw, float* __restrict__ db) {
  constexpr int K = LN ? 2 : 1;
  mf_col_sums<N, C, K>(
      dout,
      [&](int r, int col, const float (&g)[8], float (&t)[K][8]) {
#pragma unroll
        for (int k = 0; k < 8; ++k) t[0][k] = g[k];
        if constexpr (LN) {
          float xv[8];
          load8(x + (long long)r * C + col, xv);
          const float mu = mean[r], rs = rstd[r];
#pragma unroll
          for (int k = 0; k < 8; ++k) t[LN ? 1 : 0][k] = g[k] * ((xv[k] - mu) * rs);
        }
      },
      [&](int j, int c, float s) {
        if (j == 0) db[c] += s;
        else dw[c] += s;
      });
}

// ---- dropout: the counter-based generator of docs/ir_decoder.md ---------------------------------
//   x = seed ^ stream·0x9E3779B97F4A7C15 ^ ctr·0xD1B54A32D192ED03 ^ i·0x8CB92BA72F3D8DD7  (uint64)
//   hash64 = the splitmix64 finaliser of x;  u = (hash64 >> 40)·2^−24 (exact in f32);  keep iff u ≥ p
// Bit-identical to runtime/cpu_ops.c (mf_drop_hash): pure 64-bit integer arithmetic.
// `base` = the first three terms (per op and micro-step), so an element costs one multiply more.
__device__ __forceinline__ unsigned long long mf_drop_base(unsigned long long seed, unsigned long long stream,
                                                           unsigned long long ctr) {
  return seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (ctr * 0xD1B54A32D192ED03ull);
}
__device__ __forceinline__ float mf_drop_uniform(unsigned long long base, unsigned long long i) {
  unsigned long long z = base ^ (i * 0x8CB92BA72F3D8DD7ull);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(unsigned)(z >> 40) * 5.9604644775390625e-8f;   // 2^−24
}
// The base of a dropout op from its dropctr input {seed, counter} (non-negative int32s).
__device__ __forceinline__ unsigned long long mf_drop_base_ctr(const int* ctr, unsigned long long stream) {
  return mf_drop_base((unsigned long long)(unsigned)ctr[0], stream, (unsigned long long)(unsigned)ctr[1]);
}
#endif  // MF_COMMON_CUH

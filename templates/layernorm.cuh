// layernorm.cuh — LayerNorm forward (plain and fused with a residual add) and backward
// (docs/ir.md). Assumes common.cuh was emitted before this file. Requires C % 8 == 0.
// Row ops: one warp per row, 8 rows per 256-thread block; lane L owns the 8-column chunks
// L, L+32, L+64, … . Up to C = 2048 (forward) / 1792 (backward) the row stays in registers
// (C = 768: 3 chunks = 24 values) and is read once; wider rows are re-read from global memory
// (L1/L2) in each pass, with loops that are not fully unrolled so nothing spills.
#define MF_LN_REG_CHUNKS 8      // forward: chunks per lane kept in registers (C ≤ 32·8·8)
#define MF_LN_BWD_REG_CHUNKS 7  // backward: two row arrays live at once (C ≤ 32·8·7)

// layernorm:  μ = Σx/C,  σ² = Σ(x−μ)²/C (two-pass),  rstd = 1/√(σ²+eps),
//             out = (x−μ)·rstd·w + b;  mean/rstd written per row (f32).
// add_layernorm: the same on sum = bf16(a + b), which is also stored.
// SUM = true selects add_layernorm (x is then the `sum` buffer being written).
template <int N, int C, bool SUM>
__device__ __forceinline__ void ln_fwd_row(const bf16* __restrict__ a, const bf16* __restrict__ b2,
                                           const bf16* __restrict__ w, const bf16* __restrict__ b,
                                           bf16* __restrict__ sum, bf16* __restrict__ out,
                                           float* __restrict__ mean, float* __restrict__ rstd, float eps) {
  static_assert(C % 8 == 0, "layernorm: C must be a multiple of 8");
  constexpr int CV = C / 8, PER = (CV + 31) / 32;
  constexpr bool REG = PER <= MF_LN_REG_CHUNKS;
  constexpr int UNR = REG ? PER : 2;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  const long long ro = (long long)row * C;
  const bf16* x = SUM ? sum : a;   // the row that is normalised
  float v[REG ? PER : 1][8];
  // pass 1: (SUM: form and store the rounded sum) and Σx
  float s = 0.f;
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float t[8];
      if (SUM) {
        float u[8];
        load8(a + ro + c, t);
        load8(b2 + ro + c, u);
#pragma unroll
        for (int k = 0; k < 8; ++k) t[k] += u[k];
        const uint4 r = pack8(t);   // round once; normalise exactly what is stored
        *reinterpret_cast<uint4*>(sum + ro + c) = r;
        unpack8(r, t);
      } else {
        load8(x + ro + c, t);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        s += t[k];
        if (REG) v[REG ? j : 0][k] = t[k];
      }
    }
  }
  const float mu = warp_sum(s) * (1.f / C);
  // pass 2: Σ(x−μ)²
  float q = 0.f;
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float t[8];
      if (REG) {
#pragma unroll
        for (int k = 0; k < 8; ++k) t[k] = v[REG ? j : 0][k];
      } else {
        load8(x + ro + c, t);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) { const float e = t[k] - mu; q += e * e; }
    }
  }
  const float rs = rsqrtf(warp_sum(q) * (1.f / C) + eps);
  // pass 3: out
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float t[8], wv[8], bv[8];
      if (REG) {
#pragma unroll
        for (int k = 0; k < 8; ++k) t[k] = v[REG ? j : 0][k];
      } else {
        load8(x + ro + c, t);
      }
      load8(w + c, wv);
      load8(b + c, bv);
#pragma unroll
      for (int k = 0; k < 8; ++k) t[k] = (t[k] - mu) * rs * wv[k] + bv[k];
      store8(out + ro + c, t);
    }
  }
  if (lane == 0) { mean[row] = mu; rstd[row] = rs; }
}

template <int N, int C>
__device__ void layernorm_fwd(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ b,
                              bf16* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd, float eps) {
  ln_fwd_row<N, C, false>(x, nullptr, w, b, nullptr, out, mean, rstd, eps);
}

template <int N, int C>
__device__ void add_layernorm_fwd(const bf16* __restrict__ a, const bf16* __restrict__ b,
                                  const bf16* __restrict__ w, const bf16* __restrict__ bias,
                                  bf16* __restrict__ sum, bf16* __restrict__ out,
                                  float* __restrict__ mean, float* __restrict__ rstd, float eps) {
  ln_fwd_row<N, C, true>(a, b, w, bias, sum, out, mean, rstd, eps);
}

// layernorm_bwd:  x̂ = (x−μ)·rstd,  g = dout·w,
//   dx (+)= rstd·(g − mean_c(g) − x̂·mean_c(g·x̂))        (ACC = 1 accumulates into dx)
template <int N, int C, int ACC>
__device__ void layernorm_bwd(const bf16* __restrict__ dout, const bf16* __restrict__ x, const bf16* __restrict__ w,
                              const float* __restrict__ mean, const float* __restrict__ rstd, bf16* __restrict__ dx) {
  static_assert(C % 8 == 0, "layernorm_bwd: C must be a multiple of 8");
  constexpr int CV = C / 8, PER = (CV + 31) / 32;
  constexpr bool REG = PER <= MF_LN_BWD_REG_CHUNKS;
  constexpr int UNR = REG ? PER : 2;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  const long long ro = (long long)row * C;
  const float mu = mean[row], rs = rstd[row];
  float g[REG ? PER : 1][8], xh[REG ? PER : 1][8];
  float sg = 0.f, sgx = 0.f;
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float dv[8], xv[8], wv[8];
      load8(dout + ro + c, dv);
      load8(x + ro + c, xv);
      load8(w + c, wv);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float xk = (xv[k] - mu) * rs, gk = dv[k] * wv[k];
        sg += gk;
        sgx += gk * xk;
        if (REG) { xh[REG ? j : 0][k] = xk; g[REG ? j : 0][k] = gk; }
      }
    }
  }
  const float mg = warp_sum(sg) * (1.f / C), mgx = warp_sum(sgx) * (1.f / C);
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float gk[8], xk[8], o[8];
      if (REG) {
#pragma unroll
        for (int k = 0; k < 8; ++k) { gk[k] = g[REG ? j : 0][k]; xk[k] = xh[REG ? j : 0][k]; }
      } else {
        float wv[8];
        load8(dout + ro + c, gk);
        load8(x + ro + c, xk);
        load8(w + c, wv);
#pragma unroll
        for (int k = 0; k < 8; ++k) { gk[k] *= wv[k]; xk[k] = (xk[k] - mu) * rs; }
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) o[k] = rs * (gk[k] - mg - xk[k] * mgx);
      bf16* p = dx + ro + c;
      if (ACC) {
        float old[8];
        load8(p, old);
#pragma unroll
        for (int k = 0; k < 8; ++k) o[k] += old[k];
      }
      store8(p, o);
    }
  }
}

// layernorm_bwd_params:  dw += Σ_n dout·x̂,  db += Σ_n dout   (column reduction, see common.cuh)
template <int N, int C>
__device__ void layernorm_bwd_params(const bf16* __restrict__ dout, const bf16* __restrict__ x,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     float* __restrict__ dw, float* __restrict__ db) {
  mf_col_reduce<N, C, true>(dout, x, mean, rstd, dw, db);
}

// norms.cuh — RMSNorm and DyT, forward (plain and fused with the residual add) and backward
// (docs/ir_decoder.md "Norms"). Assumes common.cuh was emitted before this file. C % 8 == 0.
// RMSNorm rows: one warp per row, 8 rows per 256-thread block, lane L owns the 8-column chunks
// L, L+32, … (as layernorm.cuh). Up to C = 2048 (forward) / 1792 (backward) the row stays in
// registers and is read once; wider rows are re-read (L1/L2) in the second pass.
// DyT has no row statistics: its forward and dx are flat kernels, one thread per 8 columns.
// Parameter gradients are column reductions (mf_col_sums in common.cuh): no float atomics.
#define MF_RMS_REG_CHUNKS 8      // forward: chunks per lane kept in registers (C ≤ 32·8·8)
#define MF_RMS_BWD_REG_CHUNKS 7  // backward: two row arrays live at once (C ≤ 32·8·7)

// rmsnorm:      rstd = 1/√(Σx²/C + eps),  out = x·rstd·w;  rstd written per row (f32).
// add_rmsnorm:  the same on sum = bf16(a + b), which is also stored (SUM = true; x = sum).
template <int N, int C, bool SUM>
__device__ __forceinline__ void rms_fwd_row(const bf16* __restrict__ a, const bf16* __restrict__ b2,
                                            const bf16* __restrict__ w, bf16* __restrict__ sum,
                                            bf16* __restrict__ out, float* __restrict__ rstd, float eps) {
  static_assert(C % 8 == 0, "rmsnorm: C must be a multiple of 8");
  constexpr int CV = C / 8, PER = (CV + 31) / 32;
  constexpr bool REG = PER <= MF_RMS_REG_CHUNKS;
  constexpr int UNR = REG ? PER : 2;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  const long long ro = (long long)row * C;
  const bf16* x = SUM ? sum : a;
  float v[REG ? PER : 1][8];
  // pass 1: (SUM: form and store the rounded sum) and Σx²
  float q = 0.f;
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
        q += t[k] * t[k];
        if (REG) v[REG ? j : 0][k] = t[k];
      }
    }
  }
  const float rs = rsqrtf(warp_sum(q) * (1.f / C) + eps);
  // pass 2: out = x·rstd·w
#pragma unroll UNR
  for (int j = 0; j < PER; ++j) {
    const int c = (lane + 32 * j) * 8;
    if (c < C) {
      float t[8], wv[8];
      if (REG) {
#pragma unroll
        for (int k = 0; k < 8; ++k) t[k] = v[REG ? j : 0][k];
      } else {
        load8(x + ro + c, t);
      }
      load8(w + c, wv);
#pragma unroll
      for (int k = 0; k < 8; ++k) t[k] = t[k] * rs * wv[k];
      store8(out + ro + c, t);
    }
  }
  if (lane == 0) rstd[row] = rs;
}

template <int N, int C>
__device__ void rmsnorm_fwd(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out,
                            float* __restrict__ rstd, float eps) {
  rms_fwd_row<N, C, false>(x, nullptr, w, nullptr, out, rstd, eps);
}

template <int N, int C>
__device__ void add_rmsnorm_fwd(const bf16* __restrict__ a, const bf16* __restrict__ b, const bf16* __restrict__ w,
                                bf16* __restrict__ sum, bf16* __restrict__ out, float* __restrict__ rstd, float eps) {
  rms_fwd_row<N, C, true>(a, b, w, sum, out, rstd, eps);
}

// rmsnorm_bwd:  g = dout·w,  x̂ = x·rstd,  dx (+)= rstd·(g − x̂·mean_c(g·x̂))   (ACC = 1 accumulates)
template <int N, int C, int ACC>
__device__ void rmsnorm_bwd(const bf16* __restrict__ dout, const bf16* __restrict__ x, const bf16* __restrict__ w,
                            const float* __restrict__ rstd, bf16* __restrict__ dx) {
  static_assert(C % 8 == 0, "rmsnorm_bwd: C must be a multiple of 8");
  constexpr int CV = C / 8, PER = (CV + 31) / 32;
  constexpr bool REG = PER <= MF_RMS_BWD_REG_CHUNKS;
  constexpr int UNR = REG ? PER : 2;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  const long long ro = (long long)row * C;
  const float rs = rstd[row];
  float g[REG ? PER : 1][8], xh[REG ? PER : 1][8];
  float sgx = 0.f;
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
        const float xk = xv[k] * rs, gk = dv[k] * wv[k];
        sgx += gk * xk;
        if (REG) { xh[REG ? j : 0][k] = xk; g[REG ? j : 0][k] = gk; }
      }
    }
  }
  const float mgx = warp_sum(sgx) * (1.f / C);
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
        for (int k = 0; k < 8; ++k) { gk[k] *= wv[k]; xk[k] *= rs; }
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) o[k] = rs * (gk[k] - xk[k] * mgx);
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

// rmsnorm_bwd_params:  dw += Σ_n dout·x·rstd   (column reduction, grid C/SC × 1024 threads)
template <int N, int C>
__device__ void rmsnorm_bwd_params(const bf16* __restrict__ dout, const bf16* __restrict__ x,
                                   const float* __restrict__ rstd, float* __restrict__ dw) {
  mf_col_sums<N, C, 1>(
      dout,
      [&](int r, int col, const float (&g)[8], float (&t)[1][8]) {
        float xv[8];
        load8(x + (long long)r * C + col, xv);
        const float rs = rstd[r];
#pragma unroll
        for (int k = 0; k < 8; ++k) t[0][k] = g[k] * (xv[k] * rs);
      },
      [&](int, int c, float s) { dw[c] += s; });
}

// ---- DyT (dynamic tanh) ------------------------------------------------------------------------
// dyt:      out = w·tanh(α·x) + b          (α = alpha[0], a bf16 parameter)
// add_dyt:  sum = bf16(a + b2) stored, then dyt of the stored sum (SUM = true)
// One thread per 8 consecutive columns of one row (C % 8 == 0, so the 8 share the row).
template <int N, int C, bool SUM>
__device__ __forceinline__ void dyt_fwd_vec(const bf16* __restrict__ a, const bf16* __restrict__ b2,
                                            const bf16* __restrict__ alpha, const bf16* __restrict__ w,
                                            const bf16* __restrict__ b, bf16* __restrict__ sum,
                                            bf16* __restrict__ out) {
  static_assert(C % 8 == 0, "dyt: C must be a multiple of 8");
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)N * C / 8) return;
  const long long e = i * 8;
  const int col = (int)(e % C);
  float t[8], wv[8], bv[8];
  load8(a + e, t);
  if (SUM) {
    float u[8];
    load8(b2 + e, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) t[k] += u[k];
    const uint4 r = pack8(t);
    *reinterpret_cast<uint4*>(sum + e) = r;
    unpack8(r, t);
  }
  load8(w + col, wv);
  load8(b + col, bv);
  const float al = bf2f(alpha[0]);
#pragma unroll
  for (int k = 0; k < 8; ++k) t[k] = wv[k] * tanhf(al * t[k]) + bv[k];
  store8(out + e, t);
}

template <int N, int C>
__device__ void dyt_fwd(const bf16* __restrict__ x, const bf16* __restrict__ alpha, const bf16* __restrict__ w,
                        const bf16* __restrict__ b, bf16* __restrict__ out) {
  dyt_fwd_vec<N, C, false>(x, nullptr, alpha, w, b, nullptr, out);
}

template <int N, int C>
__device__ void add_dyt_fwd(const bf16* __restrict__ a, const bf16* __restrict__ b, const bf16* __restrict__ alpha,
                            const bf16* __restrict__ w, const bf16* __restrict__ bias, bf16* __restrict__ sum,
                            bf16* __restrict__ out) {
  dyt_fwd_vec<N, C, true>(a, b, alpha, w, bias, sum, out);
}

// dyt_bwd:  dx (+)= dout·w·α·(1 − tanh²(α·x))
template <int N, int C, int ACC>
__device__ void dyt_bwd(const bf16* __restrict__ dout, const bf16* __restrict__ x, const bf16* __restrict__ alpha,
                        const bf16* __restrict__ w, bf16* __restrict__ dx) {
  static_assert(C % 8 == 0, "dyt_bwd: C must be a multiple of 8");
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)N * C / 8) return;
  const long long e = i * 8;
  const int col = (int)(e % C);
  float g[8], xv[8], wv[8];
  load8(dout + e, g);
  load8(x + e, xv);
  load8(w + col, wv);
  const float al = bf2f(alpha[0]);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float th = tanhf(al * xv[k]);
    g[k] = g[k] * wv[k] * al * (1.f - th * th);
  }
  if (ACC) {
    float old[8];
    load8(dx + e, old);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] += old[k];
  }
  store8(dx + e, g);
}

// dyt_bwd_params:  db += Σ_n dout,  dw += Σ_n dout·tanh(α·x),
//                  dalpha += Σ_c w_c·S_c  with  S_c = Σ_n dout·x·(1 − tanh²(α·x))
// The three column sums come from one mf_col_sums pass (grid C/SC × 1024 threads). dalpha is a
// sum over every slab: block s stores P_s = Σ_{c in slab s} w_c·S_c (c ascending) in a module
// scratch array; the last block to finish (an integer ticket, the only atomic) adds
// Σ_s P_s in slab order and resets the ticket — so dalpha repeats bit for bit. Ops run one after
// another on one stream, so every dyt_bwd_params op shares the scratch.
#define MF_DYT_MAX_SLABS 8192
__device__ float mf_dyt_part[MF_DYT_MAX_SLABS];
__device__ unsigned mf_dyt_ticket = 0;
template <int N, int C>
__device__ void dyt_bwd_params(const bf16* __restrict__ dout, const bf16* __restrict__ x,
                               const bf16* __restrict__ alpha, float* __restrict__ dalpha,
                               const bf16* __restrict__ w, float* __restrict__ dw, float* __restrict__ db) {
  constexpr int SC = mf_colred_slab<C>();
  static_assert(C / SC <= MF_DYT_MAX_SLABS, "dyt_bwd_params: too many column slabs for the scratch");
  __shared__ float ws[SC];
  const float al = bf2f(alpha[0]);
  mf_col_sums<N, C, 3>(
      dout,
      [&](int r, int col, const float (&g)[8], float (&t)[3][8]) {
        float xv[8];
        load8(x + (long long)r * C + col, xv);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float th = tanhf(al * xv[k]);
          t[0][k] = g[k];
          t[1][k] = g[k] * th;
          t[2][k] = g[k] * xv[k] * (1.f - th * th);
        }
      },
      [&](int j, int c, float s) {
        if (j == 0) db[c] += s;
        else if (j == 1) dw[c] += s;
        else ws[c % SC] = s * bf2f(w[c]);
      });
  __syncthreads();
  if (threadIdx.x == 0) {
    float p = 0.f;
    for (int c = 0; c < SC; ++c) p += ws[c];
    mf_dyt_part[blockIdx.x] = p;
    __threadfence();                                   // P_s visible before the ticket is taken
    if (atomicAdd(&mf_dyt_ticket, 1u) == gridDim.x - 1) {
      __threadfence();
      float s = 0.f;
      for (unsigned b = 0; b < gridDim.x; ++b) s += ((volatile float*)mf_dyt_part)[b];
      dalpha[0] += s;
      mf_dyt_ticket = 0;                               // ready for the next op
    }
  }
}

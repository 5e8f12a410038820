// attention.cuh — causal multi-head attention, flash-attention-2 style (docs/ir.md).
// Assumes common.cuh was emitted before this file.
//
// Layout: qkv [N = B·T, 3D] bf16, row b·T + t = [q | k | v], head h owns columns h·d … h·d+d−1
// of each part. out/dout [N, D] bf16, lse/delta [B, H, T] f32. Scale 1/√d is compiled in.
//
//   s_ij = (q_i·k_j)/√d for j ≤ i,   lse_i = log Σ_j exp(s_ij),   out_i = Σ_j exp(s_ij − lse_i)·v_j
//   backward: p_ij = exp(s_ij − lse_i), dp_ij = do_i·v_j, ds_ij = p_ij·(dp_ij − delta_i),
//             delta_i = do_i·out_i, dv_j = Σ_i p_ij·do_i, dk_j = Σ_i ds_ij·q_i/√d,
//             dq_i = Σ_j ds_ij·k_j/√d
//
// Tensor cores: mma.sync m16n8k16 bf16 → f32, operands from shared memory by ldmatrix,
// tiles streamed in by cp.async (zero-filled past T, so padding rows are finite zeros).
// Shared tiles have a row pitch of d + 8 elements (16 bytes of padding): the 8 row addresses
// of one ldmatrix 8×8 matrix then fall in 8 different 16-byte bank groups (no conflicts).
// Softmax runs in the log2 domain: exp(x) = 2^(x·log2 e). No atomics: the backward is split into
// a dK/dV kernel (one block per key tile) and a dQ kernel (one block per query tile).
// Supported head dims: 16, 32, 64, 128. Any T (tails masked).

// ---- PTX wrappers ----------------------------------------------------------------------------
__device__ __forceinline__ unsigned mf_smem_addr(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}
// 16-byte async copy global → shared; src_bytes = 0 writes 16 zero bytes (tail rows).
__device__ __forceinline__ void mf_cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(mf_smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
// 4-byte async copy (lse/delta rows); src_bytes = 0 writes zero.
__device__ __forceinline__ void mf_cp_async4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(mf_smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void mf_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int K>
__device__ __forceinline__ void mf_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(K) : "memory"); }

// Four 8×8 b16 matrices; lanes 8i … 8i+7 give the row addresses of matrix i, register i of
// every lane receives (row lane/4, columns 2·(lane%4), +1) of matrix i.
__device__ __forceinline__ void mf_ldsm_x4(unsigned r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mf_smem_addr(p)));
}
// Same, each matrix transposed.
__device__ __forceinline__ void mf_ldsm_x4_t(unsigned r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mf_smem_addr(p)));
}
// C[16×8] += A[16×16] · B[16×8]. With g = lane/4, t = lane%4:
//   A regs: {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}   (row, k)
//   B regs: {(k 2t..2t+1, n g), (k 2t+8.., n g)}
//   C:      c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
__device__ __forceinline__ void mf_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- fragment loaders (smem tiles are row-major with pitch LD elements) -----------------------
// A operand (16×16) = rows r0…r0+15, columns k0…k0+15 of a [row][k] tile.
template <int LD>
__device__ __forceinline__ void mf_frag_a(unsigned a[4], const bf16* s, int r0, int k0, int lane) {
  mf_ldsm_x4(a, s + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + k0 + (lane >> 4) * 8);
}
// B operands of two n-tiles from a tile stored [n][k] (e.g. K rows for S = Q·Kᵀ):
// b[0],b[1] for n-tile rows n0…n0+7, b[2],b[3] for n0+8…n0+15; k = k0…k0+15.
template <int LD>
__device__ __forceinline__ void mf_frag_b_nk(unsigned b[4], const bf16* s, int n0, int k0, int lane) {
  mf_ldsm_x4(b, s + (n0 + (lane & 7) + ((lane >> 4) & 1) * 8) * LD + k0 + ((lane >> 3) & 1) * 8);
}
// B operands of two n-tiles from a tile stored [k][n] (e.g. V rows for O = P·V), via .trans:
// b[0],b[1] for columns n0…n0+7, b[2],b[3] for n0+8…n0+15; k = rows k0…k0+15.
template <int LD>
__device__ __forceinline__ void mf_frag_b_kn(unsigned b[4], const bf16* s, int k0, int n0, int lane) {
  mf_ldsm_x4_t(b, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n0 + (lane >> 4) * 8);
}

// Load a ROWS×DH tile of bf16 (global row stride `gstride` elements, rows row0… of `g`) into
// shared memory with pitch DH + 8; rows ≥ T are zero-filled. NT threads cooperate.
template <int ROWS, int DH, int NT, int T>
__device__ __forceinline__ void mf_load_tile(bf16* s, const bf16* g, int row0, long long gstride, int tid) {
  constexpr int CPR = DH / 8, LD = DH + 8;
#pragma unroll
  for (int c = tid; c < ROWS * CPR; c += NT) {
    const int r = c / CPR, cc = (c % CPR) * 8;
    const bool ok = row0 + r < T;
    const bf16* src = g + (long long)(ok ? row0 + r : 0) * gstride + cc;
    mf_cp_async16(s + r * LD + cc, src, ok ? 16 : 0);
  }
}
// Load ROWS floats v[row0 …] (rows ≥ T give 0) into shared memory.
template <int ROWS, int T>
__device__ __forceinline__ void mf_load_vec(float* s, const float* g, int row0, int tid) {
  if (tid < ROWS) {
    const bool ok = row0 + tid < T;
    mf_cp_async4(s + tid, g + (ok ? row0 + tid : 0), ok ? 4 : 0);
  }
}

__host__ __device__ constexpr float mf_inv_sqrt_d(int d) {
  return d == 16 ? 0.25f : d == 32 ? 0.17677669529663687f : d == 64 ? 0.125f : 0.08838834764831845f;
}

#define MF_ATT_THREADS 128   // 4 warps
#define MF_ATT_BM 64         // query rows per block (16 per warp)
#define MF_ATT_BN 64         // key rows per tile

// ==== forward ==================================================================================
// grid (B·H, ⌈T/64⌉): blockIdx.x = b·H + h, query tile qt = last − blockIdx.y (longest first).
// Warp w owns query rows q0 + 16w … +15 and keeps per row: running max m (raw score units),
// running sum l, and O (16 × d f32) in registers. For each key tile kt ≤ qt (tiles above the
// diagonal are skipped, the diagonal tile is masked):
//   S = Q·Kᵀ;  m' = max(m, rowmax S);  α = 2^((m − m')·c);  P = 2^(S·c − m'·c)   (c = log2e/√d)
//   l = α·l + rowsum P;  O = α·O + P·V
// End: out = O / l, lse = m/√d + ln l.
// Shared memory: Q [64][d+8], K and V [2][64][d+8] (double buffered) = 5·64·(d+8)·2 bytes.
template <int B, int T, int H, int d>
__device__ void attention_fwd(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse) {
  static_assert(d == 16 || d == 32 || d == 64 || d == 128, "attention: head dim must be 16, 32, 64 or 128");
  constexpr int D = H * d, LD = d + 8, BM = MF_ATT_BM, BN = MF_ATT_BN, NT = MF_ATT_THREADS;
  constexpr int NQT = (T + BM - 1) / BM, KC = d / 16, DT = d / 8;
  constexpr long long S3 = 3LL * D;
  constexpr float SL2 = mf_inv_sqrt_d(d) * MF_LOG2E;
  extern __shared__ __align__(16) unsigned char mf_att_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(mf_att_smem);
  bf16* sK = sQ + BM * LD;
  bf16* sV = sK + 2 * BN * LD;

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int qt = NQT - 1 - (int)blockIdx.y, q0 = qt * BM;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* base = qkv + (long long)b * T * S3 + h * d;   // q columns; k at +D, v at +2D

  mf_load_tile<BM, d, NT, T>(sQ, base, q0, S3, tid);
  mf_load_tile<BN, d, NT, T>(sK, base + D, 0, S3, tid);
  mf_load_tile<BN, d, NT, T>(sV, base + 2 * D, 0, S3, tid);
  mf_cp_commit();

  unsigned qf[KC][4];
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -MF_INF, m1 = -MF_INF, l0 = 0.f, l1 = 0.f;   // rows g and g+8 of this warp
  const int rA = q0 + warp * 16 + g, rB = rA + 8;

  const int nkt = qt + 1;
  for (int kt = 0; kt < nkt; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < nkt) {
      mf_load_tile<BN, d, NT, T>(sK + (cur ^ 1) * BN * LD, base + D, (kt + 1) * BN, S3, tid);
      mf_load_tile<BN, d, NT, T>(sV + (cur ^ 1) * BN * LD, base + 2 * D, (kt + 1) * BN, S3, tid);
      mf_cp_commit();
      mf_cp_wait<1>();
    } else {
      mf_cp_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) mf_frag_a<LD>(qf[kc], sQ, warp * 16, kc * 16, lane);
    }
    const bf16* k_s = sK + cur * BN * LD;
    const bf16* v_s = sV + cur * BN * LD;

    // S = Q·Kᵀ (16 × 64 per warp: 8 n-tiles)
    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        unsigned bk[4];
        mf_frag_b_nk<LD>(bk, k_s, np * 16, kc * 16, lane);
        mf_mma(s[2 * np], qf[kc], bk[0], bk[1]);
        mf_mma(s[2 * np + 1], qf[kc], bk[2], bk[3]);
      }
    }
    // causal mask on the diagonal tile (also the only tile that can hold keys ≥ T)
    if (kt == qt) {
      const int k0 = kt * BN;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + nt * 8 + t4 * 2 + (e & 1);
          const int row = (e < 2) ? rA : rB;
          if (key > row || key >= T) s[nt][e] = -MF_INF;
        }
      }
    }
    // online softmax
    float x0 = -MF_INF, x1 = -MF_INF;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      x0 = fmaxf(x0, fmaxf(s[nt][0], s[nt][1]));
      x1 = fmaxf(x1, fmaxf(s[nt][2], s[nt][3]));
    }
    x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
    x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
    x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
    x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
    const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
    const float ms0 = (n0 == -MF_INF) ? 0.f : n0 * SL2;   // guard: a fully masked row so far
    const float ms1 = (n1 == -MF_INF) ? 0.f : n1 * SL2;
    const float al0 = fast_exp2(m0 * SL2 - ms0), al1 = fast_exp2(m1 * SL2 - ms1);
    m0 = n0;
    m1 = n1;
    l0 *= al0;
    l1 *= al1;
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      o[i][0] *= al0; o[i][1] *= al0;
      o[i][2] *= al1; o[i][3] *= al1;
    }
    // P = 2^(S·c − m'·c), packed straight into A fragments: key chunk kk = n-tiles 2kk, 2kk+1
    unsigned pf[BN / 16][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const float p0 = fast_exp2(fmaf(s[nt][0], SL2, -ms0));
      const float p1 = fast_exp2(fmaf(s[nt][1], SL2, -ms0));
      const float p2 = fast_exp2(fmaf(s[nt][2], SL2, -ms1));
      const float p3 = fast_exp2(fmaf(s[nt][3], SL2, -ms1));
      l0 += p0 + p1;
      l1 += p2 + p3;
      pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p0, p1);
      pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p2, p3);
    }
    // O += P·V
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < d / 16; ++dp) {
        unsigned bv[4];
        mf_frag_b_kn<LD>(bv, v_s, kk * 16, dp * 16, lane);
        mf_mma(o[2 * dp], pf[kk], bv[0], bv[1]);
        mf_mma(o[2 * dp + 1], pf[kk], bv[2], bv[3]);
      }
    }
    __syncthreads();   // everyone is done with buffer `cur` before it is refilled
  }

  // finish: full row sums across the quad, normalise, write out and lse
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = 1.f / l0, i1 = 1.f / l1;
  bf16* ob = out + (long long)b * T * D + h * d + t4 * 2;
#pragma unroll
  for (int i = 0; i < DT; ++i) {
    if (rA < T) *reinterpret_cast<unsigned*>(ob + (long long)rA * D + i * 8) = pack_bf16x2(o[i][0] * i0, o[i][1] * i0);
    if (rB < T) *reinterpret_cast<unsigned*>(ob + (long long)rB * D + i * 8) = pack_bf16x2(o[i][2] * i1, o[i][3] * i1);
  }
  if (t4 == 0) {
    constexpr float SC = mf_inv_sqrt_d(d);
    if (rA < T) lse[(long long)bh * T + rA] = m0 * SC + logf(l0);
    if (rB < T) lse[(long long)bh * T + rB] = m1 * SC + logf(l1);
  }
}

// ==== backward: delta ==========================================================================
// delta[b,h,t] = Σ_i out[b·T+t, h·d+i] · dout[b·T+t, h·d+i]. d/8 lanes cooperate on one (row,
// head) with 16-byte loads, then a fixed butterfly over those lanes.
template <int B, int T, int H, int d>
__device__ void attention_bwd_pre(const bf16* __restrict__ out, const bf16* __restrict__ dout,
                                  float* __restrict__ delta) {
  constexpr int L = d / 8, D = H * d;   // lanes per (row, head): 2, 4, 8 or 16 — divides 32
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long item = idx / L;       // = row·H + h
  const int part = (int)(idx % L);
  const bool ok = item < (long long)B * T * H;
  float s = 0.f;
  if (ok) {
    const long long row = item / H;
    const int h = (int)(item % H);
    float a[8], c[8];
    load8(out + row * D + h * d + part * 8, a);
    load8(dout + row * D + h * d + part * 8, c);
#pragma unroll
    for (int k = 0; k < 8; ++k) s += a[k] * c[k];
  }
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (ok && part == 0) {
    const long long row = item / H;
    const int h = (int)(item % H);
    const long long bb = row / T, t = row % T;
    delta[(bb * H + h) * T + t] = s;
  }
}

// ==== backward: dK, dV ==========================================================================
// grid (B·H, ⌈T/64⌉): block = key tile kt = blockIdx.y (k0 = 64·kt) of head bh = blockIdx.x.
// Warp w owns keys k0 + 16w … +15, holds dK, dV (16 × d f32) in registers, and loops over the
// query tiles (BQ rows) that can see the key tile, i.e. q0 + BQ > k0:
//   Sᵀ = K·Qᵀ;  Pᵀ = 2^(Sᵀ·c − lse·log2e) (0 where query < key or query ≥ T)
//   dV += Pᵀ·dO;  dPᵀ = V·dOᵀ;  dSᵀ = Pᵀ ⊙ (dPᵀ − delta);  dK += dSᵀ·Q
// End: dK /= √d; both written into the k and v columns of dqkv (rows < T).
// BQ = 64 (d ≤ 64) or 32 (d = 128, to keep dK+dV+Sᵀ+dPᵀ in registers).
// Shared memory: K, V [64][d+8]; Q, dO [2][BQ][d+8]; lse, delta [2][BQ] f32.
template <int d>
__host__ __device__ constexpr int mf_att_bq() { return d <= 64 ? 64 : 32; }

template <int B, int T, int H, int d>
__device__ void attention_bwd_dkdv(const bf16* __restrict__ qkv, const bf16* __restrict__ dout,
                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                   bf16* __restrict__ dqkv) {
  static_assert(d == 16 || d == 32 || d == 64 || d == 128, "attention: head dim must be 16, 32, 64 or 128");
  constexpr int D = H * d, LD = d + 8, BK = MF_ATT_BN, BQ = mf_att_bq<d>(), NT = MF_ATT_THREADS;
  constexpr int NQ = (T + BQ - 1) / BQ, KC = d / 16, DT = d / 8, QN = BQ / 8;
  constexpr long long S3 = 3LL * D;
  constexpr float SL2 = mf_inv_sqrt_d(d) * MF_LOG2E;
  extern __shared__ __align__(16) unsigned char mf_att_smem[];
  bf16* sK = reinterpret_cast<bf16*>(mf_att_smem);
  bf16* sV = sK + BK * LD;
  bf16* sQ = sV + BK * LD;            // [2][BQ][LD]
  bf16* sO = sQ + 2 * BQ * LD;        // dO, [2][BQ][LD]
  float* sL = reinterpret_cast<float*>(sO + 2 * BQ * LD);   // [2][BQ]
  float* sD = sL + 2 * BQ;                                  // [2][BQ]

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int kt = blockIdx.y, k0 = kt * BK;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* qb = qkv + (long long)b * T * S3 + h * d;
  const bf16* ob = dout + (long long)b * T * D + h * d;
  const float* lb = lse + (long long)bh * T;
  const float* db = delta + (long long)bh * T;

  const int qt0 = k0 / BQ;   // first query tile holding a query ≥ k0
  mf_load_tile<BK, d, NT, T>(sK, qb + D, k0, S3, tid);
  mf_load_tile<BK, d, NT, T>(sV, qb + 2 * D, k0, S3, tid);
  mf_load_tile<BQ, d, NT, T>(sQ, qb, qt0 * BQ, S3, tid);
  mf_load_tile<BQ, d, NT, T>(sO, ob, qt0 * BQ, D, tid);
  mf_load_vec<BQ, T>(sL, lb, qt0 * BQ, tid);
  mf_load_vec<BQ, T>(sD, db, qt0 * BQ, tid);
  mf_cp_commit();

  float dk[DT][4], dv[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;
  const int kA = k0 + warp * 16 + g, kB = kA + 8;   // this thread's key rows

  for (int qt = qt0; qt < NQ; ++qt) {
    const int cur = (qt - qt0) & 1, q0 = qt * BQ;
    if (qt + 1 < NQ) {
      const int nb = cur ^ 1, q1 = q0 + BQ;
      mf_load_tile<BQ, d, NT, T>(sQ + nb * BQ * LD, qb, q1, S3, tid);
      mf_load_tile<BQ, d, NT, T>(sO + nb * BQ * LD, ob, q1, D, tid);
      mf_load_vec<BQ, T>(sL + nb * BQ, lb, q1, tid);
      mf_load_vec<BQ, T>(sD + nb * BQ, db, q1, tid);
      mf_cp_commit();
      mf_cp_wait<1>();
    } else {
      mf_cp_wait<0>();
    }
    __syncthreads();
    const bf16* q_s = sQ + cur * BQ * LD;
    const bf16* o_s = sO + cur * BQ * LD;
    const float* l_s = sL + cur * BQ;
    const float* d_s = sD + cur * BQ;

    // Sᵀ = K·Qᵀ  (16 keys × BQ queries per warp)
    float s[QN][4];
#pragma unroll
    for (int i = 0; i < QN; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      unsigned ka[4];
      mf_frag_a<LD>(ka, sK, warp * 16, kc * 16, lane);
#pragma unroll
      for (int np = 0; np < QN / 2; ++np) {
        unsigned bq[4];
        mf_frag_b_nk<LD>(bq, q_s, np * 16, kc * 16, lane);
        mf_mma(s[2 * np], ka, bq[0], bq[1]);
        mf_mma(s[2 * np + 1], ka, bq[2], bq[3]);
      }
    }
    // Pᵀ (columns are queries: this thread's are q0 + 8nt + 2t4 + {0,1})
    const bool need_mask = (q0 < k0 + BK) || (q0 + BQ > T);
#pragma unroll
    for (int nt = 0; nt < QN; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = nt * 8 + t4 * 2 + (e & 1);
        float p = fast_exp2(fmaf(s[nt][e], SL2, -l_s[qc] * MF_LOG2E));
        if (need_mask) {
          const int q = q0 + qc, key = (e < 2) ? kA : kB;
          if (q < key || q >= T) p = 0.f;
        }
        s[nt][e] = p;
      }
    }
    unsigned pf[QN / 2][4];
#pragma unroll
    for (int nt = 0; nt < QN; ++nt) {
      pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(s[nt][0], s[nt][1]);
      pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2], s[nt][3]);
    }
    // dV += Pᵀ·dO
#pragma unroll
    for (int kk = 0; kk < QN / 2; ++kk) {
#pragma unroll
      for (int dp = 0; dp < d / 16; ++dp) {
        unsigned bo[4];
        mf_frag_b_kn<LD>(bo, o_s, kk * 16, dp * 16, lane);
        mf_mma(dv[2 * dp], pf[kk], bo[0], bo[1]);
        mf_mma(dv[2 * dp + 1], pf[kk], bo[2], bo[3]);
      }
    }
    // dPᵀ = V·dOᵀ
    float dp_[QN][4];
#pragma unroll
    for (int i = 0; i < QN; ++i) dp_[i][0] = dp_[i][1] = dp_[i][2] = dp_[i][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      unsigned va[4];
      mf_frag_a<LD>(va, sV, warp * 16, kc * 16, lane);
#pragma unroll
      for (int np = 0; np < QN / 2; ++np) {
        unsigned bo[4];
        mf_frag_b_nk<LD>(bo, o_s, np * 16, kc * 16, lane);
        mf_mma(dp_[2 * np], va, bo[0], bo[1]);
        mf_mma(dp_[2 * np + 1], va, bo[2], bo[3]);
      }
    }
    // dSᵀ = Pᵀ ⊙ (dPᵀ − delta), packed as A fragments
    unsigned sf[QN / 2][4];
#pragma unroll
    for (int nt = 0; nt < QN; ++nt) {
      const int qc = nt * 8 + t4 * 2;
      const float dl0 = d_s[qc], dl1 = d_s[qc + 1];
      sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(s[nt][0] * (dp_[nt][0] - dl0), s[nt][1] * (dp_[nt][1] - dl1));
      sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2] * (dp_[nt][2] - dl0), s[nt][3] * (dp_[nt][3] - dl1));
    }
    // dK += dSᵀ·Q
#pragma unroll
    for (int kk = 0; kk < QN / 2; ++kk) {
#pragma unroll
      for (int dp = 0; dp < d / 16; ++dp) {
        unsigned bq[4];
        mf_frag_b_kn<LD>(bq, q_s, kk * 16, dp * 16, lane);
        mf_mma(dk[2 * dp], sf[kk], bq[0], bq[1]);
        mf_mma(dk[2 * dp + 1], sf[kk], bq[2], bq[3]);
      }
    }
    __syncthreads();   // buffer `cur` is refilled by the next iteration's prefetch
  }

  constexpr float SC = mf_inv_sqrt_d(d);
  bf16* gk = dqkv + (long long)b * T * S3 + D + h * d + t4 * 2;
  bf16* gv = gk + D;
#pragma unroll
  for (int i = 0; i < DT; ++i) {
    if (kA < T) {
      *reinterpret_cast<unsigned*>(gk + (long long)kA * S3 + i * 8) = pack_bf16x2(dk[i][0] * SC, dk[i][1] * SC);
      *reinterpret_cast<unsigned*>(gv + (long long)kA * S3 + i * 8) = pack_bf16x2(dv[i][0], dv[i][1]);
    }
    if (kB < T) {
      *reinterpret_cast<unsigned*>(gk + (long long)kB * S3 + i * 8) = pack_bf16x2(dk[i][2] * SC, dk[i][3] * SC);
      *reinterpret_cast<unsigned*>(gv + (long long)kB * S3 + i * 8) = pack_bf16x2(dv[i][2], dv[i][3]);
    }
  }
}

// ==== backward: dQ ==============================================================================
// grid (B·H, ⌈T/64⌉): query tile qt = last − blockIdx.y (longest first). Warp w owns query rows
// q0 + 16w … +15 and dQ (16 × d f32). For each key tile kt ≤ qt:
//   S = Q·Kᵀ;  P = 2^(S·c − lse·log2e) (0 where key > query);  dP = dO·Vᵀ;
//   dS = P ⊙ (dP − delta);  dQ += dS·K
// End: dQ /= √d, written into the q columns of dqkv (rows < T). Rows ≥ T use lse = +∞ (P = 0).
// Shared memory: Q, dO [64][d+8]; K, V [2][64][d+8] = 6·64·(d+8)·2 bytes.
template <int B, int T, int H, int d>
__device__ void attention_bwd_dq(const bf16* __restrict__ qkv, const bf16* __restrict__ dout,
                                 const float* __restrict__ lse, const float* __restrict__ delta,
                                 bf16* __restrict__ dqkv) {
  static_assert(d == 16 || d == 32 || d == 64 || d == 128, "attention: head dim must be 16, 32, 64 or 128");
  constexpr int D = H * d, LD = d + 8, BM = MF_ATT_BM, BN = MF_ATT_BN, NT = MF_ATT_THREADS;
  constexpr int NQT = (T + BM - 1) / BM, KC = d / 16, DT = d / 8;
  constexpr long long S3 = 3LL * D;
  constexpr float SL2 = mf_inv_sqrt_d(d) * MF_LOG2E;
  extern __shared__ __align__(16) unsigned char mf_att_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(mf_att_smem);
  bf16* sO = sQ + BM * LD;
  bf16* sK = sO + BM * LD;            // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;        // [2][BN][LD]

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int qt = NQT - 1 - (int)blockIdx.y, q0 = qt * BM;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* qb = qkv + (long long)b * T * S3 + h * d;
  const bf16* ob = dout + (long long)b * T * D + h * d;

  mf_load_tile<BM, d, NT, T>(sQ, qb, q0, S3, tid);
  mf_load_tile<BM, d, NT, T>(sO, ob, q0, D, tid);
  mf_load_tile<BN, d, NT, T>(sK, qb + D, 0, S3, tid);
  mf_load_tile<BN, d, NT, T>(sV, qb + 2 * D, 0, S3, tid);
  mf_cp_commit();

  const int rA = q0 + warp * 16 + g, rB = rA + 8;
  const float lA = rA < T ? lse[(long long)bh * T + rA] * MF_LOG2E : MF_INF;
  const float lB = rB < T ? lse[(long long)bh * T + rB] * MF_LOG2E : MF_INF;
  const float dA = rA < T ? delta[(long long)bh * T + rA] : 0.f;
  const float dB = rB < T ? delta[(long long)bh * T + rB] : 0.f;

  float dq[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  const int nkt = qt + 1;
  for (int kt = 0; kt < nkt; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < nkt) {
      mf_load_tile<BN, d, NT, T>(sK + (cur ^ 1) * BN * LD, qb + D, (kt + 1) * BN, S3, tid);
      mf_load_tile<BN, d, NT, T>(sV + (cur ^ 1) * BN * LD, qb + 2 * D, (kt + 1) * BN, S3, tid);
      mf_cp_commit();
      mf_cp_wait<1>();
    } else {
      mf_cp_wait<0>();
    }
    __syncthreads();
    const bf16* k_s = sK + cur * BN * LD;
    const bf16* v_s = sV + cur * BN * LD;

    // S = Q·Kᵀ and dP = dO·Vᵀ (16 × 64 each per warp)
    float s[BN / 8][4], dp_[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp_[i][e] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      unsigned qa[4], oa[4];
      mf_frag_a<LD>(qa, sQ, warp * 16, kc * 16, lane);
      mf_frag_a<LD>(oa, sO, warp * 16, kc * 16, lane);
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        unsigned bk[4], bv[4];
        mf_frag_b_nk<LD>(bk, k_s, np * 16, kc * 16, lane);
        mf_mma(s[2 * np], qa, bk[0], bk[1]);
        mf_mma(s[2 * np + 1], qa, bk[2], bk[3]);
        mf_frag_b_nk<LD>(bv, v_s, np * 16, kc * 16, lane);
        mf_mma(dp_[2 * np], oa, bv[0], bv[1]);
        mf_mma(dp_[2 * np + 1], oa, bv[2], bv[3]);
      }
    }
    // dS = P ⊙ (dP − delta), packed as A fragments
    const int k0 = kt * BN;
    unsigned sf[BN / 16][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[e] = fast_exp2(fmaf(s[nt][e], SL2, -((e < 2) ? lA : lB)));
        if (kt == qt) {
          const int key = k0 + nt * 8 + t4 * 2 + (e & 1);
          if (key > ((e < 2) ? rA : rB)) p[e] = 0.f;
        }
      }
      sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0] * (dp_[nt][0] - dA), p[1] * (dp_[nt][1] - dA));
      sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2] * (dp_[nt][2] - dB), p[3] * (dp_[nt][3] - dB));
    }
    // dQ += dS·K
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < d / 16; ++dp) {
        unsigned bk[4];
        mf_frag_b_kn<LD>(bk, k_s, kk * 16, dp * 16, lane);
        mf_mma(dq[2 * dp], sf[kk], bk[0], bk[1]);
        mf_mma(dq[2 * dp + 1], sf[kk], bk[2], bk[3]);
      }
    }
    __syncthreads();
  }

  constexpr float SC = mf_inv_sqrt_d(d);
  bf16* gq = dqkv + (long long)b * T * S3 + h * d + t4 * 2;
#pragma unroll
  for (int i = 0; i < DT; ++i) {
    if (rA < T) *reinterpret_cast<unsigned*>(gq + (long long)rA * S3 + i * 8) = pack_bf16x2(dq[i][0] * SC, dq[i][1] * SC);
    if (rB < T) *reinterpret_cast<unsigned*>(gq + (long long)rB * S3 + i * 8) = pack_bf16x2(dq[i][2] * SC, dq[i][3] * SC);
  }
}

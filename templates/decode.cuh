// decode.cuh — the one-token decode program's kernels (docs/ir.md, "Decode"): position embedding
// at a runtime position and the generalized attention of one query over a KV cache. Memory-bound:
// the cost of a decode step is reading the weights and the cache once.

// embed_pos:  out[b, :] = wte[tokens[b], :] + wpe[pos, :]      (one thread per 8 columns)
template <int N, int T, int D>
__device__ void embed_pos_fwd(const int* __restrict__ tokens, const int* __restrict__ pos,
                              const bf16* __restrict__ wte, const bf16* __restrict__ wpe, bf16* __restrict__ out) {
  static_assert(D % 8 == 0, "embed_pos: D must be a multiple of 8");
  constexpr int DV = D / 8;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= N * DV) return;
  const int row = idx / DV, c = (idx % DV) * 8;
  float a[8], p[8];
  load8(wte + (long long)tokens[row] * D + c, a);
  load8(wpe + (long long)pos[0] * D + c, p);
#pragma unroll
  for (int k = 0; k < 8; ++k) a[k] += p[k];
  store8(out + (long long)row * D + c, a);
}

// ---- attn_decode ---------------------------------------------------------------------------
// One decode step of the generalized attention (docs/ir.md "Decode"; the attn attrs, B = sequences,
// T = the cache length). Sequence b's token is at position pos; its q, k, v are row b of q, k, v.
// Caches: kcache [B, T, HKV, DQK] holds k̃_j = R_j·k_j (rotated once, at the key's own position),
// vcache [B, T, HKV, DV]. One block of AD_WARPS warps per (sequence b, query head h), kv head
// g = ⌊h·HKV/H⌋ (K/V are never repeated). fp32 math throughout.
//
//  1. Stage the token's q_h, k_g, v_g in shared memory (floats); with RoPE turn the pairs of the
//     last ROPE_DIM dims of q and k by pos·θ_p, θ_p = base^(−2p/R) (θ and the angle in fp32, cos
//     and sin in double, as runtime/cpu_ops.c attn_rope), rounding q̃, k̃ to bf16 like the training
//     kernel's rotated tiles. The first head of each group (h mod H/HKV = 0) appends k̃, v at row pos
//     of the caches. No other block reads that row in this launch: key pos is always visible, and
//     every block takes it from its own staged copy, so there is no race between blocks.
//  2. The keys visible from pos are the sinks [0, ns) and the window [lo, pos], lo = max(0, pos−W+1)
//     (0 without a window), ns = min(S, lo): n = ns + pos − lo + 1 keys, key m ↦ j = m < ns ? m :
//     lo + m − ns. Warp w takes keys m ≡ w (mod AD_WARPS), AD_UNROLL at a time (their loads issued
//     together). In base 2, with q pre-scaled by c·log2 e:
//        s_j = log2e·(c·(q̃·k̃_j) − ALIBI·m_h·(pos − j))        (lanes split the dims in bf16 pairs)
//        M' = max(M, s_j);  l = l·2^(M−M') + 2^(s_j−M');  acc = acc·2^(M−M') + 2^(s_j−M')·v_j
//     (the online softmax; lane owns value pairs lane, lane + 32, …).
//     With ParScale prefixes (NPRE > 0, the overload taking pk, pv; docs/ir_parscale.md) the NPRE
//     entries of b's replica ρ = ⌊b/(B/NREP)⌋, PK[ρ,g,n,:] / PV[ρ,g,n,:] (pk [NREP, HKV, NPRE, DQK],
//     pv [NREP, HKV, NPRE, DV]), come first as keys m < NPRE: never rotated, no ALiBi term, always
//     visible; the cache keys follow as m − NPRE. The prefix is read from the parameters, never cached.
//  3. Merge the warps in a fixed order: M* = max_w M_w, f_w = 2^(M_w − M*),
//     out = Σ_w f_w·acc_w / Σ_w f_w·l_w   (a warp without keys has M_w = −∞: f_w = 0).
#define AD_WARPS 8
#define AD_UNROLL 4
template <int H>
__device__ __forceinline__ float ad_alibi_slope(int h) {  // as ag_alibi_slope (attention_gen.cuh)
  int P = 1;
  while (2 * P <= H) P *= 2;
  return h < P ? exp2f(-8.f * (float)(h + 1) / (float)P) : exp2f(-4.f * (float)(2 * (h - P) + 1) / (float)P);
}
template <int B, int T, int H, int HKV, int DQK, int DV, int LDQ, int LDK, int LDV, int QOFF, int KOFF, int VOFF,
          int QHS, int KHS, int VHS, int WINDOW, int SINK, int ALIBI, int ROPE, int ROPE_DIM, int NPRE, int NREP>
__device__ void attn_decode_impl(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                 const bf16* __restrict__ pk, const bf16* __restrict__ pv,
                                 const int* __restrict__ pos_p, bf16* __restrict__ kcache, bf16* __restrict__ vcache,
                                 bf16* __restrict__ out, float scale, float rope_base) {
  static_assert(H % HKV == 0, "attn_decode: HKV must divide H");
  static_assert(NPRE >= 0 && (NPRE == 0 || (NREP >= 1 && B % NREP == 0)), "attn_decode: NPRE >= 0, NREP divides B");
  static_assert(DQK % 2 == 0 && DV % 2 == 0 && DQK <= 256 && DV <= 256, "attn_decode: head dims even, at most 256");
  static_assert(ROPE == 0 || (ROPE_DIM % 2 == 0 && ROPE_DIM <= DQK), "attn_decode: ROPE_DIM even, at most DQK");
  constexpr int NW = AD_WARPS, NT = 32 * NW, G = H / HKV, U = AD_UNROLL;
  constexpr int PQ = (DQK / 2 + 31) / 32, PV = (DV / 2 + 31) / 32;   // bf16 pairs per lane
  constexpr float LOG2E = 1.4426950408889634f;
  __shared__ float sq[DQK], sk[DQK], sv[DV];
  __shared__ float wm[NW], wl[NW], wacc[NW][DV];
  const int b = blockIdx.x / H, h = blockIdx.x % H, g = h / G, pos = pos_p[0];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // 1. the token's own rows; RoPE at pos; the group's first head appends to the caches
  for (int e = tid; e < DQK; e += NT) {
    sq[e] = bf2f(q[(long long)b * LDQ + QOFF + h * QHS + e]);
    sk[e] = bf2f(k[(long long)b * LDK + KOFF + g * KHS + e]);
  }
  for (int e = tid; e < DV; e += NT) sv[e] = bf2f(v[(long long)b * LDV + VOFF + g * VHS + e]);
  __syncthreads();
  if constexpr (ROPE != 0) {
    constexpr int P = ROPE_DIM / 2, O = DQK - ROPE_DIM;
    for (int p = tid; p < P; p += NT) {
      const float th = (float)(1.0 / pow((double)rope_base, (double)(2 * p) / (double)ROPE_DIM));
      const double ang = (double)((float)pos * th);
      const float cs = (float)cos(ang), sn = (float)sin(ang);
      const int i1 = O + (ROPE == 1 ? p : 2 * p), i2 = O + (ROPE == 1 ? p + P : 2 * p + 1);
      float x1 = sq[i1], x2 = sq[i2];
      sq[i1] = bf2f(f2bf(x1 * cs - x2 * sn));
      sq[i2] = bf2f(f2bf(x2 * cs + x1 * sn));
      x1 = sk[i1]; x2 = sk[i2];
      sk[i1] = bf2f(f2bf(x1 * cs - x2 * sn));
      sk[i2] = bf2f(f2bf(x2 * cs + x1 * sn));
    }
    __syncthreads();
  }
  const long long kbase = (long long)b * T * HKV * DQK + (long long)g * DQK;   // + j·HKV·DQK
  const long long vbase = (long long)b * T * HKV * DV + (long long)g * DV;     // + j·HKV·DV
  if (h % G == 0) {
    for (int e = tid; e < DQK; e += NT) kcache[kbase + (long long)pos * HKV * DQK + e] = f2bf(sk[e]);
    for (int e = tid; e < DV; e += NT) vcache[vbase + (long long)pos * HKV * DV + e] = f2bf(sv[e]);
  }

  // 2. this warp's keys: dots and the online softmax (base 2)
  float2 qa[PQ];
#pragma unroll
  for (int i = 0; i < PQ; ++i) {
    const int p = lane + 32 * i;
    qa[i] = p < DQK / 2 ? make_float2(sq[2 * p] * scale * LOG2E, sq[2 * p + 1] * scale * LOG2E) : make_float2(0.f, 0.f);
  }
  const float slope2 = ALIBI ? ad_alibi_slope<H>(h) * LOG2E : 0.f;
  const int lo = WINDOW == 0 || pos < WINDOW ? 0 : pos - WINDOW + 1, ns = SINK < lo ? SINK : lo;
  const int n = NPRE + ns + pos - lo + 1;   // the prefix entries, then the visible cache keys
  const bf16* pkg = NPRE > 0 ? pk + ((long long)(b / (B / NREP)) * HKV + g) * NPRE * DQK : nullptr;
  const bf16* pvg = NPRE > 0 ? pv + ((long long)(b / (B / NREP)) * HKV + g) * NPRE * DV : nullptr;
  float M = -MF_INF, l = 0.f, acc[2 * PV];
#pragma unroll
  for (int i = 0; i < 2 * PV; ++i) acc[i] = 0.f;
  for (int m0 = warp; m0 < n; m0 += NW * U) {
    float2 kx[U][PQ], vx[U][PV];
    float s[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {          // loads of U keys first
      const int m = m0 + u * NW, mc = m - NPRE;
      const bool pre = m < NPRE;                                                // a prefix entry
      const int j = m >= n || pre ? pos : mc < ns ? mc : lo + mc - ns;          // past the end: a dummy
      const bool own = !pre && j == pos;                                        // the staged token
      const __nv_bfloat162* kr = reinterpret_cast<const __nv_bfloat162*>(
          pre ? pkg + (long long)m * DQK : kcache + kbase + (long long)j * HKV * DQK);
      const __nv_bfloat162* vr = reinterpret_cast<const __nv_bfloat162*>(
          pre ? pvg + (long long)m * DV : vcache + vbase + (long long)j * HKV * DV);
#pragma unroll
      for (int i = 0; i < PQ; ++i) {
        const int p = lane + 32 * i;
        kx[u][i] = p >= DQK / 2 ? make_float2(0.f, 0.f)
                 : own ? make_float2(sk[2 * p], sk[2 * p + 1]) : __bfloat1622float2(kr[p]);
      }
#pragma unroll
      for (int i = 0; i < PV; ++i) {
        const int p = lane + 32 * i;
        vx[u][i] = p >= DV / 2 ? make_float2(0.f, 0.f)
                 : own ? make_float2(sv[2 * p], sv[2 * p + 1]) : __bfloat1622float2(vr[p]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {          // dots (every lane gets the butterfly sum)
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < PQ; ++i) d += qa[i].x * kx[u][i].x + qa[i].y * kx[u][i].y;
      s[u] = warp_sum(d);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {          // the online softmax, keys in order
      const int m = m0 + u * NW, mc = m - NPRE, j = mc < ns ? mc : lo + mc - ns;
      if (m >= n) break;
      const float sj = m < NPRE ? s[u] : s[u] - slope2 * (float)(pos - j);   // prefix: no ALiBi
      const float Mn = fmaxf(M, sj), corr = exp2f(M - Mn), pj = exp2f(sj - Mn);
      l = l * corr + pj;
#pragma unroll
      for (int i = 0; i < PV; ++i) {
        acc[2 * i] = acc[2 * i] * corr + pj * vx[u][i].x;
        acc[2 * i + 1] = acc[2 * i + 1] * corr + pj * vx[u][i].y;
      }
      M = Mn;
    }
  }

  // 3. merge the warps (fixed order) and store
  if (lane == 0) { wm[warp] = M; wl[warp] = l; }
#pragma unroll
  for (int i = 0; i < PV; ++i) {
    const int p = lane + 32 * i;
    if (p < DV / 2) { wacc[warp][2 * p] = acc[2 * i]; wacc[warp][2 * p + 1] = acc[2 * i + 1]; }
  }
  __syncthreads();
  float Ms = -MF_INF;
#pragma unroll
  for (int w = 0; w < NW; ++w) Ms = fmaxf(Ms, wm[w]);
  float L = 0.f, f[NW];
#pragma unroll
  for (int w = 0; w < NW; ++w) { f[w] = exp2f(wm[w] - Ms); L += f[w] * wl[w]; }
  for (int e = tid; e < DV; e += NT) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) o += f[w] * wacc[w][e];
    out[(long long)b * H * DV + h * DV + e] = f2bf(o / L);
  }
}

// The two entry points: without a prefix (the attn attrs) and with ParScale's (NPRE, NREP; pk, pv after v).
template <int B, int T, int H, int HKV, int DQK, int DV, int LDQ, int LDK, int LDV, int QOFF, int KOFF, int VOFF,
          int QHS, int KHS, int VHS, int WINDOW, int SINK, int ALIBI, int ROPE, int ROPE_DIM>
__device__ void attn_decode_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                const int* __restrict__ pos_p, bf16* __restrict__ kcache, bf16* __restrict__ vcache,
                                bf16* __restrict__ out, float scale, float rope_base) {
  attn_decode_impl<B, T, H, HKV, DQK, DV, LDQ, LDK, LDV, QOFF, KOFF, VOFF, QHS, KHS, VHS, WINDOW, SINK, ALIBI, ROPE,
                   ROPE_DIM, 0, 1>(q, k, v, nullptr, nullptr, pos_p, kcache, vcache, out, scale, rope_base);
}
template <int B, int T, int H, int HKV, int DQK, int DV, int LDQ, int LDK, int LDV, int QOFF, int KOFF, int VOFF,
          int QHS, int KHS, int VHS, int WINDOW, int SINK, int ALIBI, int ROPE, int ROPE_DIM, int NPRE, int NREP>
__device__ void attn_decode_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                const bf16* __restrict__ pk, const bf16* __restrict__ pv,
                                const int* __restrict__ pos_p, bf16* __restrict__ kcache, bf16* __restrict__ vcache,
                                bf16* __restrict__ out, float scale, float rope_base) {
  attn_decode_impl<B, T, H, HKV, DQK, DV, LDQ, LDK, LDV, QOFF, KOFF, VOFF, QHS, KHS, VHS, WINDOW, SINK, ALIBI, ROPE,
                   ROPE_DIM, NPRE, NREP>(q, k, v, pk, pv, pos_p, kcache, vcache, out, scale, rope_base);
}

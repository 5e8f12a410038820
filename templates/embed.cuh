// embed.cuh — token + position embedding and its two gradients (docs/ir.md); the token-only
// embedding and the MLA key assembly (docs/ir_decoder.md).
// Assumes common.cuh was emitted before this file. Requires D % 8 == 0 (16-byte vectors).

// embed:  out[i, :] = wte[tokens[i], :] + wpe[i mod T, :]      (sum in f32, rounded to bf16)
// One thread per 8 consecutive columns of one row.
template <int N, int T, int D>
__device__ void embed_fwd(const int* __restrict__ tokens, const bf16* __restrict__ wte,
                          const bf16* __restrict__ wpe, bf16* __restrict__ out) {
  static_assert(D % 8 == 0, "embed: D must be a multiple of 8");
  constexpr int DV = D / 8;
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (long long)N * DV) return;
  const int row = (int)(idx / DV), c = (int)(idx % DV) * 8;
  const int tok = tokens[row];
  float a[8], p[8];
  load8(wte + (long long)tok * D + c, a);
  load8(wpe + (long long)(row % T) * D + c, p);
#pragma unroll
  for (int k = 0; k < 8; ++k) a[k] += p[k];
  store8(out + (long long)row * D + c, a);
}

// embed_bwd_tok:  dwte[tokens[i], :] += dout[i, :]   without atomics, using
//   tokidx = [ U, start_0 … start_U, pos_0 … pos_{N−1} ]   (positions sorted by token, stable).
// Block u < U owns token tokens[pos[start_u]] and sums its rows in the sorted (fixed) order;
// blocks u >= U return. Each thread owns 8 columns (strided by blockDim.x·8).
template <int N, int D>
__device__ void embed_bwd_tok(const int* __restrict__ tokens, const int* __restrict__ tokidx,
                              const bf16* __restrict__ dout, float* __restrict__ dwte) {
  static_assert(D % 8 == 0, "embed_bwd_tok: D must be a multiple of 8");
  const int U = tokidx[0];
  const int u = blockIdx.x;
  if (u >= U) return;
  const int s0 = tokidx[1 + u], s1 = tokidx[2 + u];
  const int* pos = tokidx + 2 + U;
  const int tok = tokens[pos[s0]];
  for (int c = threadIdx.x * 8; c < D; c += blockDim.x * 8) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int s = s0; s < s1; ++s) {
      float v[8];
      load8(dout + (long long)pos[s] * D + c, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] += v[k];
    }
    float* dst = dwte + (long long)tok * D + c;
    float old[8];
    load8f(dst, old);
#pragma unroll
    for (int k = 0; k < 8; ++k) old[k] += acc[k];
    store8f(dst, old);
  }
}

// embed_bwd_pos:  dwpe[t, :] += Σ_b dout[b·T + t, :]   (b ascending: a fixed order)
// One thread per 8 columns of one position t.
template <int N, int T, int D>
__device__ void embed_bwd_pos(const bf16* __restrict__ dout, float* __restrict__ dwpe) {
  static_assert(D % 8 == 0, "embed_bwd_pos: D must be a multiple of 8");
  static_assert(N % T == 0, "embed_bwd_pos: N must be B*T");
  constexpr int DV = D / 8, B = N / T;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= T * DV) return;
  const int t = idx / DV, c = (idx % DV) * 8;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 1  // a full unroll of B rows keeps too many loads live (ptxas spilled at B = 8, D = 128)
  for (int b = 0; b < B; ++b) {
    float v[8];
    load8(dout + ((long long)b * T + t) * D + c, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] += v[k];
  }
  float* dst = dwpe + (long long)t * D + c;
  float old[8];
  load8f(dst, old);
#pragma unroll
  for (int k = 0; k < 8; ++k) old[k] += acc[k];
  store8f(dst, old);
}

// embed_tok:  out[i, :] = wte[tokens[i], :]   (RoPE, ALiBi and no-position models)
// One thread per 8 consecutive columns of one row.
template <int N, int D>
__device__ void embed_tok_fwd(const int* __restrict__ tokens, const bf16* __restrict__ wte, bf16* __restrict__ out) {
  static_assert(D % 8 == 0, "embed_tok: D must be a multiple of 8");
  constexpr int DV = D / 8;
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (long long)N * DV) return;
  const int row = (int)(idx / DV), c = (int)(idx % DV) * 8;
  *reinterpret_cast<uint4*>(out + (long long)row * D + c) =
      *reinterpret_cast<const uint4*>(wte + (long long)tokens[row] * D + c);
}

// ---- multi-head latent attention: assembling K (docs/ir_decoder.md) ----------------------------
// The shared rope key is rotated here, once per row, so that the attention reading k rotates q only
// (its attr KROT = 1) instead of every K tile in every block that visits it.
// mla_rope8: 8 columns j … j+7 of the rope slice (R = DR dims) at position t, own values a and their
// pair partners b (adjacent pairs, ROPE = 2: the neighbour in the chunk; half-split, ROPE = 1: the same
// offsets DR/2 away), turned by R_t, or by R_tᵀ when INV:
//   x1' = x1·cos tθ_p − x2·sin tθ_p,   x2' = x2·cos tθ_p + x1·sin tθ_p      (Rᵀ: sin → −sin)
// θ_p = mf_rope_theta<DR>(p) and the angle in fp32, cos/sin by sincospif, as attention_gen.cuh's RoPE.
template <int DR, int ROPE, bool INV>
__device__ __forceinline__ void mla_rope8(float a[8], const float b[8], int j, int t, float base) {
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int c = j + e;
    const bool second = ROPE == 2 ? (c & 1) != 0 : c >= DR / 2;   // x2 of its pair
    const int p = ROPE == 2 ? c >> 1 : (second ? c - DR / 2 : c);
    float sn, cs;
    sincospif((float)t * (mf_rope_theta<DR>(p, base) * MF_INV_PI), &sn, &cs);
    if (INV) sn = -sn;
    a[e] = second ? fmaf(a[e], cs, b[e] * sn) : fmaf(a[e], cs, -b[e] * sn);
  }
}
// the partners of mla_rope8: a[e ^ 1] (adjacent) or the chunk DR/2 columns away, loaded by `load`
template <int DR, int ROPE, class L>
__device__ __forceinline__ void mla_partners(const float a[8], float b[8], int j, L load) {
  if constexpr (ROPE == 2) {
#pragma unroll
    for (int e = 0; e < 8; ++e) b[e] = a[e ^ 1];
  } else {
    load(j < DR / 2 ? j + DR / 2 : j - DR / 2, b);
  }
}

// The thread map of mla_k and mla_k_bwd: threads 0 … N·H·DN/8 − 1 own one 8-chunk of the nope part (row n,
// head h, column j of the head's DN), the next N·DR/8 threads one 8-chunk of the rope part (row n, column j of
// DR; h = 0). Returns 0 (nope), 1 (rope) or −1 (past the end). DN, DR multiples of 8; with RoPE DR a multiple
// of 16, so that a half-split partner chunk is whole.
template <int N, int H, int DN, int DR, int ROPE, int T>
__device__ __forceinline__ int mla_chunk(long long& n, int& h, int& j) {
  static_assert(DN % 8 == 0 && DR % 8 == 0, "mla_k: dn and dr must be multiples of 8");
  static_assert(ROPE == 0 || (ROPE <= 2 && DR % 16 == 0 && T >= 1 && N % T == 0),
                "mla_k: ROPE 1 or 2 needs dr a multiple of 16 and T dividing N");
  constexpr int NV = H * DN / 8, RV = DR / 8;
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx < (long long)N * NV) {
    n = idx / NV;
    const int c = (int)(idx % NV) * 8;
    h = c / DN;
    j = c % DN;
    return 0;
  }
  const long long r = idx - (long long)N * NV;
  if (r >= (long long)N * RV) return -1;
  n = r / RV;
  h = 0;
  j = (int)(r % RV) * 8;
  return 1;
}

// mla_k:      k[n, h, :] = [knope[n, h·DN … h·DN+DN−1] ; R_t·krope[n, 0 … DR−1]]   (W = DN + DR per head,
//             t = n mod T; ROPE = 0: krope copied unrotated — the decode program, whose attn_decode rotates)
// A rope chunk is turned once and written to all H heads.
template <int N, int H, int DN, int DR, int ROPE, int T>
__device__ void mla_k(const bf16* __restrict__ knope, const bf16* __restrict__ krope, bf16* __restrict__ k,
                      float rope_base) {
  constexpr int W = DN + DR;
  long long n;
  int h, j;
  const int part = mla_chunk<N, H, DN, DR, ROPE, T>(n, h, j);
  if (part == 0) {
    *reinterpret_cast<uint4*>(k + n * (H * W) + h * W + j) =
        *reinterpret_cast<const uint4*>(knope + n * (H * DN) + h * DN + j);
    return;
  }
  if (part < 0) return;
  const uint4 raw = *reinterpret_cast<const uint4*>(krope + n * DR + j);
  uint4 val = raw;
  if constexpr (ROPE != 0) {
    float a[8], b[8];
    unpack8(raw, a);
    mla_partners<DR, ROPE>(a, b, j, [&](int jp, float* x) { load8(krope + n * DR + jp, x); });
    mla_rope8<DR, ROPE, false>(a, b, j, (int)(n % T), rope_base);
    val = pack8(a);
  }
#pragma unroll 4
  for (int g = 0; g < H; ++g) *reinterpret_cast<uint4*>(k + n * (H * W) + g * W + DN + j) = val;
}

// mla_k_bwd:  dknope[n, h, :] = dk[n, h, :DN]   (copies)
//             dkrope[n, :]    = R_tᵀ Σ_h dk[n, h, DN:]   (h ascending, f32, rounded once; written; no Rᵀ when
//                                                       ROPE = 0)
// A rope chunk's thread sums it over the H heads (half-split: its partner chunk too), then un-rotates it.
template <int N, int H, int DN, int DR, int ROPE, int T>
__device__ void mla_k_bwd(const bf16* __restrict__ dk, bf16* __restrict__ dknope, bf16* __restrict__ dkrope,
                          float rope_base) {
  constexpr int W = DN + DR;
  long long n;
  int h, j;
  const int part = mla_chunk<N, H, DN, DR, ROPE, T>(n, h, j);
  if (part == 0) {
    *reinterpret_cast<uint4*>(dknope + n * (H * DN) + h * DN + j) =
        *reinterpret_cast<const uint4*>(dk + n * (H * W) + h * W + j);
    return;
  }
  if (part < 0) return;
  // Σ_h of the chunk at column jc of the rope slice, heads in ascending order
  auto head_sum = [&](int jc, float* acc) {
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.f;
    for (int g = 0; g < H; ++g) {
      float v[8];
      load8(dk + n * (H * W) + g * W + DN + jc, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += v[e];
    }
  };
  float acc[8];
  head_sum(j, acc);
  if constexpr (ROPE != 0) {
    float b[8];
    mla_partners<DR, ROPE>(acc, b, j, head_sum);
    mla_rope8<DR, ROPE, true>(acc, b, j, (int)(n % T), rope_base);
  }
  store8(dkrope + n * DR + j, acc);
}

// attention_gen.cuh — generalized causal attention, flash-attention-2 style (docs/ir.md, "attn").
// One kernel family for every variant: MHA / GQA / MQA, any q/k/v layout (packed, separate, MLA's
// per-head [k | v]), DQK ≠ DV (each a multiple of 16 up to 128, DQK also 192), sliding window with
// sinks, ALiBi, RoPE (half-split or adjacent pairs, on the last ROPE_DIM dims), dropout on the
// attention probabilities. Every variant choice is a template parameter, so unused features
// compile away. Assumes common.cuh was emitted before this file.
//
// Layout (elements; all strides and offsets multiples of 8 so rows are 16-byte aligned):
//   Q[b,t,h,:] = q + (b·T+t)·LDQ + QOFF + h·QHS   (DQK wide), h < H
//   K[b,t,g,:] = k + (b·T+t)·LDK + KOFF + g·KHS   (DQK wide), g < HKV
//   V[b,t,g,:] = v + (b·T+t)·LDV + VOFF + g·VHS   (DV wide)
//   out/dout [B·T, H·DV] (head h at columns h·DV…), lse/delta [B, H, T] f32.
//   dq/dk/dv are laid out exactly like q/k/v (same strides and offsets); when q, k, v share one
//   buffer, dq, dk, dv share one gradient buffer and each kernel writes only its own columns.
// Query head h reads kv head g = ⌊h·HKV/H⌋ = ⌊h/G⌋ (G = H/HKV); repeated K/V are never stored.
//
// Math (scale c, slope m_h, window W, sinks S, RoPE rotation R_t at position t):
//   q̃_i = R_i·q_i, k̃_j = R_j·k_j on the last ROPE_DIM dims (identity when ROPE = 0)
//   vis(i,j) = j ≤ i and (W = 0 or i − j < W or j < S)
//   s_ij = c·(q̃_i·k̃_j) − m_h·(i − j)        (ALiBi term only when ALIBI = 1)
//   lse_i = log Σ_{vis} exp(s_ij),  p_ij = exp(s_ij − lse_i) (0 where not visible)
//   out_i = Σ_j p_ij·v_j
//   backward: delta_i = do_i·out_i, dp_ij = do_i·v_j, ds_ij = p_ij·(dp_ij − delta_i),
//     dv_j = Σ_{h in group} Σ_i p_ij·do_i,  dk_j = R_jᵀ Σ_{h in group} Σ_i c·ds_ij·q̃_i,
//     dq_i = R_iᵀ Σ_j c·ds_ij·k̃_j
//   With RoPE the forward also writes qr = q̃ and kr = k̃ (the layouts of q and k, only their heads'
//   columns), and the backward kernels take those as their q, k: they rotate nothing, only apply Rᵀ.
//   KROT = 1: k arrives as k̃ (its producer rotated it: MLA's mla_k, embed.cuh), so only q is rotated,
//   there is no kr, and dk is the gradient of k̃ (no R_jᵀ; mla_k_bwd applies it).
// Learned prefix (ParScale, the overloads taking `pk`, `pv`; NPRE > 0): the B = NREP·Bm batch rows
// form NREP replicas of Bm rows (row b belongs to replica ρ = ⌊b/Bm⌋), and every query of row b also
// sees the NPRE prefix entries PK[ρ,g,n,:], PV[ρ,g,n,:] (pk [NREP, HKV, NPRE, DQK], pv [NREP, HKV,
// NPRE, DV], contiguous). Prefix keys are always visible (window and causal mask do not apply), are
// never rotated (the query still is) and get no ALiBi bias:
//   s_in = c·(q̃_i·PK_n),  lse_i = log(Σ_n exp(s_in) + Σ_{vis} exp(s_ij)),  out_i = Σ_n p_in·PV_n + Σ_j p_ij·v_j
//   dq_i += R_iᵀ Σ_n c·ds_in·PK_n
//   dPK_n[b] = Σ_{h in group} Σ_i c·ds_in·q̃_i,  dPV_n[b] = Σ_{h in group} Σ_i p_in·do_i   (per batch row b, f32)
// The forward and dQ kernels visit the prefix as ⌈NPRE/BN⌉ extra key tiles before the real ones
// (rows ≥ NPRE zero-filled and masked); the dK/dV kernel gets ⌈NPRE/64⌉ extra blocks per (b, kv
// head) (the first blockIdx.y values: they visit every query tile, like key tile 0) that write
// the per-row partials dpk [B, HKV, NPRE, DQK], dpv [B, HKV, NPRE, DV]; prefix_grad_reduce
// (parscale.cuh) sums them over the rows of each replica into the parameter gradient. Dropout
// with a prefix is not supported (attention_gen.lua refuses it).
// Dropout (the overloads taking `dropctr`, docs/ir.md "attn"): z_ij = keep_ij/(1 − p), keep_ij iff
// mf_drop_uniform(seed, STREAM, ctr, ((b·H + h)·T + i)·T + j) ≥ p (common.cuh, the counter-based
// hash of docs/ir_decoder.md; the same bits as runtime/cpu_ops.c). Then out_i = Σ_j p_ij·z_ij·v_j
// with lse still that of the undropped softmax, and the backward becomes
//     dv_j = Σ p_ij·z_ij·do_i,  ds_ij = p_ij·(z_ij·dp_ij − delta_i)   (delta_i = do_i·out_i as before).
// The kernels recompute keep_ij from the hash wherever they need it (no mask in memory).
//
// Tensor cores: mma.sync m16n8k16 bf16 → f32, operands from shared memory by ldmatrix, tiles
// streamed in by cp.async (zero-filled past T). Shared tiles have a row pitch of width + 8
// elements (16 bytes of padding): the 8 row addresses of one ldmatrix 8×8 matrix then fall in 8
// different 16-byte bank groups. Softmax runs in the log2 domain with scores kept in raw q·k units
// (ALiBi adds m_h/c·(j − i) in those units), so the scale folds into one FMA per element.
// Key tiles outside window ∪ sinks are never visited (work grows with W, not T); tiles that are
// fully visible skip the element mask; a warp whose 16 rows see nothing of a tile skips it.
// RoPE: the forward rotates the Q tile and each K tile in shared memory right after they land (cos/sin
// by one sincospif per thread and tile, then angle-addition steps) and stores the rotated Q tile, and
// the diagonal K tile (key tile qt, from the first query head of each kv group), to qr, kr — each row
// written once, by one block. The backward reads q̃, k̃ from there (rotating a tile per iteration cost
// its loops a barrier and idle tensor cores) and un-rotates the dQ/dK register fragments (Rᵀ) before
// the store. No atomics: the backward is a dK/dV kernel (one block
// per key tile and kv head, summing its G query heads in order) and a dQ kernel (one block per
// query tile and head), so every result repeats bit for bit.

// ---- PTX wrappers ----------------------------------------------------------------------------
__device__ __forceinline__ unsigned ag_smem_addr(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}
// 16-byte async copy global → shared; src_bytes = 0 writes 16 zero bytes (rows past T).
__device__ __forceinline__ void ag_cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ag_smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
// 4-byte async copy (lse/delta entries); src_bytes = 0 writes zero.
__device__ __forceinline__ void ag_cp_async4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(ag_smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void ag_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int K>
__device__ __forceinline__ void ag_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(K) : "memory"); }

// Four 8×8 b16 matrices; lanes 8i … 8i+7 give the row addresses of matrix i, register i of
// every lane receives (row lane/4, columns 2·(lane%4), +1) of matrix i.
__device__ __forceinline__ void ag_ldsm_x4(unsigned r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(ag_smem_addr(p)));
}
// Same, each matrix transposed.
__device__ __forceinline__ void ag_ldsm_x4_t(unsigned r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(ag_smem_addr(p)));
}
// Thread-block clusters (sm_90; the dK/dV kernel of grouped kv heads, see ag_dkdv): a barrier over every
// thread of the cluster — release makes this block's shared-memory writes visible to the cluster, acquire
// makes the others' visible here — and a 16-byte load from the same offset of the shared memory of block
// `rank` of this cluster (distributed shared memory: mapa turns a shared::cta address into that block's
// shared::cluster address).
__device__ __forceinline__ void ag_cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ float4 ag_cluster_ld4(const float* p, unsigned rank) {
  unsigned a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"(ag_smem_addr(p)), "r"(rank));
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(a)
               : "memory");
  return v;
}
// C[16×8] += A[16×16] · B[16×8]. With g = lane/4, t = lane%4:
//   A regs: {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}   (row, k)
//   B regs: {(k 2t..2t+1, n g), (k 2t+8.., n g)}
//   C:      c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
__device__ __forceinline__ void ag_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- fragment loaders (smem tiles are row-major with pitch LD elements) -----------------------
// A operand (16×16) = rows r0…r0+15, columns k0…k0+15 of a [row][k] tile.
template <int LD>
__device__ __forceinline__ void ag_frag_a(unsigned a[4], const bf16* s, int r0, int k0, int lane) {
  ag_ldsm_x4(a, s + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + k0 + (lane >> 4) * 8);
}
// B operands of two n-tiles from a tile stored [n][k] (e.g. K rows for S = Q·Kᵀ):
// b[0],b[1] for n-tile rows n0…n0+7, b[2],b[3] for n0+8…n0+15; k = k0…k0+15.
template <int LD>
__device__ __forceinline__ void ag_frag_b_nk(unsigned b[4], const bf16* s, int n0, int k0, int lane) {
  ag_ldsm_x4(b, s + (n0 + (lane & 7) + ((lane >> 4) & 1) * 8) * LD + k0 + ((lane >> 3) & 1) * 8);
}
// B operands of two n-tiles from a tile stored [k][n] (e.g. V rows for O = P·V), via .trans:
// b[0],b[1] for columns n0…n0+7, b[2],b[3] for n0+8…n0+15; k = rows k0…k0+15.
template <int LD>
__device__ __forceinline__ void ag_frag_b_kn(unsigned b[4], const bf16* s, int k0, int n0, int lane) {
  ag_ldsm_x4_t(b, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n0 + (lane >> 4) * 8);
}

// ---- configuration ---------------------------------------------------------------------------
#define AG_THREADS 128   // 4 warps; each warp owns 16 rows of the block's tile
#define AG_BM 64         // query rows per block (forward, dQ)
#define AG_BK 64         // key rows per block (dK/dV)
#define AG_LOG2E 1.4426950408889634f
#define AG_INV_PI 0.3183098861837907f

// The template parameter list shared by the three main kernels (same order as attention_gen.lua).
#define AG_TPARAMS                                                                                  \
  int B, int T, int H, int HKV, int DQK, int DV, int LDQ, int LDK, int LDV, int QOFF, int KOFF, int VOFF, \
      int QHS, int KHS, int VHS, int WINDOW, int SINK, int ALIBI, int ROPE, int ROPE_DIM, int KROT
#define AG_TARGS B, T, H, HKV, DQK, DV, LDQ, LDK, LDV, QOFF, KOFF, VOFF, QHS, KHS, VHS, WINDOW, SINK, ALIBI, ROPE, ROPE_DIM, KROT

// Key tile (forward, dQ): 64 rows, 32 when DQK = 192 keeps S, dP and dQ in registers.
template <int DQK> __host__ __device__ constexpr int ag_bn_fwd() { return 64; }
template <int DQK> __host__ __device__ constexpr int ag_bn_dq() { return DQK <= 128 ? 64 : 32; }
// Query tile of the dK/dV kernel: dK (DQK) + dV (DV) accumulators live in registers for the whole
// block, so the per-iteration Sᵀ/dPᵀ tiles shrink as the head dims grow.
template <int DQK, int DV> __host__ __device__ constexpr int ag_bq() {
  return DQK + DV <= 128 ? 64 : (DQK + DV <= 256 ? 32 : 16);
}
// Head widths the tiles support: any multiple of 16 (one mma k-step) up to 128, and DQK = 192
// (MLA). A pitch of width + 8 = 16k + 8 elements is an odd number of 16-byte units, so the 8 rows
// of an ldmatrix matrix always fall in 8 different bank groups.
__host__ __device__ constexpr bool ag_dim_ok(int d, bool qk) {
  return (d % 16 == 0 && d >= 16 && d <= 128) || (qk && d == 192);
}
__host__ __device__ constexpr bool ag_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }
__host__ __device__ constexpr int ag_floor_pow2(int x) { return x < 2 ? 1 : 2 * ag_floor_pow2(x / 2); }
// Blocks per SM each kernel is compiled for: the kernel wrapper is __launch_bounds__(128, this)
// (attention_gen.lua returns it as launch.min_blocks). 3 (≤ 168 registers) when DQK + DV ≤ 128 —
// the occupancy of the GPT-2 kernels — except with dropout (the hash state) and, for the backward
// kernels, with RoPE or a head width that is no power of two (e.g. 32/96, 48/80: the dK/dV and dQ
// tiles then need more registers); else 2 (≤ 255). Stating it matters: with maxntid alone ptxas
// sometimes aims at 128 registers and spills (seen for d = 64 with sinks).
template <int DQK, int DV, int ROPE, bool BWD, bool DROP = false> __host__ __device__ constexpr int ag_min_blocks() {
  return (DQK + DV <= 128 && !DROP && !(BWD && (ROPE != 0 || !ag_pow2(DQK) || !ag_pow2(DV)))) ? 3 : 2;
}
// Blocks per cluster of the dK/dV kernel: the largest divisor of the group size G = H/HKV that is at most 8
// (the portable cluster size). The G query heads of a kv head are split over that many blocks, which sum
// their partial dK/dV through distributed shared memory (ag_dkdv); G = 1 (MHA) gives 1: no cluster.
template <int G> __host__ __device__ constexpr int ag_cluster() {
  int c = 1;
  for (int d = 2; d <= 8 && d <= G; ++d)
    if (G % d == 0) c = d;
  return c;
}
__device__ __forceinline__ int ag_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int ag_imax(int a, int b) { return a > b ? a : b; }

template <AG_TPARAMS>
struct ag_check {
  static_assert(B >= 1 && T >= 1 && H >= 1 && HKV >= 1, "attn: B, T, H, HKV must be positive");
  static_assert(H % HKV == 0, "attn: HKV must divide H");
  static_assert(ag_dim_ok(DQK, true), "attn: DQK must be a multiple of 16 in [16, 128], or 192");
  static_assert(ag_dim_ok(DV, false), "attn: DV must be a multiple of 16 in [16, 128]");
  static_assert(LDQ % 8 == 0 && LDK % 8 == 0 && LDV % 8 == 0, "attn: row strides must be multiples of 8");
  static_assert(QOFF % 8 == 0 && KOFF % 8 == 0 && VOFF % 8 == 0, "attn: column offsets must be multiples of 8");
  static_assert(QHS % 8 == 0 && KHS % 8 == 0 && VHS % 8 == 0, "attn: head strides must be multiples of 8");
  static_assert(QOFF >= 0 && KOFF >= 0 && VOFF >= 0 && QHS >= 0 && KHS >= 0 && VHS >= 0, "attn: negative layout");
  static_assert(QOFF + (H - 1) * QHS + DQK <= LDQ, "attn: q heads do not fit in a row of LDQ");
  static_assert(KOFF + (HKV - 1) * KHS + DQK <= LDK, "attn: k heads do not fit in a row of LDK");
  static_assert(VOFF + (HKV - 1) * VHS + DV <= LDV, "attn: v heads do not fit in a row of LDV");
  // distinct heads must not overlap, or the backward would write one gradient column twice
  static_assert(H == 1 || QHS >= DQK, "attn: QHS < DQK makes q heads overlap");
  static_assert(HKV == 1 || (KHS >= DQK && VHS >= DV), "attn: KHS < DQK or VHS < DV makes kv heads overlap");
  static_assert(WINDOW >= 0 && SINK >= 0, "attn: WINDOW and SINK must be >= 0");
  static_assert(ALIBI == 0 || ALIBI == 1, "attn: ALIBI must be 0 or 1");
  static_assert(ROPE == 0 || ROPE == 1 || ROPE == 2, "attn: ROPE must be 0, 1 (half-split) or 2 (adjacent)");
  static_assert(ROPE == 0 || (ROPE_DIM >= 16 && ROPE_DIM <= DQK && ROPE_DIM % 16 == 0),
                "attn: ROPE_DIM must be a multiple of 16 in [16, DQK]");
  static_assert(KROT == 0 || (KROT == 1 && ROPE != 0), "attn: KROT must be 0, or 1 with ROPE != 0 (k arrives rotated)");
  static constexpr bool ok = true;
};
// The prefix attrs (NPRE = 0: no prefix, NREP ignored).
template <int B, int NPRE, int NREP, bool DROP>
struct ag_check_pre {
  static_assert(NPRE >= 0, "attn: NPRE must be >= 0");
  static_assert(NPRE == 0 || (NREP >= 1 && B % NREP == 0), "attn: NREP must divide B when NPRE > 0");
  static_assert(NPRE == 0 || !DROP, "attn: dropout with a prefix (NPRE > 0) is not supported");
  static constexpr bool ok = true;
};
// The prefix rows of replica ⌊b/Bm⌋ (Bm = B/NREP) and kv head g: [NPRE][D] contiguous.
template <int B, int HKV, int NPRE, int NREP, int D>
__device__ __forceinline__ const bf16* ag_prefix_rows(const bf16* p, int b, int g) {
  return p + ((long long)(b / (B / NREP)) * HKV + g) * NPRE * D;
}

// ---- masks and tile ranges -------------------------------------------------------------------
// Query i may attend key j.
template <int W, int S>
__device__ __forceinline__ bool ag_visible(int i, int j) {
  return j <= i && (W == 0 || i - j < W || j < S);
}
// The key tiles (width BN) a query block [q0, qhi] must visit: the sink tiles [0, ns), then the
// window tiles kw … kend (kend = the tile holding key qhi). n tiles in all, visited in that order.
struct ag_range {
  int ns, kw, n;
  __device__ __forceinline__ int tile(int i) const { return i < ns ? i : kw + i - ns; }
};
template <int BN, int W, int S>
__device__ __forceinline__ ag_range ag_key_tiles(int q0, int qhi) {
  const int kend = qhi / BN;
  ag_range r;
  if (W == 0) {
    r.ns = 0; r.kw = 0; r.n = kend + 1;
  } else {
    r.ns = S > 0 ? ag_imin((S + BN - 1) / BN, kend + 1) : 0;
    r.kw = ag_imax(ag_imax(0, q0 - W + 1) / BN, r.ns);
    r.n = r.ns + kend - r.kw + 1;
  }
  return r;
}
// Every (query in [q0, qhi], key in [k0, k1]) pair visible, keys < T: the element mask can be skipped.
template <int T, int W, int S>
__device__ __forceinline__ bool ag_full(int q0, int qhi, int k0, int k1) {
  return k1 <= q0 && k1 < T && qhi < T && (W == 0 || qhi - k0 < W || k1 < S);
}
// Some query in [r0, r1] (r0 < T) may see some key in [k0, k1]: otherwise the warp skips the tile.
template <int W, int S>
__device__ __forceinline__ bool ag_any(int r0, int r1, int k0, int k1) {
  return k0 <= r1 && (W == 0 || k0 < S || r0 - k1 < W);
}

// ---- ALiBi -----------------------------------------------------------------------------------
// Slopes of the ALiBi paper: with P = the largest power of two ≤ H,
//   m_h = 2^(−8(h+1)/P) for h < P,   m_h = 2^(−4(2(h−P)+1)/P) for P ≤ h < H
// (for H a power of two the second case never occurs: m_h = 2^(−8(h+1)/H)).
template <int H>
__device__ __forceinline__ float ag_alibi_slope(int h) {
  constexpr int P = ag_floor_pow2(H);
  return h < P ? exp2f(-8.f * (float)(h + 1) / (float)P) : exp2f(-4.f * (float)(2 * (h - P) + 1) / (float)P);
}

// ---- RoPE ------------------------------------------------------------------------------------
// Pair p (0 ≤ p < R/2) of the rotated slice (the last R dims of a head) turns by t·θ_p,
// θ_p = mf_rope_theta<R>(p) (common.cuh). Half-split (ROPE = 1) pairs
// dims (p, p + R/2) of the slice; adjacent (ROPE = 2) pairs (2p, 2p + 1).
//   rotate:   (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin)
//   un-rotate (backward, Rᵀ): (g1, g2) → (g1·cos + g2·sin, g2·cos − g1·sin)
// Shared tiles come in two layouts; a layout maps (row r, column c) to an element offset.
//   ag_pitched<DH>: row-major with pitch DH + 8 (the mma.sync kernels here, read by ldmatrix).
//   ag_sw128<ROWS>: the 128-byte-swizzled layout Hopper's wgmma reads (attention_wg.cuh): the tile is
//     DH/64 column blocks of [ROWS][64]; within a block row r is 128 contiguous bytes and its 16-byte
//     chunk j sits at chunk j ^ (r mod 8), so a block is ROWS/8 atoms of 8 rows × 128 bytes.
template <int DH> struct ag_pitched {
  static __device__ __forceinline__ int at(int r, int c) { return r * (DH + 8) + c; }
};
template <int ROWS> struct ag_sw128 {
  static __host__ __device__ __forceinline__ int at(int r, int c) {
    return (c >> 6) * ROWS * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
  }
};
// Rotate, in place, the last R dims of every row of a ROWS × DH shared tile in layout L; row r holds
// position pos0 + r. Thread tid < P·STEP (P = R/2 pairs, STEP = ⌊128/P⌋; all 128 threads when R is
// a power of two, 96 for R = 96) turns pair p = tid mod P of rows tid/P + k·STEP: one sincospif
// for its first row (sincospif(x/π): exact range reduction, no local memory), then angle addition
// by STEP·θ_p from row to row. The per-thread constants are recomputed on every call rather than
// kept live across the key loop (registers are scarcer).
template <int ROWS, int DH, int MODE, int R, class L = ag_pitched<DH>>
__device__ __forceinline__ void ag_rope_tile(bf16* s, int pos0, float base, int tid) {
  constexpr int P = R / 2, STEP = AG_THREADS / P;
  static_assert(R % 16 == 0 && P <= AG_THREADS, "ag_rope_tile: R must be a multiple of 16 up to 256");
  if constexpr (P * STEP < AG_THREADS) {
    if (tid >= P * STEP) return;   // the threads left over when P does not divide 128
  }
  const int p = tid % P, r0 = tid / P;
  const float th = mf_rope_theta<R>(p, base) * AG_INV_PI;
  float sn, cs, sd, cd;
  sincospif((float)STEP * th, &sd, &cd);
  sincospif((float)(pos0 + r0) * th, &sn, &cs);
#pragma unroll
  for (int r = r0; r < ROWS; r += STEP) {
    const int i1 = (DH - R) + (MODE == 1 ? p : 2 * p), i2 = (DH - R) + (MODE == 1 ? p + P : 2 * p + 1);
    bf16 *x1p = s + L::at(r, i1), *x2p = s + L::at(r, i2);
    const float x1 = bf2f(*x1p), x2 = bf2f(*x2p);
    *x1p = f2bf(x1 * cs - x2 * sn);
    *x2p = f2bf(x2 * cs + x1 * sn);
    const float c2 = cs * cd - sn * sd;
    sn = sn * cd + cs * sd;
    cs = c2;
  }
}
// Un-rotate (Rᵀ) the rotated slice of a 16 × DH accumulator in mma C-fragment layout:
// acc[i][0..1] = row tA, columns 8i + 2·t4 + {0,1}; acc[i][2..3] = row tB, same columns.
// Adjacent pairs sit in one register pair; half-split partners R/16 tiles apart (R ≥ 16).
template <int DH, int MODE, int R>
__device__ __forceinline__ void ag_unrope_frag(float (*acc)[4], int tA, int tB, int t4, float base) {
  constexpr int I0 = (DH - R) / 8;
  if constexpr (MODE == 2) {
#pragma unroll
    for (int i = I0; i < DH / 8; ++i) {
      const float th = mf_rope_theta<R>(4 * (i - I0) + t4, base) * AG_INV_PI;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float sn, cs;
        sincospif((float)(hf ? tB : tA) * th, &sn, &cs);
        const float g1 = acc[i][2 * hf], g2 = acc[i][2 * hf + 1];
        acc[i][2 * hf] = g1 * cs + g2 * sn;
        acc[i][2 * hf + 1] = g2 * cs - g1 * sn;
      }
    }
  } else {
    constexpr int HALF = R / 16;   // tiles between partners
#pragma unroll
    for (int i = I0; i < I0 + HALF; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float th = mf_rope_theta<R>(8 * (i - I0) + 2 * t4 + e, base) * AG_INV_PI;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float sn, cs;
          sincospif((float)(hf ? tB : tA) * th, &sn, &cs);
          const float g1 = acc[i][2 * hf + e], g2 = acc[i + HALF][2 * hf + e];
          acc[i][2 * hf + e] = g1 * cs + g2 * sn;
          acc[i + HALF][2 * hf + e] = g2 * cs - g1 * sn;
        }
      }
    }
  }
}

// ---- per-element pieces shared with the wgmma kernels (attention_wg.cuh) ---------------------
// Both families keep a 16-row slice of S per warp in mma C-fragment layout: s[nt][e] is row (e < 2 ? rA : rB),
// column k0 + 8nt + 2t4 + (e & 1).
// Forward scores of one key tile: the ALiBi term (s += slope·(key − row), slope in raw q·k units) and, unless
// the tile is `full`, −∞ where the key is not visible or ≥ T.
template <int NT, int T, int W, int S, int ALIBI>
__device__ __forceinline__ void ag_score_tile(float (*s)[4], int k0, int rA, int rB, int t4, float slope, bool full) {
  if constexpr (ALIBI != 0) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[nt][e] = fmaf(slope, (float)(k0 + nt * 8 + t4 * 2 + (e & 1) - ((e < 2) ? rA : rB)), s[nt][e]);
  }
  if (!full) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + t4 * 2 + (e & 1);
        if (key >= T || !ag_visible<W, S>((e < 2) ? rA : rB, key)) s[nt][e] = -MF_INF;
      }
  }
}
// Online softmax over one key tile (c' = SL2 = scale·log2 e): the new running maxima m of rows rA, rB (over the
// quad of lanes sharing them), α = 2^((m_old − m_new)·c') applied to the sums l and to O (DT n-slices); ms0, ms1
// return m_new·c' — 0 for a row that has seen nothing yet, so its P = 2^(−∞) = 0 and α = 0.
template <int NT, int DT>
__device__ __forceinline__ void ag_softmax_rescale(const float (*s)[4], float (*o)[4], float& m0, float& m1, float& l0,
                                                   float& l1, float SL2, float& ms0, float& ms1) {
  float x0 = -MF_INF, x1 = -MF_INF;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    x0 = fmaxf(x0, fmaxf(s[nt][0], s[nt][1]));
    x1 = fmaxf(x1, fmaxf(s[nt][2], s[nt][3]));
  }
  x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
  x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
  x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
  x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
  const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
  ms0 = (n0 == -MF_INF) ? 0.f : n0 * SL2;
  ms1 = (n1 == -MF_INF) ? 0.f : n1 * SL2;
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
}
// Forward epilogue: l summed over the quad, out = O·(f/l) (f = 1, or 1/(1 − p) with dropout) for rows rA, rB < T
// of the output at ob (row stride OD; ob already at this head's column 2t4), lse = m·scale + ln l at lrow[row].
template <int T, int DT, int OD>
__device__ __forceinline__ void ag_fwd_store(const float (*o)[4], float l0, float l1, float m0, float m1, float f,
                                             float scale, bf16* ob, float* lrow, int rA, int rB, int t4) {
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = f / l0, i1 = f / l1;
#pragma unroll
  for (int i = 0; i < DT; ++i) {
    if (rA < T) *reinterpret_cast<unsigned*>(ob + (long long)rA * OD + i * 8) = pack_bf16x2(o[i][0] * i0, o[i][1] * i0);
    if (rB < T) *reinterpret_cast<unsigned*>(ob + (long long)rB * OD + i * 8) = pack_bf16x2(o[i][2] * i1, o[i][3] * i1);
  }
  if (t4 == 0) {
    if (rA < T) lrow[rA] = m0 * scale + logf(l0);
    if (rB < T) lrow[rB] = m1 * scale + logf(l1);
  }
}
// A 16-row accumulator slice acc[N8][4] stored as bf16 rows rA, rB < T (row stride ld) at gp, which already
// points at this thread's column 2t4 of the first slice.
template <int T, int N8>
__device__ __forceinline__ void ag_store_rows(bf16* gp, long long ld, const float (*acc)[4], int rA, int rB) {
#pragma unroll
  for (int i = 0; i < N8; ++i) {
    if (rA < T) *reinterpret_cast<unsigned*>(gp + (long long)rA * ld + i * 8) = pack_bf16x2(acc[i][0], acc[i][1]);
    if (rB < T) *reinterpret_cast<unsigned*>(gp + (long long)rB * ld + i * 8) = pack_bf16x2(acc[i][2], acc[i][3]);
  }
}
// ---- loads -----------------------------------------------------------------------------------
// Load a ROWS×DH tile of bf16 (global row stride `gstride` elements, rows row0… of `g`) into
// shared memory in layout L (default: pitch DH + 8); rows ≥ T are zero-filled. All AG_THREADS threads
// cooperate; 16-byte chunks, consecutive threads along a row.
template <int ROWS, int DH, int T, class L = ag_pitched<DH>>
__device__ __forceinline__ void ag_load_tile(bf16* s, const bf16* g, int row0, long long gstride, int tid) {
  constexpr int CPR = DH / 8;
#pragma unroll
  for (int c = tid; c < ROWS * CPR; c += AG_THREADS) {
    const int r = c / CPR, cc = (c % CPR) * 8;
    const bool ok = row0 + r < T;
    const bf16* src = g + (long long)(ok ? row0 + r : 0) * gstride + cc;
    ag_cp_async16(s + L::at(r, cc), src, ok ? 16 : 0);
  }
}
// Store rows row0 … (< T) of a ROWS×DH shared tile in layout L to global (row stride `gstride`): the inverse
// of ag_load_tile, 16-byte chunks (8 consecutive columns are contiguous in both layouts). The forward writes
// its rotated Q and diagonal K tiles with it (the `qr`, `kr` outputs the backward reads).
template <int ROWS, int DH, int T, class L = ag_pitched<DH>>
__device__ __forceinline__ void ag_store_tile(const bf16* s, bf16* g, int row0, long long gstride, int tid) {
  constexpr int CPR = DH / 8;
#pragma unroll
  for (int c = tid; c < ROWS * CPR; c += AG_THREADS) {
    const int r = c / CPR, cc = (c % CPR) * 8;
    if (row0 + r < T)
      *reinterpret_cast<uint4*>(g + (long long)(row0 + r) * gstride + cc) = *reinterpret_cast<const uint4*>(s + L::at(r, cc));
  }
}
// Load ROWS floats v[row0 …] (rows ≥ T give 0) into shared memory.
template <int ROWS, int T>
__device__ __forceinline__ void ag_load_vec(float* s, const float* g, int row0, int tid) {
  if (tid < ROWS) {
    const bool ok = row0 + tid < T;
    ag_cp_async4(s + tid, g + (ok ? row0 + tid : 0), ok ? 4 : 0);
  }
}
// Shared-memory bytes of each kernel (attention_gen.lua computes the same numbers).
template <int DQK, int DV> __host__ __device__ constexpr int ag_smem_fwd() {
  return ((AG_BM + 2 * ag_bn_fwd<DQK>()) * (DQK + 8) + 2 * ag_bn_fwd<DQK>() * (DV + 8)) * 2;
}
template <int DQK, int DV> __host__ __device__ constexpr int ag_smem_dq() {
  return ((AG_BM + 2 * ag_bn_dq<DQK>()) * (DQK + 8) + (AG_BM + 2 * ag_bn_dq<DQK>()) * (DV + 8)) * 2;
}
// dK/dV: the tiles; with a cluster (CL > 1) at least the f32 staging of the partial sums, [64][DQK + DV + 4].
template <int DQK, int DV, int CL = 1> __host__ __device__ constexpr int ag_smem_dkdv() {
  constexpr int tiles = ((AG_BK + 2 * ag_bq<DQK, DV>()) * (DQK + 8) + (AG_BK + 2 * ag_bq<DQK, DV>()) * (DV + 8)) * 2 +
                        4 * ag_bq<DQK, DV>() * 4;
  constexpr int staging = CL > 1 ? AG_BK * (DQK + DV + 4) * 4 : 0;
  return tiles > staging ? tiles : staging;
}

// ==== forward ==================================================================================
// grid (B·H, ⌈T/64⌉): blockIdx.x = b·H + h, query tile qt = last − blockIdx.y (longest first).
// Warp w owns query rows q0 + 16w … +15 and keeps per row: running max m (raw score units),
// running sum l, and O (16 × DV f32) in registers. For each visited key tile:
//   S = Q̃·K̃ᵀ (+ ALiBi);  m' = max(m, rowmax S);  α = 2^((m − m')·c');  P = 2^(S·c' − m'·c')
//   l = α·l + rowsum P;  O = α·O + P·V           (c' = scale·log2 e)
// End: out = O / l, lse = m·scale + ln l.
// Dropout (DROP): l sums every P (lse stays the undropped one), the P fed to O = P·V is zeroed
// where keep_ij fails, and the end scales by 1/(1 − p): out = O·(1/(1 − p)) / l.
// Shared memory: Q [64][DQK+8], K [2][64][DQK+8], V [2][64][DV+8] (K/V double buffered).
template <AG_TPARAMS, bool DROP, int STREAM, int NPRE, int NREP>
__device__ __forceinline__ void ag_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, const bf16* __restrict__ pk,
                                       const bf16* __restrict__ pv, bf16* __restrict__ out, float* __restrict__ lse,
                                       bf16* __restrict__ qr, bf16* __restrict__ kr, const int* __restrict__ dropctr,
                                       float scale, float rope_base, float drop_p) {
  static_assert(ag_check<AG_TARGS>::ok, "attn: bad configuration");
  static_assert(ag_check_pre<B, NPRE, NREP, DROP>::ok, "attn: bad prefix configuration");
  constexpr int BM = AG_BM, BN = ag_bn_fwd<DQK>(), LQ = DQK + 8, LV = DV + 8;
  static_assert(BN == BM, "attn: the diagonal key tile of query tile qt must be key tile qt (kr)");
  constexpr int NPT = (NPRE + BN - 1) / BN;   // prefix key tiles, visited first
  constexpr int NQT = (T + BM - 1) / BM, KC = DQK / 16, DT = DV / 8, G = H / HKV, OD = H * DV;
  extern __shared__ __align__(16) unsigned char ag_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(ag_smem);
  bf16* sK = sQ + BM * LQ;
  bf16* sV = sK + 2 * BN * LQ;

  const int bh = blockIdx.x, b = bh / H, h = bh % H, hk = h / G;
  const int qt = NQT - 1 - (int)blockIdx.y, q0 = qt * BM, qhi = ag_imin(q0 + BM, T) - 1;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* qg = q + (long long)b * T * LDQ + QOFF + h * QHS;
  const bf16* kg = k + (long long)b * T * LDK + KOFF + hk * KHS;
  const bf16* vg = v + (long long)b * T * LDV + VOFF + hk * VHS;
  const float SL2 = scale * AG_LOG2E;
  float slope = 0.f;   // ALiBi slope in raw q·k units: s += slope·(j − i)
  if constexpr (ALIBI != 0) slope = ag_alibi_slope<H>(h) / scale;
  const ag_range rg = ag_key_tiles<BN, WINDOW, SINK>(q0, qhi);
  // iteration n < NPT visits prefix tile n (keys n·BN … of pk/pv), then the real tiles rg.tile(n − NPT)
  const bf16* pkg = NPRE > 0 ? ag_prefix_rows<B, HKV, NPRE, NREP, DQK>(pk, b, hk) : nullptr;
  const bf16* pvg = NPRE > 0 ? ag_prefix_rows<B, HKV, NPRE, NREP, DV>(pv, b, hk) : nullptr;
  auto load_kv = [&](int n, int buf) {
    if (NPRE > 0 && n < NPT) {
      ag_load_tile<BN, DQK, NPRE>(sK + buf * BN * LQ, pkg, n * BN, DQK, tid);
      ag_load_tile<BN, DV, NPRE>(sV + buf * BN * LV, pvg, n * BN, DV, tid);
    } else {
      const int k1 = rg.tile(n - NPT) * BN;
      ag_load_tile<BN, DQK, T>(sK + buf * BN * LQ, kg, k1, LDK, tid);
      ag_load_tile<BN, DV, T>(sV + buf * BN * LV, vg, k1, LDV, tid);
    }
  };
  const int NIT = NPT + rg.n;

  ag_load_tile<BM, DQK, T>(sQ, qg, q0, LDQ, tid);
  ag_cp_commit();
  load_kv(0, 0);
  ag_cp_commit();
  if constexpr (ROPE != 0) {   // Q once, before the loop (whose first barrier publishes it)
    ag_cp_wait<1>();
    __syncthreads();
    ag_rope_tile<BM, DQK, ROPE, ROPE_DIM>(sQ, q0, rope_base, tid);
  }

  unsigned qf[KC][4];
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -MF_INF, m1 = -MF_INF, l0 = 0.f, l1 = 0.f;   // rows g and g+8 of this warp
  const int rw = q0 + warp * 16, rA = rw + g, rB = rA + 8;
  // dropout: hash base, and the element index of (row rA, key 0): ((b·H + h)·T + rA)·T
  unsigned long long dbase = 0, diA = 0;
  if constexpr (DROP) {
    dbase = mf_drop_base_ctr(dropctr, (unsigned long long)STREAM);
    diA = ((unsigned long long)bh * T + (unsigned long long)rA) * (unsigned long long)T;
  }

  for (int n = 0; n < NIT; ++n) {
    // pre: a prefix tile (k0 then counts prefix entries), always visible, never rotated, no ALiBi
    const bool pre = NPRE > 0 && n < NPT;
    const int cur = n & 1, k0 = pre ? n * BN : rg.tile(n - NPT) * BN;
    if (n + 1 < NIT) {
      load_kv(n + 1, cur ^ 1);
      ag_cp_commit();
      ag_cp_wait<1>();
    } else {
      ag_cp_wait<0>();
    }
    __syncthreads();
    bf16* k_s = sK + cur * BN * LQ;
    const bf16* v_s = sV + cur * BN * LV;
    if constexpr (ROPE != 0 && KROT == 0) {
      if (!pre) ag_rope_tile<BN, DQK, ROPE, ROPE_DIM>(k_s, k0, rope_base, tid);
      __syncthreads();
      // the rotated K tile the backward reads (kr): tile qt, from its group's first head
      if (!pre && k0 == q0 && h % G == 0)
        ag_store_tile<BN, DQK, T>(k_s, kr + (long long)b * T * LDK + KOFF + hk * KHS, k0, LDK, tid);
    }
    // the rotated Q (qr), once (published by the loop's first barrier)
    if constexpr (ROPE != 0) {
      if (n == 0) ag_store_tile<BM, DQK, T>(sQ, qr + (long long)b * T * LDQ + QOFF + h * QHS, q0, LDQ, tid);
    }
    if (n == 0) {
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) ag_frag_a<LQ>(qf[kc], sQ, warp * 16, kc * 16, lane);
    }
    if (rw < T && (pre || ag_any<WINDOW, SINK>(rw, rw + 15, k0, k0 + BN - 1))) {
      // S = Q·Kᵀ (16 × BN per warp)
      float s[BN / 8][4];
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          unsigned bk[4];
          ag_frag_b_nk<LQ>(bk, k_s, np * 16, kc * 16, lane);
          ag_mma(s[2 * np], qf[kc], bk[0], bk[1]);
          ag_mma(s[2 * np + 1], qf[kc], bk[2], bk[3]);
        }
      }
      if (pre) {   // the ragged last prefix tile: entries ≥ NPRE do not exist (no ALiBi on prefix keys)
        if (NPRE % BN != 0 && k0 + BN > NPRE) {
#pragma unroll
          for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              if (k0 + nt * 8 + t4 * 2 + (e & 1) >= NPRE) s[nt][e] = -MF_INF;
        }
      } else {
        ag_score_tile<BN / 8, T, WINDOW, SINK, ALIBI>(s, k0, rA, rB, t4, slope,
                                                      ag_full<T, WINDOW, SINK>(q0, qhi, k0, k0 + BN - 1));
      }
      float ms0, ms1;   // online softmax
      ag_softmax_rescale<BN / 8, DT>(s, o, m0, m1, l0, l1, SL2, ms0, ms1);
      // P = 2^(S·c' − m'·c'), packed straight into A fragments: key chunk kk = n-tiles 2kk, 2kk+1
      unsigned pf[BN / 16][4];
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        float p0 = fast_exp2(fmaf(s[nt][0], SL2, -ms0));
        float p1 = fast_exp2(fmaf(s[nt][1], SL2, -ms0));
        float p2 = fast_exp2(fmaf(s[nt][2], SL2, -ms1));
        float p3 = fast_exp2(fmaf(s[nt][3], SL2, -ms1));
        l0 += p0 + p1;
        l1 += p2 + p3;
        if constexpr (DROP) {   // keys key, key + 1 of rows rA, rB = rA + 8
          const unsigned long long iA = diA + (unsigned long long)(k0 + nt * 8 + t4 * 2), iB = iA + 8ull * T;
          if (mf_drop_uniform(dbase, iA) < drop_p) p0 = 0.f;
          if (mf_drop_uniform(dbase, iA + 1) < drop_p) p1 = 0.f;
          if (mf_drop_uniform(dbase, iB) < drop_p) p2 = 0.f;
          if (mf_drop_uniform(dbase, iB + 1) < drop_p) p3 = 0.f;
        }
        pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p0, p1);
        pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p2, p3);
      }
      // O += P·V
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < DV / 16; ++dp) {
          unsigned bv[4];
          ag_frag_b_kn<LV>(bv, v_s, kk * 16, dp * 16, lane);
          ag_mma(o[2 * dp], pf[kk], bv[0], bv[1]);
          ag_mma(o[2 * dp + 1], pf[kk], bv[2], bv[3]);
        }
      }
    }
    __syncthreads();   // everyone is done with buffer `cur` before it is refilled
  }

  // finish: full row sums across the quad, normalise, write out and lse
  ag_fwd_store<T, DT, OD>(o, l0, l1, m0, m1, DROP ? 1.f / (1.f - drop_p) : 1.f, scale,
                          out + (long long)b * T * OD + h * DV + t4 * 2, lse + (long long)bh * T, rA, rB, t4);
}

// The entry points gen's wrappers call (attention_gen.lua): without dropout, and with it (one more
// template argument, the op's `stream`; `dropctr` after the input pointers, `dropout` = p after the
// floats); with a learned prefix (NPRE > 0, NREP replicas; two more template arguments, pk and pv after v).
// With RoPE the forward also writes the rotated copies qr, kr (after lse; the layouts of q and k, only
// their heads' columns) that the backward reads instead of q, k — qr alone when k arrives rotated
// (KROT = 1) — so the entries without them require ROPE = 0, those with qr alone KROT = 1.
// attn_bwd_dkdv and attn_bwd_dq below follow the same scheme.
#define AG_NO_ROPE static_assert(ROPE == 0, "attn: with RoPE the forward takes the qr (and, KROT = 0, kr) outputs")
#define AG_ROPE_QK static_assert(ROPE != 0 && KROT == 0, "attn: qr and kr belong to RoPE with KROT = 0")
#define AG_ROPE_Q static_assert(ROPE != 0 && KROT == 1, "attn: qr alone belongs to RoPE with KROT = 1")
template <AG_TPARAMS>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         bf16* __restrict__ out, float* __restrict__ lse, float scale, float rope_base) {
  AG_NO_ROPE;
  ag_fwd<AG_TARGS, false, 0, 0, 1>(q, k, v, nullptr, nullptr, out, lse, nullptr, nullptr, nullptr, scale, rope_base, 0.f);
}
template <AG_TPARAMS>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         bf16* __restrict__ out, float* __restrict__ lse, bf16* __restrict__ qr, bf16* __restrict__ kr,
                         float scale, float rope_base) {
  AG_ROPE_QK;
  ag_fwd<AG_TARGS, false, 0, 0, 1>(q, k, v, nullptr, nullptr, out, lse, qr, kr, nullptr, scale, rope_base, 0.f);
}
template <AG_TPARAMS>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         bf16* __restrict__ out, float* __restrict__ lse, bf16* __restrict__ qr, float scale,
                         float rope_base) {
  AG_ROPE_Q;
  ag_fwd<AG_TARGS, false, 0, 0, 1>(q, k, v, nullptr, nullptr, out, lse, qr, nullptr, nullptr, scale, rope_base, 0.f);
}
template <AG_TPARAMS, int STREAM>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const int* __restrict__ dropctr, bf16* __restrict__ out, float* __restrict__ lse, float scale,
                         float rope_base, float dropout) {
  AG_NO_ROPE;
  ag_fwd<AG_TARGS, true, STREAM, 0, 1>(q, k, v, nullptr, nullptr, out, lse, nullptr, nullptr, dropctr, scale, rope_base,
                                       dropout);
}
template <AG_TPARAMS, int STREAM>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const int* __restrict__ dropctr, bf16* __restrict__ out, float* __restrict__ lse,
                         bf16* __restrict__ qr, bf16* __restrict__ kr, float scale, float rope_base, float dropout) {
  AG_ROPE_QK;
  ag_fwd<AG_TARGS, true, STREAM, 0, 1>(q, k, v, nullptr, nullptr, out, lse, qr, kr, dropctr, scale, rope_base, dropout);
}
template <AG_TPARAMS, int STREAM>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const int* __restrict__ dropctr, bf16* __restrict__ out, float* __restrict__ lse,
                         bf16* __restrict__ qr, float scale, float rope_base, float dropout) {
  AG_ROPE_Q;
  ag_fwd<AG_TARGS, true, STREAM, 0, 1>(q, k, v, nullptr, nullptr, out, lse, qr, nullptr, dropctr, scale, rope_base,
                                       dropout);
}
template <AG_TPARAMS, int NPRE, int NREP>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const bf16* __restrict__ pk, const bf16* __restrict__ pv, bf16* __restrict__ out,
                         float* __restrict__ lse, float scale, float rope_base) {
  AG_NO_ROPE;
  ag_fwd<AG_TARGS, false, 0, NPRE, NREP>(q, k, v, pk, pv, out, lse, nullptr, nullptr, nullptr, scale, rope_base, 0.f);
}
template <AG_TPARAMS, int NPRE, int NREP>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const bf16* __restrict__ pk, const bf16* __restrict__ pv, bf16* __restrict__ out,
                         float* __restrict__ lse, bf16* __restrict__ qr, bf16* __restrict__ kr, float scale,
                         float rope_base) {
  AG_ROPE_QK;
  ag_fwd<AG_TARGS, false, 0, NPRE, NREP>(q, k, v, pk, pv, out, lse, qr, kr, nullptr, scale, rope_base, 0.f);
}
template <AG_TPARAMS, int NPRE, int NREP>
__device__ void attn_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         const bf16* __restrict__ pk, const bf16* __restrict__ pv, bf16* __restrict__ out,
                         float* __restrict__ lse, bf16* __restrict__ qr, float scale, float rope_base) {
  AG_ROPE_Q;
  ag_fwd<AG_TARGS, false, 0, NPRE, NREP>(q, k, v, pk, pv, out, lse, qr, nullptr, nullptr, scale, rope_base, 0.f);
}

// ==== backward: delta ==========================================================================
// delta[b,h,t] = Σ_i out[b·T+t, h·DV+i] · dout[b·T+t, h·DV+i]. L lanes cooperate on one
// (row, head) with 16-byte loads — L = the largest power of two dividing DV/8 (DV = 16, 32, 64,
// 128: L = DV/8, one chunk each; DV = 96: L = 4, three chunks each, lane l taking chunks l, l + L,
// …) — then a fixed butterfly over those lanes. attn_bwd_pre_lanes is launch's L.
template <int DV> __host__ __device__ constexpr int attn_bwd_pre_lanes() {
  return (DV / 8) % 16 == 0 ? 16 : (DV / 8) % 8 == 0 ? 8 : (DV / 8) % 4 == 0 ? 4 : 2;
}
template <int B, int T, int H, int DV>
__device__ void attn_bwd_pre(const bf16* __restrict__ out, const bf16* __restrict__ dout, float* __restrict__ delta) {
  static_assert(ag_dim_ok(DV, false), "attn_bwd_pre: DV must be a multiple of 16 in [16, 128]");
  constexpr int L = attn_bwd_pre_lanes<DV>(), NC = DV / 8 / L, OD = H * DV;   // L divides 32
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long item = idx / L;          // = row·H + h
  const int part = (int)(idx % L);
  const bool ok = item < (long long)B * T * H;
  float s = 0.f;
  if (ok) {
    const long long row = item / H;
    const int h = (int)(item % H);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      float a[8], g[8];
      load8(out + row * OD + h * DV + (part + c * L) * 8, a);
      load8(dout + row * OD + h * DV + (part + c * L) * 8, g);
#pragma unroll
      for (int i = 0; i < 8; ++i) s += a[i] * g[i];
    }
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
// grid (B·HKV·CL, ⌈T/64⌉): block = key tile kt = blockIdx.y (k0 = 64·kt; sink tiles, the longest,
// start first) of kv head hk of batch b (blockIdx.x = (b·HKV + hk)·CL + rank; CL = 1 unless the kv
// heads are grouped, below). Warp w owns keys k0 + 16w … +15 and holds dK (16 × DQK) and dV (16 × DV)
// f32 in registers. It loops over its query heads of the group in order (all G when CL = 1), and for
// each over the query tiles (BQ rows) that can see
// the key tile: q from k0 to T − 1 when W = 0 or the tile holds a sink, else to k0 + 63 + W − 1:
//   Sᵀ = K̃·Q̃ᵀ (+ ALiBi);  Pᵀ = 2^(Sᵀ·c' − lse·log2 e) (0 where not visible or query ≥ T)
//   dV += Pᵀ·dO;  dPᵀ = V·dOᵀ;  dSᵀ = Pᵀ ⊙ (dPᵀ − delta);  dK += dSᵀ·Q̃
// End: dK ·= scale, un-rotated (RoPE), both written at the k and v layouts (rows < T).
// Dropout (DROP): the keep bits of this thread's Pᵀ elements go to a bit mask (nt·4 + e; QN·4 ≤ 32);
// dV takes Pᵀ ⊙ keep and is scaled by 1/(1 − p) at the end; dSᵀ = Pᵀ ⊙ (z ⊙ dPᵀ − delta).
// Prefix (NPRE > 0): grid (B·HKV·CL, NPT + ⌈T/64⌉), NPT = ⌈NPRE/64⌉; blockIdx.y < NPT is prefix tile
// blockIdx.y (entries k0 … k0 + 63 of PK/PV of row b's replica; rows ≥ NPRE zero-filled and
// masked), visiting every query tile of every head of the group; no RoPE on the keys, no ALiBi.
// It writes (never adds) the f32 per-row partials dpk[b, hk, n, :] = c·Σ ds·q̃ and dpv[b, hk, n, :]
// (n < NPRE); blockIdx.y ≥ NPT is real key tile blockIdx.y − NPT, as without a prefix.
// Grouped kv heads (G = H/HKV > 1): one block would sum all G query heads of its kv head in turn, so a
// causal first key tile costs G·⌈T/BQ⌉ iterations in one block while B·HKV·⌈T/64⌉ blocks (128 for
// Qwen2-0.5B at B = 2) leave the GPU mostly idle. Instead CL = ag_cluster<G>() blocks form a thread-block
// cluster along x (blockIdx.x = (b·HKV + hk)·CL + rank): rank r takes the GR = G/CL heads hk·G + r·GR …,
// then every rank stages its f32 partial dK (scaled, un-rotated) and dV in shared memory, and after a
// cluster barrier rank r finishes rows r, r + CL, … of the tile: Σ over ranks 0 … CL − 1 in that order
// (read through distributed shared memory), so the result repeats bit for bit; a second barrier keeps
// every block's shared memory alive until all have read it. Prefix blocks reduce the same way into the
// f32 partials dpk/dpv.
// Shared memory: K [64][DQK+8], V [64][DV+8]; Q [2][BQ][DQK+8], dO [2][BQ][DV+8]; lse, delta [2][BQ];
// with CL > 1, afterwards, the staging [64][DQK + DV + 4] f32 in the same bytes (ag_smem_dkdv).
template <AG_TPARAMS, bool DROP, int STREAM, int NPRE, int NREP>
__device__ __forceinline__ void ag_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                        const bf16* __restrict__ v, const bf16* __restrict__ pk,
                                        const bf16* __restrict__ pv, const bf16* __restrict__ dout,
                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                        const int* __restrict__ dropctr, bf16* dk, bf16* dv, float* dpk, float* dpv,
                                        float scale, float rope_base, float drop_p) {
  static_assert(ag_check<AG_TARGS>::ok, "attn: bad configuration");
  static_assert(ag_check_pre<B, NPRE, NREP, DROP>::ok, "attn: bad prefix configuration");
  constexpr int BK = AG_BK, BQ = ag_bq<DQK, DV>(), LQ = DQK + 8, LV = DV + 8;
  constexpr int NPT = (NPRE + BK - 1) / BK;   // prefix blocks per (b, kv head), the first blockIdx.y
  constexpr int KC = DQK / 16, VC = DV / 16, QT_ = DQK / 8, VT = DV / 8, QN = BQ / 8, G = H / HKV, OD = H * DV;
  constexpr int CL = ag_cluster<G>(), GR = G / CL;   // blocks per cluster, query heads per block
  extern __shared__ __align__(16) unsigned char ag_smem[];
  bf16* sK = reinterpret_cast<bf16*>(ag_smem);
  bf16* sV = sK + BK * LQ;
  bf16* sQ = sV + BK * LV;              // [2][BQ][LQ]
  bf16* sO = sQ + 2 * BQ * LQ;          // dO, [2][BQ][LV]
  float* sL = reinterpret_cast<float*>(sO + 2 * BQ * LV);   // [2][BQ]
  float* sD = sL + 2 * BQ;                                  // [2][BQ]

  const int bk = (int)blockIdx.x / CL, rank = (int)blockIdx.x % CL, b = bk / HKV, hk = bk % HKV;
  const int h0 = hk * G + rank * GR;                    // this block's first query head
  const bool pre = NPRE > 0 && (int)blockIdx.y < NPT;   // a prefix block (k0 counts prefix entries)
  const int KLIM = pre ? NPRE : T;                      // key rows that exist
  const int k0 = ((int)blockIdx.y - (pre ? 0 : NPT)) * BK, khi = ag_imin(k0 + BK, KLIM) - 1;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* kg = k + (long long)b * T * LDK + KOFF + hk * KHS;
  const bf16* vg = v + (long long)b * T * LDV + VOFF + hk * VHS;
  const bf16* qg0 = q + (long long)b * T * LDQ + QOFF;         // + h·QHS
  const bf16* og0 = dout + (long long)b * T * OD;              // + h·DV
  const float* lg0 = lse + (long long)b * H * T;               // + h·T
  const float* dg0 = delta + (long long)b * H * T;
  const float SL2 = scale * AG_LOG2E;

  // query tiles qt0 … qt0 + NQR − 1 for each of the GR heads: iteration n ↔ (head h0 + n / NQR, tile n % NQR)
  const int qt0 = pre ? 0 : k0 / BQ;
  const int qlast = (pre || WINDOW == 0 || k0 < SINK) ? T - 1 : ag_imin(T - 1, khi + WINDOW - 1);
  const int NQR = qlast / BQ - qt0 + 1, NIT = GR * NQR;
  auto load_q = [&](int it, int buf) {
    const int h = h0 + it / NQR, q1 = (qt0 + it % NQR) * BQ;
    ag_load_tile<BQ, DQK, T>(sQ + buf * BQ * LQ, qg0 + h * QHS, q1, LDQ, tid);
    ag_load_tile<BQ, DV, T>(sO + buf * BQ * LV, og0 + h * DV, q1, OD, tid);
    ag_load_vec<BQ, T>(sL + buf * BQ, lg0 + (long long)h * T, q1, tid);
    ag_load_vec<BQ, T>(sD + buf * BQ, dg0 + (long long)h * T, q1, tid);
  };
  if (NPRE > 0 && pre) {
    ag_load_tile<BK, DQK, NPRE>(sK, ag_prefix_rows<B, HKV, NPRE, NREP, DQK>(pk, b, hk), k0, DQK, tid);
    ag_cp_commit();
    ag_load_tile<BK, DV, NPRE>(sV, ag_prefix_rows<B, HKV, NPRE, NREP, DV>(pv, b, hk), k0, DV, tid);
  } else {
    ag_load_tile<BK, DQK, T>(sK, kg, k0, LDK, tid);
    ag_cp_commit();
    ag_load_tile<BK, DV, T>(sV, vg, k0, LDV, tid);
  }
  load_q(0, 0);
  ag_cp_commit();

  float dkacc[QT_][4], dvacc[VT][4];
#pragma unroll
  for (int i = 0; i < QT_; ++i) dkacc[i][0] = dkacc[i][1] = dkacc[i][2] = dkacc[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < VT; ++i) dvacc[i][0] = dvacc[i][1] = dvacc[i][2] = dvacc[i][3] = 0.f;
  const int kw = k0 + warp * 16, kA = kw + g, kB = kA + 8;   // this warp's / thread's key rows
  unsigned long long dbase = 0;
  float dsc = 0.f;   // 1/(1 − p)
  if constexpr (DROP) {
    dbase = mf_drop_base_ctr(dropctr, (unsigned long long)STREAM);
    dsc = 1.f / (1.f - drop_p);
  }

  for (int n = 0; n < NIT; ++n) {
    const int cur = n & 1, h = h0 + n / NQR, q0 = (qt0 + n % NQR) * BQ;
    if (n + 1 < NIT) {
      load_q(n + 1, cur ^ 1);
      ag_cp_commit();
      ag_cp_wait<1>();
    } else {
      ag_cp_wait<0>();
    }
    __syncthreads();
    bf16* q_s = sQ + cur * BQ * LQ;
    const bf16* o_s = sO + cur * BQ * LV;
    const float* l_s = sL + cur * BQ;
    const float* d_s = sD + cur * BQ;
    const int qhi = ag_imin(q0 + BQ, T) - 1;
    if (kw < KLIM && (pre || ag_any<WINDOW, SINK>(q0, qhi, kw, kw + 15))) {
      // Sᵀ = K·Qᵀ  (16 keys × BQ queries per warp)
      float s[QN][4];
#pragma unroll
      for (int i = 0; i < QN; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        unsigned ka[4];
        ag_frag_a<LQ>(ka, sK, warp * 16, kc * 16, lane);
#pragma unroll
        for (int np = 0; np < QN / 2; ++np) {
          unsigned bq[4];
          ag_frag_b_nk<LQ>(bq, q_s, np * 16, kc * 16, lane);
          ag_mma(s[2 * np], ka, bq[0], bq[1]);
          ag_mma(s[2 * np + 1], ka, bq[2], bq[3]);
        }
      }
      if constexpr (ALIBI != 0) {   // s += (m_h/scale)·(key − query); none for prefix keys
        const float slope = pre ? 0.f : ag_alibi_slope<H>(h) / scale;
#pragma unroll
        for (int nt = 0; nt < QN; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            s[nt][e] = fmaf(slope, (float)(((e < 2) ? kA : kB) - (q0 + nt * 8 + t4 * 2 + (e & 1))), s[nt][e]);
      }
      // Pᵀ (columns are queries: this thread's are q0 + 8nt + 2t4 + {0,1})
      // prefix: every query < T sees every entry < NPRE
      const bool full = pre ? (k0 + BK <= NPRE && q0 + BQ <= T)
                            : ag_full<T, WINDOW, SINK>(q0, q0 + BQ - 1, k0, k0 + BK - 1);
      unsigned keep = 0;   // dropout: bit nt·4 + e set iff element (nt, e) is kept
      // dropout element index of (query q0 + 2t4, key kA): ((b·H + h)·T + query)·T + key
      const unsigned long long di = DROP ? ((unsigned long long)(b * H + h) * T + (unsigned long long)(q0 + t4 * 2)) *
                                               (unsigned long long)T + (unsigned long long)kA : 0ull;
#pragma unroll
      for (int nt = 0; nt < QN; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = nt * 8 + t4 * 2 + (e & 1);
          float p = fast_exp2(fmaf(s[nt][e], SL2, -l_s[qc] * AG_LOG2E));
          if (!full) {
            const int qi = q0 + qc;
            const int kj = (e < 2) ? kA : kB;
            if (qi >= T || (pre ? kj >= NPRE : !ag_visible<WINDOW, SINK>(qi, kj))) p = 0.f;
          }
          s[nt][e] = p;
          if constexpr (DROP) {
            const unsigned long long i = di + (unsigned long long)(nt * 8 + (e & 1)) * T + (e < 2 ? 0ull : 8ull);
            if (mf_drop_uniform(dbase, i) >= drop_p) keep |= 1u << (nt * 4 + e);
          }
        }
      }
      unsigned pf[QN / 2][4];
#pragma unroll
      for (int nt = 0; nt < QN; ++nt) {
        if constexpr (DROP) {   // dV takes the kept probabilities (1/(1 − p) applied at the end)
          float pk[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) pk[e] = (keep >> (nt * 4 + e)) & 1u ? s[nt][e] : 0.f;
          pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(pk[0], pk[1]);
          pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(pk[2], pk[3]);
        } else {
          pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(s[nt][0], s[nt][1]);
          pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2], s[nt][3]);
        }
      }
      // dV += Pᵀ·dO
#pragma unroll
      for (int kk = 0; kk < QN / 2; ++kk) {
#pragma unroll
        for (int dp = 0; dp < VC; ++dp) {
          unsigned bo[4];
          ag_frag_b_kn<LV>(bo, o_s, kk * 16, dp * 16, lane);
          ag_mma(dvacc[2 * dp], pf[kk], bo[0], bo[1]);
          ag_mma(dvacc[2 * dp + 1], pf[kk], bo[2], bo[3]);
        }
      }
      // dPᵀ = V·dOᵀ
      float dpt[QN][4];
#pragma unroll
      for (int i = 0; i < QN; ++i) dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < VC; ++kc) {
        unsigned va[4];
        ag_frag_a<LV>(va, sV, warp * 16, kc * 16, lane);
#pragma unroll
        for (int np = 0; np < QN / 2; ++np) {
          unsigned bo[4];
          ag_frag_b_nk<LV>(bo, o_s, np * 16, kc * 16, lane);
          ag_mma(dpt[2 * np], va, bo[0], bo[1]);
          ag_mma(dpt[2 * np + 1], va, bo[2], bo[3]);
        }
      }
      // dSᵀ = Pᵀ ⊙ (dPᵀ − delta) (dropout: Pᵀ ⊙ (z ⊙ dPᵀ − delta)), packed as A fragments
      unsigned sf[QN / 2][4];
#pragma unroll
      for (int nt = 0; nt < QN; ++nt) {
        const int qc = nt * 8 + t4 * 2;
        const float dl0 = d_s[qc], dl1 = d_s[qc + 1];
        if constexpr (DROP) {
#pragma unroll
          for (int e = 0; e < 4; ++e) dpt[nt][e] *= (keep >> (nt * 4 + e)) & 1u ? dsc : 0.f;
        }
        sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(s[nt][0] * (dpt[nt][0] - dl0), s[nt][1] * (dpt[nt][1] - dl1));
        sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(s[nt][2] * (dpt[nt][2] - dl0), s[nt][3] * (dpt[nt][3] - dl1));
      }
      // dK += dSᵀ·Q
#pragma unroll
      for (int kk = 0; kk < QN / 2; ++kk) {
#pragma unroll
        for (int dp = 0; dp < KC; ++dp) {
          unsigned bq[4];
          ag_frag_b_kn<LQ>(bq, q_s, kk * 16, dp * 16, lane);
          ag_mma(dkacc[2 * dp], sf[kk], bq[0], bq[1]);
          ag_mma(dkacc[2 * dp + 1], sf[kk], bq[2], bq[3]);
        }
      }
    }
    __syncthreads();   // buffer `cur` is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int i = 0; i < QT_; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dkacc[i][e] *= scale;
  if constexpr (DROP) {
#pragma unroll
    for (int i = 0; i < VT; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) dvacc[i][e] *= dsc;
  }
  if constexpr (CL > 1) {   // the cluster reduce (see above); every block of the cluster gets here
    if constexpr (ROPE != 0 && KROT == 0) {
      if (!pre) ag_unrope_frag<DQK, ROPE, ROPE_DIM>(dkacc, kA, kB, t4, rope_base);
    }
    constexpr int LR = DQK + DV + 4, C4 = (DQK + DV) / 4, NR = (BK + CL - 1) / CL;
    float* sR = reinterpret_cast<float*>(ag_smem);   // the tiles are free: the loop ended with a barrier
    const int rA = warp * 16 + g, rB = rA + 8;
#pragma unroll
    for (int i = 0; i < QT_; ++i) {
      *reinterpret_cast<float2*>(sR + rA * LR + i * 8 + t4 * 2) = make_float2(dkacc[i][0], dkacc[i][1]);
      *reinterpret_cast<float2*>(sR + rB * LR + i * 8 + t4 * 2) = make_float2(dkacc[i][2], dkacc[i][3]);
    }
#pragma unroll
    for (int i = 0; i < VT; ++i) {
      *reinterpret_cast<float2*>(sR + rA * LR + DQK + i * 8 + t4 * 2) = make_float2(dvacc[i][0], dvacc[i][1]);
      *reinterpret_cast<float2*>(sR + rB * LR + DQK + i * 8 + t4 * 2) = make_float2(dvacc[i][2], dvacc[i][3]);
    }
    ag_cluster_sync();
    bf16* gk = dk + (long long)b * T * LDK + KOFF + hk * KHS;
    bf16* gv = dv + (long long)b * T * LDV + VOFF + hk * VHS;
    for (int e = tid; e < NR * C4; e += AG_THREADS) {
      const int row = rank + (e / C4) * CL, c = (e % C4) * 4, kj = k0 + row;
      if (row >= BK) continue;
      float4 a = ag_cluster_ld4(sR + row * LR + c, 0);
      for (int j = 1; j < CL; ++j) {
        const float4 x = ag_cluster_ld4(sR + row * LR + c, (unsigned)j);
        a.x += x.x; a.y += x.y; a.z += x.z; a.w += x.w;
      }
      if (NPRE > 0 && pre) {
        if (kj < NPRE) {
          float* o = c < DQK ? dpk + (((long long)b * HKV + hk) * NPRE + kj) * DQK + c
                             : dpv + (((long long)b * HKV + hk) * NPRE + kj) * DV + (c - DQK);
          *reinterpret_cast<float4*>(o) = a;
        }
      } else if (kj < T) {
        bf16* o = c < DQK ? gk + (long long)kj * LDK + c : gv + (long long)kj * LDV + (c - DQK);
        *reinterpret_cast<uint2*>(o) = make_uint2(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w));
      }
    }
    ag_cluster_sync();   // no block may leave while another still reads its shared memory
    return;
  }
  if constexpr (NPRE > 0) {
    if (pre) {   // per-row f32 partials dpk/dpv [B, HKV, NPRE, D] (prefix keys were never rotated)
      float* pkr = dpk + ((long long)b * HKV + hk) * NPRE * DQK + t4 * 2;
      float* pvr = dpv + ((long long)b * HKV + hk) * NPRE * DV + t4 * 2;
#pragma unroll
      for (int i = 0; i < QT_; ++i) {
        if (kA < NPRE) *reinterpret_cast<float2*>(pkr + (long long)kA * DQK + i * 8) = make_float2(dkacc[i][0], dkacc[i][1]);
        if (kB < NPRE) *reinterpret_cast<float2*>(pkr + (long long)kB * DQK + i * 8) = make_float2(dkacc[i][2], dkacc[i][3]);
      }
#pragma unroll
      for (int i = 0; i < VT; ++i) {
        if (kA < NPRE) *reinterpret_cast<float2*>(pvr + (long long)kA * DV + i * 8) = make_float2(dvacc[i][0], dvacc[i][1]);
        if (kB < NPRE) *reinterpret_cast<float2*>(pvr + (long long)kB * DV + i * 8) = make_float2(dvacc[i][2], dvacc[i][3]);
      }
      return;
    }
  }
  if constexpr (ROPE != 0 && KROT == 0) ag_unrope_frag<DQK, ROPE, ROPE_DIM>(dkacc, kA, kB, t4, rope_base);
  ag_store_rows<T, QT_>(dk + (long long)b * T * LDK + KOFF + hk * KHS + t4 * 2, LDK, dkacc, kA, kB);
  ag_store_rows<T, VT>(dv + (long long)b * T * LDV + VOFF + hk * VHS + t4 * 2, LDV, dvacc, kA, kB);
}

template <AG_TPARAMS>
__device__ void attn_bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                              const bf16* __restrict__ dout, const float* __restrict__ lse,
                              const float* __restrict__ delta, bf16* dk, bf16* dv, float scale, float rope_base) {
  ag_dkdv<AG_TARGS, false, 0, 0, 1>(q, k, v, nullptr, nullptr, dout, lse, delta, nullptr, dk, dv, nullptr, nullptr,
                                    scale, rope_base, 0.f);
}
template <AG_TPARAMS, int STREAM>
__device__ void attn_bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                              const bf16* __restrict__ dout, const float* __restrict__ lse,
                              const float* __restrict__ delta, const int* __restrict__ dropctr, bf16* dk, bf16* dv,
                              float scale, float rope_base, float dropout) {
  ag_dkdv<AG_TARGS, true, STREAM, 0, 1>(q, k, v, nullptr, nullptr, dout, lse, delta, dropctr, dk, dv, nullptr, nullptr,
                                        scale, rope_base, dropout);
}
// With a learned prefix (pk, pv after v; the f32 partials dpk, dpv after dk, dv).
template <AG_TPARAMS, int NPRE, int NREP>
__device__ void attn_bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                              const bf16* __restrict__ pk, const bf16* __restrict__ pv, const bf16* __restrict__ dout,
                              const float* __restrict__ lse, const float* __restrict__ delta, bf16* dk, bf16* dv,
                              float* dpk, float* dpv, float scale, float rope_base) {
  ag_dkdv<AG_TARGS, false, 0, NPRE, NREP>(q, k, v, pk, pv, dout, lse, delta, nullptr, dk, dv, dpk, dpv, scale,
                                          rope_base, 0.f);
}

// ==== backward: dQ ==============================================================================
// grid (B·H, ⌈T/64⌉): query tile qt = last − blockIdx.y (longest first). Warp w owns query rows
// q0 + 16w … +15 and dQ (16 × DQK f32). Visits the same key tiles as the forward (width BN):
//   S = Q̃·K̃ᵀ (+ ALiBi);  P = 2^(S·c' − lse·log2 e) (0 where not visible);  dP = dO·Vᵀ;
//   dS = P ⊙ (dP − delta);  dQ += dS·K̃
// End: dQ ·= scale, un-rotated (RoPE), written at the q layout (rows < T). Rows ≥ T use
// lse = +∞ (P = 0). Dropout (DROP): dS = P ⊙ (z ⊙ dP − delta), z from the hash per element.
// Shared memory: Q [64][DQK+8], dO [64][DV+8]; K [2][BN][DQK+8], V [2][BN][DV+8].
template <AG_TPARAMS, bool DROP, int STREAM, int NPRE, int NREP>
__device__ __forceinline__ void ag_dq(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                      const bf16* __restrict__ v, const bf16* __restrict__ pk,
                                      const bf16* __restrict__ pv, const bf16* __restrict__ dout,
                                      const float* __restrict__ lse, const float* __restrict__ delta,
                                      const int* __restrict__ dropctr, bf16* dq, float scale, float rope_base,
                                      float drop_p) {
  static_assert(ag_check<AG_TARGS>::ok, "attn: bad configuration");
  static_assert(ag_check_pre<B, NPRE, NREP, DROP>::ok, "attn: bad prefix configuration");
  constexpr int BM = AG_BM, BN = ag_bn_dq<DQK>(), LQ = DQK + 8, LV = DV + 8;
  constexpr int NPT = (NPRE + BN - 1) / BN;   // prefix key tiles, visited first
  constexpr int NQT = (T + BM - 1) / BM, KC = DQK / 16, VC = DV / 16, QT_ = DQK / 8, G = H / HKV, OD = H * DV;
  extern __shared__ __align__(16) unsigned char ag_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(ag_smem);
  bf16* sO = sQ + BM * LQ;
  bf16* sK = sO + BM * LV;            // [2][BN][LQ]
  bf16* sV = sK + 2 * BN * LQ;        // [2][BN][LV]

  const int bh = blockIdx.x, b = bh / H, h = bh % H, hk = h / G;
  const int qt = NQT - 1 - (int)blockIdx.y, q0 = qt * BM, qhi = ag_imin(q0 + BM, T) - 1;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* qg = q + (long long)b * T * LDQ + QOFF + h * QHS;
  const bf16* kg = k + (long long)b * T * LDK + KOFF + hk * KHS;
  const bf16* vg = v + (long long)b * T * LDV + VOFF + hk * VHS;
  const bf16* og = dout + (long long)b * T * OD + h * DV;
  const float SL2 = scale * AG_LOG2E;
  float slope = 0.f;
  if constexpr (ALIBI != 0) slope = ag_alibi_slope<H>(h) / scale;
  const ag_range rg = ag_key_tiles<BN, WINDOW, SINK>(q0, qhi);
  // iteration n < NPT visits prefix tile n, then the real tiles rg.tile(n − NPT) (as the forward)
  const bf16* pkg = NPRE > 0 ? ag_prefix_rows<B, HKV, NPRE, NREP, DQK>(pk, b, hk) : nullptr;
  const bf16* pvg = NPRE > 0 ? ag_prefix_rows<B, HKV, NPRE, NREP, DV>(pv, b, hk) : nullptr;
  auto load_kv = [&](int n, int buf) {
    if (NPRE > 0 && n < NPT) {
      ag_load_tile<BN, DQK, NPRE>(sK + buf * BN * LQ, pkg, n * BN, DQK, tid);
      ag_load_tile<BN, DV, NPRE>(sV + buf * BN * LV, pvg, n * BN, DV, tid);
    } else {
      const int k1 = rg.tile(n - NPT) * BN;
      ag_load_tile<BN, DQK, T>(sK + buf * BN * LQ, kg, k1, LDK, tid);
      ag_load_tile<BN, DV, T>(sV + buf * BN * LV, vg, k1, LDV, tid);
    }
  };
  const int NIT = NPT + rg.n;

  ag_load_tile<BM, DQK, T>(sQ, qg, q0, LDQ, tid);
  ag_cp_commit();
  ag_load_tile<BM, DV, T>(sO, og, q0, OD, tid);
  load_kv(0, 0);
  ag_cp_commit();

  const int rw = q0 + warp * 16, rA = rw + g, rB = rA + 8;
  const float lA = rA < T ? lse[(long long)bh * T + rA] * AG_LOG2E : MF_INF;
  const float lB = rB < T ? lse[(long long)bh * T + rB] * AG_LOG2E : MF_INF;
  const float dA = rA < T ? delta[(long long)bh * T + rA] : 0.f;
  const float dB = rB < T ? delta[(long long)bh * T + rB] : 0.f;
  // dropout: hash base, 1/(1 − p), and the element index of (row rA, key 0): ((b·H + h)·T + rA)·T
  unsigned long long dbase = 0, diA = 0;
  float dsc = 0.f;
  if constexpr (DROP) {
    dbase = mf_drop_base_ctr(dropctr, (unsigned long long)STREAM);
    diA = ((unsigned long long)bh * T + (unsigned long long)rA) * (unsigned long long)T;
    dsc = 1.f / (1.f - drop_p);
  }

  float dqacc[QT_][4];
#pragma unroll
  for (int i = 0; i < QT_; ++i) dqacc[i][0] = dqacc[i][1] = dqacc[i][2] = dqacc[i][3] = 0.f;

  for (int n = 0; n < NIT; ++n) {
    // pre: a prefix tile (k0 counts prefix entries): always visible, never rotated, no ALiBi
    const bool pre = NPRE > 0 && n < NPT;
    const int cur = n & 1, k0 = pre ? n * BN : rg.tile(n - NPT) * BN;
    if (n + 1 < NIT) {
      load_kv(n + 1, cur ^ 1);
      ag_cp_commit();
      ag_cp_wait<1>();
    } else {
      ag_cp_wait<0>();
    }
    __syncthreads();
    bf16* k_s = sK + cur * BN * LQ;
    const bf16* v_s = sV + cur * BN * LV;
    if (rw < T && (pre || ag_any<WINDOW, SINK>(rw, rw + 15, k0, k0 + BN - 1))) {
      // S = Q·Kᵀ and dP = dO·Vᵀ (16 × BN each per warp)
      float s[BN / 8][4], dpa[BN / 8][4];
#pragma unroll
      for (int i = 0; i < BN / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] = dpa[i][e] = 0.f;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        unsigned qa[4];
        ag_frag_a<LQ>(qa, sQ, warp * 16, kc * 16, lane);
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          unsigned bk[4];
          ag_frag_b_nk<LQ>(bk, k_s, np * 16, kc * 16, lane);
          ag_mma(s[2 * np], qa, bk[0], bk[1]);
          ag_mma(s[2 * np + 1], qa, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int kc = 0; kc < VC; ++kc) {
        unsigned oa[4];
        ag_frag_a<LV>(oa, sO, warp * 16, kc * 16, lane);
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          unsigned bv[4];
          ag_frag_b_nk<LV>(bv, v_s, np * 16, kc * 16, lane);
          ag_mma(dpa[2 * np], oa, bv[0], bv[1]);
          ag_mma(dpa[2 * np + 1], oa, bv[2], bv[3]);
        }
      }
      // dS = P ⊙ (dP − delta), packed as A fragments. A prefix tile masks only entries ≥ NPRE.
      const bool full = pre ? k0 + BN <= NPRE : ag_full<T, WINDOW, SINK>(q0, qhi, k0, k0 + BN - 1);
      unsigned sf[BN / 16][4];
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + nt * 8 + t4 * 2 + (e & 1), row = (e < 2) ? rA : rB;
          float x = s[nt][e];
          if constexpr (ALIBI != 0) x = pre ? x : fmaf(slope, (float)(key - row), x);
          p[e] = fast_exp2(fmaf(x, SL2, -((e < 2) ? lA : lB)));
          if (!full && (pre ? key >= NPRE : (key >= T || !ag_visible<WINDOW, SINK>(row, key)))) p[e] = 0.f;
          if constexpr (DROP) {   // dP ·= z (row rB = rA + 8: index + 8·T)
            const unsigned long long i = diA + (unsigned long long)key + (e < 2 ? 0ull : 8ull * T);
            dpa[nt][e] *= mf_drop_uniform(dbase, i) >= drop_p ? dsc : 0.f;
          }
        }
        sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0] * (dpa[nt][0] - dA), p[1] * (dpa[nt][1] - dA));
        sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2] * (dpa[nt][2] - dB), p[3] * (dpa[nt][3] - dB));
      }
      // dQ += dS·K
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < KC; ++dp) {
          unsigned bk[4];
          ag_frag_b_kn<LQ>(bk, k_s, kk * 16, dp * 16, lane);
          ag_mma(dqacc[2 * dp], sf[kk], bk[0], bk[1]);
          ag_mma(dqacc[2 * dp + 1], sf[kk], bk[2], bk[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < QT_; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dqacc[i][e] *= scale;
  if constexpr (ROPE != 0) ag_unrope_frag<DQK, ROPE, ROPE_DIM>(dqacc, rA, rB, t4, rope_base);
  ag_store_rows<T, QT_>(dq + (long long)b * T * LDQ + QOFF + h * QHS + t4 * 2, LDQ, dqacc, rA, rB);
}

template <AG_TPARAMS>
__device__ void attn_bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            const bf16* __restrict__ dout, const float* __restrict__ lse,
                            const float* __restrict__ delta, bf16* dq, float scale, float rope_base) {
  ag_dq<AG_TARGS, false, 0, 0, 1>(q, k, v, nullptr, nullptr, dout, lse, delta, nullptr, dq, scale, rope_base, 0.f);
}
template <AG_TPARAMS, int STREAM>
__device__ void attn_bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            const bf16* __restrict__ dout, const float* __restrict__ lse,
                            const float* __restrict__ delta, const int* __restrict__ dropctr, bf16* dq, float scale,
                            float rope_base, float dropout) {
  ag_dq<AG_TARGS, true, STREAM, 0, 1>(q, k, v, nullptr, nullptr, dout, lse, delta, dropctr, dq, scale, rope_base,
                                      dropout);
}
// With a learned prefix (pk, pv after v): dq includes the prefix terms.
template <AG_TPARAMS, int NPRE, int NREP>
__device__ void attn_bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            const bf16* __restrict__ pk, const bf16* __restrict__ pv, const bf16* __restrict__ dout,
                            const float* __restrict__ lse, const float* __restrict__ delta, bf16* dq, float scale,
                            float rope_base) {
  ag_dq<AG_TARGS, false, 0, NPRE, NREP>(q, k, v, pk, pv, dout, lse, delta, nullptr, dq, scale, rope_base, 0.f);
}

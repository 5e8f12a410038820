// attention_wg.cuh — the attention kernels of attention_gen.cuh (forward, dQ, dK/dV) on Hopper's warpgroup
// MMA, wgmma.mma_async (sm_90a), instead of mma.sync. Same math (see attention_gen.cuh: masks, ALiBi, RoPE,
// the online softmax and the backward formulas), same arguments, same launch geometry — 128 threads, one
// warpgroup; 64 query rows per forward/dQ block, 64 key rows per dK/dV block; the grids of attention_gen.lua —
// so gen uses these for an sm_90a target (attention_gen.lua, `wg`) when the op has no dropout, no learned
// prefix, head widths DQK ∈ {64, 128, 192}, DV ∈ {64, 128} and (dK/dV only) no cluster (ag_cluster<G> = 1).
// Assumes common.cuh and attention_gen.cuh were emitted before this file.
//
// Why: mma.sync takes its B operand from shared memory per warp through ldmatrix, 256 bytes per
// 16×8×16 product, so with 16 rows per warp the SM's 128 bytes per clock of shared memory cap it at
// half the tensor rate (the measured 150-250 TFLOP/s of attention_gen.cuh). wgmma reads a shared operand
// once for the whole 64-row warpgroup, or A from registers, and runs asynchronously.
//
// Shared tiles are ag_sw128<ROWS> (attention_gen.cuh): DH/64 column blocks of [ROWS][64], 128-byte rows,
// 16-byte chunk j of row r at chunk j ^ (r mod 8), every block 1024-byte aligned (the swizzle is a function of
// the address bits: bits 4-6 ^= bits 7-9). A shared operand is named by a 64-bit descriptor (PTX ISA, "matrix
// descriptor"): start address / 16 in bits 0-13, leading byte offset / 16 in 16-29, stride byte offset / 16 in
// 32-45, swizzle mode in 62-63 (1 = 128 bytes). For these tiles:
//   K-major operand (ROWS × k, k contiguous: Q and K for S = Q·Kᵀ, dO and V for dP = dO·Vᵀ): k-step kc
//     (16 columns) starts in block kc/4 at byte 32·(kc mod 4) of the row; stride 1024 (the next 8 rows).
//   N-major B operand (k rows × n columns, n contiguous, imm-trans-b = 1: V for O = P·V, K for dQ = dS·K,
//     dO and Q for dV = Pᵀ·dO and dK = dSᵀ·Q): k-step ks starts at row 16·ks; stride 1024 (the next 8 k
//     rows), leading offset ROWS·128 (the next 64 columns; an n64 product stays within one block).
// Accumulators: warp w of the warpgroup holds rows 16w … 16w + 15 of the 64-row result, n8 slice i in
// d[i][0..3] exactly as an mma.sync C fragment (rows g, g + 8; columns 8i + 2t4 + {0, 1}); an A operand from
// registers is an mma.sync A fragment. So the per-element code (masks, softmax, packing P and dS) is that of
// attention_gen.cuh. Products here are n64 (or n32) k16 steps; wider N gains little when A comes from
// registers and costs registers.
// Ordering: wgmma reads shared memory through the async proxy, so every thread runs fence.proxy.async after
// its cp.async data landed (and after the RoPE pass rewrote a tile), before the barrier that publishes it.
// Tiles are double-buffered with one barrier per tile (two in the forward with RoPE unless k arrives rotated,
// KROT = 1; the backward reads the forward's rotated copies qr, kr and rotates nothing): tile n + 1 streams in
// while tile n is used, lands (and is rotated) at the end of iteration n, and the barrier that publishes it also
// frees the buffer of tile n for the next prefetch.
// wgmma.fence orders earlier register writes (accumulators, A fragments) before the products; commit +
// wait_group 0 completes them before the results are read; wg_keep stops the compiler from moving
// accumulator accesses across that window. A warpgroup's wgmma is collective, so no warp skips a tile
// (the mma.sync kernels skip tiles per warp). No atomics: results repeat bit for bit.

// ---- PTX wrappers ----------------------------------------------------------------------------
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// generic-proxy writes to shared memory (cp.async, st.shared) become visible to the async proxy (wgmma)
__device__ __forceinline__ void wg_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// N register accumulators (float[N][4]) stay put across the asynchronous products
template <int N>
__device__ __forceinline__ void wg_keep(float (*d)[4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}
// descriptor of the operand starting at p: 128-byte swizzle, stride 1024, leading offset `lbo` bytes
__device__ __forceinline__ unsigned long long wg_desc(const bf16* p, int lbo) {
  return (unsigned long long)((ag_smem_addr(p) & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
         (64ull << 32) | (1ull << 62);
}
// the first 1024-aligned byte at or after p (dynamic shared memory is only 16-aligned)
__device__ __forceinline__ unsigned char* wg_align(unsigned char* p) {
  return p + ((1024u - (ag_smem_addr(p) & 1023u)) & 1023u);
}
// D[64×N] += A[64×16]·B[16×N]: wg_ss_nN — A and B from shared memory; wg_rs_nN — A from registers (an mma.sync
// A fragment of this warp's 16 rows). TB = 0: B K-major; 1: B N-major. d: this thread's N/2 accumulators.
template <int TB>
__device__ __forceinline__ void wg_ss_n32(float* d, unsigned long long a, unsigned long long b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, %19;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(1), "n"(TB));
}
template <int TB>
__device__ __forceinline__ void wg_ss_n64(float* d, unsigned long long a, unsigned long long b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, %35;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(1), "n"(TB));
}
template <int TB>
__device__ __forceinline__ void wg_rs_n64(float* d, const unsigned a[4], unsigned long long b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(TB));
}

// ---- configuration ---------------------------------------------------------------------------
// Key tile of the forward and dQ, query tile of dK/dV: as large as the registers allow (dQ with DQK = 192
// holds dQ, S and dP; dK/dV holds dK and dV for the whole block), and the shared memory of 2 blocks per SM.
template <int DQK> __host__ __device__ constexpr int wg_bn_fwd() { return 64; }
template <int DQK> __host__ __device__ constexpr int wg_bn_dq() { return DQK <= 128 ? 64 : 32; }
template <int DQK, int DV> __host__ __device__ constexpr int wg_bq() { return DQK + DV <= 128 ? 64 : 32; }
__host__ __device__ constexpr bool wg_dim_ok(int d, bool qk) { return d == 64 || d == 128 || (qk && d == 192); }
// Shared-memory bytes (attention_gen.lua computes the same): 1024 of alignment slack, then the tiles.
template <int DQK, int DV> __host__ __device__ constexpr int wg_smem_fwd() {
  return 1024 + (64 * DQK + 2 * wg_bn_fwd<DQK>() * (DQK + DV)) * 2;
}
template <int DQK, int DV> __host__ __device__ constexpr int wg_smem_dq() {
  return 1024 + (64 * (DQK + DV) + 2 * wg_bn_dq<DQK>() * (DQK + DV)) * 2;
}
template <int DQK, int DV> __host__ __device__ constexpr int wg_smem_dkdv() {
  return 1024 + (64 * (DQK + DV) + 2 * wg_bq<DQK, DV>() * (DQK + DV)) * 2 + 4 * wg_bq<DQK, DV>() * 4;
}
template <int DQK, int DV, int G>
struct wg_check {
  static_assert(wg_dim_ok(DQK, true) && wg_dim_ok(DV, false), "attn wg: DQK must be 64, 128 or 192 and DV 64 or 128");
  static constexpr bool ok = true;
};

// K-major operand: k-step kc (columns 16kc …) of a ROWS-row tile
template <int ROWS>
__device__ __forceinline__ unsigned long long wg_dk(const bf16* t, int kc) {
  return wg_desc(t + (kc >> 2) * ROWS * 64 + (kc & 3) * 16, 16);
}
// N-major operand: k rows 16ks …, columns 64nc … of a ROWS-row tile
template <int ROWS>
__device__ __forceinline__ unsigned long long wg_dn(const bf16* t, int ks, int nc) {
  return wg_desc(t + nc * ROWS * 64 + ks * 16 * 64, ROWS * 128);
}
// S[64 × N] (+)= A·Bᵀ over K = 16·KC columns, both K-major tiles (A: 64 rows, B: N rows)
template <int N, int KC>
__device__ __forceinline__ void wg_ss(float (*d)[4], const bf16* a, const bf16* b) {
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) {
    if constexpr (N == 64) wg_ss_n64<0>(&d[0][0], wg_dk<64>(a, kc), wg_dk<N>(b, kc));
    else wg_ss_n32<0>(&d[0][0], wg_dk<64>(a, kc), wg_dk<N>(b, kc));
  }
}
// D[64 × NW] += A·B with A = KS k-steps of register fragments (16 columns each) and B an N-major tile of
// KROWS rows (≥ 16·KS), NW columns (a multiple of 64)
template <int NW, int KS, int KROWS>
__device__ __forceinline__ void wg_rs(float (*d)[4], const unsigned (*a)[4], const bf16* b) {
#pragma unroll
  for (int ks = 0; ks < KS; ++ks)
#pragma unroll
    for (int nc = 0; nc < NW / 64; ++nc) wg_rs_n64<1>(&d[nc * 8][0], a[ks], wg_dn<KROWS>(b, ks, nc));
}
template <int N>
__device__ __forceinline__ void wg_zero(float (*d)[4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) d[i][0] = d[i][1] = d[i][2] = d[i][3] = 0.f;
}

// ==== forward ==================================================================================
// As ag_fwd (grid (B·H, ⌈T/64⌉), longest query tiles first; online softmax in the log2 domain), with
// S = Q̃·K̃ᵀ as 64 × BN SS products and O += P·V as RS products (P from registers, V N-major).
// Shared memory: Q [64 × DQK], K [2][BN × DQK], V [2][BN × DV], all ag_sw128.
template <AG_TPARAMS>
__device__ __forceinline__ void wg_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, bf16* __restrict__ out, float* __restrict__ lse,
                                       bf16* __restrict__ qr, bf16* __restrict__ kr, float scale, float rope_base) {
  static_assert(ag_check<AG_TARGS>::ok && wg_check<DQK, DV, H / HKV>::ok, "attn: bad configuration");
  constexpr int BM = 64, BN = wg_bn_fwd<DQK>(), KC = DQK / 16, DT = DV / 8, G = H / HKV, OD = H * DV;
  static_assert(BN == BM, "attn wg: the diagonal key tile of query tile qt must be key tile qt (kr)");
  constexpr int NQT = (T + BM - 1) / BM;
  extern __shared__ __align__(16) unsigned char wg_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(wg_align(wg_smem));
  bf16* sK = sQ + BM * DQK;       // [2][BN·DQK]
  bf16* sV = sK + 2 * BN * DQK;   // [2][BN·DV]

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
  auto load_kv = [&](int n, int buf) {
    const int k1 = rg.tile(n) * BN;
    ag_load_tile<BN, DQK, T, ag_sw128<BN>>(sK + buf * BN * DQK, kg, k1, LDK, tid);
    ag_load_tile<BN, DV, T, ag_sw128<BN>>(sV + buf * BN * DV, vg, k1, LDV, tid);
  };

  ag_load_tile<BM, DQK, T, ag_sw128<BM>>(sQ, qg, q0, LDQ, tid);
  load_kv(0, 0);
  ag_cp_commit();
  ag_cp_wait<0>();
  if constexpr (ROPE != 0) {   // Q once; the first K tile too unless k arrives rotated (KROT)
    __syncthreads();
    ag_rope_tile<BM, DQK, ROPE, ROPE_DIM, ag_sw128<BM>>(sQ, q0, rope_base, tid);
    if constexpr (KROT == 0) ag_rope_tile<BN, DQK, ROPE, ROPE_DIM, ag_sw128<BN>>(sK, rg.tile(0) * BN, rope_base, tid);
  }
  wg_fence_proxy();
  __syncthreads();
  // the rotated Q for the backward (qr; K tiles below, kr, unless KROT)
  if constexpr (ROPE != 0) ag_store_tile<BM, DQK, T, ag_sw128<BM>>(sQ, qr + (long long)b * T * LDQ + QOFF + h * QHS, q0, LDQ, tid);

  float o[DT][4];
  wg_zero<DT>(o);
  float m0 = -MF_INF, m1 = -MF_INF, l0 = 0.f, l1 = 0.f;   // rows rA and rB of this thread
  const int rA = q0 + warp * 16 + g, rB = rA + 8;

  // One barrier per key tile: tile n + 1 streams in while tile n is used, then lands (and is rotated) at the
  // end of iteration n, and the barrier that publishes it also frees buffer `cur` for the next prefetch.
  for (int n = 0; n < rg.n; ++n) {
    const int cur = n & 1, k0 = rg.tile(n) * BN;
    if (n + 1 < rg.n) {
      load_kv(n + 1, cur ^ 1);
      ag_cp_commit();
    }
    const bf16* k_s = sK + cur * BN * DQK;
    const bf16* v_s = sV + cur * BN * DV;
    if constexpr (ROPE != 0 && KROT == 0) {   // the diagonal K tile, rotated, from the group's first head (kr)
      if (k0 == q0 && h % G == 0)
        ag_store_tile<BN, DQK, T, ag_sw128<BN>>(k_s, kr + (long long)b * T * LDK + KOFF + hk * KHS, k0, LDK, tid);
    }
    // S = Q·Kᵀ (64 × BN)
    float s[BN / 8][4];
    wg_zero<BN / 8>(s);
    wg_keep<BN / 8>(s);
    wg_fence();
    wg_ss<BN, KC>(s, sQ, k_s);
    wg_commit();
    wg_wait0();
    wg_keep<BN / 8>(s);
    ag_score_tile<BN / 8, T, WINDOW, SINK, ALIBI>(s, k0, rA, rB, t4, slope, ag_full<T, WINDOW, SINK>(q0, qhi, k0, k0 + BN - 1));
    float ms0, ms1;   // online softmax
    ag_softmax_rescale<BN / 8, DT>(s, o, m0, m1, l0, l1, SL2, ms0, ms1);
    unsigned pf[BN / 16][4];   // P as A fragments: key chunk kk = n-slices 2kk, 2kk + 1
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const float p0 = fast_exp2(fmaf(s[nt][0], SL2, -ms0)), p1 = fast_exp2(fmaf(s[nt][1], SL2, -ms0));
      const float p2 = fast_exp2(fmaf(s[nt][2], SL2, -ms1)), p3 = fast_exp2(fmaf(s[nt][3], SL2, -ms1));
      l0 += p0 + p1;
      l1 += p2 + p3;
      pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p0, p1);
      pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p2, p3);
    }
    // O += P·V
    wg_keep<DT>(o);
    wg_fence();
    wg_rs<DV, BN / 16, BN>(o, pf, v_s);
    wg_commit();
    wg_wait0();
    wg_keep<DT>(o);
    if (n + 1 < rg.n) {
      ag_cp_wait<0>();
      if constexpr (ROPE != 0 && KROT == 0) {
        __syncthreads();   // every thread's copies of tile n + 1 landed before any rotates them
        ag_rope_tile<BN, DQK, ROPE, ROPE_DIM, ag_sw128<BN>>(sK + (cur ^ 1) * BN * DQK, rg.tile(n + 1) * BN, rope_base, tid);
      }
      wg_fence_proxy();
    }
    __syncthreads();
  }

  ag_fwd_store<T, DT, OD>(o, l0, l1, m0, m1, 1.f, scale, out + (long long)b * T * OD + h * DV + t4 * 2,
                          lse + (long long)bh * T, rA, rB, t4);
}

// ==== backward: dK, dV ==========================================================================
// As ag_dkdv without a cluster (grid (B·HKV, ⌈T/64⌉); the block sums its G query heads in order): per query
// tile of BQ rows, Sᵀ = K̃·Q̃ᵀ and dPᵀ = V·dOᵀ as 64 × BQ SS products, then dV += Pᵀ·dO and dK += dSᵀ·Q̃ as RS
// products (Pᵀ, dSᵀ from registers; dO and Q N-major). dK and dV (64 × DQK, 64 × DV f32) stay in registers.
// Shared memory: K [64 × DQK], V [64 × DV]; Q [2][BQ × DQK], dO [2][BQ × DV] (ag_sw128); lse, delta [2][BQ] f32.
template <AG_TPARAMS>
__device__ __forceinline__ void wg_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                        const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                        const float* __restrict__ lse, const float* __restrict__ delta, bf16* dk,
                                        bf16* dv, float scale, float rope_base) {
  static_assert(ag_check<AG_TARGS>::ok && wg_check<DQK, DV, H / HKV>::ok, "attn: bad configuration");
  static_assert(ag_cluster<H / HKV>() == 1, "attn wg: grouped kv heads with a cluster take attention_gen.cuh's dK/dV");
  constexpr int BK = 64, BQ = wg_bq<DQK, DV>(), KC = DQK / 16, VC = DV / 16, QT_ = DQK / 8, VT = DV / 8;
  constexpr int QN = BQ / 8, G = H / HKV, OD = H * DV;
  extern __shared__ __align__(16) unsigned char wg_smem[];
  bf16* sK = reinterpret_cast<bf16*>(wg_align(wg_smem));
  bf16* sV = sK + BK * DQK;
  bf16* sQ = sV + BK * DV;          // [2][BQ·DQK]
  bf16* sO = sQ + 2 * BQ * DQK;     // dO, [2][BQ·DV]
  float* sL = reinterpret_cast<float*>(sO + 2 * BQ * DV);   // [2][BQ]
  float* sD = sL + 2 * BQ;                                  // [2][BQ]

  const int b = (int)blockIdx.x / HKV, hk = (int)blockIdx.x % HKV, h0 = hk * G;
  const int k0 = (int)blockIdx.y * BK, khi = ag_imin(k0 + BK, T) - 1;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const bf16* kg = k + (long long)b * T * LDK + KOFF + hk * KHS;
  const bf16* vg = v + (long long)b * T * LDV + VOFF + hk * VHS;
  const bf16* qg0 = q + (long long)b * T * LDQ + QOFF;   // + h·QHS
  const bf16* og0 = dout + (long long)b * T * OD;        // + h·DV
  const float* lg0 = lse + (long long)b * H * T;         // + h·T
  const float* dg0 = delta + (long long)b * H * T;
  const float SL2 = scale * AG_LOG2E;

  // query tiles qt0 … qt0 + NQR − 1 of each of the G heads: iteration n ↔ (head h0 + n / NQR, tile n % NQR)
  const int qt0 = k0 / BQ;
  const int qlast = (WINDOW == 0 || k0 < SINK) ? T - 1 : ag_imin(T - 1, khi + WINDOW - 1);
  const int NQR = qlast / BQ - qt0 + 1, NIT = G * NQR;
  auto load_q = [&](int it, int buf) {
    const int h = h0 + it / NQR, q1 = (qt0 + it % NQR) * BQ;
    ag_load_tile<BQ, DQK, T, ag_sw128<BQ>>(sQ + buf * BQ * DQK, qg0 + h * QHS, q1, LDQ, tid);
    ag_load_tile<BQ, DV, T, ag_sw128<BQ>>(sO + buf * BQ * DV, og0 + h * DV, q1, OD, tid);
    ag_load_vec<BQ, T>(sL + buf * BQ, lg0 + (long long)h * T, q1, tid);
    ag_load_vec<BQ, T>(sD + buf * BQ, dg0 + (long long)h * T, q1, tid);
  };
  ag_load_tile<BK, DQK, T, ag_sw128<BK>>(sK, kg, k0, LDK, tid);
  ag_load_tile<BK, DV, T, ag_sw128<BK>>(sV, vg, k0, LDV, tid);
  load_q(0, 0);
  ag_cp_commit();
  ag_cp_wait<0>();
  wg_fence_proxy();
  __syncthreads();

  float dkacc[QT_][4], dvacc[VT][4];
  wg_zero<QT_>(dkacc);
  wg_zero<VT>(dvacc);
  const int kA = k0 + warp * 16 + g, kB = kA + 8;   // this thread's key rows

  for (int n = 0; n < NIT; ++n) {   // one barrier per query tile, as wg_fwd
    const int cur = n & 1, h = h0 + n / NQR, q0 = (qt0 + n % NQR) * BQ;
    if (n + 1 < NIT) {
      load_q(n + 1, cur ^ 1);
      ag_cp_commit();
    }
    const bf16* q_s = sQ + cur * BQ * DQK;
    const bf16* o_s = sO + cur * BQ * DV;
    const float* l_s = sL + cur * BQ;
    const float* d_s = sD + cur * BQ;
    // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (64 keys × BQ queries)
    float s[QN][4], dpt[QN][4];
    wg_zero<QN>(s);
    wg_zero<QN>(dpt);
    wg_keep<QN>(s);
    wg_keep<QN>(dpt);
    wg_fence();
    wg_ss<BQ, KC>(s, sK, q_s);
    wg_ss<BQ, VC>(dpt, sV, o_s);
    wg_commit();
    wg_wait0();
    wg_keep<QN>(s);
    wg_keep<QN>(dpt);
    if constexpr (ALIBI != 0) {   // s += (m_h/scale)·(key − query)
      const float slope = ag_alibi_slope<H>(h) / scale;
#pragma unroll
      for (int nt = 0; nt < QN; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[nt][e] = fmaf(slope, (float)(((e < 2) ? kA : kB) - (q0 + nt * 8 + t4 * 2 + (e & 1))), s[nt][e]);
    }
    // Pᵀ (columns are queries: this thread's are q0 + 8nt + 2t4 + {0,1}); 0 where not visible or query ≥ T
    const bool full = ag_full<T, WINDOW, SINK>(q0, q0 + BQ - 1, k0, k0 + BK - 1);
    unsigned pf[QN / 2][4], sf[QN / 2][4];
#pragma unroll
    for (int nt = 0; nt < QN; ++nt) {
      const int qc = nt * 8 + t4 * 2;
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[e] = fast_exp2(fmaf(s[nt][e], SL2, -l_s[qc + (e & 1)] * AG_LOG2E));
        if (!full) {
          const int qi = q0 + qc + (e & 1), kj = (e < 2) ? kA : kB;
          if (qi >= T || !ag_visible<WINDOW, SINK>(qi, kj)) p[e] = 0.f;
        }
      }
      const float dl0 = d_s[qc], dl1 = d_s[qc + 1];
      pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0], p[1]);
      pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2], p[3]);
      sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0] * (dpt[nt][0] - dl0), p[1] * (dpt[nt][1] - dl1));
      sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2] * (dpt[nt][2] - dl0), p[3] * (dpt[nt][3] - dl1));
    }
    // dV += Pᵀ·dO, dK += dSᵀ·Q
    wg_keep<VT>(dvacc);
    wg_keep<QT_>(dkacc);
    wg_fence();
    wg_rs<DV, QN / 2, BQ>(dvacc, pf, o_s);
    wg_rs<DQK, QN / 2, BQ>(dkacc, sf, q_s);
    wg_commit();
    wg_wait0();
    wg_keep<VT>(dvacc);
    wg_keep<QT_>(dkacc);
    if (n + 1 < NIT) {
      ag_cp_wait<0>();
      wg_fence_proxy();
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < QT_; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dkacc[i][e] *= scale;
  if constexpr (ROPE != 0 && KROT == 0) ag_unrope_frag<DQK, ROPE, ROPE_DIM>(dkacc, kA, kB, t4, rope_base);
  ag_store_rows<T, QT_>(dk + (long long)b * T * LDK + KOFF + hk * KHS + t4 * 2, LDK, dkacc, kA, kB);
  ag_store_rows<T, VT>(dv + (long long)b * T * LDV + VOFF + hk * VHS + t4 * 2, LDV, dvacc, kA, kB);
}

// ==== backward: dQ ==============================================================================
// As ag_dq (grid (B·H, ⌈T/64⌉), the forward's key tiles of width BN): S = Q̃·K̃ᵀ and dP = dO·Vᵀ as 64 × BN SS
// products, dQ += dS·K̃ as RS products (dS from registers, K N-major). Rows ≥ T use lse = +∞ (P = 0).
// Shared memory: Q [64 × DQK], dO [64 × DV]; K [2][BN × DQK], V [2][BN × DV] (ag_sw128).
template <AG_TPARAMS>
__device__ __forceinline__ void wg_dq(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                      const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                      const float* __restrict__ lse, const float* __restrict__ delta, bf16* dq,
                                      float scale, float rope_base) {
  static_assert(ag_check<AG_TARGS>::ok && wg_check<DQK, DV, H / HKV>::ok, "attn: bad configuration");
  constexpr int BM = 64, BN = wg_bn_dq<DQK>(), KC = DQK / 16, VC = DV / 16, QT_ = DQK / 8, G = H / HKV, OD = H * DV;
  constexpr int NQT = (T + BM - 1) / BM;
  extern __shared__ __align__(16) unsigned char wg_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(wg_align(wg_smem));
  bf16* sO = sQ + BM * DQK;
  bf16* sK = sO + BM * DV;          // [2][BN·DQK]
  bf16* sV = sK + 2 * BN * DQK;     // [2][BN·DV]

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
  auto load_kv = [&](int n, int buf) {
    const int k1 = rg.tile(n) * BN;
    ag_load_tile<BN, DQK, T, ag_sw128<BN>>(sK + buf * BN * DQK, kg, k1, LDK, tid);
    ag_load_tile<BN, DV, T, ag_sw128<BN>>(sV + buf * BN * DV, vg, k1, LDV, tid);
  };

  ag_load_tile<BM, DQK, T, ag_sw128<BM>>(sQ, qg, q0, LDQ, tid);
  ag_load_tile<BM, DV, T, ag_sw128<BM>>(sO, og, q0, OD, tid);
  load_kv(0, 0);
  ag_cp_commit();
  ag_cp_wait<0>();
  wg_fence_proxy();
  __syncthreads();

  const int rA = q0 + warp * 16 + g, rB = rA + 8;
  const float lA = rA < T ? lse[(long long)bh * T + rA] * AG_LOG2E : MF_INF;
  const float lB = rB < T ? lse[(long long)bh * T + rB] * AG_LOG2E : MF_INF;
  const float dA = rA < T ? delta[(long long)bh * T + rA] : 0.f;
  const float dB = rB < T ? delta[(long long)bh * T + rB] : 0.f;
  float dqacc[QT_][4];
  wg_zero<QT_>(dqacc);

  for (int n = 0; n < rg.n; ++n) {   // one barrier per key tile, as wg_fwd
    const int cur = n & 1, k0 = rg.tile(n) * BN;
    if (n + 1 < rg.n) {
      load_kv(n + 1, cur ^ 1);
      ag_cp_commit();
    }
    const bf16* k_s = sK + cur * BN * DQK;
    const bf16* v_s = sV + cur * BN * DV;
    // S = Q·Kᵀ and dP = dO·Vᵀ (64 × BN each)
    float s[BN / 8][4], dpa[BN / 8][4];
    wg_zero<BN / 8>(s);
    wg_zero<BN / 8>(dpa);
    wg_keep<BN / 8>(s);
    wg_keep<BN / 8>(dpa);
    wg_fence();
    wg_ss<BN, KC>(s, sQ, k_s);
    wg_ss<BN, VC>(dpa, sO, v_s);
    wg_commit();
    wg_wait0();
    wg_keep<BN / 8>(s);
    wg_keep<BN / 8>(dpa);
    // dS = P ⊙ (dP − delta), packed as A fragments
    const bool full = ag_full<T, WINDOW, SINK>(q0, qhi, k0, k0 + BN - 1);
    unsigned sf[BN / 16][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + t4 * 2 + (e & 1), row = (e < 2) ? rA : rB;
        float x = s[nt][e];
        if constexpr (ALIBI != 0) x = fmaf(slope, (float)(key - row), x);
        p[e] = fast_exp2(fmaf(x, SL2, -((e < 2) ? lA : lB)));
        if (!full && (key >= T || !ag_visible<WINDOW, SINK>(row, key))) p[e] = 0.f;
      }
      sf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0] * (dpa[nt][0] - dA), p[1] * (dpa[nt][1] - dA));
      sf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2] * (dpa[nt][2] - dB), p[3] * (dpa[nt][3] - dB));
    }
    // dQ += dS·K
    wg_keep<QT_>(dqacc);
    wg_fence();
    wg_rs<DQK, BN / 16, BN>(dqacc, sf, k_s);
    wg_commit();
    wg_wait0();
    wg_keep<QT_>(dqacc);
    if (n + 1 < rg.n) {
      ag_cp_wait<0>();
      wg_fence_proxy();
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

// The entry points gen's wrappers call (attention_gen.lua picks them for sm_90a): the signatures of
// attn_fwd, attn_bwd_dkdv and attn_bwd_dq without dropout or prefix.
template <AG_TPARAMS>
__device__ void attn_fwd_wg(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            bf16* __restrict__ out, float* __restrict__ lse, float scale, float rope_base) {
  AG_NO_ROPE;
  wg_fwd<AG_TARGS>(q, k, v, out, lse, nullptr, nullptr, scale, rope_base);
}
template <AG_TPARAMS>
__device__ void attn_fwd_wg(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            bf16* __restrict__ out, float* __restrict__ lse, bf16* __restrict__ qr, bf16* __restrict__ kr,
                            float scale, float rope_base) {
  AG_ROPE_QK;
  wg_fwd<AG_TARGS>(q, k, v, out, lse, qr, kr, scale, rope_base);
}
template <AG_TPARAMS>
__device__ void attn_fwd_wg(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                            bf16* __restrict__ out, float* __restrict__ lse, bf16* __restrict__ qr, float scale,
                            float rope_base) {
  AG_ROPE_Q;
  wg_fwd<AG_TARGS>(q, k, v, out, lse, qr, nullptr, scale, rope_base);
}
template <AG_TPARAMS>
__device__ void attn_bwd_dkdv_wg(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                 const bf16* __restrict__ dout, const float* __restrict__ lse,
                                 const float* __restrict__ delta, bf16* dk, bf16* dv, float scale, float rope_base) {
  wg_dkdv<AG_TARGS>(q, k, v, dout, lse, delta, dk, dv, scale, rope_base);
}
template <AG_TPARAMS>
__device__ void attn_bwd_dq_wg(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                               const bf16* __restrict__ dout, const float* __restrict__ lse,
                               const float* __restrict__ delta, bf16* dq, float scale, float rope_base) {
  wg_dq<AG_TARGS>(q, k, v, dout, lse, delta, dq, scale, rope_base);
}

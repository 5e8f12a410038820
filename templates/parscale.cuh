// parscale.cuh — the ParScale kernels of docs/ir_parscale.md (issue 5; math: models.md §4):
// replication, interleaving, the prefix-gradient reduction, cross-replica attention and the
// aggregation. The attention with learned prefixes lives in attention_gen.cuh (NPRE, NREP).
// Assumes common.cuh was emitted before this file.
//
// Layout: P replicas of N = Bm·T rows, replica-major (row p·N + i holds replica p of token row i).
// Every kernel is deterministic: each output element is computed by one thread in a fixed order;
// the one cross-block sum (db2 of ps_aggregate_bwd) adds per-block partials in block order, the
// last block found by an integer ticket (the pattern of dyt_bwd_params in norms.cuh).

#define PS_THREADS 256   // the flat kernels and the aggregation: 256 threads (8 warps) per block
#define PS_MAX_P 32      // replicas (parscale.n ≤ 32, docs/ir_parscale.md)

// ---- replication ------------------------------------------------------------------------------
// ps_replicate: out[p·N + i, c] = x[i, c]. One thread per 8 output elements (C % 8 == 0).
template <int N, int C, int P>
__device__ void ps_replicate(const bf16* __restrict__ x, bf16* __restrict__ out) {
  static_assert(C % 8 == 0 && P >= 1, "ps_replicate: C must be a multiple of 8");
  constexpr long long CH = C / 8, TOTAL = (long long)P * N * CH;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= TOTAL) return;
  const long long row = t / CH, c8 = t % CH;
  *reinterpret_cast<uint4*>(out + row * C + c8 * 8) = *reinterpret_cast<const uint4*>(x + (row % N) * C + c8 * 8);
}
// ps_replicate_bwd: dx[i, c] (+)= Σ_p dout[p·N + i, c], p ascending, summed in f32 (ACC: += dx).
template <int N, int C, int P, int ACC>
__device__ void ps_replicate_bwd(const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  static_assert(C % 8 == 0 && P >= 1, "ps_replicate_bwd: C must be a multiple of 8");
  constexpr long long CH = C / 8, TOTAL = (long long)N * CH;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= TOTAL) return;
  const long long e = t * 8;   // = i·C + 8·c8
  float s[8], g[8];
  load8(dout + e, s);
#pragma unroll 1
  for (int p = 1; p < P; ++p) {
    load8(dout + (long long)p * N * C + e, g);
#pragma unroll
    for (int k = 0; k < 8; ++k) s[k] += g[k];
  }
  if (ACC) {
    load8(dx + e, g);
#pragma unroll
    for (int k = 0; k < 8; ++k) s[k] += g[k];
  }
  store8(dx + e, s);
}

// ---- interleaving -----------------------------------------------------------------------------
// interleave: out[i, c·P + p] = x[p·N + i, c]   (x [P·N, D], out [N, P·D]; the aggregation MLP's
// input z). One thread per 8 consecutive output elements j … j + 7 of row i, each gathered from
// its replica row (c = j / P, p = j mod P): a pure permutation, bf16 values copied bit for bit.
template <int N, int D, int P>
__device__ void interleave(const bf16* __restrict__ x, bf16* __restrict__ out) {
  static_assert(D % 8 == 0 && P >= 1, "interleave: D must be a multiple of 8");
  constexpr long long RW = (long long)P * D, CH = RW / 8, TOTAL = (long long)N * CH;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= TOTAL) return;
  const long long i = t / CH;
  const int j0 = (int)(t % CH) * 8;
  union { uint4 u; bf16 v[8]; } o;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int j = j0 + k, c = j / P, p = j % P;
    o.v[k] = x[((long long)p * N + i) * D + c];
  }
  *reinterpret_cast<uint4*>(out + i * RW + j0) = o.u;
}
// interleave_bwd: dx[p·N + i, c] (+)= dout[i, c·P + p]. One thread per 8 consecutive dx elements
// (row p·N + i, columns c0 … c0 + 7), gathered with stride P from dout's row i.
template <int N, int D, int P, int ACC>
__device__ void interleave_bwd(const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  static_assert(D % 8 == 0 && P >= 1, "interleave_bwd: D must be a multiple of 8");
  constexpr long long CH = D / 8, TOTAL = (long long)P * N * CH;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= TOTAL) return;
  const long long row = t / CH, p = row / N, i = row % N;
  const int c0 = (int)(t % CH) * 8;
  const bf16* src = dout + i * P * D + (long long)c0 * P + p;
  float g[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) g[k] = bf2f(src[(long long)k * P]);
  if (ACC) {
    float old[8];
    load8(dx + row * D + c0, old);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] += old[k];
  }
  store8(dx + row * D + c0, g);
}

// ---- prefix gradient --------------------------------------------------------------------------
// prefix_grad_reduce: grad[p, r] += Σ_{b=0}^{BM−1} partial[p·BM + b, r] (b ascending, f32): the
// per-batch-row partials dpk / dpv of attn_bwd_dkdv summed over the rows of each replica into the
// prefix parameter's f32 gradient. One thread per 4 consecutive r (ROW % 4 == 0).
template <int NREP, int BM, int ROW>
__device__ void prefix_grad_reduce(const float* __restrict__ partial, float* __restrict__ grad) {
  static_assert(ROW % 4 == 0 && NREP >= 1 && BM >= 1, "prefix_grad_reduce: ROW must be a multiple of 4");
  constexpr long long CH = ROW / 4, TOTAL = (long long)NREP * CH;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= TOTAL) return;
  const long long p = t / CH, r = (t % CH) * 4;
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 1
  for (int b = 0; b < BM; ++b) {
    const float4 x = *reinterpret_cast<const float4*>(partial + (p * BM + b) * ROW + r);
    s.x += x.x; s.y += x.y; s.z += x.z; s.w += x.w;
  }
  float4* g = reinterpret_cast<float4*>(grad + p * ROW + r);
  float4 o = *g;
  o.x += s.x; o.y += s.y; o.z += s.z; o.w += s.w;
  *g = o;
}

// ---- cross-replica attention ------------------------------------------------------------------
// For position i < N and head h < H (W = H·DH; replica p's row is p·N + i of qkv [P·N, 3W]):
//   q_p = qkv[p·N+i, h·DH …], k_r = qkv[r·N+i, W + h·DH …], v_r = qkv[r·N+i, 2W + h·DH …]
//   s_pr = c·(q_p·k_r);  lse_p = log Σ_r exp(s_pr);  π_pr = exp(s_pr − lse_p);  out_p = Σ_r π_pr·v_r
// backward (every column of dqkv written):
//   dπ_pr = dout_p·v_r;  δ_p = Σ_r π_pr·dπ_pr;  ds_pr = π_pr·(dπ_pr − δ_p)
//   dq_p = c·Σ_r ds_pr·k_r;  dk_r = c·Σ_p ds_pr·q_p;  dv_r = Σ_p π_pr·dout_p
// One warp per item (i, h) (item = i·H + h: neighbouring warps read neighbouring columns); the
// item's P rows of q, k, v (and dout) are staged in shared memory as f32 with pitch DH + 1 (odd:
// lanes reading rows p ≠ p' at one column hit different banks), the P×P scores next to them.
// Lanes split the P² (p, r) dot products, then row p's softmax (lane p), then the P·DH outputs.
// P is small (≤ 32) and the whole op costs ~P²·DH per (i, h) against the ~12·DH² of its
// projections, so plain FMAs from shared memory suffice (no tensor cores).
template <int P, int DH> __host__ __device__ constexpr int ps_cra_warp_floats(bool bwd) {
  return (bwd ? 4 : 3) * P * (DH + 1) + (bwd ? 2 : 1) * P * (P + 1);
}
// Warps (items) per block: up to 4 while the block's shared memory stays ≤ 96 KiB (at least 1).
template <int P, int DH> __host__ __device__ constexpr int ps_cra_warps(bool bwd) {
  return ps_cra_warp_floats<P, DH>(bwd) * 4 * 4 <= 98304 ? 4
         : ps_cra_warp_floats<P, DH>(bwd) * 4 * 2 <= 98304 ? 2 : 1;
}
template <int P, int DH> __host__ __device__ constexpr int ps_cra_smem(bool bwd) {
  return ps_cra_warps<P, DH>(bwd) * ps_cra_warp_floats<P, DH>(bwd) * 4;
}
template <int N, int P, int H, int DH>
struct ps_cra_check {
  static_assert(N >= 1 && H >= 1, "cra: N and H must be positive");
  static_assert(P >= 1 && P <= PS_MAX_P, "cra: P must lie in [1, 32]");
  static_assert(DH >= 1 && DH <= 256, "cra: d must lie in [1, 256]");
  static constexpr bool ok = true;
};
// Stage `rows` P rows of DH bf16 (row p at src + p·N·LD) into dst [P][DH + 1] f32.
template <int N, int P, int DH, long long LD>
__device__ __forceinline__ void ps_stage_rows(float* dst, const bf16* src, int lane) {
  for (int x = lane; x < P * DH; x += 32) {
    const int p = x / DH, e = x % DH;
    dst[p * (DH + 1) + e] = bf2f(src[(long long)p * N * LD + e]);
  }
}
template <int N, int P, int H, int DH>
__device__ void cra_fwd(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse, float scale) {
  static_assert(ps_cra_check<N, P, H, DH>::ok, "cra: bad configuration");
  constexpr int WPB = ps_cra_warps<P, DH>(false), LD = DH + 1, W = H * DH;
  extern __shared__ __align__(16) unsigned char ps_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long item = (long long)blockIdx.x * WPB + warp;
  if (item >= (long long)N * H) return;   // whole warps only: no block-wide barrier below
  const long long i = item / H;
  const int h = (int)(item % H);
  float* sq = reinterpret_cast<float*>(ps_smem) + warp * ps_cra_warp_floats<P, DH>(false);
  float* sk = sq + P * LD;
  float* sv = sk + P * LD;
  float* ss = sv + P * LD;   // [P][P + 1]: scores, then probabilities
  const bf16* row0 = qkv + i * 3 * W + h * DH;   // replica 0's q; replica p at + p·N·3W
  ps_stage_rows<N, P, DH, 3LL * W>(sq, row0, lane);
  ps_stage_rows<N, P, DH, 3LL * W>(sk, row0 + W, lane);
  ps_stage_rows<N, P, DH, 3LL * W>(sv, row0 + 2 * W, lane);
  __syncwarp();
  for (int x = lane; x < P * P; x += 32) {   // s_pr = c·q_p·k_r
    const int p = x / P, r = x % P;
    float s = 0.f;
#pragma unroll 8
    for (int e = 0; e < DH; ++e) s = fmaf(sq[p * LD + e], sk[r * LD + e], s);
    ss[p * (P + 1) + r] = s * scale;
  }
  __syncwarp();
  if (lane < P) {   // row p = lane: lse_p and π_p·
    float* sr = ss + lane * (P + 1);
    float mx = -MF_INF, z = 0.f;
    for (int r = 0; r < P; ++r) mx = fmaxf(mx, sr[r]);
    for (int r = 0; r < P; ++r) z += expf(sr[r] - mx);
    const float l = mx + logf(z);
    for (int r = 0; r < P; ++r) sr[r] = expf(sr[r] - l);
    lse[((long long)lane * N + i) * H + h] = l;
  }
  __syncwarp();
  for (int x = lane; x < P * DH; x += 32) {   // out_p[e] = Σ_r π_pr·v_r[e]
    const int p = x / DH, e = x % DH;
    float o = 0.f;
    for (int r = 0; r < P; ++r) o = fmaf(ss[p * (P + 1) + r], sv[r * LD + e], o);
    out[((long long)p * N + i) * W + h * DH + e] = f2bf(o);
  }
}
template <int N, int P, int H, int DH>
__device__ void cra_bwd(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
                        bf16* __restrict__ dqkv, float scale) {
  static_assert(ps_cra_check<N, P, H, DH>::ok, "cra_bwd: bad configuration");
  constexpr int WPB = ps_cra_warps<P, DH>(true), LD = DH + 1, W = H * DH, LP = P + 1;
  extern __shared__ __align__(16) unsigned char ps_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long item = (long long)blockIdx.x * WPB + warp;
  if (item >= (long long)N * H) return;
  const long long i = item / H;
  const int h = (int)(item % H);
  float* sq = reinterpret_cast<float*>(ps_smem) + warp * ps_cra_warp_floats<P, DH>(true);
  float* sk = sq + P * LD;
  float* sv = sk + P * LD;
  float* so = sv + P * LD;   // dout
  float* sp = so + P * LD;   // [P][P + 1]: π
  float* sd = sp + P * LP;   // [P][P + 1]: dπ, then ds
  const bf16* row0 = qkv + i * 3 * W + h * DH;
  ps_stage_rows<N, P, DH, 3LL * W>(sq, row0, lane);
  ps_stage_rows<N, P, DH, 3LL * W>(sk, row0 + W, lane);
  ps_stage_rows<N, P, DH, 3LL * W>(sv, row0 + 2 * W, lane);
  ps_stage_rows<N, P, DH, (long long)W>(so, dout + i * W + h * DH, lane);
  __syncwarp();
  for (int x = lane; x < P * P; x += 32) {   // π_pr = exp(c·q_p·k_r − lse_p), dπ_pr = dout_p·v_r
    const int p = x / P, r = x % P;
    float s = 0.f, dp = 0.f;
#pragma unroll 8
    for (int e = 0; e < DH; ++e) {
      s = fmaf(sq[p * LD + e], sk[r * LD + e], s);
      dp = fmaf(so[p * LD + e], sv[r * LD + e], dp);
    }
    sp[p * LP + r] = expf(s * scale - lse[((long long)p * N + i) * H + h]);
    sd[p * LP + r] = dp;
  }
  __syncwarp();
  if (lane < P) {   // row p = lane: δ_p, then ds_p· = π_p·(dπ_p· − δ_p)
    const float* pr = sp + lane * LP;
    float* dr = sd + lane * LP;
    float delta = 0.f;
    for (int r = 0; r < P; ++r) delta = fmaf(pr[r], dr[r], delta);
    for (int r = 0; r < P; ++r) dr[r] = pr[r] * (dr[r] - delta);
  }
  __syncwarp();
  for (int x = lane; x < P * DH; x += 32) {   // replica x's row: its dq, dk, dv at column e
    const int p = x / DH, e = x % DH;
    float gq = 0.f, gk = 0.f, gv = 0.f;
    for (int y = 0; y < P; ++y) {
      gq = fmaf(sd[p * LP + y], sk[y * LD + e], gq);   // dq_p = c·Σ_r ds_pr·k_r
      gk = fmaf(sd[y * LP + p], sq[y * LD + e], gk);   // dk_p = c·Σ_y ds_yp·q_y
      gv = fmaf(sp[y * LP + p], so[y * LD + e], gv);   // dv_p = Σ_y π_yp·dout_y
    }
    bf16* drow = dqkv + ((long long)p * N + i) * 3 * W + h * DH + e;
    drow[0] = f2bf(gq * scale);
    drow[W] = f2bf(gk * scale);
    drow[2 * W] = f2bf(gv);
  }
}

// ---- aggregation ------------------------------------------------------------------------------
// ps_aggregate: for row i < N,
//   l_p = a[i, p] + b2[p];  σ = softmax_p(l) (f32);  w[i, p] = (1 − eps)·σ_p + eps/P  (f32 out)
//   y[i, c] = Σ_p w[i, p]·h[p·N + i, c]   (p ascending, f32, rounded once to bf16)
// One warp per row (8 rows per block); every lane computes the P weights itself (P ≤ 32 loads of
// a, broadcast within the warp), lane p stores w[i, p], and the lanes split y's D/8 chunks.
template <int N, int D, int P>
__device__ void ps_aggregate(const bf16* __restrict__ h, const bf16* __restrict__ a, const bf16* __restrict__ b2,
                             bf16* __restrict__ y, float* __restrict__ w, float eps) {
  static_assert(D % 8 == 0, "ps_aggregate: D must be a multiple of 8");
  static_assert(P >= 1 && P <= PS_MAX_P, "ps_aggregate: P must lie in [1, 32]");
  const int lane = threadIdx.x & 31;
  const long long i = (long long)blockIdx.x * (PS_THREADS / 32) + (threadIdx.x >> 5);
  if (i >= N) return;
  float wp[P], mx = -MF_INF, z = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    wp[p] = bf2f(a[i * P + p]) + bf2f(b2[p]);
    mx = fmaxf(mx, wp[p]);
  }
#pragma unroll
  for (int p = 0; p < P; ++p) {
    wp[p] = expf(wp[p] - mx);
    z += wp[p];
  }
  const float iz = (1.f - eps) / z, floor_ = eps / (float)P;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    wp[p] = fmaf(wp[p], iz, floor_);
    if (lane == p) w[i * P + p] = wp[p];
  }
  for (int c = lane * 8; c < D; c += 256) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, hv[8];
#pragma unroll
    for (int p = 0; p < P; ++p) {
      load8(h + ((long long)p * N + i) * D + c, hv);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] = fmaf(wp[p], hv[k], acc[k]);
    }
    store8(y + i * D + c, acc);
  }
}

// ps_aggregate_bwd: for row i,
//   dh[p·N + i, c] (+)= w[i, p]·dy[i, c]        (ACC applies to dh only)
//   g_p = Σ_c dy[i, c]·h[p·N + i, c];  σ_p = (w[i, p] − eps/P)/(1 − eps)
//   da[i, p] = (1 − eps)·σ_p·(g_p − Σ_q σ_q·g_q)   (bf16, written)
//   db2[p] += Σ_i da[i, p]                        (over the stored bf16 values; f32)
// One warp per row; the lanes split the D/8 chunks (dh written on the way) and hold P partial
// dot products g_p, summed by a butterfly. Block k of the grid (NB = ps_agg_blocks<N>() blocks)
// owns rows [k·RPB, (k+1)·RPB), RPB = ⌈N/NB⌉, warp w taking rows w, w + 8, … of them; lane p keeps
// column p's sum of da over its rows; the 8 warps' sums are added in warp order into the block's
// partial, and the last block (integer ticket) adds the NB partials in block order to db2.
#define PS_AGG_MAX_BLOCKS 1024
__device__ float ps_agg_part[PS_AGG_MAX_BLOCKS * PS_MAX_P];
__device__ unsigned ps_agg_ticket = 0;
template <int N> __host__ __device__ constexpr int ps_agg_blocks() {
  return (N + 31) / 32 < PS_AGG_MAX_BLOCKS ? (N + 31) / 32 : PS_AGG_MAX_BLOCKS;
}
template <int N, int D, int P, int ACC>
__device__ void ps_aggregate_bwd(const bf16* __restrict__ dy, const bf16* __restrict__ h, const float* __restrict__ w,
                                 bf16* __restrict__ dh, bf16* __restrict__ da, float* __restrict__ db2, float eps) {
  static_assert(D % 8 == 0, "ps_aggregate_bwd: D must be a multiple of 8");
  static_assert(P >= 1 && P <= PS_MAX_P, "ps_aggregate_bwd: P must lie in [1, 32]");
  constexpr int NB = ps_agg_blocks<N>(), RPB = (N + NB - 1) / NB, NW = PS_THREADS / 32;
  __shared__ float red[NW][PS_MAX_P];
  __shared__ bool last;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long r0 = (long long)blockIdx.x * RPB;
  const long long r1 = r0 + RPB < N ? r0 + RPB : N;
  const float floor_ = eps / (float)P, isig = 1.f / (1.f - eps);
  float colsum = 0.f;   // lane p < P: Σ of da[·, p] over this warp's rows
  for (long long i = r0 + warp; i < r1; i += NW) {
    float wp[P], g[P];
#pragma unroll
    for (int p = 0; p < P; ++p) {
      wp[p] = w[i * P + p];
      g[p] = 0.f;
    }
    for (int c = lane * 8; c < D; c += 256) {
      float dv[8], hv[8];
      load8(dy + i * D + c, dv);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const long long o = ((long long)p * N + i) * D + c;
        load8(h + o, hv);
        float dd[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          g[p] = fmaf(dv[k], hv[k], g[p]);
          dd[k] = wp[p] * dv[k];
        }
        if (ACC) {
          load8(dh + o, hv);
#pragma unroll
          for (int k = 0; k < 8; ++k) dd[k] += hv[k];
        }
        store8(dh + o, dd);
      }
    }
    float gs = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      g[p] = warp_sum(g[p]);
      wp[p] = (wp[p] - floor_) * isig;   // σ_p
      gs = fmaf(wp[p], g[p], gs);
    }
#pragma unroll
    for (int p = 0; p < P; ++p) {
      if (lane == p) {
        const bf16 v = f2bf((1.f - eps) * wp[p] * (g[p] - gs));
        da[i * P + p] = v;
        colsum += bf2f(v);
      }
    }
  }
  red[warp][lane] = colsum;
  __syncthreads();
  if (threadIdx.x < P) {   // this block's partial of column p, warps in order
    float s = 0.f;
    for (int k = 0; k < NW; ++k) s += red[k][threadIdx.x];
    ps_agg_part[blockIdx.x * PS_MAX_P + threadIdx.x] = s;
    __threadfence();   // the partial is visible before the ticket is taken
  }
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&ps_agg_ticket, 1u) == gridDim.x - 1;
  __syncthreads();
  if (last) {
    __threadfence();
    if (threadIdx.x < P) {
      float s = 0.f;
      for (unsigned k = 0; k < gridDim.x; ++k) s += ((volatile float*)ps_agg_part)[k * PS_MAX_P + threadIdx.x];
      db2[threadIdx.x] += s;
    }
    if (threadIdx.x == 0) ps_agg_ticket = 0;   // ready for the next op
  }
}

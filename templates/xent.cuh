// xent.cuh — cross-entropy over the padded vocabulary, its gradient, and the loss sum (docs/ir.md).
// Assumes common.cuh was emitted before this file. Requires Vp % 8 == 0 (Vp is a multiple of 128).
//
// One 1024-thread block per row. Up to MF_XENT_REG_CHUNKS 16-byte chunks per thread (Vp ≤ 65536:
// GPT-2's 50304 is 7) the bf16 row is read once into registers; a larger vocabulary (Qwen2's
// 151936 would need 19, 76 registers, and spills) streams the row from global memory instead:
// each thread keeps an online (max, sum) over its chunks, rescaled to the block max before the
// sum (s_t·2^((m_t − m)·log2 e)), and the gradient pass reads the row a second time (from L2).
// Both paths compute
//   m = max_{j<V} x_j,   s = Σ_{j<V} exp(x_j − m),   lse = m + log s,
//   loss = lse − x_t                               (t < 0: loss 0, gradient row 0)
//   grad_j = scale·(exp(x_j − m)/s − [j = t]) for j < V,  0 for j ≥ V.
// exp is computed as 2^((x − m)·log2 e). Reductions: warp butterflies + fixed warp order.
#define MF_XENT_THREADS 1024
#define MF_XENT_REG_CHUNKS 8

template <int N, int V, int Vp, bool LOSS, bool GRAD>
__device__ __forceinline__ void xent_row(const bf16* in, const int* __restrict__ targets,
                                         float* __restrict__ losses, bf16* gout, float scale) {
  static_assert(Vp % 8 == 0, "xent: Vp must be a multiple of 8");
  static_assert(V <= Vp, "xent: V must be at most Vp");
  constexpr int CV = Vp / 8, PER = (CV + MF_XENT_THREADS - 1) / MF_XENT_THREADS;
  __shared__ float red[32];
  const int row = blockIdx.x, tid = threadIdx.x;
  const bf16* x = in + (long long)row * Vp;
  const int t = targets[row];
  // the target logit is read before any thread can overwrite the row (in-place case)
  const float xt = (t >= 0 && t < V) ? bf2f(x[t]) : 0.f;
  if constexpr (PER > MF_XENT_REG_CHUNKS) {
    // streaming path: pass 1 an online (max, sum) per thread, in chunk order
    float tm = -MF_INF, ts = 0.f;
    for (int c = tid; c < CV; c += MF_XENT_THREADS) {
      float f[8];
      unpack8(reinterpret_cast<const uint4*>(x)[c], f);
      float cm = tm;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c * 8 + e < V) cm = fmaxf(cm, f[e]);
      if (cm > tm) {   // rescale the running sum to the new max (tm = −∞: ts is 0)
        ts = (tm == -MF_INF) ? 0.f : ts * fast_exp2((tm - cm) * MF_LOG2E);
        tm = cm;
      }
      const float ml = tm * MF_LOG2E;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c * 8 + e < V) ts += fast_exp2(fmaf(f[e], MF_LOG2E, -ml));
    }
    const float mx = block_max(tm, red);
    const float s = block_sum(tm == -MF_INF ? 0.f : ts * fast_exp2((tm - mx) * MF_LOG2E), red);
    if (LOSS && tid == 0) losses[row] = (t >= 0) ? (mx + logf(s)) - xt : 0.f;
    if (GRAD) {   // pass 2: each thread rewrites exactly the chunks it read (in place is safe)
      const float inv = scale / s, ml = mx * MF_LOG2E;
      bf16* g = gout + (long long)row * Vp;
      for (int c = tid; c < CV; c += MF_XENT_THREADS) {
        float f[8];
        unpack8(reinterpret_cast<const uint4*>(x)[c], f);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int j = c * 8 + e;
          f[e] = (t >= 0 && j < V) ? fast_exp2(fmaf(f[e], MF_LOG2E, -ml)) * inv - (j == t ? scale : 0.f) : 0.f;
        }
        reinterpret_cast<uint4*>(g)[c] = pack8(f);
      }
    }
    return;
  }
  constexpr int PR = PER > MF_XENT_REG_CHUNKS ? 1 : PER;   // register path only below the limit
  uint4 buf[PR];
#pragma unroll
  for (int k = 0; k < PR; ++k) {
    const int c = tid + k * MF_XENT_THREADS;
    if (c < CV) buf[k] = reinterpret_cast<const uint4*>(x)[c];
  }
  float mx = -MF_INF;
#pragma unroll
  for (int k = 0; k < PR; ++k) {
    const int c = tid + k * MF_XENT_THREADS;
    if (c < CV) {
      float f[8];
      unpack8(buf[k], f);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c * 8 + e < V) mx = fmaxf(mx, f[e]);
    }
  }
  mx = block_max(mx, red);
  const float ml = mx * MF_LOG2E;
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < PR; ++k) {
    const int c = tid + k * MF_XENT_THREADS;
    if (c < CV) {
      float f[8];
      unpack8(buf[k], f);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c * 8 + e < V) s += fast_exp2(fmaf(f[e], MF_LOG2E, -ml));
    }
  }
  s = block_sum(s, red);
  if (LOSS && tid == 0) losses[row] = (t >= 0) ? (mx + logf(s)) - xt : 0.f;
  if (GRAD) {
    const float inv = scale / s;
    bf16* g = gout + (long long)row * Vp;
#pragma unroll
    for (int k = 0; k < PR; ++k) {
      const int c = tid + k * MF_XENT_THREADS;
      if (c < CV) {
        float f[8];
        unpack8(buf[k], f);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int j = c * 8 + e;
          float r = 0.f;
          if (t >= 0 && j < V) r = fast_exp2(fmaf(f[e], MF_LOG2E, -ml)) * inv - (j == t ? scale : 0.f);
          f[e] = r;
        }
        reinterpret_cast<uint4*>(g)[c] = pack8(f);
      }
    }
  }
}

// xent: losses[i] = lse_i − x_{i,t}; with GRAD = 1 the logits are overwritten by the gradient.
template <int N, int V, int Vp, int GRAD>
__device__ void xent_fwd(bf16* logits, const int* __restrict__ targets, float* __restrict__ losses, float scale) {
  xent_row<N, V, Vp, true, GRAD != 0>(logits, targets, losses, logits, scale);
}

// xent_bwd: the gradient part of xent written to a separate buffer dlogits.
template <int N, int V, int Vp>
__device__ void xent_bwd(const bf16* __restrict__ logits, const int* __restrict__ targets,
                         bf16* __restrict__ dlogits, float scale) {
  xent_row<N, V, Vp, false, true>(logits, targets, nullptr, dlogits, scale);
}

// loss_sum: loss += scale · Σ_i losses[i]. One block of 1024 threads: thread k sums i ≡ k (mod
// 1024) in ascending order, then the fixed block reduction.
template <int N>
__device__ void loss_sum(const float* __restrict__ losses, float* __restrict__ loss, float scale) {
  __shared__ float red[32];
  float s = 0.f;
  for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) loss[0] += scale * s;
}

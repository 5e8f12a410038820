// adamw.cuh — global-norm partial sums and the AdamW update (docs/ir.md, "Optimizer").
// Assumes common.cuh was emitted before this file. The arenas are whole allocations (aligned), or
// under ZeRO-1 shard allocations addressed by global index (see adamw), so float4 accesses are
// used for every full group of 4 elements.

// The optimizer's range (docs/ir.md, "optrange"): range = {lo low word, lo high word, hi low word,
// hi high word} — 64-bit bounds in int32 words, as arenas can pass 2^31 elements — clamped to
// [0, n). The whole arena on one GPU, this rank's shard under ZeRO-1.
__device__ __forceinline__ long long opt_bound(const int* range, int k) {
  return (long long)(((unsigned long long)(unsigned)range[2 * k + 1] << 32) | (unsigned)range[2 * k]);
}

// sumsq: partials[g] = Σ grads[i]² over chunk g = [lo + g·CH, min(hi, lo + (g+1)·CH)) of the
// range [lo, hi), CH = ⌈(hi−lo)/G⌉ rounded up to a multiple of 4. lo is a multiple of 4 (shards
// start at multiples of 128 elements), so the float4 loads stay aligned. One 256-thread block per
// chunk; fixed order within the block.
template <long long n, int G>
__device__ void sumsq(const float* __restrict__ grads, float* __restrict__ partials, const int* __restrict__ range) {
  __shared__ float red[32];
  const long long rlo = opt_bound(range, 0), rhi = opt_bound(range, 1);
  const long long lo = rlo > 0 ? rlo : 0;
  const long long hi = rhi < n ? rhi : n;
  const long long len = hi > lo ? hi - lo : 0;
  const long long CH = ((len + G - 1) / G + 3) / 4 * 4;
  const long long beg = lo + (long long)blockIdx.x * CH;
  const long long end = (beg + CH < hi) ? beg + CH : hi;
  float s = 0.f;
  for (long long i = beg + threadIdx.x * 4; i < end; i += (long long)blockDim.x * 4) {
    if (i + 4 <= end) {
      const float4 v = *reinterpret_cast<const float4*>(grads + i);
      s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    } else {
      for (long long j = i; j < end; ++j) s += grads[j] * grads[j];
    }
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// adamw (per element i, decayed when i < n_decay):
//   norm = √(Σ_g partials[g]);  c = clip > 0 ? min(1, clip/(norm + 1e-6)) : 1
//   g = c·grads[i];  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   master −= lr·( wd_i·master + (m/bc1) / (√(v/bc2) + eps) );  params[i] = bf16(master[i])
// scal = [lr, bc1, bc2]. Every block computes norm with the same fixed-order reduction, so all
// blocks agree bit for bit. Only the elements of the range [lo, hi) (see opt_bound) are updated,
// grid-stride over groups of 4 starting at lo (a multiple of 4). Indices are
// global arena indices for every pointer: under ZeRO-1 master, m and v are allocated for the shard
// only and the runtime passes base − lo, so that element i lands in the shard allocation.
__device__ __forceinline__ float adamw_one(float& w, float& m, float& v, float gr, float c, float lr,
                                           float ibc1, float ibc2, float wdi, float beta1, float beta2,
                                           float eps) {
  const float g = c * gr;
  m = beta1 * m + (1.f - beta1) * g;
  v = beta2 * v + (1.f - beta2) * g * g;
  w -= lr * (wdi * w + (m * ibc1) / (sqrtf(v * ibc2) + eps));
  return w;
}

template <long long n, long long n_decay, int G>
__device__ void adamw(float* __restrict__ master, bf16* __restrict__ params, const float* __restrict__ grads,
                      float* __restrict__ m, float* __restrict__ v, const float* __restrict__ scal,
                      const float* __restrict__ partials, const int* __restrict__ range, float wd,
                      float beta1, float beta2, float eps, float clip) {
  __shared__ float red[32];
  float s = 0.f;
  for (int i = threadIdx.x; i < G; i += blockDim.x) s += partials[i];
  const float norm = sqrtf(block_sum(s, red));
  const float c = clip > 0.f ? fminf(1.f, clip / (norm + 1e-6f)) : 1.f;
  const float lr = scal[0], ibc1 = 1.f / scal[1], ibc2 = 1.f / scal[2];
  const long long rlo = opt_bound(range, 0), rhi = opt_bound(range, 1);
  const long long lo = rlo > 0 ? rlo : 0;
  const long long hi = rhi < n ? rhi : n;
  const long long stride = (long long)gridDim.x * blockDim.x * 4;
  for (long long i = lo + ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < hi; i += stride) {
    if (i + 4 <= hi) {
      float4 w4 = *reinterpret_cast<float4*>(master + i);
      float4 m4 = *reinterpret_cast<float4*>(m + i);
      float4 v4 = *reinterpret_cast<float4*>(v + i);
      const float4 g4 = *reinterpret_cast<const float4*>(grads + i);
      adamw_one(w4.x, m4.x, v4.x, g4.x, c, lr, ibc1, ibc2, i + 0 < n_decay ? wd : 0.f, beta1, beta2, eps);
      adamw_one(w4.y, m4.y, v4.y, g4.y, c, lr, ibc1, ibc2, i + 1 < n_decay ? wd : 0.f, beta1, beta2, eps);
      adamw_one(w4.z, m4.z, v4.z, g4.z, c, lr, ibc1, ibc2, i + 2 < n_decay ? wd : 0.f, beta1, beta2, eps);
      adamw_one(w4.w, m4.w, v4.w, g4.w, c, lr, ibc1, ibc2, i + 3 < n_decay ? wd : 0.f, beta1, beta2, eps);
      *reinterpret_cast<float4*>(master + i) = w4;
      *reinterpret_cast<float4*>(m + i) = m4;
      *reinterpret_cast<float4*>(v + i) = v4;
      uint2 p;
      p.x = pack_bf16x2(w4.x, w4.y);
      p.y = pack_bf16x2(w4.z, w4.w);
      *reinterpret_cast<uint2*>(params + i) = p;
    } else {
      for (long long j = i; j < hi; ++j) {
        float w = master[j], mj = m[j], vj = v[j];
        adamw_one(w, mj, vj, grads[j], c, lr, ibc1, ibc2, j < n_decay ? wd : 0.f, beta1, beta2, eps);
        master[j] = w; m[j] = mj; v[j] = vj;
        params[j] = f2bf(w);
      }
    }
  }
}

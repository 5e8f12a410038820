// activations.cuh — ReLU, SiLU, the gated units (GEGLU / SwiGLU) and dropout, with their
// backward (docs/ir_decoder.md "Activations", "Dropout"). Assumes common.cuh was emitted first.
// Flat kernels: when n % 8 == 0 one thread handles 8 elements with 16-byte accesses, otherwise one
// element (scalar path); activations.lua launches accordingly.

// The flat map behind every elementwise kernel here:  out[i] (+)= f(a[i], b[i], i)
// (b may be null; f gets the float values and the flat index).
template <long long n, int ACC, class Fn>
__device__ __forceinline__ void act_map(const bf16* __restrict__ a, const bf16* __restrict__ b,
                                        bf16* __restrict__ out, const Fn& f) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n % 8 == 0) {
    if (t >= n / 8) return;
    float x[8], y[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    load8(a + t * 8, x);
    if (b) load8(b + t * 8, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = f(x[k], y[k], t * 8 + k);
    if (ACC) {
      float old[8];
      load8(out + t * 8, old);
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] += old[k];
    }
    store8(out + t * 8, x);
  } else {
    if (t >= n) return;
    float r = f(bf2f(a[t]), b ? bf2f(b[t]) : 0.f, t);
    if (ACC) r += bf2f(out[t]);
    out[t] = f2bf(r);
  }
}

__device__ __forceinline__ float mf_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
// silu(x) = x·σ(x);  silu'(x) = σ(x)·(1 + x·(1 − σ(x)))
__device__ __forceinline__ float mf_silu(float x) { return x * mf_sigmoid(x); }
__device__ __forceinline__ float mf_silu_grad(float x) {
  const float s = mf_sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

// relu:  out = max(x, 0)
template <long long n>
__device__ void relu_fwd(const bf16* __restrict__ x, bf16* __restrict__ out) {
  act_map<n, 0>(x, nullptr, out, [](float v, float, long long) { return v > 0.f ? v : 0.f; });
}
// relu_bwd:  dx (+)= dout·[x > 0]
template <long long n, int ACC>
__device__ void relu_bwd(const bf16* __restrict__ x, const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  act_map<n, ACC>(x, dout, dx, [](float v, float g, long long) { return v > 0.f ? g : 0.f; });
}
// silu:  out = x·σ(x)
template <long long n>
__device__ void silu_fwd(const bf16* __restrict__ x, bf16* __restrict__ out) {
  act_map<n, 0>(x, nullptr, out, [](float v, float, long long) { return mf_silu(v); });
}
// silu_bwd:  dx (+)= dout·σ(x)·(1 + x·(1 − σ(x)))
template <long long n, int ACC>
__device__ void silu_bwd(const bf16* __restrict__ x, const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  act_map<n, ACC>(x, dout, dx, [](float v, float g, long long) { return g * mf_silu_grad(v); });
}

// ---- gated units -------------------------------------------------------------------------------
// x [N, 2F] = [gate | up] (the c_fc rows [gate ; up]);  ACT 0 = gelu (tanh form), 1 = silu
//   glu:      out[n, f] = act(gate)·up
//   glu_bwd:  dx[n, f] = dout·up·act'(gate),  dx[n, F + f] = dout·act(gate)   (written)
// One thread per 8 columns of out when F % 8 == 0 (16-byte accesses), else per element.
template <int ACT> __device__ __forceinline__ float glu_act(float x) { return ACT ? mf_silu(x) : gelu_f(x); }
template <int ACT> __device__ __forceinline__ float glu_act_grad(float x) { return ACT ? mf_silu_grad(x) : gelu_grad_f(x); }

template <int N, int F, int ACT>
__device__ void glu_fwd(const bf16* __restrict__ x, bf16* __restrict__ out) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (F % 8 == 0) {
    constexpr int FV = F / 8;
    if (t >= (long long)N * FV) return;
    const long long row = t / FV;
    const int c = (int)(t % FV) * 8;
    float g[8], u[8];
    load8(x + row * 2 * F + c, g);
    load8(x + row * 2 * F + F + c, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] = glu_act<ACT>(g[k]) * u[k];
    store8(out + row * F + c, g);
  } else {
    if (t >= (long long)N * F) return;
    const long long row = t / F, c = t % F;
    out[t] = f2bf(glu_act<ACT>(bf2f(x[row * 2 * F + c])) * bf2f(x[row * 2 * F + F + c]));
  }
}

template <int N, int F, int ACT>
__device__ void glu_bwd(const bf16* __restrict__ x, const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (F % 8 == 0) {
    constexpr int FV = F / 8;
    if (t >= (long long)N * FV) return;
    const long long row = t / FV;
    const int c = (int)(t % FV) * 8;
    float g[8], u[8], d[8], dg[8], du[8];
    load8(x + row * 2 * F + c, g);
    load8(x + row * 2 * F + F + c, u);
    load8(dout + row * F + c, d);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      dg[k] = d[k] * u[k] * glu_act_grad<ACT>(g[k]);
      du[k] = d[k] * glu_act<ACT>(g[k]);
    }
    store8(dx + row * 2 * F + c, dg);
    store8(dx + row * 2 * F + F + c, du);
  } else {
    if (t >= (long long)N * F) return;
    const long long row = t / F, c = t % F;
    const float g = bf2f(x[row * 2 * F + c]), u = bf2f(x[row * 2 * F + F + c]), d = bf2f(dout[t]);
    dx[row * 2 * F + c] = f2bf(d * u * glu_act_grad<ACT>(g));
    dx[row * 2 * F + F + c] = f2bf(d * glu_act<ACT>(g));
  }
}

// ---- dropout -----------------------------------------------------------------------------------
// Element i of op `STREAM` is kept iff u = mf_drop_uniform(seed, STREAM, ctr, i) ≥ p (common.cuh;
// dropctr = {seed, step·accum + micro} of the micro-step), and then scaled by 1/(1 − p):
//   dropout:      out = keep ? x/(1−p) : 0
//   dropout_bwd:  dx (+)= keep ? dout/(1−p) : 0
// The mask is bit-identical to runtime/cpu_ops.c; the scale is the float 1/(1 − p) on both.
template <long long n, int STREAM>
__device__ void dropout_fwd(const bf16* __restrict__ x, const int* __restrict__ dropctr, bf16* __restrict__ out,
                            float p) {
  const unsigned long long base = mf_drop_base_ctr(dropctr, (unsigned long long)STREAM);
  const float s = 1.f / (1.f - p);
  act_map<n, 0>(x, nullptr, out, [&](float v, float, long long i) {
    return mf_drop_uniform(base, (unsigned long long)i) >= p ? v * s : 0.f;
  });
}

template <long long n, int STREAM, int ACC>
__device__ void dropout_bwd(const bf16* __restrict__ dout, const int* __restrict__ dropctr, bf16* __restrict__ dx,
                            float p) {
  const unsigned long long base = mf_drop_base_ctr(dropctr, (unsigned long long)STREAM);
  const float s = 1.f / (1.f - p);
  act_map<n, ACC>(dout, nullptr, dx, [&](float g, float, long long i) {
    return mf_drop_uniform(base, (unsigned long long)i) >= p ? g * s : 0.f;
  });
}

// elementwise.cuh — add, gelu, gelu_bwd and bias_grad (docs/ir.md).
// Assumes common.cuh was emitted before this file.
// Flat kernels: when n % 8 == 0 one thread handles 8 elements with 16-byte accesses,
// otherwise one element (scalar path); launch geometry in elementwise.lua matches.

// add:  out = a + b   (f32 sum, rounded to bf16)
template <long long n>
__device__ void add_fwd(const bf16* __restrict__ a, const bf16* __restrict__ b, bf16* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n % 8 == 0) {
    if (i >= n / 8) return;
    float x[8], y[8];
    load8(a + i * 8, x);
    load8(b + i * 8, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] += y[k];
    store8(out + i * 8, x);
  } else {
    if (i >= n) return;
    out[i] = f2bf(bf2f(a[i]) + bf2f(b[i]));
  }
}

// gelu:  out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
template <long long n>
__device__ void gelu_fwd(const bf16* __restrict__ x, bf16* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n % 8 == 0) {
    if (i >= n / 8) return;
    float v[8];
    load8(x + i * 8, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = gelu_f(v[k]);
    store8(out + i * 8, v);
  } else {
    if (i >= n) return;
    out[i] = f2bf(gelu_f(bf2f(x[i])));
  }
}

// gelu_bwd:  dx (+)= dout · gelu'(x)      (ACC = 1 accumulates)
template <long long n, int ACC>
__device__ void gelu_bwd(const bf16* __restrict__ x, const bf16* __restrict__ dout, bf16* __restrict__ dx) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n % 8 == 0) {
    if (i >= n / 8) return;
    float v[8], g[8];
    load8(x + i * 8, v);
    load8(dout + i * 8, g);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = g[k] * gelu_grad_f(v[k]);
    if (ACC) {
      float old[8];
      load8(dx + i * 8, old);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] += old[k];
    }
    store8(dx + i * 8, v);
  } else {
    if (i >= n) return;
    float r = bf2f(dout[i]) * gelu_grad_f(bf2f(x[i]));
    if (ACC) r += bf2f(dx[i]);
    dx[i] = f2bf(r);
  }
}

// bias_grad:  db[c] += Σ_n dout[n, c]   (column reduction without atomics, see common.cuh)
template <int N, int C>
__device__ void bias_grad(const bf16* __restrict__ dout, float* __restrict__ db) {
  mf_col_reduce<N, C, false>(dout, nullptr, nullptr, nullptr, nullptr, db);
}

// embed.cuh — token + position embedding and its two gradients (docs/ir.md).
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

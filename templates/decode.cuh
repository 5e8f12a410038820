// decode.cuh — the one-token decode program's kernels (docs/ir.md, "Decode"): position embedding
// at a runtime position and attention of one query over a KV cache. Memory-bound: the cost of a
// decode step is reading the weights and the cache once.

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

// attention_decode: one block per (sequence b, head h), blockDim = DT threads.
//   1. append:  kcache[b, pos, h] = k_h,  vcache[b, pos, h] = v_h   (from qkv [B, 3D])
//   2. s_j = q_h·k_{j,h} / √d  for j = 0..pos   (one warp per key, lanes split the head dim)
//   3. p_j = exp(s_j − max s) / Σ exp(·);   out_h = Σ_j p_j·v_{j,h}   (thread i owns column i)
// The block writes its own head's cache row first; __syncthreads makes it visible to the block.
template <int B, int T, int H, int d>
__device__ void attention_decode_fwd(const bf16* __restrict__ qkv, const int* __restrict__ pos_p,
                                     bf16* __restrict__ kcache, bf16* __restrict__ vcache, bf16* __restrict__ out) {
  static_assert(d % 32 == 0 || d == 16, "attention_decode: head dim must be 16 or a multiple of 32");
  constexpr int D = H * d;
  extern __shared__ float s[];              // T scores
  __shared__ float red[32];
  __shared__ float q[d];
  const int b = blockIdx.x / H, h = blockIdx.x % H, pos = pos_p[0];
  const bf16* row = qkv + (long long)b * 3 * D;
  bf16* kc = kcache + (long long)b * T * D + h * d;
  bf16* vc = vcache + (long long)b * T * D + h * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    kc[(long long)pos * D + i] = row[D + h * d + i];
    vc[(long long)pos * D + i] = row[2 * D + h * d + i];
    q[i] = bf2f(row[h * d + i]);
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const float scale = rsqrtf((float)d);
  float mx = -MF_INF;
  for (int j = warp; j <= pos; j += nwarps) {
    float dot = 0.f;
    for (int i = lane; i < d; i += 32) dot += q[i] * bf2f(kc[(long long)j * D + i]);
    dot = warp_sum(dot) * scale;
    if (lane == 0) s[j] = dot;
    mx = fmaxf(mx, dot);
  }
  mx = block_max(mx, red);                  // every thread of a warp holds the same running max
  float sum = 0.f;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
    const float e = __expf(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  sum = block_sum(sum, red);
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j <= pos; ++j) acc += s[j] * bf2f(vc[(long long)j * D + i]);
    out[(long long)b * D + h * d + i] = f2bf(acc / sum);
  }
}

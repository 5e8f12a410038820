// test_attention_gen.cu — standalone GPU test and benchmark for templates/attention_gen.cuh
// (op kinds attn, attn_bwd_pre, attn_bwd_dkdv, attn_bwd_dq; docs/ir.md).
//
//   nvcc -std=c++17 -arch=sm_90 -O2 -I templates tests/gpu/test_attention_gen.cu -o bin/test_attention_gen
//   bin/test_attention_gen             # all tests, then the benchmark table
//   bin/test_attention_gen --no-bench  # tests only
//   bin/test_attention_gen --small     # small tests only (what the CPU emulator runs; implies --no-bench)
//   bin/test_attention_gen --bench-only  # the benchmark table alone (bench/bench.sh)
//   bin/test_attention_gen --only pre,mla  # only tests whose name contains "pre" or "mla" (implies --no-bench)
//   bin/test_attention_gen --bench-prefix  # no tests: the prefix cost at the Qwen2-0.5B shape
//   bin/test_attention_gen --bench-swamla  # no tests: swamla_small's two attention layers alone (a short table)
//
// Every variant axis runs on random inputs against a double-precision CPU reference written here
// from the definition (mask, ALiBi slopes by the paper's recursive rule, RoPE by θ_p = base^(−2p/R)):
// forward out/lse, delta, and dq/dk/dv; with dropout the reference applies the same mask (the
// counter hash of docs/ir_decoder.md, written here from its definition), and two mask tests decode
// the GPU's keep bits exactly from out and dv (q = 0 makes every visible p_ij equal; v and dout
// one-hot powers of two spell the bits). Relative L2 error ‖gpu − ref‖/‖ref‖ must stay below 2e-2
// for bf16 outputs, 1e-4 for lse (1e-3 with RoPE: the kernel rotates q/k in bf16) and 1e-5 for
// delta. Gradient buffers start filled with a sentinel, and columns outside every head must keep
// it ("writes only its own columns"). The backward runs twice and must repeat bit for bit.
// Launch geometry mirrors templates/attention_gen.lua. Prints one `ok …` / `FAIL …` line per
// check, then (GPU, no --no-bench/--small) the benchmark: the current kernels (attention.cuh) and
// these side by side at the GPT-2 shapes, then fwd and fwd+bwd TFLOP/s at T = 1024, 4096, 16384,
// head dims 64 and 128, causal and SWA (W = 256, S = 4), as a table; last `N passed, M failed`.
// Exits non-zero on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "attention.cuh"
#include "attention_gen.cuh"
#include "attention_wg.cuh"
#ifndef MF_EMU_CLUSTER
#define MF_EMU_CLUSTER(n) ((void)0)   // the CPU emulator (tests/gpu/emu/emu.h) defines it
#endif

// ---- configurations ----------------------------------------------------------------------------
// LAY 0: one packed buffer per row [q (H·DQK) | k (HKV·DQK) | v (HKV·DV)] (GPT-2 / fused Qwen);
// LAY 1: three separate buffers with padded rows and non-zero column offsets;
// LAY 2: q separate, k and v interleaved per kv head [k_g (DQK) | v_g (DV)] (MLA's kv_b output).
template <int B_, int T_, int H_, int HKV_, int DQK_, int DV_, int W_, int S_, int AL_, int RP_, int RD_, int LAY_>
struct Cfg {
  static constexpr int B = B_, T = T_, H = H_, HKV = HKV_, DQK = DQK_, DV = DV_, WINDOW = W_, SINK = S_;
  static constexpr int ALIBI = AL_, ROPE = RP_, ROPE_DIM = RD_, LAY = LAY_;
  static constexpr int LD0 = H * DQK + HKV * DQK + HKV * DV;
  static constexpr int LDQ = LAY == 0 ? LD0 : LAY == 1 ? H * DQK + 16 : H * DQK;
  static constexpr int LDK = LAY == 0 ? LD0 : LAY == 1 ? HKV * DQK + 8 : HKV * (DQK + DV);
  static constexpr int LDV = LAY == 0 ? LD0 : LAY == 1 ? HKV * DV + 8 : HKV * (DQK + DV);
  static constexpr int QOFF = LAY == 1 ? 8 : 0;
  static constexpr int KOFF = LAY == 0 ? H * DQK : LAY == 1 ? 8 : 0;
  static constexpr int VOFF = LAY == 0 ? H * DQK + HKV * DQK : LAY == 1 ? 0 : DQK;
  static constexpr int QHS = DQK, KHS = LAY == 2 ? DQK + DV : DQK, VHS = LAY == 2 ? DQK + DV : DV;
  static constexpr bool DROP = false;   // attention dropout: see Drop
  static constexpr int STREAM = 0;
  static constexpr float P = 0.f;
  static constexpr int NPRE = 0, NREP = 1;   // learned prefix: see Pre
  static constexpr bool WG = false;          // the wgmma kernels (attention_wg.cuh): see Wg
  static constexpr int KROT = 0;             // k arrives rotated: see Krot
};
// C with attention-probability dropout p = PCT/100 and the op's stream id STREAM_.
template <class C, int PCT, int STREAM_>
struct Drop : C {
  static constexpr bool DROP = true;
  static constexpr int STREAM = STREAM_;
  static constexpr float P = PCT * 0.01f;
};
// C with a learned prefix of NPRE_ entries per replica and NREP_ replicas (B = NREP_·Bm rows).
template <class C, int NPRE_, int NREP_>
struct Pre : C {
  static constexpr int NPRE = NPRE_, NREP = NREP_;
};
// C on the wgmma kernels (sm_90a; attention_wg.cuh) wherever they can run: forward and dQ always, dK/dV when
// no cluster is needed (WGKV), else attention_gen.cuh's dK/dV. (gen picks per kernel where they are faster:
// attention_gen.lua, wg.)
template <class C>
struct Wg : C {
  static constexpr bool WG = true;
};
template <class C> constexpr bool WGKV = C::WG && ag_cluster<C::H / C::HKV>() == 1;
// C with k given already rotated (KROT = 1, as MLA's mla_k makes it): the forward rotates q alone and writes
// qr alone, and dk is the gradient of the rotated k.
template <class C>
struct Krot : C {
  static_assert(C::ROPE != 0, "Krot: needs RoPE");
  static constexpr int KROT = 1;
};
#define AGC(C)                                                                                        \
  C::B, C::T, C::H, C::HKV, C::DQK, C::DV, C::LDQ, C::LDK, C::LDV, C::QOFF, C::KOFF, C::VOFF, C::QHS, C::KHS, \
      C::VHS, C::WINDOW, C::SINK, C::ALIBI, C::ROPE, C::ROPE_DIM, C::KROT

// ---- __global__ wrappers (what gen emits) ------------------------------------------------------
// (dropctr and p are used by the dropout instantiations only, as gen emits two signatures)
// (pk/pv and dpk/dpv likewise by the prefix instantiations only)
// blocks per SM of each wrapper's __launch_bounds__ (attention_gen.lua's min_blocks; 2 for the wgmma kernels)
template <class C, bool BWD, bool WGK> constexpr int MINB = WGK ? 2 : ag_min_blocks<C::DQK, C::DV, C::ROPE, BWD, C::DROP>();
template <class C> __global__ void __launch_bounds__(128, MINB<C, false, C::WG>)
k_fwd(const bf16* q, const bf16* k, const bf16* v, const bf16* pk, const bf16* pv, const int* dropctr, bf16* out,
      float* lse, bf16* qr, bf16* kr, float scale, float base, float p) {
  // with RoPE the entries that also write the rotated copies qr, kr (the only ones gen emits then); qr alone
  // when k arrives rotated
  if constexpr (C::WG && C::KROT) attn_fwd_wg<AGC(C)>(q, k, v, out, lse, qr, scale, base);
  else if constexpr (C::WG && C::ROPE) attn_fwd_wg<AGC(C)>(q, k, v, out, lse, qr, kr, scale, base);
  else if constexpr (C::WG) attn_fwd_wg<AGC(C)>(q, k, v, out, lse, scale, base);
  else if constexpr (C::DROP && C::KROT) attn_fwd<AGC(C), C::STREAM>(q, k, v, dropctr, out, lse, qr, scale, base, p);
  else if constexpr (C::DROP && C::ROPE) attn_fwd<AGC(C), C::STREAM>(q, k, v, dropctr, out, lse, qr, kr, scale, base, p);
  else if constexpr (C::DROP) attn_fwd<AGC(C), C::STREAM>(q, k, v, dropctr, out, lse, scale, base, p);
  else if constexpr (C::NPRE > 0 && C::KROT) attn_fwd<AGC(C), C::NPRE, C::NREP>(q, k, v, pk, pv, out, lse, qr, scale, base);
  else if constexpr (C::NPRE > 0 && C::ROPE)
    attn_fwd<AGC(C), C::NPRE, C::NREP>(q, k, v, pk, pv, out, lse, qr, kr, scale, base);
  else if constexpr (C::NPRE > 0) attn_fwd<AGC(C), C::NPRE, C::NREP>(q, k, v, pk, pv, out, lse, scale, base);
  else if constexpr (C::KROT) attn_fwd<AGC(C)>(q, k, v, out, lse, qr, scale, base);
  else if constexpr (C::ROPE) attn_fwd<AGC(C)>(q, k, v, out, lse, qr, kr, scale, base);
  else attn_fwd<AGC(C)>(q, k, v, out, lse, scale, base);
}
template <class C> __global__ void __launch_bounds__(256)
k_pre(const bf16* out, const bf16* dout, float* delta) { attn_bwd_pre<C::B, C::T, C::H, C::DV>(out, dout, delta); }
// dK/dV of grouped kv heads runs as clusters of CL<C> blocks along x (ag_cluster; gen emits the same attribute)
template <class C> constexpr int CL = ag_cluster<C::H / C::HKV>();
template <class C> __global__ void __launch_bounds__(128, MINB<C, true, WGKV<C>>)
__cluster_dims__(CL<C>, 1, 1)
k_dkdv(const bf16* q, const bf16* k, const bf16* v, const bf16* pk, const bf16* pv, const bf16* dout, const float* lse,
       const float* delta, const int* dropctr, bf16* dk, bf16* dv, float* dpk, float* dpv, float scale, float base,
       float p) {
  if constexpr (WGKV<C>) attn_bwd_dkdv_wg<AGC(C)>(q, k, v, dout, lse, delta, dk, dv, scale, base);
  else if constexpr (C::DROP) attn_bwd_dkdv<AGC(C), C::STREAM>(q, k, v, dout, lse, delta, dropctr, dk, dv, scale, base, p);
  else if constexpr (C::NPRE > 0)
    attn_bwd_dkdv<AGC(C), C::NPRE, C::NREP>(q, k, v, pk, pv, dout, lse, delta, dk, dv, dpk, dpv, scale, base);
  else attn_bwd_dkdv<AGC(C)>(q, k, v, dout, lse, delta, dk, dv, scale, base);
}
template <class C> __global__ void __launch_bounds__(128, MINB<C, true, C::WG>)
k_dq(const bf16* q, const bf16* k, const bf16* v, const bf16* pk, const bf16* pv, const bf16* dout, const float* lse,
     const float* delta, const int* dropctr, bf16* dq, float scale, float base, float p) {
  if constexpr (C::WG) attn_bwd_dq_wg<AGC(C)>(q, k, v, dout, lse, delta, dq, scale, base);
  else if constexpr (C::DROP) attn_bwd_dq<AGC(C), C::STREAM>(q, k, v, dout, lse, delta, dropctr, dq, scale, base, p);
  else if constexpr (C::NPRE > 0)
    attn_bwd_dq<AGC(C), C::NPRE, C::NREP>(q, k, v, pk, pv, dout, lse, delta, dq, scale, base);
  else attn_bwd_dq<AGC(C)>(q, k, v, dout, lse, delta, dq, scale, base);
}
// the current GPT-2 kernels (attention.cuh), for the side-by-side benchmark
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_old_fwd(const bf16* qkv, bf16* out, float* lse) { attention_fwd<B, T, H, d>(qkv, out, lse); }
template <int B, int T, int H, int d> __global__ void __launch_bounds__(256)
k_old_pre(const bf16* out, const bf16* dout, float* delta) { attention_bwd_pre<B, T, H, d>(out, dout, delta); }
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_old_dkdv(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv) {
  attention_bwd_dkdv<B, T, H, d>(qkv, dout, lse, delta, dqkv);
}
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_old_dq(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv) {
  attention_bwd_dq<B, T, H, d>(qkv, dout, lse, delta, dqkv);
}

// ---- host utilities ----------------------------------------------------------------------------
#define CK(x)                                                                                          \
  do {                                                                                                 \
    cudaError_t e_ = (x);                                                                              \
    if (e_ != cudaSuccess) {                                                                           \
      fprintf(stderr, "test_attention_gen: %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(2);                                                                                         \
    }                                                                                                  \
  } while (0)
#define LAUNCH_CHECK() CK(cudaGetLastError()); CK(cudaDeviceSynchronize())

static int g_pass = 0, g_fail = 0;
static std::vector<std::string> g_only;   // --only A,B,…: run the tests whose name contains A or B or …
static bool g_no_tests = false;           // --bench-prefix: no tests at all
static bool skip(const char* name) {
  if (g_no_tests) return true;
  if (g_only.empty()) return false;
  for (const std::string& o : g_only)
    if (strstr(name, o.c_str())) return false;
  return true;
}
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand() {   // uniform in (0, 1), xorshift64*
  g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
  return ((g_rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) + 1e-12;
}
static float bfr(float x) { return __bfloat162float(__float2bfloat16(x)); }   // round to bf16
static std::vector<float> rnd(size_t n, float s) {   // bf16-representable, uniform (−s, s)
  std::vector<float> v(n);
  for (auto& x : v) x = bfr((float)((urand() * 2.0 - 1.0) * s));
  return v;
}
static std::vector<bf16> to_bf(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16(v[i]);
  return r;
}
static std::vector<float> from_bf(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}
template <class T> struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t n_) : n(n_) { CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  Dev(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  void put(const std::vector<T>& v) { CK(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    CK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};
static double relerr(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = (double)out[i] - ref[i];
    num += e * e;
    den += ref[i] * ref[i];
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
static void check(const char* what, const std::string& shape, const std::vector<float>& out,
                  const std::vector<double>& ref, double tol) {
  const double e = relerr(out, ref);
  if (e <= tol) {
    ++g_pass;
    printf("ok   %-16s %-58s relerr=%.3e\n", what, shape.c_str(), e);
  } else {
    ++g_fail;
    printf("FAIL %s %s relerr=%.3e (tol %.0e)\n", what, shape.c_str(), e, tol);
  }
}
static void check_true(const char* what, const std::string& shape, bool ok, const char* msg) {
  if (ok) {
    ++g_pass;
    printf("ok   %-16s %-58s %s\n", what, shape.c_str(), msg);
  } else {
    ++g_fail;
    printf("FAIL %s %s relerr=%s\n", what, shape.c_str(), msg);
  }
}
static std::string shp(const char* fmt, ...) {
  char b[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  return b;
}

// ---- reference ---------------------------------------------------------------------------------
// Dropout keep bit of element idx = ((b·H + h)·T + query)·T + key (docs/ir_decoder.md "Dropout"):
//   x = seed ^ stream·K1 ^ ctr·K2 ^ idx·K3 (uint64), splitmix64 finaliser, u = top 24 bits · 2^−24, keep iff u ≥ p.
static const int kSeed = 0x2468ace, kCtr = 37;   // the dropctr pair the tests use
static bool keep_of(int stream, uint64_t idx, float p) {
  uint64_t z = (uint64_t)(uint32_t)kSeed ^ ((uint64_t)stream * 0x9E3779B97F4A7C15ull) ^
               ((uint64_t)(uint32_t)kCtr * 0xD1B54A32D192ED03ull) ^ (idx * 0x8CB92BA72F3D8DD7ull);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(uint32_t)(z >> 40) * 0x1p-24f >= p;
}
// The dropout factor z_ij: keep/(1 − p) with the float 1/(1 − p) of both backends, 1 without dropout.
struct DropRef {
  float p;
  int stream;
  double z(int b, int h, int i, int j, int H, int T) const {
    if (p <= 0.f) return 1.0;
    const uint64_t idx = (((uint64_t)b * H + h) * T + i) * (uint64_t)T + j;
    return keep_of(stream, idx, p) ? (double)(1.f / (1.f - p)) : 0.0;
  }
};
// ALiBi slopes exactly as the ALiBi paper's reference code builds them (recursive rule).
static std::vector<double> alibi_slopes(int n) {
  auto pow2 = [](int m) {
    std::vector<double> s;
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2((double)m) - 3)));
    for (int i = 0; i < m; ++i) s.push_back(start * std::pow(start, i));
    return s;
  };
  const double l = std::log2((double)n);
  if (l == std::floor(l)) return pow2(n);
  const int p = 1 << (int)std::floor(l);
  std::vector<double> s = pow2(p), t = alibi_slopes(2 * p);
  for (int i = 0; i < n - p; ++i) s.push_back(t[2 * i]);
  return s;
}
// (i1, i2) index pairs of the rotated slice (dims DQK−R … DQK−1) and θ of pair p.
struct Rope {
  int mode, R, DQK;
  double base;
  int i1(int p) const { return DQK - R + (mode == 1 ? p : 2 * p); }
  int i2(int p) const { return DQK - R + (mode == 1 ? p + R / 2 : 2 * p + 1); }
  double theta(int p) const { return std::pow(base, -2.0 * p / R); }
  void apply(double* x, int t, bool transpose) const {   // x ← R_t·x (or R_tᵀ·x)
    if (!mode) return;
    for (int p = 0; p < R / 2; ++p) {
      const double a = t * theta(p), c = std::cos(a), s = transpose ? -std::sin(a) : std::sin(a);
      const double x1 = x[i1(p)], x2 = x[i2(p)];
      x[i1(p)] = x1 * c - x2 * s;
      x[i2(p)] = x2 * c + x1 * s;
    }
  }
};
struct Ref {
  std::vector<double> out, lse, dq, dk, dv;   // out [B·T, H·DV]; lse [B,H,T]; dq [B,T,H,DQK], dk [B,T,HKV,DQK], dv [B,T,HKV,DV]
  std::vector<double> qrot, krot;             // the rotated q̃ [B,T,H,DQK], k̃ [B,T,HKV,DQK]
  std::vector<double> dpk, dpv;               // prefix partials per batch row: [B,HKV,NPRE,DQK], [B,HKV,NPRE,DV]
};
// A learned prefix (n = 0: none): pk [NREP,HKV,n,DQK], pv [NREP,HKV,n,DV]; row b is replica b/(B/nrep).
struct PrefixRef {
  int n = 0, nrep = 1;
  const std::vector<float>* pk = nullptr;
  const std::vector<float>* pv = nullptr;
};
// q [B,T,H,DQK], k [B,T,HKV,DQK], v [B,T,HKV,DV], dout [B·T, H·DV] (dense, unrotated).
// With dropout (dr.p > 0): out_i = Σ_j p_ij·z_ij·v_j (lse undropped), dv_j = Σ_i p_ij·z_ij·do_i,
// ds_ij = p_ij·(z_ij·dp_ij − delta_i).
// With a prefix (pr.n > 0) every query also sees the n prefix entries of its replica: scores
// c·q̃_i·pk_n (no rotation of pk, no ALiBi, no mask), in the same softmax; dpk/dpv per batch row.
// krot: k is given rotated (KROT = 1): it is used as k̃ as it is, and dk is the gradient of k̃ (no Rᵀ).
static Ref reference(int B, int T, int H, int HKV, int DQK, int DV, int W, int S, int AL, const Rope& rope, bool krot,
                     double scale, const DropRef& dr, const std::vector<float>& q, const std::vector<float>& k,
                     const std::vector<float>& v, const std::vector<float>& dout, const PrefixRef& pr = PrefixRef()) {
  Ref r;
  const int NP = pr.n;
  r.dpk.assign((size_t)B * HKV * NP * DQK, 0);
  r.dpv.assign((size_t)B * HKV * NP * DV, 0);
  std::vector<double> pp(NP);   // prefix probabilities of the current row
  r.out.assign((size_t)B * T * H * DV, 0);
  r.lse.assign((size_t)B * H * T, 0);
  r.dq.assign((size_t)B * T * H * DQK, 0);
  r.dk.assign((size_t)B * T * HKV * DQK, 0);
  r.dv.assign((size_t)B * T * HKV * DV, 0);
  std::vector<double> qr(q.begin(), q.end()), kr(k.begin(), k.end());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h) rope.apply(&qr[(((size_t)b * T + t) * H + h) * DQK], t, false);
      for (int g = 0; g < HKV && !krot; ++g) rope.apply(&kr[(((size_t)b * T + t) * HKV + g) * DQK], t, false);
    }
  std::vector<double> dqr(r.dq.size(), 0), dkr(r.dk.size(), 0);
  const std::vector<double> slope = alibi_slopes(H);
  std::vector<double> p(T), ds(T), zf(T);
  std::vector<char> vis(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h * HKV / H;
      for (int i = 0; i < T; ++i) {
        const double* qi = &qr[(((size_t)b * T + i) * H + h) * DQK];
        const float* doi = &dout[((size_t)b * T + i) * H * DV + (size_t)h * DV];
        double mx = -1e300;
        const size_t pre0 = ((size_t)(b / (B / pr.nrep)) * HKV + g) * NP;   // prefix row of entry 0
        for (int n = 0; n < NP; ++n) {
          double s = 0;
          for (int e = 0; e < DQK; ++e) s += qi[e] * (*pr.pk)[(pre0 + n) * DQK + e];
          pp[n] = s * scale;
          mx = std::max(mx, pp[n]);
        }
        for (int j = 0; j < T; ++j) {
          vis[j] = j <= i && (W == 0 || i - j < W || j < S);
          if (!vis[j]) continue;
          const double* kj = &kr[(((size_t)b * T + j) * HKV + g) * DQK];
          double s = 0;
          for (int e = 0; e < DQK; ++e) s += qi[e] * kj[e];
          p[j] = s * scale - (AL ? slope[h] * (i - j) : 0.0);
          mx = std::max(mx, p[j]);
        }
        double l = 0;
        for (int n = 0; n < NP; ++n) l += std::exp(pp[n] - mx);
        for (int j = 0; j < T; ++j)
          if (vis[j]) l += std::exp(p[j] - mx);
        const double ls = mx + std::log(l);
        r.lse[((size_t)b * H + h) * T + i] = ls;
        for (int n = 0; n < NP; ++n) pp[n] = std::exp(pp[n] - ls);
        for (int j = 0; j < T; ++j) p[j] = vis[j] ? std::exp(p[j] - ls) : 0.0;
        for (int j = 0; j < T; ++j) zf[j] = vis[j] ? dr.z(b, h, i, j, H, T) : 0.0;
        double del = 0;
        for (int e = 0; e < DV; ++e) {
          double o = 0;
          for (int n = 0; n < NP; ++n) o += pp[n] * (*pr.pv)[(pre0 + n) * DV + e];
          for (int j = 0; j < T; ++j)
            if (vis[j]) o += p[j] * zf[j] * v[(((size_t)b * T + j) * HKV + g) * DV + e];
          r.out[((size_t)b * T + i) * H * DV + (size_t)h * DV + e] = o;
          del += o * doi[e];
        }
        for (int n = 0; n < NP; ++n) {   // prefix: dq, and the row's partials dpk, dpv
          double s = 0;
          for (int e = 0; e < DV; ++e) s += doi[e] * (*pr.pv)[(pre0 + n) * DV + e];
          const double dsn = pp[n] * (s - del);
          double* dqi = &dqr[(((size_t)b * T + i) * H + h) * DQK];
          double* dpkn = &r.dpk[(((size_t)b * HKV + g) * NP + n) * DQK];
          double* dpvn = &r.dpv[(((size_t)b * HKV + g) * NP + n) * DV];
          for (int e = 0; e < DQK; ++e) {
            dqi[e] += scale * dsn * (*pr.pk)[(pre0 + n) * DQK + e];
            dpkn[e] += scale * dsn * qi[e];
          }
          for (int e = 0; e < DV; ++e) dpvn[e] += pp[n] * doi[e];
        }
        for (int j = 0; j < T; ++j) {
          if (!vis[j]) continue;
          double s = 0;
          for (int e = 0; e < DV; ++e) s += doi[e] * v[(((size_t)b * T + j) * HKV + g) * DV + e];
          ds[j] = p[j] * (zf[j] * s - del);
          const double* kj = &kr[(((size_t)b * T + j) * HKV + g) * DQK];
          double* dqi = &dqr[(((size_t)b * T + i) * H + h) * DQK];
          double* dkj = &dkr[(((size_t)b * T + j) * HKV + g) * DQK];
          for (int e = 0; e < DQK; ++e) {
            dqi[e] += scale * ds[j] * kj[e];
            dkj[e] += scale * ds[j] * qi[e];
          }
          double* dvj = &r.dv[(((size_t)b * T + j) * HKV + g) * DV];
          for (int e = 0; e < DV; ++e) dvj[e] += p[j] * zf[j] * doi[e];
        }
      }
    }
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h) rope.apply(&dqr[(((size_t)b * T + t) * H + h) * DQK], t, true);
      for (int g = 0; g < HKV && !krot; ++g) rope.apply(&dkr[(((size_t)b * T + t) * HKV + g) * DQK], t, true);
    }
  r.dq = dqr;
  r.dk = dkr;
  r.qrot = qr;
  r.krot = kr;
  return r;
}

// ---- launching ---------------------------------------------------------------------------------
static const float kBase = 10000.f;
template <class C> static float scale_of() { return (float)(1.0 / std::sqrt((double)C::DQK)); }
// dynamic shared memory of each kernel (attention_gen.lua's launch.smem)
template <class C> constexpr int SM_FWD = C::WG ? wg_smem_fwd<C::DQK, C::DV>() : ag_smem_fwd<C::DQK, C::DV>();
template <class C> constexpr int SM_DKDV = WGKV<C> ? wg_smem_dkdv<C::DQK, C::DV>() : ag_smem_dkdv<C::DQK, C::DV, CL<C>>();
template <class C> constexpr int SM_DQ = C::WG ? wg_smem_dq<C::DQK, C::DV>() : ag_smem_dq<C::DQK, C::DV>();
template <class C> static void setup() {
  CK(cudaFuncSetAttribute(k_fwd<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_FWD<C>));
  CK(cudaFuncSetAttribute(k_dkdv<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_DKDV<C>));
  CK(cudaFuncSetAttribute(k_dq<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, SM_DQ<C>));
}
static int* g_ctr = nullptr;   // device {kSeed, kCtr}: the dropctr input of every launch
// pk/pv (and dpk/dpv) are used when C::NPRE > 0; the dK/dV grid then has ⌈NPRE/64⌉ more tiles.
// qr/kr (C::ROPE ≠ 0): where the forward writes the rotated q, k (layouts of q, k); run_bwd then takes them as q, k.
template <class C>
static void run_fwd(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, const bf16* pk = nullptr,
                    const bf16* pv = nullptr, bf16* qr = nullptr, bf16* kr = nullptr) {
  k_fwd<C><<<dim3(C::B * C::H, (C::T + 63) / 64), 128, (SM_FWD<C>)>>>(q, k, v, pk, pv, g_ctr, out, lse, qr, kr,
                                                                                    scale_of<C>(), kBase, C::P);
}
template <class C>
static void run_bwd(const bf16* q, const bf16* k, const bf16* v, const bf16* out, const bf16* dout, const float* lse,
                    float* delta, bf16* dq, bf16* dk, bf16* dv, const bf16* pk = nullptr, const bf16* pv = nullptr,
                    float* dpk = nullptr, float* dpv = nullptr) {
  const long long th = (long long)C::B * C::T * C::H * attn_bwd_pre_lanes<C::DV>();
  k_pre<C><<<(unsigned)((th + 255) / 256), 256>>>(out, dout, delta);
  MF_EMU_CLUSTER(CL<C>);   // the CPU emulator runs each cluster's blocks together (a no-op on the GPU)
  k_dkdv<C><<<dim3(C::B * C::HKV * CL<C>, (C::NPRE + 63) / 64 + (C::T + 63) / 64), 128,
              (SM_DKDV<C>)>>>(
      q, k, v, pk, pv, dout, lse, delta, g_ctr, dk, dv, dpk, dpv, scale_of<C>(), kBase, C::P);
  k_dq<C><<<dim3(C::B * C::H, (C::T + 63) / 64), 128, (SM_DQ<C>)>>>(q, k, v, pk, pv, dout, lse, delta,
                                                                                 g_ctr, dq, scale_of<C>(), kBase, C::P);
}

// Buffers of one configuration: host copies of q/k/v in their layout (qb/kb/vb point into the
// same host vector when the layout shares one buffer), device buffers, gradient buffers.
template <class C> struct Bufs {
  static constexpr size_t N = (size_t)C::B * C::T;
  // number of distinct buffers and which buffer q/k/v live in
  static constexpr int nb = C::LAY == 0 ? 1 : C::LAY == 1 ? 3 : 2;
  static constexpr int qi = 0, ki = C::LAY == 0 ? 0 : 1, vi = C::LAY == 0 ? 0 : C::LAY == 1 ? 2 : 1;
  static size_t width(int i) { return i == qi ? C::LDQ : i == ki ? C::LDK : C::LDV; }
  std::vector<std::vector<float>> host;
  std::vector<std::unique_ptr<Dev<bf16>>> in;
  Bufs() {
    for (int i = 0; i < nb; ++i) {
      host.push_back(rnd(N * width(i), 1.f));
      in.emplace_back(new Dev<bf16>(N * width(i)));
      in.back()->put(to_bf(host.back()));
    }
  }
  const bf16* q() const { return in[qi]->p; }
  const bf16* k() const { return in[ki]->p; }
  const bf16* v() const { return in[vi]->p; }
  // element offsets of Q[b,t,h,e], K[b,t,g,e], V[b,t,g,e] in their buffers
  static size_t oq(int b, int t, int h, int e) { return ((size_t)b * C::T + t) * C::LDQ + C::QOFF + (size_t)h * C::QHS + e; }
  static size_t ok(int b, int t, int g, int e) { return ((size_t)b * C::T + t) * C::LDK + C::KOFF + (size_t)g * C::KHS + e; }
  static size_t ov(int b, int t, int g, int e) { return ((size_t)b * C::T + t) * C::LDV + C::VOFF + (size_t)g * C::VHS + e; }
};

template <class C>
static void test_case(const char* name) {
  if (skip(name)) return;
  constexpr int B = C::B, T = C::T, H = C::H, HKV = C::HKV, DQK = C::DQK, DV = C::DV;
  constexpr size_t N = (size_t)B * T;
  setup<C>();
  Bufs<C> bufs;
  auto dout = rnd(N * H * DV, 1.f);
  std::unique_ptr<Dev<bf16>> ddo(new Dev<bf16>(N * H * DV));
  ddo->put(to_bf(dout));
  Dev<bf16> out(N * H * DV);
  Dev<float> lse((size_t)B * H * T), delta((size_t)B * H * T);
  // the prefix (NPRE > 0): pk [NREP,HKV,NPRE,DQK], pv [NREP,HKV,NPRE,DV]; partials per batch row
  constexpr int NP = C::NPRE;
  const size_t npk = (size_t)C::NREP * HKV * NP * DQK, npv = (size_t)C::NREP * HKV * NP * DV;
  const std::vector<float> pk = rnd(npk, 1.f), pv = rnd(npv, 1.f);
  Dev<bf16> dpk_in(npk), dpv_in(npv);
  dpk_in.put(to_bf(pk));
  dpv_in.put(to_bf(pv));
  const size_t npart_k = (size_t)B * HKV * NP * DQK, npart_v = (size_t)B * HKV * NP * DV;
  Dev<float> dpk1(npart_k), dpv1(npart_v), dpk2(npart_k), dpv2(npart_v);
  const bf16* pkp = NP ? dpk_in.p : nullptr;
  const bf16* pvp = NP ? dpv_in.p : nullptr;
  // RoPE: the forward's rotated copies, in sentinel-filled buffers shaped like q's and k's
  const float SENT = 7.f;
  std::vector<std::unique_ptr<Dev<bf16>>> rot;
  for (int i = 0; C::ROPE && i < bufs.nb; ++i) {
    rot.emplace_back(new Dev<bf16>(N * bufs.width(i)));
    rot.back()->put(to_bf(std::vector<float>(N * bufs.width(i), SENT)));
  }
  bf16* qrp = C::ROPE ? rot[bufs.qi]->p : nullptr;
  bf16* krp = C::ROPE && !C::KROT ? rot[bufs.ki]->p : nullptr;   // KROT: no kr (its columns stay untouched)
  run_fwd<C>(bufs.q(), bufs.k(), bufs.v(), out.p, lse.p, pkp, pvp, qrp, krp);
  LAUNCH_CHECK();

  // dense copies for the reference
  std::vector<float> q(N * H * DQK), k(N * HKV * DQK), v(N * HKV * DV);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h)
        for (int e = 0; e < DQK; ++e) q[(((size_t)b * T + t) * H + h) * DQK + e] = bufs.host[bufs.qi][bufs.oq(b, t, h, e)];
      for (int g = 0; g < HKV; ++g) {
        for (int e = 0; e < DQK; ++e) k[(((size_t)b * T + t) * HKV + g) * DQK + e] = bufs.host[bufs.ki][bufs.ok(b, t, g, e)];
        for (int e = 0; e < DV; ++e) v[(((size_t)b * T + t) * HKV + g) * DV + e] = bufs.host[bufs.vi][bufs.ov(b, t, g, e)];
      }
    }
  const Rope rope{C::ROPE, C::ROPE_DIM, DQK, (double)kBase};
  PrefixRef pr;
  pr.n = NP;
  pr.nrep = C::NREP;
  pr.pk = &pk;
  pr.pv = &pv;
  const Ref ref = reference(B, T, H, HKV, DQK, DV, C::WINDOW, C::SINK, C::ALIBI, rope, C::KROT != 0, scale_of<C>(),
                            DropRef{C::P, C::STREAM}, q, k, v, dout, pr);
  const std::string s = shp("%s B=%d T=%d H=%d/%d d=%d/%d W=%d S=%d al=%d rope=%d/%d%s lay=%d%s%s", name, B, T, H, HKV, DQK,
                            DV, C::WINDOW, C::SINK, C::ALIBI, C::ROPE, C::ROPE_DIM, C::KROT ? " krot" : "", C::LAY,
                            C::DROP ? shp(" p=%.2f", C::P).c_str() : "",
                            NP ? shp(" pre=%dx%d", NP, C::NREP).c_str() : "");
  const std::vector<float> gout = from_bf(out.get());
  check("attn out", s, gout, ref.out, 2e-2);
  check("attn lse", s, lse.get(), ref.lse, C::ROPE ? 1e-3 : 1e-4);
  if constexpr (C::ROPE != 0) {   // qr, kr: every q/k column of every row written once, nothing else (KROT: qr alone)
    std::vector<std::vector<float>> rr;
    for (int i = 0; i < bufs.nb; ++i) rr.push_back(from_bf(rot[i]->get()));
    std::vector<char> own[3];
    for (int i = 0; i < bufs.nb; ++i) own[i].assign(N * bufs.width(i), 0);
    std::vector<float> gq(ref.qrot.size()), gk(ref.krot.size());
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        for (int h = 0; h < H; ++h)
          for (int e = 0; e < DQK; ++e) {
            gq[(((size_t)b * T + t) * H + h) * DQK + e] = rr[bufs.qi][bufs.oq(b, t, h, e)];
            own[bufs.qi][bufs.oq(b, t, h, e)] = 1;
          }
        for (int g = 0; g < HKV && !C::KROT; ++g)
          for (int e = 0; e < DQK; ++e) {
            gk[(((size_t)b * T + t) * HKV + g) * DQK + e] = rr[bufs.ki][bufs.ok(b, t, g, e)];
            own[bufs.ki][bufs.ok(b, t, g, e)] = 1;
          }
      }
    check("attn qr", s, gq, ref.qrot, 1e-2);
    if (!C::KROT) check("attn kr", s, gk, ref.krot, 1e-2);
    bool clean = true;
    for (int i = 0; i < bufs.nb; ++i)
      for (size_t j = 0; j < rr[i].size(); ++j)
        if (!own[i][j] && rr[i][j] != SENT) clean = false;
    check_true("attn qr/kr layout", s, clean, clean ? "other columns untouched" : "wrote outside the q/k columns");
  }

  // backward from the GPU forward's out/lse (what the model does), into sentinel-filled buffers; with RoPE
  // it reads the forward's rotated copies as q and k (KROT: k itself)
  const bf16* bq = C::ROPE ? qrp : bufs.q();
  const bf16* bk = C::ROPE && !C::KROT ? krp : bufs.k();
  std::vector<std::unique_ptr<Dev<bf16>>> g1, g2;
  for (int i = 0; i < bufs.nb; ++i) {
    g1.emplace_back(new Dev<bf16>(N * bufs.width(i)));
    g2.emplace_back(new Dev<bf16>(N * bufs.width(i)));
    g1.back()->put(to_bf(std::vector<float>(N * bufs.width(i), SENT)));
    g2.back()->put(to_bf(std::vector<float>(N * bufs.width(i), SENT)));
  }
  run_bwd<C>(bq, bk, bufs.v(), out.p, ddo->p, lse.p, delta.p, g1[bufs.qi]->p, g1[bufs.ki]->p, g1[bufs.vi]->p,
             pkp, pvp, dpk1.p, dpv1.p);
  LAUNCH_CHECK();
  std::vector<double> rdel((size_t)B * H * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        double a = 0;
        for (int e = 0; e < DV; ++e)
          a += (double)gout[((size_t)b * T + t) * H * DV + (size_t)h * DV + e] * dout[((size_t)b * T + t) * H * DV + (size_t)h * DV + e];
        rdel[((size_t)b * H + h) * T + t] = a;
      }
  check("attn_bwd_pre", s, delta.get(), rdel, 1e-5);
  std::vector<std::vector<float>> gg;
  for (int i = 0; i < bufs.nb; ++i) gg.push_back(from_bf(g1[i]->get()));
  std::vector<char> mine[3];   // columns owned by some head, per buffer
  for (int i = 0; i < bufs.nb; ++i) mine[i].assign(N * bufs.width(i), 0);
  std::vector<float> gq(ref.dq.size()), gk(ref.dk.size()), gv(ref.dv.size());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h)
        for (int e = 0; e < DQK; ++e) {
          const size_t o = bufs.oq(b, t, h, e);
          gq[(((size_t)b * T + t) * H + h) * DQK + e] = gg[bufs.qi][o];
          mine[bufs.qi][o] = 1;
        }
      for (int g = 0; g < HKV; ++g) {
        for (int e = 0; e < DQK; ++e) {
          const size_t o = bufs.ok(b, t, g, e);
          gk[(((size_t)b * T + t) * HKV + g) * DQK + e] = gg[bufs.ki][o];
          mine[bufs.ki][o] = 1;
        }
        for (int e = 0; e < DV; ++e) {
          const size_t o = bufs.ov(b, t, g, e);
          gv[(((size_t)b * T + t) * HKV + g) * DV + e] = gg[bufs.vi][o];
          mine[bufs.vi][o] = 1;
        }
      }
    }
  check("attn_bwd_dq", s, gq, ref.dq, 2e-2);
  check("attn_bwd_dkdv dk", s, gk, ref.dk, 2e-2);
  check("attn_bwd_dkdv dv", s, gv, ref.dv, 2e-2);
  if (NP) {   // f32 partials: every element written (the buffers start as NaN in the emulator)
    check("attn_bwd_dkdv dpk", s, dpk1.get(), ref.dpk, 2e-2);
    check("attn_bwd_dkdv dpv", s, dpv1.get(), ref.dpv, 2e-2);
  }
  bool untouched = true;
  for (int i = 0; i < bufs.nb; ++i)
    for (size_t j = 0; j < gg[i].size(); ++j)
      if (!mine[i][j] && gg[i][j] != SENT) untouched = false;
  check_true("attn bwd layout", s, untouched, untouched ? "other columns untouched" : "wrote outside its columns");
  run_bwd<C>(bq, bk, bufs.v(), out.p, ddo->p, lse.p, delta.p, g2[bufs.qi]->p, g2[bufs.ki]->p, g2[bufs.vi]->p,
             pkp, pvp, dpk2.p, dpv2.p);
  LAUNCH_CHECK();
  bool same = true;
  for (int i = 0; i < bufs.nb; ++i) {
    const std::vector<bf16> a = g1[i]->get(), c = g2[i]->get();
    if (memcmp(a.data(), c.data(), a.size() * sizeof(bf16)) != 0) same = false;
  }
  if (NP) {
    const std::vector<float> a = dpk1.get(), c = dpk2.get(), a2 = dpv1.get(), c2 = dpv2.get();
    if (memcmp(a.data(), c.data(), a.size() * sizeof(float)) || memcmp(a2.data(), c2.data(), a2.size() * sizeof(float)))
      same = false;
  }
  check_true("attn bwd", s, same, same ? "deterministic" : "nondeterministic (two runs differ)");
}

// The dropout mask bit for bit. q = 0 makes every visible score 0, so p_ij = 1/n_i (n_i = the keys
// row i sees) and the forward's unnormalised P is exactly 1. With v_j = 2^(j div DV) at column
// j mod DV (else 0), out_i[e]·n_i·(1 − p) is the integer Σ keep_ij·2^(j div DV) over visible
// j ≡ e (mod DV); with dout_i = n_i·2^(i div DV) at column i mod DV, dv_j[e]·(1 − p) is likewise
// Σ keep_ij·2^(i div DV) over queries i ≡ e that see j. T ≤ 4·DV keeps the integers below 16, so
// bf16 rounding cannot blur them; HKV = H (dv would sum a group's heads).
template <class C>
static void test_mask(const char* name) {
  if (skip(name)) return;
  constexpr int B = C::B, T = C::T, H = C::H, DV = C::DV;
  constexpr size_t N = (size_t)B * T;
  static_assert(C::DROP && C::HKV == H && T <= 4 * DV && C::ALIBI == 0, "test_mask: dropout, HKV = H, T <= 4·DV");
  setup<C>();
  Bufs<C> bufs;
  auto vis = [](int i, int j) { return j <= i && (C::WINDOW == 0 || i - j < C::WINDOW || j < C::SINK); };
  std::vector<int> nvis(T, 0);
  for (int i = 0; i < T; ++i)
    for (int j = 0; j <= i; ++j) nvis[i] += vis(i, j);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        for (int e = 0; e < C::DQK; ++e) bufs.host[bufs.qi][bufs.oq(b, t, h, e)] = 0.f;
        for (int e = 0; e < DV; ++e) bufs.host[bufs.vi][bufs.ov(b, t, h, e)] = t % DV == e ? (float)(1 << (t / DV)) : 0.f;
      }
  for (int i = 0; i < bufs.nb; ++i) bufs.in[i]->put(to_bf(bufs.host[i]));
  std::vector<float> dout(N * H * DV, 0.f);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) dout[((size_t)b * T + t) * H * DV + (size_t)h * DV + t % DV] = (float)(nvis[t] << (t / DV));
  std::unique_ptr<Dev<bf16>> ddo(new Dev<bf16>(N * H * DV));
  ddo->put(to_bf(dout));
  Dev<bf16> out(N * H * DV);
  Dev<float> lse((size_t)B * H * T), delta((size_t)B * H * T);
  std::vector<std::unique_ptr<Dev<bf16>>> gr;
  for (int i = 0; i < bufs.nb; ++i) gr.emplace_back(new Dev<bf16>(N * bufs.width(i)));
  run_fwd<C>(bufs.q(), bufs.k(), bufs.v(), out.p, lse.p);
  LAUNCH_CHECK();
  run_bwd<C>(bufs.q(), bufs.k(), bufs.v(), out.p, ddo->p, lse.p, delta.p, gr[bufs.qi]->p, gr[bufs.ki]->p, gr[bufs.vi]->p);
  LAUNCH_CHECK();
  const std::vector<float> go = from_bf(out.get()), gv = from_bf(gr[bufs.vi]->get());
  const double keepf = 1.0 - (double)C::P;
  long bad_o = 0, bad_v = 0, dropped = 0, total = 0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int x = 0; x < T; ++x)
        for (int e = 0; e < DV; ++e) {
          int want_o = 0, want_v = 0;
          for (int y = e; y < T; y += DV) {
            const uint64_t row = ((uint64_t)b * H + h) * T;
            if (vis(x, y)) {   // out: query x, key y
              const bool kp = keep_of(C::STREAM, (row + x) * T + y, C::P);
              want_o += kp << (y / DV);
              dropped += !kp;
              ++total;
            }
            if (vis(y, x)) want_v += keep_of(C::STREAM, (row + y) * T + x, C::P) << (y / DV);   // dv: key x, query y
          }
          const double o = go[((size_t)b * T + x) * H * DV + (size_t)h * DV + e] * nvis[x] * keepf;
          const double dv = gv[bufs.ov(b, x, h, e)] * keepf;
          bad_o += std::lround(o) != want_o || std::fabs(o - want_o) > 0.25;
          bad_v += std::lround(dv) != want_v || std::fabs(dv - want_v) > 0.25;
        }
  const std::string s = shp("%s B=%d T=%d H=%d d=%d/%d W=%d S=%d p=%.2f (%ld of %ld dropped)", name, B, T, H, C::DQK, DV,
                            C::WINDOW, C::SINK, C::P, dropped, total);
  check_true("attn drop mask", s, bad_o == 0, bad_o == 0 ? "out: every keep bit as the CPU's" : shp("%ld out elements differ", bad_o).c_str());
  check_true("attn_bwd drop mask", s, bad_v == 0, bad_v == 0 ? "dv: every keep bit as the CPU's" : shp("%ld dv elements differ", bad_v).c_str());
}

// ---- benchmark ---------------------------------------------------------------------------------
// Visible (query, key) pairs of one head: Σ_i |{j ≤ i : i − j < W or j < S}|.
static constexpr long long pairs(long long T, long long W, long long S) {
  long long n = 0;
  for (long long i = 0; i < T; ++i) {
    const long long win = (W == 0 || W > i + 1) ? i + 1 : W;              // keys i−win+1 … i
    const long long sink = (W == 0 || i + 1 <= W) ? 0 : (S < i - W + 1 ? S : i - W + 1);   // sinks below the window
    n += win + sink;
  }
  return n;
}
// B·H for a benchmark run: the smallest power of two ≥ 16 giving at least 2^28 visible pairs.
static constexpr int bench_bh(long long T, long long W, long long S) {
  int bh = 16;
  while ((long long)bh * pairs(T, W, S) < (1LL << 28)) bh *= 2;
  return bh;
}
struct Row {
  const char* kern;   // "mma.sync" (attention_gen.cuh) or "wgmma" (attention_wg.cuh)
  int T, d, dv, W, S, BH;
  int rope, krot;     // RoPE mode on the last 64 dims (0 none, 1 half-split, 2 adjacent); k given rotated
  double fwd_ms, fb_ms, fwd_tf, fb_tf;
};
static std::vector<Row> g_rows;
static cudaEvent_t g_e0, g_e1;
template <class F> static double time_ms(F fn) {
  for (int i = 0; i < 3; ++i) fn();
  CK(cudaDeviceSynchronize());
  std::vector<float> ts;
  for (int i = 0; i < 15; ++i) {
    CK(cudaEventRecord(g_e0));
    fn();
    CK(cudaEventRecord(g_e1));
    CK(cudaEventSynchronize(g_e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, g_e0, g_e1));
    ts.push_back(ms);
  }
  CK(cudaGetLastError());
  std::sort(ts.begin(), ts.end());
  return (double)ts[ts.size() / 2];
}
// FLOPs: forward 2·pairs·(DQK + DV) (S = QKᵀ, O = PV); backward 2·pairs·(3·DQK + 2·DV)
// (S again, dP, dV, dQ, dK) — for DQK = DV = d the usual 4·pairs·d and 2.5× that.
template <class C> static Row bench_case() {
  constexpr size_t N = (size_t)C::B * C::T;
  setup<C>();
  Bufs<C> bufs;
  std::unique_ptr<Dev<bf16>> ddo(new Dev<bf16>(N * C::H * C::DV));
  ddo->put(to_bf(rnd(N * C::H * C::DV, 1.f)));
  Dev<bf16> out(N * C::H * C::DV), dqkv(N * Bufs<C>::width(0));
  static_assert(C::LAY == 0, "bench_case: packed layout only");
  Dev<float> lse((size_t)C::B * C::H * C::T), delta((size_t)C::B * C::H * C::T);
  const bf16 *q = bufs.q(), *k = bufs.k(), *v = bufs.v();
  // prefix (NPRE > 0): pk/pv and the dK/dV kernel's per-row partials
  constexpr size_t NPK = (size_t)C::NREP * C::HKV * C::NPRE;
  Dev<bf16> pk(NPK * C::DQK), pv(NPK * C::DV);
  pk.put(to_bf(rnd(NPK * C::DQK, 1.f)));
  pv.put(to_bf(rnd(NPK * C::DV, 1.f)));
  Dev<float> dpk((size_t)C::B * C::HKV * C::NPRE * C::DQK), dpv((size_t)C::B * C::HKV * C::NPRE * C::DV);
  // RoPE: the forward writes the rotated q, k (qr = kr, packed; KROT: q alone, k is read as given) and the
  // backward reads them
  Dev<bf16> rot(C::ROPE ? N * Bufs<C>::width(0) : 1);
  bf16* qr = C::ROPE ? rot.p : nullptr;
  bf16* kr = C::ROPE && !C::KROT ? rot.p : nullptr;
  const bf16* bq = C::ROPE ? rot.p : q;
  const bf16* bk = C::ROPE && !C::KROT ? rot.p : k;
  const double tf = time_ms([&] { run_fwd<C>(q, k, v, out.p, lse.p, pk.p, pv.p, qr, kr); });
  const double tfb = time_ms([&] {
    run_fwd<C>(q, k, v, out.p, lse.p, pk.p, pv.p, qr, kr);
    run_bwd<C>(bq, bk, v, out.p, ddo->p, lse.p, delta.p, dqkv.p, dqkv.p, dqkv.p, pk.p, pv.p, dpk.p, dpv.p);
  });
  const double pr = (double)C::B * C::H * (double)pairs(C::T, C::WINDOW, C::SINK);
  const double ff = 2.0 * pr * (C::DQK + C::DV), fb = ff + 2.0 * pr * (3 * C::DQK + 2 * C::DV);
  return Row{C::WG ? "wgmma" : "mma.sync", C::T, C::DQK, C::DV, C::WINDOW, C::SINK, C::B * C::H, C::ROPE, C::KROT,
             tf, tfb, ff / tf * 1e-9, fb / tfb * 1e-9};
}
// both kernel families at one shape (MHA, H = 16, packed qkv; RP = RoPE mode on the last 64 dims, 0 = none;
// KR = 1: k given rotated, as MLA's mla_k makes it)
template <int T, int d, int W, int S, int dv = d, int RP = 0, int KR = 0> static void bench_gen() {
  constexpr int BH = bench_bh(T, W, S), H = 16, RD = RP ? 64 : 0;
  using C0 = Cfg<BH / H, T, H, H, d, dv, W, S, 0, RP, RD, 0>;
  using C = typename std::conditional<KR != 0, Krot<C0>, C0>::type;
  g_rows.push_back(bench_case<C>());
  g_rows.push_back(bench_case<Wg<C>>());
}
// The learned prefix's cost at the Qwen2-0.5B attention shape (14 heads, 2 kv heads, d = 64,
// half-split RoPE, packed qkv, T = 2048, NPRE = 48; B = NREP·Bm rows): the kernels with and
// without the prefix, time per step and the ratio. Ideal extra work: NPRE per query's ~T/2 keys
// (+4.7%); a ragged 48-entry prefix costs one full 64-key tile per query tile (+6.3%).
template <int B, int NREP> static void bench_prefix() {
  using C0 = Cfg<B, 2048, 14, 2, 64, 64, 0, 0, 0, 1, 64, 0>;
  using C1 = Pre<C0, 48, NREP>;
  const Row a = bench_case<C0>(), b = bench_case<C1>();
  printf("bench prefix (Qwen2-0.5B attn: B=%d T=2048 H=14/2 d=64 rope, NPRE=48 NREP=%d): fwd %.3f -> %.3f ms (%+.1f%%), "
         "fwd+bwd %.3f -> %.3f ms (%+.1f%%)\n", B, NREP, a.fwd_ms, b.fwd_ms, 100.0 * (b.fwd_ms / a.fwd_ms - 1.0), a.fb_ms,
         b.fb_ms, 100.0 * (b.fb_ms / a.fb_ms - 1.0));
}
// the current kernels against these at one GPT-2 shape (causal, packed qkv)
template <int B, int T, int H, int d> static void bench_old_vs_new() {
  constexpr int D = H * d, N = B * T;
  constexpr int sf = 5 * 64 * (d + 8) * 2, sq = 6 * 64 * (d + 8) * 2;
  constexpr int bq = d <= 64 ? 64 : 32, skv = (2 * 64 + 4 * bq) * (d + 8) * 2 + 4 * bq * 4;
  CK(cudaFuncSetAttribute(k_old_fwd<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, sf));
  CK(cudaFuncSetAttribute(k_old_dkdv<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, skv));
  CK(cudaFuncSetAttribute(k_old_dq<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, sq));
  std::unique_ptr<Dev<bf16>> qkv(new Dev<bf16>((size_t)N * 3 * D)), ddo(new Dev<bf16>((size_t)N * D));
  qkv->put(to_bf(rnd((size_t)N * 3 * D, 1.f)));
  ddo->put(to_bf(rnd((size_t)N * D, 1.f)));
  Dev<bf16> out((size_t)N * D), dqkv((size_t)N * 3 * D);
  Dev<float> lse((size_t)B * H * T), delta((size_t)B * H * T);
  auto fwd = [&] { k_old_fwd<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, sf>>>(qkv->p, out.p, lse.p); };
  auto bwd = [&] {
    const long long th = (long long)B * T * H * (d / 8);
    k_old_pre<B, T, H, d><<<(unsigned)((th + 255) / 256), 256>>>(out.p, ddo->p, delta.p);
    k_old_dkdv<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, skv>>>(qkv->p, ddo->p, lse.p, delta.p, dqkv.p);
    k_old_dq<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, sq>>>(qkv->p, ddo->p, lse.p, delta.p, dqkv.p);
  };
  const double tf = time_ms(fwd), tfb = time_ms([&] { fwd(); bwd(); });
  const double pr = (double)B * H * (double)pairs(T, 0, 0), ff = 4.0 * pr * d, fb = ff + 10.0 * pr * d;
  const Row n = bench_case<Cfg<B, T, H, H, d, d, 0, 0, 0, 0, 0, 0>>();
  printf("bench B*H=%d T=%d d=%d causal: attention.cuh fwd %.1f fwd+bwd %.1f TFLOP/s | attention_gen.cuh fwd %.1f "
         "fwd+bwd %.1f TFLOP/s\n", B * H, T, d, ff / tf * 1e-9, fb / tfb * 1e-9, n.fwd_tf, n.fb_tf);
}

int main(int argc, char** argv) {
  bool bench = true, small = false, bench_pre = false, bench_sw = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--no-bench")) bench = false;
    else if (!strcmp(argv[i], "--small")) small = true, bench = false;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
      bench = false;
      std::string list = argv[++i];
      for (size_t a = 0, b; a <= list.size(); a = b + 1) {
        b = list.find(',', a);
        if (b == std::string::npos) b = list.size();
        if (b > a) g_only.push_back(list.substr(a, b - a));
      }
    }
    else if (!strcmp(argv[i], "--bench-only")) g_no_tests = true;   // bench/bench.sh: the tests ran in make test-gpu
    else if (!strcmp(argv[i], "--bench-prefix")) bench_pre = true, g_no_tests = true, bench = false;
    else if (!strcmp(argv[i], "--bench-swamla")) bench_sw = true, g_no_tests = true;
    else {
      fprintf(stderr, "test_attention_gen: unknown argument '%s' (--no-bench, --small, --only A,B,..., --bench-prefix, "
                      "--bench-only, --bench-swamla)\n", argv[i]);
      return 2;
    }
  }
  const int ctr_host[2] = {kSeed, kCtr};
  CK(cudaMalloc(&g_ctr, sizeof ctr_host));
  CK(cudaMemcpy(g_ctr, ctr_host, sizeof ctr_host, cudaMemcpyHostToDevice));
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

  {   // each test skips itself under --only, --bench-only and --bench-prefix
  //          B  T    H  HKV DQK  DV   W    S   AL RP RD  LAY
  test_case<Cfg<1, 200, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>>("mha");           // T not a multiple of 64
  test_case<Cfg<2, 64, 4, 4, 16, 16, 0, 0, 0, 0, 0, 0>>("d16");
  test_case<Cfg<2, 100, 3, 3, 32, 32, 0, 0, 0, 0, 0, 1>>("d32");
  test_case<Cfg<1, 130, 2, 2, 128, 128, 0, 0, 0, 0, 0, 0>>("d128");
  test_case<Cfg<1, 96, 8, 2, 32, 32, 0, 0, 0, 0, 0, 1>>("gqa");
  test_case<Cfg<2, 80, 4, 1, 64, 64, 0, 0, 0, 0, 0, 0>>("mqa");
  test_case<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>("mla");        // DeepSeek dims, adjacent RoPE on d_r
  test_case<Cfg<1, 70, 2, 2, 32, 32, 1, 0, 0, 0, 0, 0>>("swa W=1");
  test_case<Cfg<1, 150, 2, 2, 32, 32, 16, 0, 0, 0, 0, 1>>("swa S=0");
  test_case<Cfg<1, 200, 2, 2, 64, 64, 16, 4, 0, 0, 0, 0>>("swa");
  test_case<Cfg<1, 150, 2, 2, 32, 32, 8, 80, 0, 0, 0, 0>>("swa S>=W");
  test_case<Cfg<1, 200, 2, 2, 32, 32, 300, 2, 0, 0, 0, 0>>("swa W>=T");
  test_case<Cfg<1, 300, 2, 2, 32, 32, 100, 3, 0, 0, 0, 1>>("swa multi-tile");
  test_case<Cfg<1, 100, 8, 8, 32, 32, 0, 0, 1, 0, 0, 0>>("alibi H=8");
  test_case<Cfg<1, 80, 12, 12, 16, 16, 0, 0, 1, 0, 0, 0>>("alibi H=12");
  test_case<Cfg<1, 100, 2, 2, 64, 64, 0, 0, 0, 1, 64, 0>>("rope half");
  test_case<Cfg<1, 100, 2, 2, 64, 64, 0, 0, 0, 2, 64, 1>>("rope adjacent");
  test_case<Cfg<1, 90, 2, 2, 64, 64, 0, 0, 0, 1, 32, 2>>("rope half R<d");
  test_case<Cfg<1, 70, 2, 2, 128, 128, 0, 0, 0, 1, 16, 0>>("rope half R=16");
  test_case<Cfg<1, 150, 4, 2, 32, 32, 40, 4, 1, 1, 32, 1>>("all");      // GQA + SWA + sinks + ALiBi + RoPE
  test_case<Cfg<1, 150, 2, 2, 192, 128, 32, 4, 0, 2, 64, 2>>("mla swa");
  test_case<Cfg<1, 1, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>>("T=1");
  test_case<Cfg<1, 17, 2, 1, 32, 32, 4, 2, 1, 2, 32, 0>>("T=17");
  // head dim 96 (seed 002's swamla_base: D = 1536, 16 heads) and other multiples of 16
  test_case<Cfg<1, 130, 2, 2, 96, 96, 0, 0, 0, 0, 0, 0>>("d96");
  test_case<Cfg<1, 200, 2, 2, 96, 96, 40, 4, 0, 1, 96, 0>>("d96 swa rope96");   // swamla_base's SWA layer
  test_case<Cfg<1, 100, 4, 2, 96, 96, 0, 0, 0, 0, 0, 1>>("d96 gqa");
  test_case<Cfg<1, 90, 2, 1, 96, 96, 16, 2, 1, 2, 32, 2>>("d96 mqa swa alibi");
  test_case<Cfg<1, 80, 2, 2, 96, 96, 0, 0, 0, 2, 96, 1>>("d96 rope adj");
  test_case<Cfg<1, 100, 2, 2, 48, 80, 0, 0, 0, 1, 48, 1>>("d48/80 rope48");
  test_case<Cfg<1, 100, 2, 2, 192, 96, 0, 0, 0, 2, 64, 2>>("mla dv96");
  // k given rotated (KROT = 1, as mla_k makes it): only q turns, no kr, dk of the rotated k
  test_case<Krot<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>>("mla krot");
  test_case<Krot<Cfg<1, 150, 2, 2, 192, 128, 32, 4, 0, 2, 64, 2>>>("mla swa krot");
  test_case<Krot<Cfg<1, 100, 2, 2, 64, 64, 0, 0, 0, 1, 64, 0>>>("rope half krot packed");   // kr columns untouched
  test_case<Krot<Cfg<1, 96, 8, 2, 32, 32, 0, 0, 0, 1, 32, 1>>>("gqa krot");                  // dK/dV cluster
  // grouped kv heads as dK/dV clusters (ag_cluster: CL = 7, 3, 6 with 2 heads per block, 5): ranks that own
  // 22 or 21 of the 64 key rows (CL = 3), every head of a cluster on its own block (CL = G = 7)
  test_case<Cfg<2, 130, 14, 2, 64, 64, 0, 0, 0, 1, 64, 0>>("cl7 qwen2");
  test_case<Cfg<1, 150, 6, 2, 32, 32, 40, 4, 0, 0, 0, 1>>("cl3 swa");
  test_case<Cfg<1, 100, 12, 1, 16, 16, 0, 0, 1, 0, 0, 0>>("cl6 mqa alibi");
  test_case<Drop<Cfg<1, 90, 5, 1, 32, 32, 0, 0, 0, 0, 0, 0>, 10, 2>>("cl5 drop");
  test_case<Pre<Cfg<4, 70, 14, 2, 64, 64, 0, 0, 0, 1, 64, 0>, 48, 2>>("cl7 pre");
  // attention dropout (forward and backward against the reference with the same mask)
  test_case<Drop<Cfg<1, 150, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>, 10, 3>>("drop");
  test_case<Drop<Cfg<2, 100, 4, 2, 32, 32, 40, 4, 1, 1, 32, 1>, 20, 5>>("drop all");
  test_case<Drop<Cfg<1, 130, 2, 2, 96, 96, 32, 4, 0, 1, 96, 0>, 10, 1>>("drop d96 swa");
  test_case<Drop<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>, 10, 2>>("drop mla");
  test_case<Drop<Krot<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>, 10, 2>>("drop mla krot");
  test_case<Drop<Cfg<1, 70, 2, 2, 16, 16, 0, 0, 0, 0, 0, 1>, 50, 7>>("drop p=0.5");
  test_mask<Drop<Cfg<2, 128, 2, 2, 32, 32, 0, 0, 0, 0, 0, 1>, 30, 9>>("mask causal");
  test_mask<Drop<Cfg<1, 120, 3, 3, 16, 32, 24, 4, 0, 0, 0, 0>, 25, 11>>("mask swa");
  // learned prefix (ParScale): NPRE entries per replica, B = NREP·Bm rows; ragged NPRE and T
  //              B  T    H  HKV DQK  DV   W    S   AL RP RD  LAY   NPRE NREP
  test_case<Pre<Cfg<2, 100, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>, 48, 2>>("pre");
  test_case<Pre<Cfg<4, 70, 4, 2, 64, 64, 0, 0, 0, 1, 64, 0>, 48, 2>>("pre qwen");   // GQA + RoPE, Bm = 2
  test_case<Pre<Cfg<2, 64, 2, 1, 32, 32, 0, 0, 0, 0, 0, 1>, 64, 1>>("pre 64 mqa");
  test_case<Pre<Cfg<3, 90, 2, 2, 32, 32, 16, 2, 1, 2, 32, 1>, 80, 3>>("pre swa alibi");   // 2 prefix tiles
  test_case<Pre<Cfg<2, 80, 2, 2, 128, 128, 0, 0, 0, 1, 128, 0>, 5, 2>>("pre d128");
  test_case<Pre<Cfg<2, 60, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>, 40, 2>>("pre mla");   // dQ tiles of 32
  test_case<Pre<Krot<Cfg<2, 60, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>, 40, 2>>("pre mla krot");
  test_case<Pre<Cfg<2, 1, 2, 2, 64, 64, 0, 0, 0, 1, 64, 0>, 3, 2>>("pre T=1");
  // the wgmma kernels (attention_wg.cuh; sm_90a): head widths 64/128/192, every mask, ALiBi, RoPE, GQA
  //             B  T    H  HKV DQK  DV   W    S   AL RP RD  LAY
  test_case<Wg<Cfg<1, 200, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>>>("wg mha");
  test_case<Wg<Cfg<1, 130, 2, 2, 128, 128, 0, 0, 0, 0, 0, 1>>>("wg d128");
  test_case<Wg<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>>("wg mla");
  test_case<Wg<Cfg<1, 150, 2, 2, 192, 128, 32, 4, 0, 2, 64, 2>>>("wg mla swa");
  test_case<Wg<Krot<Cfg<1, 100, 2, 2, 192, 128, 0, 0, 0, 2, 64, 2>>>>("wg mla krot");
  test_case<Wg<Krot<Cfg<1, 150, 2, 2, 192, 128, 32, 4, 0, 2, 64, 2>>>>("wg mla swa krot");
  test_case<Wg<Krot<Cfg<1, 100, 2, 2, 64, 64, 0, 0, 0, 1, 64, 0>>>>("wg rope half krot packed");
  test_case<Wg<Cfg<1, 200, 2, 2, 64, 64, 16, 4, 0, 0, 0, 0>>>("wg swa");
  test_case<Wg<Cfg<1, 70, 2, 2, 64, 64, 1, 0, 0, 0, 0, 0>>>("wg swa W=1");
  test_case<Wg<Cfg<1, 150, 2, 2, 64, 64, 8, 80, 0, 0, 0, 1>>>("wg swa S>=W");
  test_case<Wg<Cfg<1, 100, 8, 8, 64, 64, 0, 0, 1, 0, 0, 0>>>("wg alibi H=8");
  test_case<Wg<Cfg<1, 100, 2, 2, 64, 64, 0, 0, 0, 1, 64, 0>>>("wg rope half");
  test_case<Wg<Cfg<1, 90, 2, 2, 128, 64, 0, 0, 0, 1, 32, 1>>>("wg d128/64 rope R<d");
  test_case<Wg<Cfg<1, 96, 8, 2, 64, 64, 0, 0, 0, 0, 0, 1>>>("wg gqa");          // dK/dV: the cluster kernel
  test_case<Wg<Cfg<1, 100, 11, 1, 64, 64, 0, 0, 1, 0, 0, 0>>>("wg g11 alibi");  // dK/dV: wgmma, 11 heads in turn
  test_case<Wg<Cfg<1, 1, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0>>>("wg T=1");
  test_case<Wg<Cfg<1, 17, 2, 1, 64, 64, 4, 2, 1, 2, 64, 0>>>("wg T=17 all");
  if (!small) {
    test_case<Cfg<4, 1024, 4, 4, 64, 64, 0, 0, 0, 0, 0, 0>>("big mha");
    test_case<Cfg<1, 2048, 2, 2, 128, 128, 256, 4, 0, 0, 0, 0>>("big swa");
    test_case<Cfg<1, 512, 8, 2, 128, 128, 0, 0, 0, 1, 128, 1>>("big gqa rope");
    test_case<Cfg<1, 1024, 4, 4, 192, 128, 0, 0, 0, 2, 64, 2>>("big mla");
    test_case<Cfg<1, 1000, 8, 1, 64, 64, 256, 4, 1, 0, 0, 0>>("big mqa swa alibi");
    test_case<Cfg<1, 1024, 16, 16, 96, 96, 256, 4, 0, 1, 96, 0>>("big d96 swa");
    test_case<Drop<Cfg<1, 1024, 4, 2, 96, 96, 0, 0, 0, 1, 96, 0>, 10, 4>>("big drop d96 gqa");
    test_case<Drop<Cfg<1, 512, 4, 4, 192, 128, 0, 0, 0, 2, 64, 2>, 10, 6>>("big drop mla");
    test_case<Pre<Cfg<2, 1024, 14, 2, 64, 64, 0, 0, 0, 1, 64, 0>, 48, 2>>("big pre qwen2-0.5b");
    test_case<Wg<Cfg<4, 1024, 4, 4, 64, 64, 0, 0, 0, 0, 0, 0>>>("wg big mha");
    test_case<Wg<Cfg<1, 2048, 2, 2, 64, 64, 256, 4, 0, 1, 64, 0>>>("wg big swa rope");
    test_case<Wg<Cfg<1, 1024, 4, 4, 192, 128, 0, 0, 0, 2, 64, 2>>>("wg big mla");
    test_case<Wg<Krot<Cfg<1, 1024, 4, 4, 192, 128, 0, 0, 0, 2, 64, 2>>>>("wg big mla krot");
    test_case<Krot<Cfg<1, 1024, 4, 4, 192, 128, 0, 0, 0, 2, 64, 2>>>("big mla krot");
    test_case<Wg<Cfg<1, 512, 8, 2, 128, 128, 0, 0, 0, 1, 128, 1>>>("wg big gqa rope");
  }
  }

  if (bench_pre) {
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    bench_prefix<8, 4>();    // P = 4 replicas of 2 sequences
    bench_prefix<16, 8>();   // P = 8 replicas of 2 sequences
    CK(cudaEventDestroy(g_e0));
    CK(cudaEventDestroy(g_e1));
  }
  if (bench && g_fail == 0) {
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    if (!bench_sw) {   // --bench-swamla: swamla_small's layers (the three rows below) alone
      bench_prefix<8, 4>();
      bench_old_vs_new<16, 1024, 12, 64>();
      bench_old_vs_new<2, 4096, 16, 128>();
      bench_gen<1024, 64, 0, 0>();
      bench_gen<1024, 64, 256, 4>();
      bench_gen<4096, 64, 0, 0>();
      bench_gen<4096, 64, 256, 4>();
      bench_gen<16384, 64, 0, 0>();
      bench_gen<16384, 64, 256, 4>();
      bench_gen<1024, 128, 0, 0>();
      bench_gen<1024, 128, 256, 4>();
      bench_gen<4096, 128, 0, 0>();
      bench_gen<4096, 128, 256, 4>();
      bench_gen<16384, 128, 0, 0>();
      bench_gen<16384, 128, 256, 4>();
    }
    bench_gen<2048, 192, 0, 0, 128, 2>();   // swamla's MLA layer: DQK 192 (adjacent RoPE on 64), DV 128
    bench_gen<2048, 192, 0, 0, 128, 2, 1>();   // the same with k rotated by mla_k (what gen emits)
    bench_gen<2048, 64, 256, 4, 64, 1>();   // swamla_small's SWA layer: d 64, half-split RoPE
    printf("\nattention_gen benchmark (%s; MHA, packed qkv, H=16; TFLOP/s over visible pairs)\n", prop.name);
    printf("%-8s %6s %7s %-32s %5s %10s %9s %12s %9s %14s\n", "kernels", "T", "d/dv", "mask", "B*H", "fwd ms",
           "fwd TF/s", "fwd+bwd ms", "f+b TF/s", "SWA speedup");
    for (const Row& r : g_rows) {
      std::string sp = "";
      if (r.W) {   // fwd+bwd time per head against causal at the same T, d and kernels
        for (const Row& c : g_rows)
          if (!c.W && !c.rope && c.T == r.T && c.d == r.d && c.dv == r.dv && !strcmp(c.kern, r.kern))
            sp = shp("%.1fx", (c.fb_ms / c.BH) / (r.fb_ms / r.BH));
      }
      std::string mask = r.W ? shp("W=%d S=%d", r.W, r.S) : std::string("causal");
      if (r.rope) mask += shp(", RoPE %s%s", r.rope == 1 ? "half" : "adj", r.krot ? " (k rotated)" : "");
      const std::string dd = shp("%d/%d", r.d, r.dv);
      printf("%-8s %6d %7s %-32s %5d %10.3f %9.1f %12.3f %9.1f %14s\n", r.kern, r.T, dd.c_str(), mask.c_str(), r.BH,
             r.fwd_ms, r.fwd_tf, r.fb_ms, r.fb_tf, sp.c_str());
    }
    CK(cudaEventDestroy(g_e0));
    CK(cudaEventDestroy(g_e1));
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}

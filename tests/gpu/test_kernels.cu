// test_kernels.cu — standalone GPU test and benchmark for the kernel templates in templates/.
//
//   nvcc -std=c++17 -arch=sm_90 -O2 -I templates tests/gpu/test_kernels.cu -o bin/test_kernels
//   bin/test_kernels            # all tests, then the attention benchmark
//   bin/test_kernels --no-bench # tests only
//
// Each kernel runs on random inputs (never all zeros) and is compared with a straightforward
// double-precision CPU reference written here: relative L2 error ‖out − ref‖ / ‖ref‖ must stay
// below 2e-2 for bf16 outputs and 1e-5 for f32 outputs computed from f32 inputs (1e-4 for f32
// results of long bf16 reductions such as lse). Determinism (two runs bitwise equal) is checked
// for the attention backward, embed_bwd_tok and layernorm_bwd_params. Launch geometry mirrors
// templates/*.lua. Prints one `ok …` or `FAIL kernel shape relerr=…` line per check, the
// benchmark in TFLOP/s, and last `N passed, M failed`; exits non-zero on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.cuh"
#include "embed.cuh"
#include "layernorm.cuh"
#include "elementwise.cuh"
#include "attention.cuh"
#include "xent.cuh"
#include "adamw.cuh"
#include "norms.cuh"
#include "activations.cuh"

// ---- __global__ wrappers (what gen emits, as templates here) -----------------------------------
template <int N, int T, int D> __global__ void __launch_bounds__(256)
k_embed(const int* tok, const bf16* wte, const bf16* wpe, bf16* out) { embed_fwd<N, T, D>(tok, wte, wpe, out); }
template <int N, int D> __global__ void __launch_bounds__(256)
k_embed_bwd_tok(const int* tok, const int* idx, const bf16* dout, float* dwte) { embed_bwd_tok<N, D>(tok, idx, dout, dwte); }
template <int N, int T, int D> __global__ void __launch_bounds__(256)
k_embed_bwd_pos(const bf16* dout, float* dwpe) { embed_bwd_pos<N, T, D>(dout, dwpe); }
template <int N, int C> __global__ void __launch_bounds__(256)
k_layernorm(const bf16* x, const bf16* w, const bf16* b, bf16* out, float* mean, float* rstd, float eps) {
  layernorm_fwd<N, C>(x, w, b, out, mean, rstd, eps);
}
template <int N, int C> __global__ void __launch_bounds__(256)
k_add_layernorm(const bf16* a, const bf16* b, const bf16* w, const bf16* bias, bf16* sum, bf16* out, float* mean,
                float* rstd, float eps) {
  add_layernorm_fwd<N, C>(a, b, w, bias, sum, out, mean, rstd, eps);
}
template <int N, int C, int ACC> __global__ void __launch_bounds__(256)
k_layernorm_bwd(const bf16* dout, const bf16* x, const bf16* w, const float* mean, const float* rstd, bf16* dx) {
  layernorm_bwd<N, C, ACC>(dout, x, w, mean, rstd, dx);
}
template <int N, int C> __global__ void __launch_bounds__(1024)
k_layernorm_bwd_params(const bf16* dout, const bf16* x, const float* mean, const float* rstd, float* dw, float* db) {
  layernorm_bwd_params<N, C>(dout, x, mean, rstd, dw, db);
}
template <long long n> __global__ void __launch_bounds__(256)
k_add(const bf16* a, const bf16* b, bf16* out) { add_fwd<n>(a, b, out); }
template <long long n> __global__ void __launch_bounds__(256)
k_gelu(const bf16* x, bf16* out) { gelu_fwd<n>(x, out); }
template <long long n, int ACC> __global__ void __launch_bounds__(256)
k_gelu_bwd(const bf16* x, const bf16* dout, bf16* dx) { gelu_bwd<n, ACC>(x, dout, dx); }
template <int N, int C> __global__ void __launch_bounds__(1024)
k_bias_grad(const bf16* dout, float* db) { bias_grad<N, C>(dout, db); }
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_attn(const bf16* qkv, bf16* out, float* lse) { attention_fwd<B, T, H, d>(qkv, out, lse); }
template <int B, int T, int H, int d> __global__ void __launch_bounds__(256)
k_attn_pre(const bf16* out, const bf16* dout, float* delta) { attention_bwd_pre<B, T, H, d>(out, dout, delta); }
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_attn_dkdv(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv) {
  attention_bwd_dkdv<B, T, H, d>(qkv, dout, lse, delta, dqkv);
}
template <int B, int T, int H, int d> __global__ void __launch_bounds__(128)
k_attn_dq(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv) {
  attention_bwd_dq<B, T, H, d>(qkv, dout, lse, delta, dqkv);
}
template <int N, int V, int Vp, int GRAD> __global__ void __launch_bounds__(1024)
k_xent(bf16* logits, const int* targets, float* losses, float scale) { xent_fwd<N, V, Vp, GRAD>(logits, targets, losses, scale); }
template <int N, int V, int Vp> __global__ void __launch_bounds__(1024)
k_xent_bwd(const bf16* logits, const int* targets, bf16* dl, float scale) { xent_bwd<N, V, Vp>(logits, targets, dl, scale); }
template <int N> __global__ void __launch_bounds__(1024)
k_loss_sum(const float* losses, float* loss, float scale) { loss_sum<N>(losses, loss, scale); }
template <long long n, int G> __global__ void __launch_bounds__(256)
k_sumsq(const float* g, float* partials, const int* range) { sumsq<n, G>(g, partials, range); }
template <long long n, long long nd, int G> __global__ void __launch_bounds__(256)
k_adamw(float* master, bf16* params, const float* grads, float* m, float* v, const float* scal, const float* partials,
        const int* range, float wd, float b1, float b2, float eps, float clip) {
  adamw<n, nd, G>(master, params, grads, m, v, scal, partials, range, wd, b1, b2, eps, clip);
}

// ---- host utilities ----------------------------------------------------------------------------
#define CK(x)                                                                                     \
  do {                                                                                            \
    cudaError_t e_ = (x);                                                                         \
    if (e_ != cudaSuccess) {                                                                      \
      fprintf(stderr, "test_kernels: %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(2);                                                                                    \
    }                                                                                             \
  } while (0)
#define LAUNCH_CHECK() CK(cudaGetLastError()); CK(cudaDeviceSynchronize())

static int g_pass = 0, g_fail = 0;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand() {   // uniform in (0, 1), xorshift64*
  g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
  return ((g_rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) + 1e-12;
}
static float nrand(float s) { return (float)((urand() * 2.0 - 1.0) * s); }   // uniform (−s, s), never exactly 0
static int irand(int n) { return (int)(urand() * n) % n; }

static float bfr(float x) { return __bfloat162float(__float2bfloat16(x)); }   // round to bf16
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
// random bf16-representable values (so the CPU sees exactly what the GPU sees)
static std::vector<float> rnd(size_t n, float s) {
  std::vector<float> v(n);
  for (auto& x : v) x = bfr(nrand(s));
  return v;
}
static std::vector<float> rndf(size_t n, float s) {
  std::vector<float> v(n);
  for (auto& x : v) x = nrand(s);
  return v;
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
static Dev<bf16>* dev_bf(const std::vector<float>& v) { auto* d = new Dev<bf16>(v.size()); d->put(to_bf(v)); return d; }
static Dev<float>* dev_f(const std::vector<float>& v) { auto* d = new Dev<float>(v.size()); d->put(v); return d; }
static Dev<int>* dev_i(const std::vector<int>& v) { auto* d = new Dev<int>(v.size()); d->put(v); return d; }

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
static void check(const char* kernel, const std::string& shape, const std::vector<float>& out,
                  const std::vector<double>& ref, double tol) {
  const double e = relerr(out, ref);
  if (e <= tol) {
    ++g_pass;
    printf("ok   %-22s %-34s relerr=%.3e\n", kernel, shape.c_str(), e);
  } else {
    ++g_fail;
    printf("FAIL %s %s relerr=%.3e (tol %.0e)\n", kernel, shape.c_str(), e, tol);
  }
}
static void check_same(const char* kernel, const std::string& shape, const void* a, const void* b, size_t bytes) {
  if (memcmp(a, b, bytes) == 0) {
    ++g_pass;
    printf("ok   %-22s %-34s deterministic\n", kernel, shape.c_str());
  } else {
    ++g_fail;
    printf("FAIL %s %s relerr=nondeterministic (two runs differ)\n", kernel, shape.c_str());
  }
}
static std::string shp(const char* fmt, ...) {
  char b[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  return b;
}
static double gelu_d(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
  const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), th = std::tanh(u);
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}
static std::vector<double> dbl(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---- embed -------------------------------------------------------------------------------------
template <int N, int T, int D, int Vp>
static void test_embed(int ntok) {
  std::vector<int> tok(N);
  for (auto& t : tok) t = irand(ntok);
  auto wte = rnd((size_t)Vp * D, 0.5f), wpe = rnd((size_t)T * D, 0.5f), dout = rnd((size_t)N * D, 1.f);
  std::unique_ptr<Dev<int>> dt(dev_i(tok));
  std::unique_ptr<Dev<bf16>> dwte(dev_bf(wte)), dwpe(dev_bf(wpe)), ddo(dev_bf(dout));
  Dev<bf16> out((size_t)N * D);
  k_embed<N, T, D><<<(N * (D / 8) + 255) / 256, 256>>>(dt->p, dwte->p, dwpe->p, out.p);
  LAUNCH_CHECK();
  std::vector<double> ref((size_t)N * D);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) ref[(size_t)i * D + c] = (double)wte[(size_t)tok[i] * D + c] + wpe[(size_t)(i % T) * D + c];
  check("embed", shp("N=%d T=%d D=%d", N, T, D), from_bf(out.get()), ref, 2e-2);

  // embed_bwd_tok with the runtime's tokidx layout: [U, start_0..start_U, pos sorted by token]
  std::vector<int> pos(N);
  for (int i = 0; i < N; ++i) pos[i] = i;
  std::stable_sort(pos.begin(), pos.end(), [&](int a, int b) { return tok[a] < tok[b]; });
  std::vector<int> starts;
  for (int i = 0; i < N; ++i)
    if (i == 0 || tok[pos[i]] != tok[pos[i - 1]]) starts.push_back(i);
  const int U = (int)starts.size();
  starts.push_back(N);
  std::vector<int> tokidx;
  tokidx.push_back(U);
  tokidx.insert(tokidx.end(), starts.begin(), starts.end());
  tokidx.insert(tokidx.end(), pos.begin(), pos.end());
  tokidx.resize(2 * N + 2, 0);
  std::unique_ptr<Dev<int>> dti(dev_i(tokidx));
  auto g0 = rndf((size_t)Vp * D, 1.f);
  std::vector<double> rt = dbl(g0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) rt[(size_t)tok[i] * D + c] += dout[(size_t)i * D + c];
  const int th = std::min(256, std::max(32, ((D / 8 + 31) / 32) * 32));
  std::vector<float> r1, r2;
  for (int rep = 0; rep < 2; ++rep) {
    std::unique_ptr<Dev<float>> dg(dev_f(g0));
    k_embed_bwd_tok<N, D><<<N, th>>>(dt->p, dti->p, ddo->p, dg->p);
    LAUNCH_CHECK();
    (rep ? r2 : r1) = dg->get();
  }
  check("embed_bwd_tok", shp("N=%d D=%d U=%d", N, D, U), r1, rt, 1e-5);
  check_same("embed_bwd_tok", shp("N=%d D=%d", N, D), r1.data(), r2.data(), r1.size() * 4);

  auto p0 = rndf((size_t)T * D, 1.f);
  std::vector<double> rp = dbl(p0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) rp[(size_t)(i % T) * D + c] += dout[(size_t)i * D + c];
  std::unique_ptr<Dev<float>> dp(dev_f(p0));
  k_embed_bwd_pos<N, T, D><<<(T * (D / 8) + 255) / 256, 256>>>(ddo->p, dp->p);
  LAUNCH_CHECK();
  check("embed_bwd_pos", shp("N=%d T=%d D=%d", N, T, D), dp->get(), rp, 1e-5);
}

// ---- layernorm ---------------------------------------------------------------------------------
template <int N, int C>
static void test_layernorm() {
  const float eps = 1e-5f;
  auto a = rnd((size_t)N * C, 1.f), b = rnd((size_t)N * C, 1.f), w = rnd(C, 1.f), bias = rnd(C, 0.5f);
  for (int i = 0; i < N; ++i)   // give rows a non-zero mean
    for (int c = 0; c < C; ++c) a[(size_t)i * C + c] = bfr(a[(size_t)i * C + c] + 0.3f * (i % 5));
  std::unique_ptr<Dev<bf16>> da(dev_bf(a)), db(dev_bf(b)), dw(dev_bf(w)), dbias(dev_bf(bias));
  Dev<bf16> out((size_t)N * C), sum((size_t)N * C);
  Dev<float> mean(N), rstd(N);
  auto ref_ln = [&](const std::vector<float>& x, std::vector<double>& o, std::vector<double>& mu,
                    std::vector<double>& rs) {
    o.assign((size_t)N * C, 0); mu.assign(N, 0); rs.assign(N, 0);
    for (int i = 0; i < N; ++i) {
      double s = 0, q = 0;
      for (int c = 0; c < C; ++c) s += x[(size_t)i * C + c];
      mu[i] = s / C;
      for (int c = 0; c < C; ++c) q += (x[(size_t)i * C + c] - mu[i]) * (x[(size_t)i * C + c] - mu[i]);
      rs[i] = 1 / std::sqrt(q / C + eps);
      for (int c = 0; c < C; ++c) o[(size_t)i * C + c] = (x[(size_t)i * C + c] - mu[i]) * rs[i] * w[c] + bias[c];
    }
  };
  std::vector<double> ro, rmu, rrs;
  ref_ln(a, ro, rmu, rrs);
  k_layernorm<N, C><<<(N + 7) / 8, 256>>>(da->p, dw->p, dbias->p, out.p, mean.p, rstd.p, eps);
  LAUNCH_CHECK();
  const std::string s = shp("N=%d C=%d", N, C);
  check("layernorm out", s, from_bf(out.get()), ro, 2e-2);
  check("layernorm mean", s, mean.get(), rmu, 1e-4);
  check("layernorm rstd", s, rstd.get(), rrs, 1e-4);

  std::vector<float> sref((size_t)N * C);
  for (size_t i = 0; i < sref.size(); ++i) sref[i] = bfr(a[i] + b[i]);
  ref_ln(sref, ro, rmu, rrs);
  k_add_layernorm<N, C><<<(N + 7) / 8, 256>>>(da->p, db->p, dw->p, dbias->p, sum.p, out.p, mean.p, rstd.p, eps);
  LAUNCH_CHECK();
  check("add_layernorm sum", s, from_bf(sum.get()), dbl(sref), 2e-2);
  check("add_layernorm out", s, from_bf(out.get()), ro, 2e-2);
  check("add_layernorm rstd", s, rstd.get(), rrs, 1e-4);

  // backward, from the reference statistics of x = a (fed as f32)
  ref_ln(a, ro, rmu, rrs);
  std::vector<float> fmu(rmu.begin(), rmu.end()), frs(rrs.begin(), rrs.end());
  std::unique_ptr<Dev<float>> dmu(dev_f(fmu)), drs(dev_f(frs));
  auto dout = rnd((size_t)N * C, 1.f), dx0 = rnd((size_t)N * C, 1.f);
  std::unique_ptr<Dev<bf16>> ddo(dev_bf(dout));
  std::vector<double> rdx((size_t)N * C);
  for (int i = 0; i < N; ++i) {
    double mg = 0, mgx = 0;
    for (int c = 0; c < C; ++c) {
      const double xh = (a[(size_t)i * C + c] - rmu[i]) * rrs[i], g = (double)dout[(size_t)i * C + c] * w[c];
      mg += g; mgx += g * xh;
    }
    mg /= C; mgx /= C;
    for (int c = 0; c < C; ++c) {
      const double xh = (a[(size_t)i * C + c] - rmu[i]) * rrs[i], g = (double)dout[(size_t)i * C + c] * w[c];
      rdx[(size_t)i * C + c] = rrs[i] * (g - mg - xh * mgx);
    }
  }
  {
    Dev<bf16> dx((size_t)N * C);
    k_layernorm_bwd<N, C, 0><<<(N + 7) / 8, 256>>>(ddo->p, da->p, dw->p, dmu->p, drs->p, dx.p);
    LAUNCH_CHECK();
    check("layernorm_bwd acc=0", s, from_bf(dx.get()), rdx, 2e-2);
    std::unique_ptr<Dev<bf16>> dx1(dev_bf(dx0));
    k_layernorm_bwd<N, C, 1><<<(N + 7) / 8, 256>>>(ddo->p, da->p, dw->p, dmu->p, drs->p, dx1->p);
    LAUNCH_CHECK();
    std::vector<double> racc(rdx);
    for (size_t i = 0; i < racc.size(); ++i) racc[i] += dx0[i];
    check("layernorm_bwd acc=1", s, from_bf(dx1->get()), racc, 2e-2);
  }
  // params: dw += Σ dout·x̂, db += Σ dout   (f32 accumulators start non-zero)
  auto w0 = rndf(C, 1.f), b0 = rndf(C, 1.f);
  std::vector<double> rw = dbl(w0), rb = dbl(b0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) {
      rw[c] += (double)dout[(size_t)i * C + c] * ((a[(size_t)i * C + c] - (double)fmu[i]) * frs[i]);
      rb[c] += dout[(size_t)i * C + c];
    }
  constexpr int SC = (C % 16 == 0) ? 16 : 8;
  std::vector<float> w1, w2, b1, b2;
  for (int rep = 0; rep < 2; ++rep) {
    std::unique_ptr<Dev<float>> gw(dev_f(w0)), gb(dev_f(b0));
    k_layernorm_bwd_params<N, C><<<C / SC, 1024>>>(ddo->p, da->p, dmu->p, drs->p, gw->p, gb->p);
    LAUNCH_CHECK();
    (rep ? w2 : w1) = gw->get();
    (rep ? b2 : b1) = gb->get();
  }
  check("layernorm_bwd_params dw", s, w1, rw, 1e-5);
  check("layernorm_bwd_params db", s, b1, rb, 1e-5);
  check_same("layernorm_bwd_params", s, w1.data(), w2.data(), w1.size() * 4);
  check_same("layernorm_bwd_params", s + " db", b1.data(), b2.data(), b1.size() * 4);
}

// ---- elementwise -------------------------------------------------------------------------------
template <long long n>
static void test_elementwise() {
  const int grid = (int)((n % 8 == 0 ? n / 8 : n) + 255) / 256;
  auto a = rnd(n, 2.f), b = rnd(n, 2.f), d0 = rnd(n, 1.f);
  std::unique_ptr<Dev<bf16>> da(dev_bf(a)), db(dev_bf(b));
  Dev<bf16> out(n);
  const std::string s = shp("n=%lld", n);
  std::vector<double> r(n);
  k_add<n><<<grid, 256>>>(da->p, db->p, out.p);
  LAUNCH_CHECK();
  for (long long i = 0; i < n; ++i) r[i] = (double)a[i] + b[i];
  check("add", s, from_bf(out.get()), r, 2e-2);
  k_gelu<n><<<grid, 256>>>(da->p, out.p);
  LAUNCH_CHECK();
  for (long long i = 0; i < n; ++i) r[i] = gelu_d(a[i]);
  check("gelu", s, from_bf(out.get()), r, 2e-2);
  k_gelu_bwd<n, 0><<<grid, 256>>>(da->p, db->p, out.p);
  LAUNCH_CHECK();
  for (long long i = 0; i < n; ++i) r[i] = b[i] * gelu_grad_d(a[i]);
  check("gelu_bwd acc=0", s, from_bf(out.get()), r, 2e-2);
  std::unique_ptr<Dev<bf16>> dx(dev_bf(d0));
  k_gelu_bwd<n, 1><<<grid, 256>>>(da->p, db->p, dx->p);
  LAUNCH_CHECK();
  for (long long i = 0; i < n; ++i) r[i] += d0[i];
  check("gelu_bwd acc=1", s, from_bf(dx->get()), r, 2e-2);
}

template <int N, int C>
static void test_bias_grad() {
  auto dout = rnd((size_t)N * C, 1.f), b0 = rndf(C, 1.f);
  std::unique_ptr<Dev<bf16>> ddo(dev_bf(dout));
  std::unique_ptr<Dev<float>> db(dev_f(b0));
  constexpr int SC = (C % 16 == 0) ? 16 : 8;
  k_bias_grad<N, C><<<C / SC, 1024>>>(ddo->p, db->p);
  LAUNCH_CHECK();
  std::vector<double> r = dbl(b0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) r[c] += dout[(size_t)i * C + c];
  check("bias_grad", shp("N=%d C=%d", N, C), db->get(), r, 1e-5);
}

// ---- attention ---------------------------------------------------------------------------------
template <int d> static constexpr int att_bq() { return d <= 64 ? 64 : 32; }
template <int d> static constexpr int smem_fwd() { return 5 * 64 * (d + 8) * 2; }
template <int d> static constexpr int smem_dkdv() { return (2 * 64 + 4 * att_bq<d>()) * (d + 8) * 2 + 4 * att_bq<d>() * 4; }
template <int d> static constexpr int smem_dq() { return 6 * 64 * (d + 8) * 2; }

template <int B, int T, int H, int d>
static void attn_setup() {
  CK(cudaFuncSetAttribute(k_attn<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_fwd<d>()));
  CK(cudaFuncSetAttribute(k_attn_dkdv<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_dkdv<d>()));
  CK(cudaFuncSetAttribute(k_attn_dq<B, T, H, d>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_dq<d>()));
}
template <int B, int T, int H, int d>
static void attn_fwd(const bf16* qkv, bf16* out, float* lse, cudaStream_t st = 0) {
  k_attn<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, smem_fwd<d>(), st>>>(qkv, out, lse);
}
template <int B, int T, int H, int d>
static void attn_bwd(const bf16* qkv, const bf16* out, const bf16* dout, const float* lse, float* delta, bf16* dqkv,
                     cudaStream_t st = 0) {
  const long long th = (long long)B * T * H * (d / 8);
  k_attn_pre<B, T, H, d><<<(unsigned)((th + 255) / 256), 256, 0, st>>>(out, dout, delta);
  k_attn_dkdv<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, smem_dkdv<d>(), st>>>(qkv, dout, lse, delta, dqkv);
  k_attn_dq<B, T, H, d><<<dim3(B * H, (T + 63) / 64), 128, smem_dq<d>(), st>>>(qkv, dout, lse, delta, dqkv);
}

template <int B, int T, int H, int d>
static void test_attention() {
  constexpr int D = H * d, N = B * T;
  attn_setup<B, T, H, d>();
  auto qkv = rnd((size_t)N * 3 * D, 1.f), dout = rnd((size_t)N * D, 1.f);
  std::unique_ptr<Dev<bf16>> dq(dev_bf(qkv)), ddo(dev_bf(dout));
  Dev<bf16> out((size_t)N * D), dqkv((size_t)N * 3 * D);
  Dev<float> lse((size_t)B * H * T), delta((size_t)B * H * T);
  attn_fwd<B, T, H, d>(dq->p, out.p, lse.p);
  LAUNCH_CHECK();

  // reference: double, causal softmax(q·kᵀ/√d)·v and the full backward
  const double sc = 1.0 / std::sqrt((double)d);
  std::vector<double> ro((size_t)N * D), rl((size_t)B * H * T), rdqkv((size_t)N * 3 * D, 0.0);
  std::vector<double> p(T), dp(T);
  auto Q = [&](int b, int t, int h, int i) { return (double)qkv[((size_t)b * T + t) * 3 * D + h * d + i]; };
  auto K = [&](int b, int t, int h, int i) { return (double)qkv[((size_t)b * T + t) * 3 * D + D + h * d + i]; };
  auto Vv = [&](int b, int t, int h, int i) { return (double)qkv[((size_t)b * T + t) * 3 * D + 2 * D + h * d + i]; };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < T; ++i) {
        double mx = -1e300;
        for (int j = 0; j <= i; ++j) {
          double s = 0;
          for (int e = 0; e < d; ++e) s += Q(b, i, h, e) * K(b, j, h, e);
          p[j] = s * sc;
          mx = std::max(mx, p[j]);
        }
        double l = 0;
        for (int j = 0; j <= i; ++j) l += std::exp(p[j] - mx);
        const double ls = mx + std::log(l);
        rl[((size_t)b * H + h) * T + i] = ls;
        for (int j = 0; j <= i; ++j) p[j] = std::exp(p[j] - ls);
        double del = 0;
        for (int e = 0; e < d; ++e) {
          double o = 0;
          for (int j = 0; j <= i; ++j) o += p[j] * Vv(b, j, h, e);
          ro[((size_t)b * T + i) * D + h * d + e] = o;
          del += o * dout[((size_t)b * T + i) * D + h * d + e];
        }
        for (int j = 0; j <= i; ++j) {
          double s = 0;
          for (int e = 0; e < d; ++e) s += dout[((size_t)b * T + i) * D + h * d + e] * Vv(b, j, h, e);
          dp[j] = p[j] * (s - del);   // ds_ij
        }
        for (int j = 0; j <= i; ++j)
          for (int e = 0; e < d; ++e) {
            const size_t ri = ((size_t)b * T + i) * 3 * D, rj = ((size_t)b * T + j) * 3 * D;
            rdqkv[ri + h * d + e] += dp[j] * K(b, j, h, e) * sc;
            rdqkv[rj + D + h * d + e] += dp[j] * Q(b, i, h, e) * sc;
            rdqkv[rj + 2 * D + h * d + e] += p[j] * dout[((size_t)b * T + i) * D + h * d + e];
          }
      }
  const std::string s = shp("B=%d H=%d T=%d d=%d", B, H, T, d);
  const std::vector<float> gout = from_bf(out.get()), glse = lse.get();
  check("attention out", s, gout, ro, 2e-2);
  check("attention lse", s, glse, rl, 1e-4);

  // backward from the GPU forward's out/lse (what the model does)
  attn_bwd<B, T, H, d>(dq->p, out.p, ddo->p, lse.p, delta.p, dqkv.p);
  LAUNCH_CHECK();
  std::vector<double> rdel((size_t)B * H * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        double a = 0;
        for (int e = 0; e < d; ++e)
          a += (double)gout[((size_t)b * T + t) * D + h * d + e] * dout[((size_t)b * T + t) * D + h * d + e];
        rdel[((size_t)b * H + h) * T + t] = a;
      }
  check("attention_bwd_pre", s, delta.get(), rdel, 1e-5);
  const std::vector<float> g1 = from_bf(dqkv.get());
  std::vector<float> gq, gk, gv;
  std::vector<double> rq, rk, rv;
  for (size_t r = 0; r < (size_t)N; ++r)
    for (int c = 0; c < D; ++c) {
      gq.push_back(g1[r * 3 * D + c]); rq.push_back(rdqkv[r * 3 * D + c]);
      gk.push_back(g1[r * 3 * D + D + c]); rk.push_back(rdqkv[r * 3 * D + D + c]);
      gv.push_back(g1[r * 3 * D + 2 * D + c]); rv.push_back(rdqkv[r * 3 * D + 2 * D + c]);
    }
  check("attention_bwd_dq", s, gq, rq, 2e-2);
  check("attention_bwd_dkdv dk", s, gk, rk, 2e-2);
  check("attention_bwd_dkdv dv", s, gv, rv, 2e-2);
  Dev<bf16> dqkv2((size_t)N * 3 * D);
  attn_bwd<B, T, H, d>(dq->p, out.p, ddo->p, lse.p, delta.p, dqkv2.p);
  LAUNCH_CHECK();
  const std::vector<bf16> x1 = dqkv.get(), x2 = dqkv2.get();
  check_same("attention bwd", s, x1.data(), x2.data(), x1.size() * sizeof(bf16));
}

// ---- xent --------------------------------------------------------------------------------------
template <int N, int V, int Vp>
static void test_xent() {
  const float scale = 1.f / N;
  auto x = rnd((size_t)N * Vp, 4.f);
  std::vector<int> tg(N);
  for (int i = 0; i < N; ++i) tg[i] = (i % 7 == 3) ? -1 : irand(V);
  std::vector<double> rloss(N), rg((size_t)N * Vp, 0.0);
  for (int i = 0; i < N; ++i) {
    double mx = -1e300, s = 0;
    for (int j = 0; j < V; ++j) mx = std::max(mx, (double)x[(size_t)i * Vp + j]);
    for (int j = 0; j < V; ++j) s += std::exp(x[(size_t)i * Vp + j] - mx);
    const double lse = mx + std::log(s);
    rloss[i] = tg[i] < 0 ? 0 : lse - x[(size_t)i * Vp + tg[i]];
    if (tg[i] >= 0)
      for (int j = 0; j < V; ++j) rg[(size_t)i * Vp + j] = scale * (std::exp(x[(size_t)i * Vp + j] - lse) - (j == tg[i]));
  }
  const std::string s = shp("N=%d V=%d Vp=%d", N, V, Vp);
  std::unique_ptr<Dev<int>> dt(dev_i(tg));
  std::unique_ptr<Dev<bf16>> dl(dev_bf(x));
  Dev<float> loss(N);
  k_xent<N, V, Vp, 0><<<N, 1024>>>(dl->p, dt->p, loss.p, scale);
  LAUNCH_CHECK();
  check("xent grad=0 loss", s, loss.get(), rloss, 1e-5);
  check("xent grad=0 logits kept", s, from_bf(dl->get()), dbl(x), 0.0);
  Dev<bf16> g((size_t)N * Vp);
  k_xent_bwd<N, V, Vp><<<N, 1024>>>(dl->p, dt->p, g.p, scale);
  LAUNCH_CHECK();
  check("xent_bwd", s, from_bf(g.get()), rg, 2e-2);
  k_xent<N, V, Vp, 1><<<N, 1024>>>(dl->p, dt->p, loss.p, scale);
  LAUNCH_CHECK();
  check("xent grad=1 loss", s, loss.get(), rloss, 1e-5);
  check("xent grad=1 in place", s, from_bf(dl->get()), rg, 2e-2);

  // loss_sum: loss += scale·Σ losses
  auto ls = rndf(N, 5.f);
  std::unique_ptr<Dev<float>> dls(dev_f(ls)), dacc(dev_f({0.75f}));
  k_loss_sum<N><<<1, 1024>>>(dls->p, dacc->p, scale);
  LAUNCH_CHECK();
  double r = 0;
  for (float v : ls) r += v;
  check("loss_sum", shp("N=%d", N), dacc->get(), {0.75 + scale * r}, 1e-5);
}

// ---- optimizer ---------------------------------------------------------------------------------
// The optimizer runs over [lo, hi) of the arena (the `range` argument, docs/ir.md "optrange": lo
// and hi as 64-bit integers in int32 words): {0, n} on one GPU, a rank's shard under ZeRO-1 —
// then master, m and v are shard-sized allocations passed as base − lo, so that global index i
// lands in them. Here every array holds only [lo, hi) and is passed that way (params with 4 guard
// elements on each side that must stay untouched), so shards far beyond 2^31 elements are tested
// without the memory.
template <long long n, long long nd>
static void test_adamw(long long lo, long long hi) {
  constexpr int G = 512, GUARD = 4;
  const float wd = 0.1f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
  const long long len = hi - lo;
  auto grads = rndf(len, 1.f), master = rndf(len, 1.f), m = rndf(len, 0.1f), v = rndf(len, 0.1f);
  for (auto& x : v) x = std::fabs(x);
  const std::vector<float> scal = {3e-4f, 1.f - std::pow(0.9f, 3.f), 1.f - std::pow(0.95f, 3.f)};
  std::unique_ptr<Dev<float>> dg(dev_f(grads)), dsc(dev_f(scal));
  std::unique_ptr<Dev<int>> drange(dev_i({(int)(unsigned)lo, (int)(lo >> 32), (int)(unsigned)hi, (int)(hi >> 32)}));
  Dev<float> part(G);
  k_sumsq<n, G><<<G, 256>>>(dg->p - lo, part.p, drange->p);
  LAUNCH_CHECK();
  const std::vector<float> pt = part.get();
  double ssum = 0, rsum = 0;
  for (float x : pt) ssum += x;
  for (float x : grads) rsum += (double)x * x;
  const std::string s = shp("n=%lld n_decay=%lld [%lld,%lld)", n, nd, lo, hi);
  check("sumsq", s, {(float)ssum}, {rsum}, 1e-5);
  const double norm = std::sqrt(ssum);
  for (float clip : {1.0f, 0.0f}) {
    std::unique_ptr<Dev<float>> dm(dev_f(master)), d1(dev_f(m)), d2(dev_f(v));
    Dev<bf16> params(len + 2 * GUARD);
    params.put(to_bf(std::vector<float>(len + 2 * GUARD, 0.f)));
    const int blocks = (int)std::max<long long>(1, std::min<long long>(2048, (n + 1023) / 1024));
    k_adamw<n, nd, G><<<blocks, 256>>>(dm->p - lo, params.p + GUARD - lo, dg->p - lo, d1->p - lo, d2->p - lo, dsc->p,
                                        part.p, drange->p, wd, b1, b2, eps, clip);
    LAUNCH_CHECK();
    const double c = clip > 0 ? std::min(1.0, clip / (norm + 1e-6)) : 1.0;
    std::vector<double> rw(len), rm(len), rv(len), rp(len + 2 * GUARD, 0.0);
    for (long long k = 0; k < len; ++k) {
      const long long i = lo + k;
      const double g = c * grads[k];
      rm[k] = b1 * (double)m[k] + (1 - (double)b1) * g;
      rv[k] = b2 * (double)v[k] + (1 - (double)b2) * g * g;
      const double wdi = i < nd ? wd : 0.0;
      rw[k] = master[k] - scal[0] * (wdi * master[k] + (rm[k] / scal[1]) / (std::sqrt(rv[k] / scal[2]) + eps));
      rp[GUARD + k] = rw[k];
    }
    const std::string s2 = s + shp(" clip=%g", clip);
    check("adamw master", s2, dm->get(), rw, 1e-5);
    check("adamw m", s2, d1->get(), rm, 1e-5);
    check("adamw v", s2, d2->get(), rv, 1e-5);
    // params: bf16(master) inside the range, the guards on either side untouched (0)
    const std::vector<float> pg = from_bf(params.get());
    int guards_ok = 1;
    for (int k = 0; k < GUARD; ++k) guards_ok &= pg[k] == 0.f && pg[GUARD + len + k] == 0.f;
    check("adamw params", s2, guards_ok ? pg : std::vector<float>(pg.size(), NAN), rp, 2e-2);
  }
}

// ---- model vocabulary (docs/ir_decoder.md): norms, activations, dropout, embed_tok, mla_k -------
template <int N, int C> __global__ void __launch_bounds__(256)
k_rmsnorm(const bf16* x, const bf16* w, bf16* out, float* rstd, float eps) { rmsnorm_fwd<N, C>(x, w, out, rstd, eps); }
template <int N, int C> __global__ void __launch_bounds__(256)
k_add_rmsnorm(const bf16* a, const bf16* b, const bf16* w, bf16* sum, bf16* out, float* rstd, float eps) {
  add_rmsnorm_fwd<N, C>(a, b, w, sum, out, rstd, eps);
}
template <int N, int C, int ACC> __global__ void __launch_bounds__(256)
k_rmsnorm_bwd(const bf16* dout, const bf16* x, const bf16* w, const float* rstd, bf16* dx) {
  rmsnorm_bwd<N, C, ACC>(dout, x, w, rstd, dx);
}
template <int N, int C> __global__ void __launch_bounds__(1024)
k_rmsnorm_bwd_params(const bf16* dout, const bf16* x, const float* rstd, float* dw) { rmsnorm_bwd_params<N, C>(dout, x, rstd, dw); }
template <int N, int C> __global__ void __launch_bounds__(256)
k_dyt(const bf16* x, const bf16* al, const bf16* w, const bf16* b, bf16* out) { dyt_fwd<N, C>(x, al, w, b, out); }
template <int N, int C> __global__ void __launch_bounds__(256)
k_add_dyt(const bf16* a, const bf16* b, const bf16* al, const bf16* w, const bf16* bias, bf16* sum, bf16* out) {
  add_dyt_fwd<N, C>(a, b, al, w, bias, sum, out);
}
template <int N, int C, int ACC> __global__ void __launch_bounds__(256)
k_dyt_bwd(const bf16* dout, const bf16* x, const bf16* al, const bf16* w, bf16* dx) { dyt_bwd<N, C, ACC>(dout, x, al, w, dx); }
template <int N, int C> __global__ void __launch_bounds__(1024)
k_dyt_bwd_params(const bf16* dout, const bf16* x, const bf16* al, float* dal, const bf16* w, float* dw, float* db) {
  dyt_bwd_params<N, C>(dout, x, al, dal, w, dw, db);
}
template <long long n> __global__ void __launch_bounds__(256) k_relu(const bf16* x, bf16* out) { relu_fwd<n>(x, out); }
template <long long n, int ACC> __global__ void __launch_bounds__(256)
k_relu_bwd(const bf16* x, const bf16* d, bf16* dx) { relu_bwd<n, ACC>(x, d, dx); }
template <long long n> __global__ void __launch_bounds__(256) k_silu(const bf16* x, bf16* out) { silu_fwd<n>(x, out); }
template <long long n, int ACC> __global__ void __launch_bounds__(256)
k_silu_bwd(const bf16* x, const bf16* d, bf16* dx) { silu_bwd<n, ACC>(x, d, dx); }
template <int N, int F, int ACT> __global__ void __launch_bounds__(256) k_glu(const bf16* x, bf16* out) { glu_fwd<N, F, ACT>(x, out); }
template <int N, int F, int ACT> __global__ void __launch_bounds__(256)
k_glu_bwd(const bf16* x, const bf16* d, bf16* dx) { glu_bwd<N, F, ACT>(x, d, dx); }
template <long long n, int S> __global__ void __launch_bounds__(256)
k_dropout(const bf16* x, const int* ctr, bf16* out, float p) { dropout_fwd<n, S>(x, ctr, out, p); }
template <long long n, int S, int ACC> __global__ void __launch_bounds__(256)
k_dropout_bwd(const bf16* d, const int* ctr, bf16* dx, float p) { dropout_bwd<n, S, ACC>(d, ctr, dx, p); }
template <int N, int D> __global__ void __launch_bounds__(256)
k_embed_tok(const int* tok, const bf16* wte, bf16* out) { embed_tok_fwd<N, D>(tok, wte, out); }
template <int N, int H, int DN, int DR, int RP, int T> __global__ void __launch_bounds__(256)
k_mla_k(const bf16* kn, const bf16* kr, bf16* k, float base) { mla_k<N, H, DN, DR, RP, T>(kn, kr, k, base); }
template <int N, int H, int DN, int DR, int RP, int T> __global__ void __launch_bounds__(256)
k_mla_k_bwd(const bf16* dk, bf16* dkn, bf16* dkr, float base) { mla_k_bwd<N, H, DN, DR, RP, T>(dk, dkn, dkr, base); }

template <int C> static constexpr int colslab() { return (C % 16 == 0) ? 16 : 8; }

template <int N, int C>
static void test_rmsnorm() {
  const float eps = 1e-5f;
  auto a = rnd((size_t)N * C, 1.f), b = rnd((size_t)N * C, 1.f), w = rnd(C, 1.f);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) a[(size_t)i * C + c] = bfr(a[(size_t)i * C + c] + 0.3f * (i % 5));
  std::unique_ptr<Dev<bf16>> da(dev_bf(a)), db(dev_bf(b)), dw(dev_bf(w));
  Dev<bf16> out((size_t)N * C), sum((size_t)N * C);
  Dev<float> rstd(N);
  auto ref = [&](const std::vector<float>& x, std::vector<double>& o, std::vector<double>& rs) {
    o.assign((size_t)N * C, 0); rs.assign(N, 0);
    for (int i = 0; i < N; ++i) {
      double q = 0;
      for (int c = 0; c < C; ++c) q += (double)x[(size_t)i * C + c] * x[(size_t)i * C + c];
      rs[i] = 1 / std::sqrt(q / C + eps);
      for (int c = 0; c < C; ++c) o[(size_t)i * C + c] = x[(size_t)i * C + c] * rs[i] * w[c];
    }
  };
  std::vector<double> ro, rrs;
  ref(a, ro, rrs);
  const std::string s = shp("N=%d C=%d", N, C);
  k_rmsnorm<N, C><<<(N + 7) / 8, 256>>>(da->p, dw->p, out.p, rstd.p, eps);
  LAUNCH_CHECK();
  check("rmsnorm out", s, from_bf(out.get()), ro, 2e-2);
  check("rmsnorm rstd", s, rstd.get(), rrs, 1e-4);
  std::vector<float> sref((size_t)N * C);
  for (size_t i = 0; i < sref.size(); ++i) sref[i] = bfr(a[i] + b[i]);
  ref(sref, ro, rrs);
  k_add_rmsnorm<N, C><<<(N + 7) / 8, 256>>>(da->p, db->p, dw->p, sum.p, out.p, rstd.p, eps);
  LAUNCH_CHECK();
  check("add_rmsnorm sum", s, from_bf(sum.get()), dbl(sref), 2e-2);
  check("add_rmsnorm out", s, from_bf(out.get()), ro, 2e-2);
  check("add_rmsnorm rstd", s, rstd.get(), rrs, 1e-4);
  // backward from the reference rstd of x = a
  ref(a, ro, rrs);
  std::vector<float> frs(rrs.begin(), rrs.end());
  std::unique_ptr<Dev<float>> drs(dev_f(frs));
  auto dout = rnd((size_t)N * C, 1.f), dx0 = rnd((size_t)N * C, 1.f);
  std::unique_ptr<Dev<bf16>> ddo(dev_bf(dout));
  std::vector<double> rdx((size_t)N * C);
  for (int i = 0; i < N; ++i) {
    double mgx = 0;
    for (int c = 0; c < C; ++c) mgx += (double)dout[(size_t)i * C + c] * w[c] * a[(size_t)i * C + c] * frs[i];
    mgx /= C;
    for (int c = 0; c < C; ++c) {
      const double g = (double)dout[(size_t)i * C + c] * w[c], xh = (double)a[(size_t)i * C + c] * frs[i];
      rdx[(size_t)i * C + c] = frs[i] * (g - xh * mgx);
    }
  }
  {
    Dev<bf16> dx((size_t)N * C);
    k_rmsnorm_bwd<N, C, 0><<<(N + 7) / 8, 256>>>(ddo->p, da->p, dw->p, drs->p, dx.p);
    LAUNCH_CHECK();
    check("rmsnorm_bwd acc=0", s, from_bf(dx.get()), rdx, 2e-2);
    std::unique_ptr<Dev<bf16>> dx1(dev_bf(dx0));
    k_rmsnorm_bwd<N, C, 1><<<(N + 7) / 8, 256>>>(ddo->p, da->p, dw->p, drs->p, dx1->p);
    LAUNCH_CHECK();
    std::vector<double> racc(rdx);
    for (size_t i = 0; i < racc.size(); ++i) racc[i] += dx0[i];
    check("rmsnorm_bwd acc=1", s, from_bf(dx1->get()), racc, 2e-2);
  }
  auto w0 = rndf(C, 1.f);
  std::vector<double> rw = dbl(w0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) rw[c] += (double)dout[(size_t)i * C + c] * ((double)a[(size_t)i * C + c] * frs[i]);
  std::vector<float> w1, w2;
  for (int rep = 0; rep < 2; ++rep) {
    std::unique_ptr<Dev<float>> gw(dev_f(w0));
    k_rmsnorm_bwd_params<N, C><<<C / colslab<C>(), 1024>>>(ddo->p, da->p, drs->p, gw->p);
    LAUNCH_CHECK();
    (rep ? w2 : w1) = gw->get();
  }
  check("rmsnorm_bwd_params dw", s, w1, rw, 1e-5);
  check_same("rmsnorm_bwd_params", s, w1.data(), w2.data(), w1.size() * 4);
}

template <int N, int C>
static void test_dyt() {
  auto a = rnd((size_t)N * C, 2.f), b = rnd((size_t)N * C, 1.f), w = rnd(C, 1.f), bias = rnd(C, 0.5f);
  const std::vector<float> al = {bfr(0.625f)};
  std::unique_ptr<Dev<bf16>> da(dev_bf(a)), db(dev_bf(b)), dw(dev_bf(w)), dbias(dev_bf(bias)), dal(dev_bf(al));
  Dev<bf16> out((size_t)N * C), sum((size_t)N * C);
  const double A = al[0];
  const std::string s = shp("N=%d C=%d", N, C);
  const int grid = (N * C / 8 + 255) / 256;
  std::vector<double> r((size_t)N * C);
  for (size_t i = 0; i < r.size(); ++i) r[i] = w[i % C] * std::tanh(A * a[i]) + bias[i % C];
  k_dyt<N, C><<<grid, 256>>>(da->p, dal->p, dw->p, dbias->p, out.p);
  LAUNCH_CHECK();
  check("dyt out", s, from_bf(out.get()), r, 2e-2);
  std::vector<float> sref((size_t)N * C);
  for (size_t i = 0; i < sref.size(); ++i) { sref[i] = bfr(a[i] + b[i]); r[i] = w[i % C] * std::tanh(A * sref[i]) + bias[i % C]; }
  k_add_dyt<N, C><<<grid, 256>>>(da->p, db->p, dal->p, dw->p, dbias->p, sum.p, out.p);
  LAUNCH_CHECK();
  check("add_dyt sum", s, from_bf(sum.get()), dbl(sref), 2e-2);
  check("add_dyt out", s, from_bf(out.get()), r, 2e-2);
  auto dout = rnd((size_t)N * C, 1.f), dx0 = rnd((size_t)N * C, 1.f);
  std::unique_ptr<Dev<bf16>> ddo(dev_bf(dout)), dx1(dev_bf(dx0));
  for (size_t i = 0; i < r.size(); ++i) {
    const double th = std::tanh(A * a[i]);
    r[i] = dout[i] * w[i % C] * A * (1 - th * th);
  }
  k_dyt_bwd<N, C, 0><<<grid, 256>>>(ddo->p, da->p, dal->p, dw->p, out.p);
  LAUNCH_CHECK();
  check("dyt_bwd acc=0", s, from_bf(out.get()), r, 2e-2);
  k_dyt_bwd<N, C, 1><<<grid, 256>>>(ddo->p, da->p, dal->p, dw->p, dx1->p);
  LAUNCH_CHECK();
  for (size_t i = 0; i < r.size(); ++i) r[i] += dx0[i];
  check("dyt_bwd acc=1", s, from_bf(dx1->get()), r, 2e-2);
  auto w0 = rndf(C, 1.f), b0 = rndf(C, 1.f), a0 = rndf(1, 1.f);
  std::vector<double> rw = dbl(w0), rb = dbl(b0), ra = dbl(a0);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) {
      const double x = a[(size_t)i * C + c], g = dout[(size_t)i * C + c], th = std::tanh(A * x);
      rw[c] += g * th;
      rb[c] += g;
      ra[0] += g * w[c] * x * (1 - th * th);
    }
  std::vector<float> w1, w2, b1, b2, a1, a2;
  for (int rep = 0; rep < 2; ++rep) {
    std::unique_ptr<Dev<float>> gw(dev_f(w0)), gb(dev_f(b0)), ga(dev_f(a0));
    k_dyt_bwd_params<N, C><<<C / colslab<C>(), 1024>>>(ddo->p, da->p, dal->p, ga->p, dw->p, gw->p, gb->p);
    LAUNCH_CHECK();
    (rep ? w2 : w1) = gw->get();
    (rep ? b2 : b1) = gb->get();
    (rep ? a2 : a1) = ga->get();
  }
  check("dyt_bwd_params dw", s, w1, rw, 1e-5);
  check("dyt_bwd_params db", s, b1, rb, 1e-5);
  check("dyt_bwd_params dalpha", s, a1, ra, 1e-5);
  check_same("dyt_bwd_params", s, w1.data(), w2.data(), w1.size() * 4);
  check_same("dyt_bwd_params dalpha", s, a1.data(), a2.data(), 4);
}

static double silu_d(double x) { return x / (1 + std::exp(-x)); }
static double silu_grad_d(double x) {
  const double s = 1 / (1 + std::exp(-x));
  return s * (1 + x * (1 - s));
}

template <long long n>
static void test_activations() {
  const int grid = (int)((n % 8 == 0 ? n / 8 : n) + 255) / 256;
  auto x = rnd(n, 4.f), g = rnd(n, 1.f), d0 = rnd(n, 1.f);
  std::unique_ptr<Dev<bf16>> dx(dev_bf(x)), dg(dev_bf(g));
  Dev<bf16> out(n);
  const std::string s = shp("n=%lld", n);
  std::vector<double> r(n);
  for (int act = 0; act < 2; ++act) {
    const char* nm = act ? "silu" : "relu";
    if (act) k_silu<n><<<grid, 256>>>(dx->p, out.p); else k_relu<n><<<grid, 256>>>(dx->p, out.p);
    LAUNCH_CHECK();
    for (long long i = 0; i < n; ++i) r[i] = act ? silu_d(x[i]) : std::max(0.0, (double)x[i]);
    check(nm, s, from_bf(out.get()), r, 2e-2);
    if (act) k_silu_bwd<n, 0><<<grid, 256>>>(dx->p, dg->p, out.p); else k_relu_bwd<n, 0><<<grid, 256>>>(dx->p, dg->p, out.p);
    LAUNCH_CHECK();
    for (long long i = 0; i < n; ++i) r[i] = act ? g[i] * silu_grad_d(x[i]) : (x[i] > 0 ? g[i] : 0.0);
    check(act ? "silu_bwd acc=0" : "relu_bwd acc=0", s, from_bf(out.get()), r, 2e-2);
    std::unique_ptr<Dev<bf16>> acc(dev_bf(d0));
    if (act) k_silu_bwd<n, 1><<<grid, 256>>>(dx->p, dg->p, acc->p); else k_relu_bwd<n, 1><<<grid, 256>>>(dx->p, dg->p, acc->p);
    LAUNCH_CHECK();
    for (long long i = 0; i < n; ++i) r[i] += d0[i];
    check(act ? "silu_bwd acc=1" : "relu_bwd acc=1", s, from_bf(acc->get()), r, 2e-2);
  }
}

template <int N, int F, int ACT>
static void test_glu() {
  auto x = rnd((size_t)N * 2 * F, 3.f), g = rnd((size_t)N * F, 1.f);
  std::unique_ptr<Dev<bf16>> dx(dev_bf(x)), dg(dev_bf(g));
  Dev<bf16> out((size_t)N * F), gx((size_t)N * 2 * F);
  const int grid = (N * F / (F % 8 == 0 ? 8 : 1) + 255) / 256;
  k_glu<N, F, ACT><<<grid, 256>>>(dx->p, out.p);
  k_glu_bwd<N, F, ACT><<<grid, 256>>>(dx->p, dg->p, gx.p);
  LAUNCH_CHECK();
  std::vector<double> r((size_t)N * F), rg((size_t)N * 2 * F);
  for (int i = 0; i < N; ++i)
    for (int f = 0; f < F; ++f) {
      const double ga = x[(size_t)i * 2 * F + f], u = x[(size_t)i * 2 * F + F + f], d = g[(size_t)i * F + f];
      const double av = ACT ? silu_d(ga) : gelu_d(ga), ad = ACT ? silu_grad_d(ga) : gelu_grad_d(ga);
      r[(size_t)i * F + f] = av * u;
      rg[(size_t)i * 2 * F + f] = d * u * ad;
      rg[(size_t)i * 2 * F + F + f] = d * av;
    }
  const std::string s = shp("N=%d F=%d act=%d", N, F, ACT);
  check("glu", s, from_bf(out.get()), r, 2e-2);
  check("glu_bwd", s, from_bf(gx.get()), rg, 2e-2);
}

// The dropout hash of docs/ir_decoder.md on the host (the CPU backend's mf_drop_hash, written out).
static bool host_keep(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i, float p) {
  uint64_t z = seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (ctr * 0xD1B54A32D192ED03ull) ^ (i * 0x8CB92BA72F3D8DD7ull);
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * 0x1p-24f >= p;
}

template <long long n, int S>
static void test_dropout(float p) {
  const int grid = (int)((n % 8 == 0 ? n / 8 : n) + 255) / 256;
  auto x = rnd(n, 2.f), d0 = rnd(n, 1.f);
  const std::vector<int> ctr = {1234567, 41};
  std::unique_ptr<Dev<bf16>> dx(dev_bf(x));
  std::unique_ptr<Dev<int>> dc(dev_i(ctr));
  Dev<bf16> out(n);
  k_dropout<n, S><<<grid, 256>>>(dx->p, dc->p, out.p, p);
  LAUNCH_CHECK();
  const std::vector<float> o = from_bf(out.get());
  std::vector<double> r(n);
  std::vector<unsigned char> mg(n), mc(n);
  const float sc = 1.f / (1.f - p);
  for (long long i = 0; i < n; ++i) {
    mc[i] = host_keep(1234567, S, 41, (uint64_t)i, p);
    mg[i] = o[i] != 0.f;   // x is never 0
    r[i] = mc[i] ? (double)(x[i] * sc) : 0.0;
  }
  const std::string s = shp("n=%lld p=%g stream=%d", n, p, S);
  check("dropout out", s, o, r, 2e-2);
  check_same("dropout mask == CPU hash", s, mg.data(), mc.data(), (size_t)n);
  std::unique_ptr<Dev<bf16>> acc(dev_bf(d0));
  k_dropout_bwd<n, S, 1><<<grid, 256>>>(dx->p, dc->p, acc->p, p);
  LAUNCH_CHECK();
  for (long long i = 0; i < n; ++i) r[i] += d0[i];
  check("dropout_bwd acc=1", s, from_bf(acc->get()), r, 2e-2);
}

template <int N, int D, int Vp>
static void test_embed_tok() {
  std::vector<int> tok(N);
  for (auto& t : tok) t = irand(Vp);
  auto wte = rnd((size_t)Vp * D, 1.f);
  std::unique_ptr<Dev<int>> dt(dev_i(tok));
  std::unique_ptr<Dev<bf16>> dw(dev_bf(wte));
  Dev<bf16> out((size_t)N * D);
  k_embed_tok<N, D><<<(N * (D / 8) + 255) / 256, 256>>>(dt->p, dw->p, out.p);
  LAUNCH_CHECK();
  std::vector<double> r((size_t)N * D);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) r[(size_t)i * D + c] = wte[(size_t)tok[i] * D + c];
  check("embed_tok", shp("N=%d D=%d", N, D), from_bf(out.get()), r, 0.0);
}

// mla_k / mla_k_bwd against a double reference: k = [knope ; R_t·krope] per head, t = n mod T (RP = 0: no
// rotation, 1 half-split, 2 adjacent pairs of the DR rope dims; θ_p = base^(−2p/DR)), and the backward
// dkrope = R_tᵀ Σ_h dk[n, h, DN:]. The rotated rope columns are bf16 roundings of fp32 values: 1e-2.
template <int N, int H, int DN, int DR, int RP, int T>
static void test_mla_k() {
  constexpr int W = DN + DR;
  const float base = 10000.f;
  auto kn = rnd((size_t)N * H * DN, 1.f), kr = rnd((size_t)N * DR, 1.f), dk = rnd((size_t)N * H * W, 1.f);
  std::unique_ptr<Dev<bf16>> dkn(dev_bf(kn)), dkr(dev_bf(kr)), ddk(dev_bf(dk));
  Dev<bf16> k((size_t)N * H * W), gn((size_t)N * H * DN), gr((size_t)N * DR);
  k_mla_k<N, H, DN, DR, RP, T><<<(N * (H * DN + DR) / 8 + 255) / 256, 256>>>(dkn->p, dkr->p, k.p, base);
  k_mla_k_bwd<N, H, DN, DR, RP, T><<<(N * (H * DN + DR) / 8 + 255) / 256, 256>>>(ddk->p, gn.p, gr.p, base);
  LAUNCH_CHECK();
  // x ← R_t·x (or R_tᵀ·x) on the DR rope dims of one row
  auto turn = [&](double* x, int t, bool transpose) {
    for (int p = 0; RP && p < DR / 2; ++p) {
      const int i1 = RP == 1 ? p : 2 * p, i2 = RP == 1 ? p + DR / 2 : 2 * p + 1;
      const double a = t * std::pow((double)base, -2.0 * p / DR), c = std::cos(a), s = transpose ? -std::sin(a) : std::sin(a);
      const double x1 = x[i1], x2 = x[i2];
      x[i1] = x1 * c - x2 * s;
      x[i2] = x2 * c + x1 * s;
    }
  };
  std::vector<double> rk((size_t)N * H * W), rn((size_t)N * H * DN), rr((size_t)N * DR, 0.0), rot(DR);
  for (int n = 0; n < N; ++n) {
    for (int j = 0; j < DR; ++j) rot[j] = kr[(size_t)n * DR + j];
    turn(rot.data(), n % T, false);
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < W; ++j) {
        const size_t o = ((size_t)n * H + h) * W + j;
        rk[o] = j < DN ? kn[((size_t)n * H + h) * DN + j] : rot[j - DN];
        if (j < DN) rn[((size_t)n * H + h) * DN + j] = dk[o];
        else rr[(size_t)n * DR + j - DN] += dk[o];
      }
    turn(&rr[(size_t)n * DR], n % T, true);
  }
  const std::string s = shp("N=%d H=%d dn=%d dr=%d rope=%d T=%d", N, H, DN, DR, RP, T);
  check("mla_k", s, from_bf(k.get()), rk, RP ? 1e-2 : 0.0);
  check("mla_k_bwd dknope", s, from_bf(gn.get()), rn, 0.0);
  check("mla_k_bwd dkrope", s, from_bf(gr.get()), rr, 2e-2);
}

static void test_mla_k_cases() {
  test_mla_k<20, 4, 16, 16, 0, 10>();
  test_mla_k<20, 4, 16, 16, 2, 10>();
  test_mla_k<24, 3, 128, 64, 1, 8>();    // half-split: the partner chunk 32 columns away
  test_mla_k<64, 2, 128, 64, 2, 64>();   // DeepSeek's dims, adjacent pairs, positions up to 63
}

// ---- benchmark ---------------------------------------------------------------------------------
template <int B, int T, int H, int d>
static void bench_attention() {
  constexpr int D = H * d, N = B * T;
  attn_setup<B, T, H, d>();
  auto qkv = rnd((size_t)N * 3 * D, 1.f), dout = rnd((size_t)N * D, 1.f);
  std::unique_ptr<Dev<bf16>> dq(dev_bf(qkv)), ddo(dev_bf(dout));
  Dev<bf16> out((size_t)N * D), dqkv((size_t)N * 3 * D);
  Dev<float> lse((size_t)B * H * T), delta((size_t)B * H * T);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto time_ms = [&](auto fn) {
    for (int i = 0; i < 3; ++i) fn();
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int i = 0; i < 20; ++i) {
      CK(cudaEventRecord(e0));
      fn();
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      ts.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(ts.begin(), ts.end());
    return (double)ts[ts.size() / 2];
  };
  const double tf = time_ms([&] { attn_fwd<B, T, H, d>(dq->p, out.p, lse.p); });
  const double tfb = time_ms([&] {
    attn_fwd<B, T, H, d>(dq->p, out.p, lse.p);
    attn_bwd<B, T, H, d>(dq->p, out.p, ddo->p, lse.p, delta.p, dqkv.p);
  });
  const double ff = 2.0 * B * H * (double)T * T * d;   // causal forward FLOPs (half of 4·B·H·T²·d)
  printf("bench attention B*H=%d T=%d d=%d causal: fwd %.3f ms %.1f TFLOP/s | fwd+bwd %.3f ms %.1f TFLOP/s "
         "(bwd alone %.1f TFLOP/s)\n",
         B * H, T, d, tf, ff / tf * 1e-9, tfb, 3.5 * ff / tfb * 1e-9, 2.5 * ff / (tfb - tf) * 1e-9);
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
}

int main(int argc, char** argv) {
  bool bench = true, xent_only = false, mla_only = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--no-bench")) bench = false;
    else if (!strcmp(argv[i], "--xent")) xent_only = true, bench = false;   // the CPU emulator's cases (make test)
    else if (!strcmp(argv[i], "--mla")) mla_only = true, bench = false;     // likewise: mla_k, mla_k_bwd only
    else { fprintf(stderr, "test_kernels: unknown argument '%s' (--no-bench, --xent, --mla)\n", argv[i]); return 2; }
  }
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

  // cross-entropy on both of its paths: the row in registers (Vp ≤ 65536) and streamed (Qwen2's vocabulary)
  if (mla_only) {
    test_mla_k_cases();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
  }
  test_xent<64, 500, 512>();
  test_xent<8, 50257, 50304>();
  test_xent<3, 151936, 151936>();
  test_xent<2, 151900, 152064>();   // V not a multiple of 8, padding columns
  if (xent_only) {
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
  }
  test_embed<128, 64, 64, 512>(50);
  test_embed<256, 128, 768, 1024>(1000);
  test_layernorm<128, 64>();
  test_layernorm<100, 768>();
  test_layernorm<40, 2304>();     // re-read path (forward and backward)
  test_layernorm<37, 776>();      // C % 16 != 0 (8-column slabs)
  test_elementwise<8192>();
  test_elementwise<1001>();       // scalar path
  test_bias_grad<300, 2304>();
  test_bias_grad<128, 64>();
  test_attention<2, 64, 4, 16>();
  test_attention<1, 200, 2, 64>();
  test_attention<1, 256, 2, 128>();
  test_attention<2, 100, 3, 32>();
  test_adamw<10003, 6001>(0, 10003);
  test_adamw<(1 << 20), 700000>(0, 1 << 20);
  test_adamw<10003, 6001>(5120, 10003);              // the last of two ZeRO-1 shards (tail not a multiple of 4)
  test_adamw<(1 << 20), 700000>(262144, 524288);     // an inner shard of four
  test_adamw<(3LL << 32), (1LL << 32) + 5000>((1LL << 32) - 2048, (1LL << 32) + 10003);  // past 2^32 elements
  test_rmsnorm<64, 64>();
  test_rmsnorm<100, 768>();
  test_rmsnorm<40, 2304>();       // re-read path (forward and backward)
  test_rmsnorm<37, 776>();        // C % 16 != 0 (8-column slabs)
  test_dyt<64, 64>();
  test_dyt<37, 776>();
  test_dyt<300, 2304>();
  test_activations<8192>();
  test_activations<1001>();       // scalar path
  test_glu<16, 64, 0>();
  test_glu<16, 64, 1>();
  test_glu<7, 37, 1>();           // F % 8 != 0 (scalar path)
  test_dropout<8192, 3>(0.1f);
  test_dropout<1001, 12>(0.5f);   // scalar path
  test_embed_tok<100, 64, 50>();
  test_mla_k_cases();

  if (bench && g_fail == 0) {
    bench_attention<16, 1024, 12, 64>();
    bench_attention<2, 4096, 16, 128>();
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}

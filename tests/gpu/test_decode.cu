// test_decode.cu — the decode attention kernel (templates/decode.cuh, op kind attn_decode) against
// its definition, the CPU op cpu_attn_decode of runtime/cpu_ops.c (linked in), on random inputs.
//
//   make bin/test_decode && bin/test_decode          # on the GPU (nvcc)
//   bin/test_decode --bench                          # then time one decode step at long contexts
//   make bin/test_decode_emu && bin/test_decode_emu  # the same tests in the CPU emulator (tests/gpu/emu)
//
// Each case decodes positions 0 … T−1 of B sequences, as the decode program does: at step pos every
// sequence gets fresh random q, k, v rows (bf16) for its token; the kernel appends k̃, v to its bf16
// caches and attends; the CPU op does the same on fp32 copies of the same rows with fp32 caches.
// Checked: out at every step (rel L2 ≤ 1e-2: the kernel rounds q̃, k̃ and the caches to bf16) and
// both caches after the last step. The caches start as NaN (0xFFFF), so a read of a row the kernel
// never wrote poisons the output. Variants: MHA, GQA, MQA, RoPE half-split and adjacent (another
// base), ALiBi with 6 heads, window + sinks (W = 1 with and without sinks, S ≥ W), MLA head dims
// 192/128 in separate q, k, v buffers, context lengths that are no multiple of the 32 keys a
// block takes per round; ParScale prefixes (NPRE entries per replica, B = NREP rows: one sequence
// per replica as the decode program has them, and NREP < B) with MHA, GQA + RoPE, ALiBi, a window.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.cuh"
#include "decode.cuh"

// The CPU op (runtime/cpu_ops.h, C); its gelu helpers share their names with common.cuh's.
#define gelu_f cpu_ops_gelu_f
#define gelu_grad_f cpu_ops_gelu_grad_f
extern "C" {
#include "cpu_ops.h"
}
#undef gelu_f
#undef gelu_grad_f

#define CK(x)                                                                                      \
  do {                                                                                             \
    cudaError_t e_ = (x);                                                                          \
    if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(2); } \
  } while (0)

// One case: shapes and the attn layout. PACKED: q, k, v are one buffer [B, (H + 2·HKV)·DQK]
// (the c_attn layout of gen/graph.lua, DV = DQK); else three buffers [B, H·DQK], [B, HKV·DQK],
// [B, HKV·DV] (the MLA layout).
template <int B_, int T_, int H_, int HKV_, int DQK_, int DV_, int PACKED_, int W_, int S_, int ALIBI_, int ROPE_, int R_,
          int NPRE_ = 0, int NREP_ = 1>
struct Case {
  static constexpr int NPRE = NPRE_, NREP = NREP_;   // ParScale prefixes (0: none)
  static constexpr int B = B_, T = T_, H = H_, HKV = HKV_, DQK = DQK_, DV = DV_, PACKED = PACKED_;
  static constexpr int WINDOW = W_, SINK = S_, ALIBI = ALIBI_, ROPE = ROPE_, ROPE_DIM = R_;
  static constexpr int LDQ = PACKED ? (H + 2 * HKV) * DQK : H * DQK, LDK = PACKED ? LDQ : HKV * DQK,
                       LDV = PACKED ? LDQ : HKV * DV;
  static constexpr int QOFF = 0, KOFF = PACKED ? H * DQK : 0, VOFF = PACKED ? (H + HKV) * DQK : 0;
  static constexpr int QHS = DQK, KHS = DQK, VHS = DV;
};

template <class C>
__global__ void __launch_bounds__(256)
k_dec(const bf16* q, const bf16* k, const bf16* v, const bf16* pk, const bf16* pv, const int* pos, bf16* kc, bf16* vc,
      bf16* out, float scale, float base) {
  if constexpr (C::NPRE > 0)
    attn_decode_fwd<C::B, C::T, C::H, C::HKV, C::DQK, C::DV, C::LDQ, C::LDK, C::LDV, C::QOFF, C::KOFF, C::VOFF, C::QHS,
                    C::KHS, C::VHS, C::WINDOW, C::SINK, C::ALIBI, C::ROPE, C::ROPE_DIM, C::NPRE, C::NREP>(
        q, k, v, pk, pv, pos, kc, vc, out, scale, base);
  else
    attn_decode_fwd<C::B, C::T, C::H, C::HKV, C::DQK, C::DV, C::LDQ, C::LDK, C::LDV, C::QOFF, C::KOFF, C::VOFF, C::QHS,
                    C::KHS, C::VHS, C::WINDOW, C::SINK, C::ALIBI, C::ROPE, C::ROPE_DIM>(q, k, v, pos, kc, vc, out, scale, base);
}

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t n_) : n(n_) { CK(cudaMalloc(&p, (n ? n : 1) * sizeof(T))); }
  ~Dev() { cudaFree(p); }
  void put(const std::vector<T>& v) { CK(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    CK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand() {  // uniform in [−1, 1), xorshift64*
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return (float)((rng * 0x2545F4914F6CDD1Dull) >> 40) * 0x1p-23f - 1.f;
}
// host bf16 conversions: round to nearest even (NaN stays a quiet NaN)
static bf16 to_bf(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint16_t h = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  bf16 b;
  memcpy(&b, &h, 2);
  return b;
}
static float from_bf(bf16 b) {
  uint16_t h;
  memcpy(&h, &b, 2);
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

// rel L2 of a (device, bf16) against r (the CPU op, fp32); NaN anywhere fails
static double rel_l2(const std::vector<bf16>& a, const float* r, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double x = from_bf(a[i]), d = x - r[i];
    if (std::isnan(x)) return INFINITY;
    num += d * d;
    den += (double)r[i] * r[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

static int failures = 0;

template <class C>
static void run_case(const char* name, float base = 10000.f) {
  constexpr int B = C::B, T = C::T, H = C::H, HKV = C::HKV, DQK = C::DQK, DV = C::DV;
  const size_t nq = (size_t)B * C::LDQ, nk = (size_t)B * C::LDK, nv = (size_t)B * C::LDV;
  const size_t nkc = (size_t)B * T * HKV * DQK, nvc = (size_t)B * T * HKV * DV, no = (size_t)B * H * DV;
  const float scale = 1.f / std::sqrt((float)DQK);
  Dev<bf16> dq(nq), dk(C::PACKED ? 0 : nk), dv(C::PACKED ? 0 : nv), dkc(nkc), dvc(nvc), dout(no);
  Dev<int> dpos(1);
  dkc.put(std::vector<bf16>(nkc, to_bf(NAN)));
  dvc.put(std::vector<bf16>(nvc, to_bf(NAN)));
  const bf16 *pk = C::PACKED ? dq.p : dk.p, *pv = C::PACKED ? dq.p : dv.p;
  std::vector<float> fq(nq), fk(nk), fv(nv), kc(nkc), vc(nvc), out(no);
  // prefixes pk [NREP, HKV, NPRE, DQK], pv [NREP, HKV, NPRE, DV]: random, fixed for the whole case
  const size_t npk = (size_t)C::NREP * HKV * C::NPRE * DQK, npv = (size_t)C::NREP * HKV * C::NPRE * DV;
  Dev<bf16> dpk(npk), dpv(npv);
  std::vector<float> fpk(npk), fpv(npv);
  {
    std::vector<bf16> h(npk), g(npv);
    for (size_t i = 0; i < npk; i++) { h[i] = to_bf(2.f * urand()); fpk[i] = from_bf(h[i]); }
    for (size_t i = 0; i < npv; i++) { g[i] = to_bf(urand()); fpv[i] = from_bf(g[i]); }
    dpk.put(h);
    dpv.put(g);
  }
  CpuAttn a;
  memset(&a, 0, sizeof a);
  a.B = B; a.T = T; a.H = H; a.HKV = HKV; a.DQK = DQK; a.DV = DV; a.LDQ = C::LDQ; a.LDK = C::LDK; a.LDV = C::LDV;
  a.QOFF = C::QOFF; a.KOFF = C::KOFF; a.VOFF = C::VOFF; a.QHS = C::QHS; a.KHS = C::KHS; a.VHS = C::VHS;
  a.WINDOW = C::WINDOW; a.SINK = C::SINK; a.ALIBI = C::ALIBI; a.ROPE = C::ROPE; a.ROPE_DIM = C::ROPE_DIM;
  a.scale = scale; a.rope_base = base;
  a.NPRE = C::NPRE; a.NREP = C::NREP; a.pk = fpk.data(); a.pv = fpv.data();
  double worst = 0;
  int worst_pos = 0;
  for (int pos = 0; pos < T; pos++) {
    // fresh token rows (random, rounded to bf16; the CPU op gets the same values)
    std::vector<bf16> hq(nq), hk(nk), hv(nv);
    for (size_t i = 0; i < nq; i++) { hq[i] = to_bf(2.f * urand()); fq[i] = from_bf(hq[i]); }
    if (C::PACKED) {
      fk = fq; fv = fq;
    } else {
      for (size_t i = 0; i < nk; i++) { hk[i] = to_bf(2.f * urand()); fk[i] = from_bf(hk[i]); }
      for (size_t i = 0; i < nv; i++) { hv[i] = to_bf(urand()); fv[i] = from_bf(hv[i]); }
      dk.put(hk);
      dv.put(hv);
    }
    dq.put(hq);
    dpos.put(std::vector<int>{pos});
    k_dec<C><<<B * H, 256>>>(dq.p, pk, pv, dpk.p, dpv.p, dpos.p, dkc.p, dvc.p, dout.p, scale, base);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    cpu_attn_decode(&a, fq.data(), fk.data(), fv.data(), pos, kc.data(), vc.data(), out.data());
    double e = rel_l2(dout.get(), out.data(), no);
    if (!(e <= worst)) { worst = e; worst_pos = pos; }
  }
  // the caches: every row 0 … T−1 written (k̃ rotated at its own position)
  double ek = rel_l2(dkc.get(), kc.data(), nkc), ev = rel_l2(dvc.get(), vc.data(), nvc);
  bool ok = worst <= 1e-2 && ek <= 1e-2 && ev <= 1e-2;
  if (!ok) failures++;
  printf("%-4s attn_decode %-16s B=%d T=%-3d H=%d HKV=%d DQK=%-3d DV=%-3d W=%-2d S=%d ALIBI=%d ROPE=%d R=%-3d  "
         "NPRE=%d NREP=%d  out rel L2 worst %.2e (pos %d), kcache %.2e, vcache %.2e\n",
         ok ? "ok" : "FAIL", name, B, T, H, HKV, DQK, DV, C::WINDOW, C::SINK, C::ALIBI, C::ROPE, C::ROPE_DIM, C::NPRE, C::NREP, worst,
         worst_pos, ek, ev);
}

// Time one decode step at position T−1 (the whole cache visible), caches filled with random rows.
template <class C>
static void bench_case(const char* name) {
  constexpr int B = C::B, T = C::T, H = C::H, HKV = C::HKV, DQK = C::DQK, DV = C::DV;
  const size_t nkc = (size_t)B * T * HKV * DQK, nvc = (size_t)B * T * HKV * DV;
  Dev<bf16> dq((size_t)B * C::LDQ), dk((size_t)B * C::LDK), dv((size_t)B * C::LDV), dkc(nkc), dvc(nvc),
      dout((size_t)B * H * DV);
  Dev<int> dpos(1);
  std::vector<bf16> h(nkc > nvc ? nkc : nvc);
  for (auto& x : h) x = to_bf(urand());
  dkc.put(std::vector<bf16>(h.begin(), h.begin() + nkc));
  dvc.put(std::vector<bf16>(h.begin(), h.begin() + nvc));
  dq.put(std::vector<bf16>(h.begin(), h.begin() + dq.n));
  dk.put(std::vector<bf16>(h.begin(), h.begin() + dk.n));
  dv.put(std::vector<bf16>(h.begin(), h.begin() + dv.n));
  dpos.put(std::vector<int>{T - 1});
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int reps = 50;
  for (int r = 0; r < 3; r++) k_dec<C><<<B * H, 256>>>(dq.p, dk.p, dv.p, nullptr, nullptr, dpos.p, dkc.p, dvc.p, dout.p, 0.125f, 10000.f);
  CK(cudaEventRecord(e0));
  for (int r = 0; r < reps; r++) k_dec<C><<<B * H, 256>>>(dq.p, dk.p, dv.p, nullptr, nullptr, dpos.p, dkc.p, dvc.p, dout.p, 0.125f, 10000.f);
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  const double us = 1e3 * ms / reps, bytes = 2.0 * (nkc + nvc) * (double)H / HKV;
  printf("bench attn_decode %-22s B=%d T=%-5d H=%-2d HKV=%-2d DQK=%-3d DV=%-3d  %8.1f us  %7.1f GB/s (cache bytes read, "
         "per query head)\n", name, B, T, H, HKV, DQK, DV, us, bytes / us * 1e-3);
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
}

int main(int argc, char** argv) {
  bool bench = argc > 1 && !strcmp(argv[1], "--bench");
  //                   B  T   H  HKV DQK DV PACKED W  S ALIBI ROPE R
  run_case<Case<2, 40, 4, 4, 16, 16, 1, 0, 0, 0, 0, 0>>("mha");
  run_case<Case<2, 50, 4, 2, 64, 64, 1, 0, 0, 0, 1, 64>>("gqa rope-half");
  run_case<Case<1, 37, 4, 1, 32, 32, 1, 0, 0, 0, 2, 32>>("mqa rope-adj", 500.f);
  run_case<Case<1, 33, 6, 6, 16, 16, 1, 0, 0, 1, 0, 0>>("alibi h6");
  run_case<Case<2, 64, 4, 2, 16, 16, 1, 8, 2, 0, 1, 16>>("swa w8 s2 gqa");
  run_case<Case<1, 40, 2, 2, 16, 16, 1, 1, 0, 0, 0, 0>>("swa w1 s0");
  run_case<Case<1, 40, 2, 2, 16, 16, 1, 1, 2, 0, 1, 16>>("swa w1 s2");
  run_case<Case<1, 45, 2, 1, 16, 16, 1, 4, 8, 1, 0, 0>>("swa w4 s8 alibi");
  run_case<Case<1, 35, 2, 2, 192, 128, 0, 0, 0, 0, 2, 64>>("mla 192/128");
  run_case<Case<2, 33, 4, 4, 32, 16, 0, 0, 0, 0, 1, 16>>("mla 32/16 half");
  run_case<Case<1, 130, 2, 2, 128, 128, 1, 0, 0, 0, 1, 128>>("long rope d128");
  //                   B  T   H  HKV DQK DV PACKED W  S ALIBI ROPE R  NPRE NREP
  run_case<Case<4, 20, 4, 4, 16, 16, 1, 0, 0, 0, 0, 0, 8, 4>>("prefix p4 mha");
  run_case<Case<2, 36, 4, 2, 32, 32, 1, 0, 0, 0, 1, 32, 37, 2>>("prefix p2 gqa rope");
  run_case<Case<4, 24, 6, 6, 16, 16, 1, 0, 0, 1, 0, 0, 3, 2>>("prefix B4 R2 alibi");
  run_case<Case<2, 30, 2, 1, 16, 16, 1, 4, 1, 0, 1, 16, 5, 2>>("prefix swa w4 s1");
  if (bench) {
    bench_case<Case<1, 1024, 12, 12, 64, 64, 1, 0, 0, 0, 0, 0>>("gpt2-124m T=1024");
    bench_case<Case<1, 16384, 12, 12, 64, 64, 1, 0, 0, 0, 0, 0>>("gpt2-124m T=16384");
    bench_case<Case<8, 4096, 32, 8, 128, 128, 1, 0, 0, 0, 1, 128>>("llama-8b-like B=8");
    bench_case<Case<1, 16384, 16, 16, 192, 128, 0, 0, 0, 0, 2, 64>>("mla 192/128 T=16384");
  }
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}

// emu.h — a small CPU emulator for the CUDA kernels of templates/ (used by tests/gpu/emu/prep.py):
// every GPU thread is a fiber (ucontext); __syncthreads, shuffles, ldmatrix and mma.sync are
// collectives that complete when all live threads of the block/warp arrive (fragment layouts as in
// the PTX ISA). cp.async copies are deferred to the matching wait_group (or done at issue with
// EMU_CP_EARLY=1). Dynamic shared memory and cudaMalloc memory start as 0xFF bytes (NaN), so
// reads of unwritten data show up; ldmatrix/cp.async addresses are bounds- and alignment-checked.
// Blocks run one after another, except the blocks of one thread-block cluster (a launch preceded by
// MF_EMU_CLUSTER(n): n consecutive blocks along x), which run together, each with its own dynamic
// shared memory, so that cluster barriers and distributed-shared-memory loads see their peers.
// (Static __shared__ arrays are one per program here, so a cluster kernel must not use them.)
#pragma once
#include <cuda_bf16.h>
#include <ucontext.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <chrono>

#undef __device__
#undef __global__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#define __device__
#define __global__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

namespace emu {
struct Copy { void* dst; const void* src; int n, srcn; };
struct Fiber {
  ucontext_t ctx;
  uint3 tid, blk;
  int slot = 0;           // this thread's block within the running cluster (0 without clusters)
  int warp = 0, lane = 0; // warp: index over the whole cluster
  bool done = false;
  std::vector<Copy> pending;
  std::vector<std::vector<Copy>> groups;
};
struct WarpSlot {
  int arrived = 0;
  unsigned gen = 0;
  int kind = -1;
  unsigned in[32][12];
  const void* ptr[32];
  unsigned out[32][4];
  float wa[16][16];   // wgmma: the warp's A rows gathered from its lanes' register fragments
};
inline Fiber* cur = nullptr;
inline std::vector<Fiber> fibers;
inline std::vector<WarpSlot> warps;
inline ucontext_t sched_ctx;
inline dim3 gdim, bdim;
inline std::vector<std::vector<unsigned char>> smems;   // dynamic shared memory of each block of the cluster
inline std::vector<int> bar_arrived;                     // __syncthreads, per block
inline std::vector<unsigned> bar_gen;
inline int cl_arrived = 0;                               // cluster barrier
inline unsigned cl_gen = 0;
inline int cluster_next = 1, cluster_n = 1;              // set by MF_EMU_CLUSTER, used by the next launch
inline long long progress = 0;
inline std::function<void()> kernel;
inline std::vector<std::vector<char>> stacks;
inline bool cp_early = getenv("EMU_CP_EARLY") != nullptr;

inline void die(const char* m) {
  fprintf(stderr, "emu: %s (block %u,%u thread %u)\n", m, cur ? cur->blk.x : 0, cur ? cur->blk.y : 0, cur ? cur->tid.x : 0);
  exit(3);
}
inline unsigned char* cur_smem() { return smems[cur->slot].data(); }
inline size_t cur_smem_size() { return smems[cur->slot].size(); }
inline void yield() { swapcontext(&cur->ctx, &sched_ctx); }
inline int live_in_warp(int w) {
  int n = 0;
  for (auto& f : fibers) if (f.warp == w && !f.done) ++n;
  return n;
}
inline int live_in_block(int slot) {
  int n = 0;
  for (auto& f : fibers) if (f.slot == slot && !f.done) ++n;
  return n;
}
inline int live_in_cluster() {
  int n = 0;
  for (auto& f : fibers) if (!f.done) ++n;
  return n;
}
inline void syncthreads() {
  const int b = cur->slot;
  unsigned g = bar_gen[b];
  ++progress;
  if (++bar_arrived[b] == live_in_block(b)) { bar_arrived[b] = 0; ++bar_gen[b]; }
  else while (bar_gen[b] == g) yield();
}
// barrier.cluster.arrive + wait: every live thread of every block of the cluster
inline void cluster_sync() {
  if (cluster_n < 2) die("cluster barrier in a launch without a cluster (MF_EMU_CLUSTER before the launch)");
  unsigned g = cl_gen;
  ++progress;
  if (++cl_arrived == live_in_cluster()) { cl_arrived = 0; ++cl_gen; }
  else while (cl_gen == g) yield();
}
// warp collective: the caller has filled in[lane]/ptr[lane]; the last arrival runs `compute`.
template <class F> inline void warp_op(int kind, F&& compute) {
  WarpSlot& w = warps[cur->warp];
  if (w.arrived == 0) w.kind = kind;
  else if (w.kind != kind) die("warp lanes reached different collectives");
  unsigned g = w.gen;
  ++progress;
  if (++w.arrived == live_in_warp(cur->warp)) { compute(w); w.arrived = 0; ++w.gen; }
  else while (w.gen == g) yield();
}
inline bool in_smem(const void* p, int n) {
  const unsigned char* c = (const unsigned char*)p;
  return c >= cur_smem() && c + n <= cur_smem() + cur_smem_size();
}
// ld.shared::cluster after mapa: the 16 bytes at p's offset in the shared memory of block `rank`
inline float4 cluster_ld4(const void* p, unsigned rank) {
  if (cluster_n < 2) die("distributed shared memory load in a launch without a cluster");
  if (!in_smem(p, 16) || ((size_t)p & 15)) die("cluster load address outside dynamic smem or misaligned");
  if (rank >= (unsigned)cluster_n) die("cluster load from a rank outside the cluster");
  float4 v;
  memcpy(&v, smems[rank].data() + ((const unsigned char*)p - cur_smem()), 16);
  return v;
}
inline float bf_lo(unsigned u) { unsigned v = u << 16; float f; memcpy(&f, &v, 4); return f; }
inline float bf_hi(unsigned u) { unsigned v = u & 0xffff0000u; float f; memcpy(&f, &v, 4); return f; }
inline unsigned pack2(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }

inline void ldsm(unsigned r[4], const void* p, bool trans) {
  WarpSlot& w = warps[cur->warp];
  if (!in_smem(p, 16) || ((size_t)p & 15)) die("ldmatrix address outside dynamic smem or misaligned");
  w.ptr[cur->lane] = p;
  warp_op(trans ? 2 : 1, [trans](WarpSlot& w) {
    for (int i = 0; i < 4; ++i) {
      unsigned short M[8][8];
      for (int r = 0; r < 8; ++r) memcpy(M[r], w.ptr[8 * i + r], 16);
      for (int L = 0; L < 32; ++L) {
        const int row = L / 4, c = 2 * (L % 4);
        w.out[L][i] = trans ? pack2(M[c][row], M[c + 1][row]) : pack2(M[row][c], M[row][c + 1]);
      }
    }
  });
  for (int i = 0; i < 4; ++i) r[i] = w.out[cur->lane][i];
}
inline void mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
  WarpSlot& w = warps[cur->warp];
  unsigned* in = w.in[cur->lane];
  for (int i = 0; i < 4; ++i) in[i] = a[i];
  in[4] = b0; in[5] = b1;
  for (int i = 0; i < 4; ++i) memcpy(&in[6 + i], &c[i], 4);
  warp_op(3, [](WarpSlot& w) {
    float A[16][16], B[16][8], C[16][8];
    for (int L = 0; L < 32; ++L) {
      const int g = L >> 2, t = L & 3;
      const unsigned* x = w.in[L];
      A[g][2 * t] = bf_lo(x[0]);     A[g][2 * t + 1] = bf_hi(x[0]);
      A[g + 8][2 * t] = bf_lo(x[1]); A[g + 8][2 * t + 1] = bf_hi(x[1]);
      A[g][2 * t + 8] = bf_lo(x[2]); A[g][2 * t + 9] = bf_hi(x[2]);
      A[g + 8][2 * t + 8] = bf_lo(x[3]); A[g + 8][2 * t + 9] = bf_hi(x[3]);
      B[2 * t][g] = bf_lo(x[4]);     B[2 * t + 1][g] = bf_hi(x[4]);
      B[2 * t + 8][g] = bf_lo(x[5]); B[2 * t + 9][g] = bf_hi(x[5]);
      memcpy(&C[g][2 * t], &x[6], 4); memcpy(&C[g][2 * t + 1], &x[7], 4);
      memcpy(&C[g + 8][2 * t], &x[8], 4); memcpy(&C[g + 8][2 * t + 1], &x[9], 4);
    }
    for (int L = 0; L < 32; ++L) {
      const int g = L >> 2, t = L & 3;
      float d[4];
      for (int e = 0; e < 4; ++e) {
        const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
        double s = C[row][col];
        for (int k = 0; k < 16; ++k) s += (double)A[row][k] * B[k][col];
        d[e] = (float)s;
      }
      memcpy(w.out[L], d, 16);
    }
  });
  memcpy(c, w.out[cur->lane], 16);
}
// wgmma (sm_90a): a 64-bit shared-memory matrix descriptor (start/16 in bits 0-13 — here an offset into this
// block's dynamic shared memory —, leading byte offset/16 in 16-29, stride byte offset/16 in 32-45, swizzle
// in 62-63) names element (mn, k) of a K-major (k contiguous) or MN-major (mn contiguous) operand by the
// canonical layouts of the PTX ISA; with the 128-byte swizzle the address bits 4-6 are XORed with bits 7-9.
inline float wg_elem(unsigned long long desc, int mn, int k, bool mn_major) {
  const unsigned start = (unsigned)(desc & 0x3FFF) << 4, lbo = (unsigned)((desc >> 16) & 0x3FFF) << 4,
                 sbo = (unsigned)((desc >> 32) & 0x3FFF) << 4;
  if ((desc >> 62) != 1) die("wgmma descriptor: only the 128-byte swizzle is emulated");
  unsigned off = mn_major ? start + (mn / 64) * lbo + ((mn / 8) % 8) * 16 + (mn % 8) * 2 + (k % 8) * 128 + (k / 8) * sbo
                          : start + (mn % 8) * 128 + (mn / 8) * sbo + (k / 8) * 16 + (k % 8) * 2;
  off ^= ((off >> 7) & 7) << 4;
  if (off + 2 > cur_smem_size()) die("wgmma operand outside dynamic smem");
  unsigned short u;
  memcpy(&u, cur_smem() + off, 2);
  return bf_lo(u);
}
// wgmma.mma_async m64nNk16, f32 += bf16·bf16: D[64×N] += A[64×16]·B[16×N]. A from the descriptor `ad`
// (K-major) or, when a != nullptr, from registers (this warp's 16 rows as an mma.sync A fragment);
// B from `bd`, K-major (tb = 0) or N-major (tb = 1). Warp w of the warpgroup owns rows 16w …; d is this
// thread's N/2 accumulators, slice i in d[4i … 4i+3] (rows g, g + 8; columns 8i + 2t, +1). Done at issue
// (commit/wait are no-ops here); each warp computes its own rows.
inline void wgmma(float* d, int N, const unsigned* a, unsigned long long ad, unsigned long long bd, int tb) {
  WarpSlot& w = warps[cur->warp];
  const int lane = cur->lane, wq = (int)(cur->tid.x >> 5) & 3, g = lane >> 2, t = lane & 3;
  if (a) {
    for (int i = 0; i < 4; ++i) w.in[lane][i] = a[i];
    warp_op(6, [](WarpSlot& w) {
      for (int L = 0; L < 32; ++L) {
        const int gg = L >> 2, tt = L & 3;
        const unsigned* x = w.in[L];
        w.wa[gg][2 * tt] = bf_lo(x[0]);         w.wa[gg][2 * tt + 1] = bf_hi(x[0]);
        w.wa[gg + 8][2 * tt] = bf_lo(x[1]);     w.wa[gg + 8][2 * tt + 1] = bf_hi(x[1]);
        w.wa[gg][2 * tt + 8] = bf_lo(x[2]);     w.wa[gg][2 * tt + 9] = bf_hi(x[2]);
        w.wa[gg + 8][2 * tt + 8] = bf_lo(x[3]); w.wa[gg + 8][2 * tt + 9] = bf_hi(x[3]);
      }
    });
  }
  for (int i = 0; i < N / 8; ++i)
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e >= 2 ? 8 : 0), col = 8 * i + 2 * t + (e & 1);
      double s = 0;
      for (int k = 0; k < 16; ++k) {
        const float av = a ? w.wa[row][k] : wg_elem(ad, 16 * wq + row, k, false);
        s += (double)av * wg_elem(bd, col, k, tb != 0);
      }
      d[4 * i + e] = (float)((double)d[4 * i + e] + s);
    }
}
template <class T> inline T shfl_xor(T v, int o) {
  static_assert(sizeof(T) == 4, "shfl of 4-byte values only");
  WarpSlot& w = warps[cur->warp];
  memcpy(&w.in[cur->lane][0], &v, 4);
  w.in[cur->lane][1] = (unsigned)o;
  warp_op(4, [](WarpSlot& w) {
    for (int L = 0; L < 32; ++L) w.out[L][0] = w.in[L ^ (int)w.in[L][1]][0];
  });
  T r;
  memcpy(&r, &w.out[cur->lane][0], 4);
  return r;
}
inline void do_copy(const Copy& c) {
  if (c.srcn) memcpy(c.dst, c.src, c.srcn);
  memset((char*)c.dst + c.srcn, 0, c.n - c.srcn);
}
inline void cp_async(void* dst, const void* src, int n, int srcn) {
  if (!in_smem(dst, n) || ((size_t)dst % n)) die("cp.async destination outside dynamic smem or misaligned");
  if (srcn && ((size_t)src % n)) die("cp.async source misaligned");
  Copy c{dst, src, n, srcn};
  if (cp_early) do_copy(c); else cur->pending.push_back(c);
}
inline void cp_commit() { cur->groups.push_back(std::move(cur->pending)); cur->pending.clear(); }
inline void cp_wait(int k) {
  while ((int)cur->groups.size() > k) {
    for (auto& c : cur->groups.front()) do_copy(c);
    cur->groups.erase(cur->groups.begin());
  }
}
inline void trampoline() {
  kernel();
  if (!cur->pending.empty() || !cur->groups.empty()) die("thread exited with uncommitted/unwaited cp.async");
  cur->done = true;
  ++progress;
}
inline void launch(dim3 g, dim3 b, size_t smem_bytes, std::function<void()> fn) {
  const int nt = b.x * b.y * b.z, cl = cluster_next;
  cluster_next = 1;
  if (nt > 1024 || nt % 32) { fprintf(stderr, "emu: bad block size %d\n", nt); exit(3); }
  if (smem_bytes > 227 * 1024) { fprintf(stderr, "emu: dynamic smem %zu too large\n", smem_bytes); exit(3); }
  if (cl < 1 || cl > 8 || g.x % cl) { fprintf(stderr, "emu: cluster of %d blocks for grid x = %u\n", cl, g.x); exit(3); }
  gdim = g; bdim = b; kernel = std::move(fn); cluster_n = cl;
  if ((int)stacks.size() < nt * cl) stacks.resize(nt * cl, std::vector<char>(256 * 1024));
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; x += cl) {
        smems.assign(cl, std::vector<unsigned char>(smem_bytes, 0xff));
        fibers.assign(nt * cl, Fiber());
        warps.assign(nt / 32 * cl, WarpSlot());
        bar_arrived.assign(cl, 0);
        bar_gen.assign(cl, 0);
        cl_arrived = 0;
        for (int i = 0; i < nt * cl; ++i) {
          Fiber& f = fibers[i];
          const int t = i % nt;
          f.slot = i / nt;
          f.blk = make_uint3(x + f.slot, y, z);
          f.tid = make_uint3(t % b.x, (t / b.x) % b.y, t / (b.x * b.y));
          f.warp = i / 32; f.lane = i % 32;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stacks[i].data();
          f.ctx.uc_stack.ss_size = stacks[i].size();
          f.ctx.uc_link = &sched_ctx;
          makecontext(&f.ctx, trampoline, 0);
        }
        for (;;) {
          bool any = false;
          long long p0 = progress;
          for (auto& f : fibers) {
            if (f.done) continue;
            any = true;
            cur = &f;
            swapcontext(&sched_ctx, &f.ctx);
          }
          cur = nullptr;
          if (!any) break;
          if (progress == p0) { fprintf(stderr, "emu: deadlock in block %u,%u,%u\n", x, y, z); exit(3); }
        }
      }
}
}  // namespace emu

#define threadIdx (emu::cur->tid)
#define blockIdx (emu::cur->blk)
#define blockDim (emu::bdim)
#define gridDim (emu::gdim)
inline void __syncthreads() { emu::syncthreads(); }
#define __cluster_dims__(...)
#define MF_EMU_CLUSTER(n) (emu::cluster_next = (n))
// a warp barrier: every live lane of the warp arrives (a collective with no data)
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_op(5, [](emu::WarpSlot&) {}); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int o, int = 32) { return emu::shfl_xor(v, o); }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
// blocks run one after another here, so a fence is a no-op and an atomic a plain update
inline void __threadfence() {}
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
// sin(πx), cos(πx) in float, as CUDA's sincospif (computed in double, then rounded); the host math library lacks it
inline void sincospif(float x, float* s, float* c) {
  const double a = 3.141592653589793 * (double)x;
  *s = (float)std::sin(a);
  *c = (float)std::cos(a);
}

// ---- CUDA runtime shims used by tests/gpu/test_kernels.cu ------------------------------------
inline cudaError_t emu_cudaMalloc(void* pp, size_t n) {
  void* p = aligned_alloc(256, (n + 255) / 256 * 256);
  memset(p, 0xff, n);
  *(void**)pp = p;
  return cudaSuccess;
}
inline cudaError_t emu_cudaFree(void* p) { free(p); return cudaSuccess; }
inline cudaError_t emu_cudaMemcpy(void* d, const void* s, size_t n, int) { memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t emu_cudaGetLastError() { return cudaSuccess; }
inline cudaError_t emu_cudaDeviceSynchronize() { return cudaSuccess; }
template <class F> inline cudaError_t emu_cudaFuncSetAttribute(F, int, int) { return cudaSuccess; }
inline const char* emu_cudaGetErrorString(cudaError_t) { return "emu error"; }
inline cudaError_t emu_cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
struct emu_prop { char name[64]; int major, minor; };
inline cudaError_t emu_cudaGetDeviceProperties(emu_prop* p, int) { strcpy(p->name, "CPU emulator"); p->major = 9; p->minor = 0; return cudaSuccess; }
struct emu_event { double t; };
inline cudaError_t emu_cudaEventCreate(emu_event** e) { *e = new emu_event{0}; return cudaSuccess; }
inline cudaError_t emu_cudaEventDestroy(emu_event* e) { delete e; return cudaSuccess; }
inline cudaError_t emu_cudaEventRecord(emu_event* e, int = 0) {
  e->t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return cudaSuccess;
}
inline cudaError_t emu_cudaEventSynchronize(emu_event*) { return cudaSuccess; }
inline cudaError_t emu_cudaEventElapsedTime(float* ms, emu_event* a, emu_event* b) { *ms = (float)(b->t - a->t); return cudaSuccess; }
typedef emu_prop emu_cudaDeviceProp;
typedef emu_event* emu_cudaEvent_t;
typedef int emu_cudaStream_t;

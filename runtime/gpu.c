/* gpu.c — the GPU backend: executes a plan (docs/ir.md) with the generated kernels (model.cubin
 * or model.ptx, through the CUDA driver API) and cuBLASLt for the matmuls; a whole optimizer step
 * is captured once into a CUDA graph and replayed.
 *
 * Device memory: params bf16 | master, grads, adam_m, adam_v f32 (param_elems each) | the
 * activation arena (act_bytes, buffer i at bufs[i].gpu_off) | each input (numel × accum int32,
 * micro-step m at m·numel) | scal f32[8] | loss f32[1] | partials f32[G] | a cuBLASLt workspace.
 *
 * Host inputs and scalars go host array → pinned staging → device. The graph's upload nodes read
 * the pinned staging when the graph runs, so step() refreshes the staging (after waiting for the
 * previous step, which may still be reading it) and then launches.
 *
 * Several GPUs (dist.h, one process per GPU): each rank runs the same step on its own batches; the
 * f32 gradients are averaged over the ranks with NCCL inside the same captured graph. Plain data
 * parallelism all-reduces the grads arena in buckets (dp_plan.h) on a second stream, each as soon
 * as the last micro-step's backward pass has finished writing it (fork/join through events), so
 * the reduction overlaps the rest of the backward pass; every rank then runs the identical
 * optimizer on identical gradients (--zero 0). ZeRO-1 (the default) keeps master, m and v only for
 * this rank's shard [lo, hi) of the arena: after the backward pass one in-place reduce-scatter leaves the
 * averaged shard in grads[lo, hi); sumsq covers the shard and its partial sums are all-reduced (so
 * every rank clips with the global norm); AdamW updates the shard (the kernels read [lo, hi) from
 * the optrange input, and master/m/v are passed as base − lo so that global index i lands in the
 * shard allocation); an in-place all-gather then gives every rank all bf16 params. The loss is
 * averaged too, so every rank reports the global mean. ZeRO-1 is the default although its
 * reduce-scatter does not overlap the backward pass: it holds 1/N of the optimizer state, each rank
 * updates only its shard; what the buckets' overlap gains depends on how much their NCCL kernels slow
 * the backward kernels they run beside (tests/run_dist_gpu.sh times both modes in one run). Waits
 * poll the stream, NCCL's asynchronous error and the peers (dist_peer_lost) with a time limit instead
 * of blocking, so a dead or failed peer stops this rank with a message rather than a hang.
 *
 * Environment: LOCAL_RANK = device index (default 0; with several ranks the launcher's local
 * rank, or device 0 when only one GPU is visible); MF_NO_GRAPH=1 runs the step's ops directly
 * instead of through the graph; MF_SYNC_OPS=1 synchronizes after every directly-run op and names
 * the op that failed; MF_LT_ANY_REDUCTION=1 lets cuBLASLt pick split-K algorithms of any
 * reduction scheme (by default those reducing in fp32 are asked for first). */
#define _POSIX_C_SOURCE 200809L
#include "backend.h"
#include "cuda_api.h"
#include "dist.h"
#include "dp_plan.h"
#include "nccl_api.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define WORKSPACE_BYTES ((size_t)64 << 20) /* cuBLASLt workspace, shared: one stream */
#define NSCAL 8

/* Per-op execution state, built once at backend creation. */
typedef struct {
  int is_matmul;
  CUfunction fn;                                  /* kernel ops */
  cublasLtMatmulDesc_t desc;                      /* matmul ops: descriptor, layouts, algo */
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
  cublasLtMatmulAlgo_t cand[8];                   /* the heuristic's usable algorithms, best first (algo = cand[0]) */
  int ncand;
  const Ref *ra, *rb, *rc;                        /* refs of A, B, C (docs/ir.md roles) */
  float alpha, beta;
} OpExec;

typedef struct {
  Backend b;                                      /* first: a Backend* is a Gpu* */
  const Plan *p;
  char devname[256];
  int dev, cc, sms;
  CUcontext ctx;
  CUmodule mod;
  CUstream stream;
  cublasLtHandle_t lt;
  CUdeviceptr params, master, grads, adam_m, adam_v, acts, scal, loss, partials, ws;
  CUdeviceptr input[MF_MAX_INPUTS];
  long in_numel[MF_MAX_INPUTS];                   /* per micro-step */
  int32_t *in_host[MF_MAX_INPUTS];                /* accum × numel each */
  int32_t *in_pinned[MF_MAX_INPUTS];
  float scal_host[NSCAL];
  float *scal_pinned;
  int dirty;                                      /* host inputs/scalars newer than the device */
  long npartials, N, Vp;
  int accum;
  int tok_in, tokidx_in, tgt_in;                  /* input indices or -1 */
  OpExec *ox;
  CUgraphExec exec;
  CUgraphExec dec_exec;                           /* the decode program, captured on first use */
  int use_graph, sync_ops, capturing;
  int opt_in;                                     /* the optrange input, or -1 */
  /* several GPUs (dist.h); comm is NULL with one */
  int world, rank, zero;
  MfNcclComm comm;
  CUstream cstream;                               /* the gradient buckets' all-reduces */
  int nbucket;
  GradBucket *bucket;                             /* in launch order (dp_plan.h) */
  CUevent *bev, ev_fork, ev_join;
  long shard_S, shard_lo, shard_hi;               /* ZeRO-1: this rank's [lo, hi); else [0, n) */
  long grads_elems;                               /* grads and bf16 params allocations (padded to world·S) */
  float *gath[3];                                 /* ZeRO-1: gathered master, m, v (host) */
  long gathered_at, nstep;                        /* the step count at the gather; steps launched */
  double wait_limit;                              /* seconds the next wait on the stream may take */
  double step_t0, slowest;                        /* launch of an ordinary step; the longest one so far */
} Gpu;

/* ---------------------------------------------------------------- small helpers */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const char *opname(const Op *op) { return op->comment[0] ? op->comment : op->kind; }

static double attr_or(const Op *op, const char *key, double dflt) {
  for (int i = 0; i < op->nattr; i++)
    if (!strcmp(op->attr[i].key, key)) return op->attr[i].val;
  return dflt;
}

/* Largest power of two (≤ 256) dividing a device address: cuBLASLt's alignment preference. */
static uint32_t ptr_align(CUdeviceptr x) {
  uint32_t a = 256;
  while (a > 1 && (x % a)) a >>= 1;
  return a;
}

/* Device pointer, dtype and element count of a ref for micro-step `micro`. */
static CUdeviceptr ref_dev(Gpu *g, const Ref *r, int micro, DType *dt, long *numel) {
  const Plan *p = g->p;
  DType t = DT_F32;
  long n = 0;
  CUdeviceptr d = 0;
  switch (r->kind) {
  case REF_ACT:
    if (r->idx < 0 || r->idx >= p->nbuf) fatal("ref act:%d out of range", r->idx);
    t = p->bufs[r->idx].dt; n = p->bufs[r->idx].numel;
    d = g->acts + (CUdeviceptr)p->bufs[r->idx].gpu_off;
    break;
  case REF_PARAM:
  case REF_GRAD:
    if (r->idx < 0 || r->idx >= p->nparam) fatal("ref param/grad:%d out of range", r->idx);
    n = p->params[r->idx].numel;
    if (r->kind == REF_PARAM) { t = DT_BF16; d = g->params + (CUdeviceptr)p->params[r->idx].offset * 2; }
    else { t = DT_F32; d = g->grads + (CUdeviceptr)p->params[r->idx].offset * 4; }
    break;
  case REF_PARAMS: t = DT_BF16; n = p->param_elems; d = g->params; break;
  /* under ZeRO-1 these hold the shard [lo, hi) only: base − lo puts global index i in the shard */
  case REF_MASTER: n = p->param_elems; d = g->master - (CUdeviceptr)g->shard_lo * 4; break;
  case REF_GRADS: n = p->param_elems; d = g->grads; break;
  case REF_ADAM_M: n = p->param_elems; d = g->adam_m - (CUdeviceptr)g->shard_lo * 4; break;
  case REF_ADAM_V: n = p->param_elems; d = g->adam_v - (CUdeviceptr)g->shard_lo * 4; break;
  case REF_SCAL: n = NSCAL; d = g->scal; break;
  case REF_LOSS: n = 1; d = g->loss; break;
  case REF_PARTIALS: n = g->npartials; d = g->partials; break;
  case REF_INPUT:
    if (r->idx < 0 || r->idx >= p->ninput) fatal("ref input %d out of range", r->idx);
    if (micro < 0 || micro >= g->accum)
      fatal("micro-step %d out of range (plan accum = %d)", micro, g->accum);
    t = DT_I32; n = g->in_numel[r->idx];
    d = g->input[r->idx] + (CUdeviceptr)micro * (CUdeviceptr)n * 4;
    break;
  default: fatal("ref kind %d unknown", (int)r->kind);
  }
  if (dt) *dt = t;
  if (numel) *numel = n;
  return d;
}

/* Report a failed call made on behalf of an op (names the op and its plan line), then exit. */
static _Noreturn void op_fail(const Op *op, const char *what, const char *detail) {
  fatal("op %d (%s %s, %s, model.plan line %d): %s failed: %s", op->idx, op->kind, op->kernel,
        opname(op), op->line, what, detail);
}

static void op_cu(const Op *op, const char *what, CUresult r) {
  if (r == CUDA_SUCCESS) return;
  char b[256];
  op_fail(op, what, cu_result_str(r, b, sizeof b));
}

static void op_lt(const Op *op, const char *what, cublasStatus_t s) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  char b[256];
  snprintf(b, sizeof b, "%s (%s)", lt.GetStatusName(s), lt.GetStatusString(s));
  op_fail(op, what, b);
}

/* ---------------------------------------------------------------- several GPUs: waits */

/* Stop this rank: abort the communicator (it stops NCCL kernels still waiting for a dead peer),
 * say why on stderr and exit. The watchdog bounds the abort itself. */
static _Noreturn void dist_fail(Gpu *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void dist_fail(Gpu *g, const char *fmt, ...) {
  char why[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  fflush(stdout);
  fprintf(stderr, "runtime: rank %d: %s; stopping\n", g->rank, why);
  fflush(stderr);
  dist_watch_arm(15, "ncclCommAbort after a failure");
  if (g->comm) nccl.CommAbort(g->comm);
  _exit(1);
}

static long step_no(Gpu *g) { return dist_step() > 0 ? dist_step() : g->nstep; }

/* Wait until the stream is idle, polling instead of blocking: a collective whose peer died never
 * completes. Fails on a CUDA error, an NCCL asynchronous error, a lost peer (checked every
 * millisecond), or after `limit` s. The first 0.1 s spin with sched_yield, as cuStreamSynchronize
 * spins, so the end of a step is seen at once; longer waits (rank 0 evaluating) sleep 1 ms a turn. */
static void dist_wait(Gpu *g, double limit) {
  double t0 = now_sec(), next_check = t0;
  for (;;) {
    CUresult r = cu.StreamQuery(g->stream);
    if (r == CUDA_SUCCESS) break;
    char b[512];
    if (r != CUDA_ERROR_NOT_READY) dist_fail(g, "CUDA error in step %ld: %s", step_no(g), cu_result_str(r, b, sizeof b));
    double now = now_sec();
    if (now >= next_check) {
      next_check = now + 1e-3;
      int ae = MF_NCCL_SUCCESS;
      if (nccl.CommGetAsyncError(g->comm, &ae) == MF_NCCL_SUCCESS && ae != MF_NCCL_SUCCESS && ae != MF_NCCL_IN_PROGRESS)
        dist_fail(g, "NCCL error in step %ld: %s (a peer rank may have died)", step_no(g),
                  nccl_result_str(ae, g->comm, b, sizeof b));
      if (dist_peer_lost(b, sizeof b)) dist_fail(g, "%s during step %ld", b, step_no(g));
      if (now - t0 > limit)
        dist_fail(g, "NCCL timeout in step %ld: not finished after %.0f s (a peer rank may have died or hung; "
                  "MF_DIST_TIMEOUT, MF_DIST_INIT_TIMEOUT, MF_DIST_SLOW_TIMEOUT)", step_no(g), limit);
    }
    if (now - t0 < 0.1) {
      sched_yield();
    } else {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (g->step_t0 > 0) { /* an ordinary step just finished: how long it took */
    double took = now_sec() - g->step_t0;
    if (took > g->slowest) g->slowest = took;
    g->step_t0 = 0;
  }
  g->wait_limit = dist_timeout();
}

/* Wait for the stream: plainly with one GPU, through the watchdog with several. */
static void sync_stream(Gpu *g) {
  if (g->comm) dist_wait(g, g->wait_limit);
  else CU_CHECK(cu.StreamSynchronize(g->stream));
}

static void nccl_ck(Gpu *g, const char *what, int r) {
  if (r == MF_NCCL_SUCCESS) return;
  char b[512];
  dist_fail(g, "%s failed in step %ld: %s", what, step_no(g), nccl_result_str(r, g->comm, b, sizeof b));
}

static void *dptr(CUdeviceptr d) { return (void *)(uintptr_t)d; }

/* ---------------------------------------------------------------- several GPUs: collectives */

/* Plain data parallelism: bucket k of the grads arena is final (its last writer has run on the
 * main stream): fork the comm stream off here and average the bucket over the ranks there. */
static void launch_bucket(Gpu *g, int k) {
  const GradBucket *bk = &g->bucket[k];
  CU_CHECK(cu.EventRecord(g->bev[k], g->stream));
  CU_CHECK(cu.StreamWaitEvent(g->cstream, g->bev[k], 0));
  CUdeviceptr d = g->grads + (CUdeviceptr)bk->lo * 4;
  nccl_ck(g, "ncclAllReduce of a gradient bucket",
          nccl.AllReduce(dptr(d), dptr(d), (size_t)(bk->hi - bk->lo), MF_NCCL_FLOAT32, MF_NCCL_AVG, g->comm, g->cstream));
}

/* The loss is final after the last micro-step's forward pass: average it on the comm stream. */
static void launch_loss(Gpu *g) {
  CU_CHECK(cu.EventRecord(g->ev_fork, g->stream));
  CU_CHECK(cu.StreamWaitEvent(g->cstream, g->ev_fork, 0));
  nccl_ck(g, "ncclAllReduce of the loss",
          nccl.AllReduce(dptr(g->loss), dptr(g->loss), 1, MF_NCCL_FLOAT32, MF_NCCL_AVG, g->comm, g->cstream));
}

/* After the last backward op: plain DP launches the buckets not launched yet (from `next`) and
 * joins the comm stream back; ZeRO-1 reduce-scatters the arena in place (rank r's averaged shard
 * lands in grads[lo, hi)) and averages the loss, on the main stream. */
static void after_backward(Gpu *g, int next) {
  if (!g->zero) {
    while (next < g->nbucket) launch_bucket(g, next++);
    CU_CHECK(cu.EventRecord(g->ev_join, g->cstream));
    CU_CHECK(cu.StreamWaitEvent(g->stream, g->ev_join, 0));
    return;
  }
  CUdeviceptr shard = g->grads + (CUdeviceptr)g->shard_lo * 4;
  nccl_ck(g, "ncclReduceScatter of the gradients",
          nccl.ReduceScatter(dptr(g->grads), dptr(shard), (size_t)g->shard_S, MF_NCCL_FLOAT32, MF_NCCL_AVG, g->comm,
                             g->stream));
  nccl_ck(g, "ncclAllReduce of the loss",
          nccl.AllReduce(dptr(g->loss), dptr(g->loss), 1, MF_NCCL_FLOAT32, MF_NCCL_AVG, g->comm, g->stream));
}

/* ZeRO-1: the shards' partial sums of squares add up to the global ones (every rank clips alike). */
static void reduce_partials(Gpu *g) {
  nccl_ck(g, "ncclAllReduce of the gradient-norm partials",
          nccl.AllReduce(dptr(g->partials), dptr(g->partials), (size_t)g->npartials, MF_NCCL_FLOAT32, MF_NCCL_SUM,
                         g->comm, g->stream));
}

/* ZeRO-1: every rank updated the bf16 params of its shard; gather them all, in place. */
static void gather_params(Gpu *g) {
  CUdeviceptr mine = g->params + (CUdeviceptr)g->shard_lo * 2;
  nccl_ck(g, "ncclAllGather of the params",
          nccl.AllGather(dptr(mine), dptr(g->params), (size_t)g->shard_S, MF_NCCL_BFLOAT16, g->comm, g->stream));
}

static int writes_partials(const Op *op) {
  for (int k = 0; k < op->nref; k++)
    if (op->ref[k].out && op->ref[k].kind == REF_PARTIALS) return 1;
  return 0;
}

/* ---------------------------------------------------------------- execution */

static void exec_op(Gpu *g, int i, int micro) {
  const Op *op = &g->p->ops[i];
  OpExec *x = &g->ox[i];
  if (x->is_matmul) {
    /* row-major C[M,N] = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's A is our B */
    CUdeviceptr a = ref_dev(g, x->ra, micro, NULL, NULL);
    CUdeviceptr b = ref_dev(g, x->rb, micro, NULL, NULL);
    CUdeviceptr c = ref_dev(g, x->rc, micro, NULL, NULL);
    op_lt(op, "cublasLtMatmul",
          lt.Matmul(g->lt, x->desc, &x->alpha, (const void *)(uintptr_t)b, x->la,
                    (const void *)(uintptr_t)a, x->lb, &x->beta, (const void *)(uintptr_t)c, x->lc,
                    (void *)(uintptr_t)c, x->lc, &x->algo, (void *)(uintptr_t)g->ws,
                    WORKSPACE_BYTES, g->stream));
  } else {
    /* kernel arguments: the refs' device pointers, in the plan's order */
    CUdeviceptr ptr[MF_MAX_REFS];
    void *args[MF_MAX_REFS];
    for (int k = 0; k < op->nref; k++) {
      ptr[k] = ref_dev(g, &op->ref[k], micro, NULL, NULL);
      args[k] = &ptr[k];
    }
    op_cu(op, "cuLaunchKernel",
          cu.LaunchKernel(x->fn, (unsigned)op->grid[0], (unsigned)op->grid[1],
                          (unsigned)op->grid[2], (unsigned)op->block[0], (unsigned)op->block[1],
                          (unsigned)op->block[2], (unsigned)op->smem, g->stream, args, NULL));
  }
  if (g->sync_ops && !g->capturing) op_cu(op, "execution", cu.StreamSynchronize(g->stream));
}

/* Copy the host inputs and scalars into the pinned staging. The caller has synchronized the
 * stream, so no upload (graph node or direct) is reading the staging now. */
static void stage_inputs(Gpu *g) {
  for (int i = 0; i < g->p->ninput; i++)
    memcpy(g->in_pinned[i], g->in_host[i], (size_t)(g->in_numel[i] * g->accum) * 4);
  memcpy(g->scal_pinned, g->scal_host, sizeof g->scal_host);
}

/* Enqueue the uploads of the staging (all micro-steps of every input, and scal). */
static void enqueue_uploads(Gpu *g) {
  for (int i = 0; i < g->p->ninput; i++)
    CU_CHECK(cu.MemcpyHtoDAsync(g->input[i], g->in_pinned[i],
                                (size_t)(g->in_numel[i] * g->accum) * 4, g->stream));
  CU_CHECK(cu.MemcpyHtoDAsync(g->scal, g->scal_pinned, sizeof g->scal_host, g->stream));
}

/* For the op-by-op paths (run_op, read_ref ...): bring the device inputs up to date. */
static void flush_uploads(Gpu *g) {
  if (!g->dirty) return;
  sync_stream(g);
  stage_inputs(g);
  enqueue_uploads(g);
  sync_stream(g);
  g->dirty = 0;
}

/* Everything one optimizer step does, enqueued on the stream (captured, or run directly). */
static void enqueue_step(Gpu *g) {
  const Plan *p = g->p;
  CU_CHECK(cu.MemsetD32Async(g->grads, 0, (size_t)g->grads_elems, g->stream));
  CU_CHECK(cu.MemsetD32Async(g->loss, 0, 1, g->stream));
  enqueue_uploads(g);
  int next = 0; /* several GPUs, plain DP: the next bucket to launch (only in the last micro-step) */
  for (int m = 0; m < g->accum; m++) {
    int last = m == g->accum - 1, dp = g->comm && !g->zero && last;
    for (int i = 0; i < p->nop; i++)
      if (p->ops[i].phase == PH_FWD) exec_op(g, i, m);
    if (dp) launch_loss(g);
    for (int i = 0; i < p->nop; i++)
      if (p->ops[i].phase == PH_BWD) {
        exec_op(g, i, m);
        while (dp && next < g->nbucket && g->bucket[next].after_op <= i) launch_bucket(g, next++);
      }
  }
  if (g->comm) after_backward(g, next);
  for (int i = 0; i < p->nop; i++)
    if (p->ops[i].phase == PH_OPT) {
      exec_op(g, i, 0);
      if (g->zero && writes_partials(&p->ops[i])) reduce_partials(g);
    }
  if (g->zero) gather_params(g);
}

static void gpu_step(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  /* the previous step may still be reading the pinned staging */
  sync_stream(g);
  stage_inputs(g);
  g->dirty = 0;
  g->nstep++;
  if (g->comm) {
    /* longer for the first step and after rank 0's own work; never under 5× the slowest ordinary
     * step, so long steps (much accumulation, big models) are not mistaken for a hang */
    int ordinary;
    double lim = dist_step_timeout(&ordinary);
    g->wait_limit = lim > 5 * g->slowest ? lim : 5 * g->slowest;
    g->step_t0 = ordinary ? now_sec() : 0;
  }
  if (!g->use_graph) {
    enqueue_step(g);
    return;
  }
  if (!g->exec) {
    CUgraph graph;
    g->capturing = 1;
    CU_CHECK(cu.StreamBeginCapture(g->stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    enqueue_step(g);
    CU_CHECK(cu.StreamEndCapture(g->stream, &graph));
    g->capturing = 0;
    CU_CHECK(cu.GraphInstantiateWithFlags(&g->exec, graph, 0));
    CU_CHECK(cu.GraphDestroy(graph));
  }
  CU_CHECK(cu.GraphLaunch(g->exec, g->stream));
}

static void gpu_zero_grads(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  CU_CHECK(cu.MemsetD32Async(g->grads, 0, (size_t)g->grads_elems, g->stream));
  CU_CHECK(cu.MemsetD32Async(g->loss, 0, 1, g->stream));
  sync_stream(g);
}

static void gpu_run_op(Backend *bk, const Op *op, int micro) {
  Gpu *g = (Gpu *)bk;
  long i = op - g->p->ops;
  if (i < 0 || i >= g->p->nop) fatal("run_op: op is not one of the plan's ops");
  if (micro < 0 || micro >= g->accum)
    fatal("run_op: micro-step %d out of range (plan accum = %d)", micro, g->accum);
  flush_uploads(g);
  exec_op(g, (int)i, micro);
  /* checks run op by op: wait here so a failure is reported against this op */
  op_cu(op, "execution", cu.StreamSynchronize(g->stream));
}

static void gpu_run_decode(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  const Plan *p = g->p;
  flush_uploads(g);
  if (!g->use_graph || g->sync_ops) {
    for (int i = 0; i < p->nop; i++)
      if (p->ops[i].phase == PH_DEC) exec_op(g, i, 0);
    return;
  }
  if (!g->dec_exec) {
    /* the dec kernels read the token and the position from their input buffers, so one capture
     * serves every position */
    CUgraph graph;
    g->capturing = 1;
    CU_CHECK(cu.StreamBeginCapture(g->stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    for (int i = 0; i < p->nop; i++)
      if (p->ops[i].phase == PH_DEC) exec_op(g, i, 0);
    CU_CHECK(cu.StreamEndCapture(g->stream, &graph));
    g->capturing = 0;
    CU_CHECK(cu.GraphInstantiateWithFlags(&g->dec_exec, graph, 0));
    CU_CHECK(cu.GraphDestroy(graph));
  }
  CU_CHECK(cu.GraphLaunch(g->dec_exec, g->stream));
}

static void gpu_profile_step(Backend *bk, double *ms) {
  Gpu *g = (Gpu *)bk;
  const Plan *p = g->p;
  if (g->comm) fatal("--profile times one GPU: run it without --gpus / a launcher");
  flush_uploads(g);
  CUevent *ev = xmalloc((size_t)(p->nop + 1) * sizeof *ev);
  for (int i = 0; i <= p->nop; i++) CU_CHECK(cu.EventCreate(&ev[i], CU_EVENT_DEFAULT));
  for (int i = 0; i < p->nop; i++) ms[i] = 0;
  CU_CHECK(cu.MemsetD32Async(g->grads, 0, (size_t)g->grads_elems, g->stream));
  CU_CHECK(cu.MemsetD32Async(g->loss, 0, 1, g->stream));
  enqueue_uploads(g);
  for (int m = 0; m < g->accum; m++)
    for (int ph = PH_FWD; ph <= PH_OPT; ph++) {
      if (ph == PH_OPT && m < g->accum - 1) continue;
      /* ev[k] before the k-th op of this pass, ev[k+1] after it */
      int k = 0, *idx = xmalloc((size_t)p->nop * sizeof *idx);
      for (int i = 0; i < p->nop; i++)
        if ((int)p->ops[i].phase == ph) {
          CU_CHECK(cu.EventRecord(ev[k], g->stream));
          exec_op(g, i, ph == PH_OPT ? 0 : m);
          idx[k++] = i;
        }
      CU_CHECK(cu.EventRecord(ev[k], g->stream));
      CU_CHECK(cu.EventSynchronize(ev[k]));
      for (int j = 0; j < k; j++) {
        float t = 0;
        CU_CHECK(cu.EventElapsedTime(&t, ev[j], ev[j + 1]));
        ms[idx[j]] += t;
      }
      free(idx);
    }
  for (int i = 0; i <= p->nop; i++) cu.EventDestroy(ev[i]);
  free(ev);
}

/* the output's type (bf16 activation or f32 gradient): part of a matmul's shape for the survey below */
static double c_type(Gpu *g, int i) {
  DType dt;
  ref_dev(g, g->ox[i].rc, 0, &dt, NULL);
  return (double)dt;
}

/* For each matrix-product shape of the step (M N K ta tb epi beta, C's type), every usable algorithm the heuristic offered
 * (setup_matmul keeps them, best first; it runs the first) timed on its op's own buffers: the median of 15 runs
 * after 3. Prints, per shape, the calls per step, the time of the algorithm in use and of the fastest, and what a
 * step would gain with the fastest everywhere. A diagnostic: it overwrites activations and gradients, so it
 * runs last (runtime --bench --profile). */
static void gpu_survey_matmuls(Backend *bk, FILE *f) {
  Gpu *g = (Gpu *)bk;
  const Plan *p = g->p;
  CUevent e[2];
  for (int k = 0; k < 2; k++) CU_CHECK(cu.EventCreate(&e[k], CU_EVENT_DEFAULT));
  int *done = xcalloc((size_t)p->nop, sizeof *done);
  double gain = 0, used_total = 0;
  fprintf(f, "matmul algorithms (the heuristic's candidates, timed on the op's buffers):\n"
             "| M | N | K | ta | tb | epi | beta | C | calls | candidates | in use ms | fastest ms | fastest # | gain ms/step |\n"
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (!g->ox[i].is_matmul || op->phase == PH_DEC || done[i]) continue;
    double key[8] = {op_attr(p, op, "M"), op_attr(p, op, "N"), op_attr(p, op, "K"), op_attr(p, op, "ta"),
                     op_attr(p, op, "tb"), attr_or(op, "epi", 0), g->ox[i].beta, c_type(g, i)};
    int calls = 0;
    for (int j = i; j < p->nop; j++) {
      const Op *o = &p->ops[j];
      if (!g->ox[j].is_matmul || o->phase == PH_DEC) continue;
      double kj[8] = {op_attr(p, o, "M"), op_attr(p, o, "N"), op_attr(p, o, "K"), op_attr(p, o, "ta"),
                      op_attr(p, o, "tb"), attr_or(o, "epi", 0), g->ox[j].beta, c_type(g, j)};
      if (!memcmp(key, kj, sizeof key)) done[j] = 1, calls += o->phase == PH_OPT ? 1 : g->accum;
    }
    OpExec *x = &g->ox[i];
    cublasLtMatmulAlgo_t keep = x->algo;
    double best = 1e30, used = 0;
    int bi = 0;
    for (int c = 0; c < x->ncand; c++) {
      x->algo = x->cand[c];
      for (int r = 0; r < 3; r++) exec_op(g, i, 0);
      float t[15];
      for (int r = 0; r < 15; r++) {
        CU_CHECK(cu.EventRecord(e[0], g->stream));
        exec_op(g, i, 0);
        CU_CHECK(cu.EventRecord(e[1], g->stream));
        CU_CHECK(cu.EventSynchronize(e[1]));
        CU_CHECK(cu.EventElapsedTime(&t[r], e[0], e[1]));
      }
      for (int a = 1; a < 15; a++)   /* insertion sort: the median */
        for (int b = a; b > 0 && t[b] < t[b - 1]; b--) { float z = t[b]; t[b] = t[b - 1]; t[b - 1] = z; }
      if (c == 0) used = t[7];
      if (t[7] < best) best = t[7], bi = c;
    }
    x->algo = keep;
    gain += calls * (used - best);
    used_total += calls * used;
    fprintf(f, "| %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %g | %s | %d | %d | %.4f | %.4f | %d | %.3f |\n", key[0], key[1],
            key[2], key[3], key[4], key[5], key[6], dtype_name((DType)key[7]), calls, x->ncand, used, best, bi,
            calls * (used - best));
  }
  fprintf(f, "matmul algorithms: %.3f ms per step in the algorithms in use; the fastest candidates would save %.3f ms\n",
          used_total, gain);
  for (int k = 0; k < 2; k++) cu.EventDestroy(e[k]);
  free(done);
}

static void gpu_sync(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  sync_stream(g);
}

/* ---------------------------------------------------------------- data in and out */

/* Synchronous copies, ordered on our (non-blocking) stream: plain cuMemcpyHtoD would run on the
 * legacy stream, unordered with ours. */
static void upload(Gpu *g, CUdeviceptr dst, const void *src, size_t bytes) {
  if (!bytes) return;
  CU_CHECK(cu.MemcpyHtoDAsync(dst, src, bytes, g->stream));
  sync_stream(g);
}

static void download(Gpu *g, void *dst, CUdeviceptr src, size_t bytes) {
  sync_stream(g);
  if (!bytes) return;
  CU_CHECK(cu.MemcpyDtoHAsync(dst, src, bytes, g->stream));
  sync_stream(g);
}

/* The f32 arrays master, m, v: whole on one GPU and in plain DP, the shard [lo, hi) under ZeRO-1
 * (the host side always passes whole arrays). */
static void upload_state(Gpu *g, CUdeviceptr dst, const float *whole) {
  upload(g, dst, whole + g->shard_lo, (size_t)(g->shard_hi - g->shard_lo) * 4);
}

/* ZeRO-1: get_master/get_opt_state read the host copy gather_state made after the last step. */
static const float *gathered(Gpu *g, int k, const char *what) {
  if (!g->gath[k] || g->gathered_at != g->nstep)
    fatal("%s under ZeRO-1 needs gather_state first (a collective of every rank, after the step)", what);
  return g->gath[k];
}

static void gpu_set_master(Backend *bk, const float *master) {
  Gpu *g = (Gpu *)bk;
  size_t n = (size_t)g->p->param_elems;
  uint16_t *h = xmalloc(n * 2);
  for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(master[i]);
  sync_stream(g);
  upload_state(g, g->master, master);
  upload(g, g->params, h, n * 2);
  free(h);
  g->gathered_at = -1;
}

static void gpu_get_master(Backend *bk, float *out) {
  Gpu *g = (Gpu *)bk;
  size_t n = (size_t)g->p->param_elems;
  if (g->zero) memcpy(out, gathered(g, 0, "get_master"), n * 4);
  else download(g, out, g->master, n * 4);
}

static void gpu_get_grads(Backend *bk, float *out) {
  Gpu *g = (Gpu *)bk;
  download(g, out, g->grads, (size_t)g->p->param_elems * 4);
}

static void gpu_set_opt_state(Backend *bk, const float *m, const float *v) {
  Gpu *g = (Gpu *)bk;
  sync_stream(g);
  upload_state(g, g->adam_m, m);
  upload_state(g, g->adam_v, v);
  g->gathered_at = -1;
}

static void gpu_get_opt_state(Backend *bk, float *m, float *v) {
  Gpu *g = (Gpu *)bk;
  size_t n = (size_t)g->p->param_elems;
  if (g->zero) {
    memcpy(m, gathered(g, 1, "get_opt_state"), n * 4);
    memcpy(v, gathered(g, 2, "get_opt_state"), n * 4);
    return;
  }
  download(g, m, g->adam_m, n * 4);
  download(g, v, g->adam_v, n * 4);
}

/* ZeRO-1 (backend.h gather_state): all-gather master, m and v shard by shard through the grads
 * arena (free between steps: the next step zeroes it first) and keep them on the host. */
static void gpu_gather_state(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  size_t n = (size_t)g->p->param_elems;
  CUdeviceptr src[3] = {g->master, g->adam_m, g->adam_v};
  dist_wait(g, dist_slow_timeout()); /* rank 0 may be evaluating before it gets here */
  for (int k = 0; k < 3; k++) {
    if (!g->gath[k]) g->gath[k] = xmalloc(n * 4);
    nccl_ck(g, "ncclAllGather of the optimizer state",
            nccl.AllGather(dptr(src[k]), dptr(g->grads), (size_t)g->shard_S, MF_NCCL_FLOAT32, g->comm, g->stream));
    dist_wait(g, dist_slow_timeout());
    CU_CHECK(cu.MemcpyDtoHAsync(g->gath[k], g->grads, n * 4, g->stream));
    sync_stream(g);
  }
  g->gathered_at = g->nstep;
}

/* Host inputs of one micro-step; tokidx (docs/ir.md) is derived from the tokens here. */
static void gpu_set_batch(Backend *bk, int micro, const int32_t *tokens, const int32_t *targets) {
  Gpu *g = (Gpu *)bk;
  if (micro < 0 || micro >= g->accum)
    fatal("set_batch: micro-step %d out of range (plan accum = %d)", micro, g->accum);
  long N = g->N;
  for (long i = 0; i < N; i++) {
    if (tokens[i] < 0 || tokens[i] >= g->Vp)
      fatal("set_batch: token %ld of micro-step %d is %d, outside [0, Vp=%ld)", i, micro,
            (int)tokens[i], g->Vp);
    if (targets && targets[i] >= g->Vp)
      fatal("set_batch: target %ld of micro-step %d is %d, not below Vp=%ld", i, micro,
            (int)targets[i], g->Vp);
  }
  if (g->tok_in >= 0) memcpy(g->in_host[g->tok_in] + micro * N, tokens, (size_t)N * 4);
  if (g->tgt_in >= 0 && targets) memcpy(g->in_host[g->tgt_in] + micro * N, targets, (size_t)N * 4);
  if (g->tokidx_in >= 0)
    tokidx_build(tokens, N, g->in_host[g->tokidx_in] + micro * g->in_numel[g->tokidx_in]);
  g->dirty = 1;
}

/* Also the dropout counter input (docs/ir_decoder.md): micro-step m gets {seed, step·accum + m}
 * from scal[3] (step) and scal[4] (seed); uploaded with the other host inputs. */
static void gpu_set_scalars(Backend *bk, const float *scal) {
  Gpu *g = (Gpu *)bk;
  memcpy(g->scal_host, scal, sizeof g->scal_host);
  int id = plan_input(g->p, "dropctr");
  if (id >= 0) {
    if (g->in_numel[id] != 2) fatal("%s: input dropctr must have 2 elements", g->p->path);
    long step = lrintf(scal[3]), seed = lrintf(scal[4]);
    for (long m = 0; m < g->accum; m++) {
      g->in_host[id][2 * m] = (int32_t)seed;
      g->in_host[id][2 * m + 1] = (int32_t)(step * g->accum + m);
    }
  }
  g->dirty = 1;
}

static float gpu_read_loss(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  float l;
  download(g, &l, g->loss, 4);
  return l;
}

static double gpu_read_grad_norm(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  float *h = xmalloc((size_t)g->npartials * 4);
  download(g, h, g->partials, (size_t)g->npartials * 4);
  double s = 0; /* unused tail entries are zero (cleared at creation, never written) */
  for (long i = 0; i < g->npartials; i++) s += (double)h[i];
  free(h);
  return sqrt(s);
}

/* Under ZeRO-1 master, m and v are shards: the whole-arena refs cannot be read or written. */
static void no_shard_ref(Gpu *g, const Ref *r, const char *what) {
  if (g->zero && (r->kind == REF_MASTER || r->kind == REF_ADAM_M || r->kind == REF_ADAM_V))
    fatal("%s: master, adam_m and adam_v are sharded under ZeRO-1", what);
}

static void gpu_read_ref(Backend *bk, const Ref *r, int micro, float *out, long n) {
  Gpu *g = (Gpu *)bk;
  DType dt;
  long have;
  no_shard_ref(g, r, "read_ref");
  flush_uploads(g);
  CUdeviceptr d = ref_dev(g, r, micro, &dt, &have);
  if (n < 0 || n > have) fatal("read_ref: %ld elements asked of a ref holding %ld", n, have);
  if (dt == DT_F32) {
    download(g, out, d, (size_t)n * 4);
  } else if (dt == DT_BF16) {
    uint16_t *h = xmalloc((size_t)n * 2);
    download(g, h, d, (size_t)n * 2);
    for (long i = 0; i < n; i++) out[i] = bf16_to_f32(h[i]);
    free(h);
  } else {
    int32_t *h = xmalloc((size_t)n * 4);
    download(g, h, d, (size_t)n * 4);
    for (long i = 0; i < n; i++) out[i] = (float)h[i];
    free(h);
  }
}

static void gpu_write_ref(Backend *bk, const Ref *r, int micro, const float *in, long n) {
  Gpu *g = (Gpu *)bk;
  DType dt;
  long have;
  no_shard_ref(g, r, "write_ref");
  CUdeviceptr d = ref_dev(g, r, micro, &dt, &have);
  if (n < 0 || n > have) fatal("write_ref: %ld elements given for a ref holding %ld", n, have);
  if (r->kind == REF_INPUT) {
    /* inputs live in the host copy too (step() re-uploads it); tokens also refresh tokidx */
    int32_t *h = g->in_host[r->idx] + micro * have;
    for (long i = 0; i < n; i++) {
      h[i] = (int32_t)lrintf(in[i]);
      if (r->idx == g->tok_in && (h[i] < 0 || h[i] >= g->Vp))
        fatal("write_ref: token %ld is %d, outside [0, Vp=%ld)", i, (int)h[i], g->Vp);
    }
    if (r->idx == g->tok_in && g->tokidx_in >= 0)
      tokidx_build(h, g->N, g->in_host[g->tokidx_in] + micro * g->in_numel[g->tokidx_in]);
    g->dirty = 1;
    flush_uploads(g);
    return;
  }
  sync_stream(g);
  if (dt == DT_F32) {
    upload(g, d, in, (size_t)n * 4);
  } else if (dt == DT_BF16) {
    uint16_t *h = xmalloc((size_t)n * 2);
    for (long i = 0; i < n; i++) h[i] = f32_to_bf16(in[i]);
    upload(g, d, h, (size_t)n * 2);
    free(h);
  } else {
    int32_t *h = xmalloc((size_t)n * 4);
    for (long i = 0; i < n; i++) h[i] = (int32_t)lrintf(in[i]);
    upload(g, d, h, (size_t)n * 4);
    free(h);
  }
}

/* ---------------------------------------------------------------- teardown */

static void gpu_destroy(Backend *bk) {
  Gpu *g = (Gpu *)bk;
  if (!g) return;
  if (g->comm) {
    /* a barrier (a one-float all-reduce) so that no rank tears its communicator down while another
     * still uses it; then the communicator, under the watchdog */
    nccl_ck(g, "ncclAllReduce (final barrier)",
            nccl.AllReduce(dptr(g->loss), dptr(g->loss), 1, MF_NCCL_FLOAT32, MF_NCCL_SUM, g->comm, g->stream));
    dist_wait(g, dist_slow_timeout());
    /* The step graph captured NCCL collectives, and NCCL keeps a reference to the communicator
     * for every live graph that did: ncclCommDestroy waits until those graphs are gone, so the
     * executable graph must be destroyed first (else the destroy never returns). */
    if (g->exec) cu.GraphExecDestroy(g->exec);
    g->exec = NULL;
    dist_watch_arm(60, "ncclCommDestroy");
    nccl.CommDestroy(g->comm);
    dist_watch_disarm();
    g->comm = NULL;
  }
  if (g->stream) cu.StreamSynchronize(g->stream);
  if (g->cstream) cu.StreamDestroy(g->cstream);
  for (int k = 0; k < g->nbucket && g->bev; k++)
    if (g->bev[k]) cu.EventDestroy(g->bev[k]);
  if (g->ev_fork) cu.EventDestroy(g->ev_fork);
  if (g->ev_join) cu.EventDestroy(g->ev_join);
  free(g->bev);
  free(g->bucket);
  for (int k = 0; k < 3; k++) free(g->gath[k]);
  if (g->exec) cu.GraphExecDestroy(g->exec);
  if (g->dec_exec) cu.GraphExecDestroy(g->dec_exec);
  if (g->ox) {
    for (int i = 0; i < g->p->nop; i++) {
      OpExec *x = &g->ox[i];
      if (x->la) lt.MatrixLayoutDestroy(x->la);
      if (x->lb) lt.MatrixLayoutDestroy(x->lb);
      if (x->lc) lt.MatrixLayoutDestroy(x->lc);
      if (x->desc) lt.MatmulDescDestroy(x->desc);
    }
    free(g->ox);
  }
  if (g->lt) lt.Destroy(g->lt);
  CUdeviceptr *dp[] = {&g->params, &g->master, &g->grads, &g->adam_m, &g->adam_v, &g->acts,
                       &g->scal, &g->loss, &g->partials, &g->ws};
  for (size_t i = 0; i < sizeof dp / sizeof dp[0]; i++)
    if (*dp[i]) cu.MemFree(*dp[i]);
  for (int i = 0; i < MF_MAX_INPUTS; i++) {
    if (g->input[i]) cu.MemFree(g->input[i]);
    if (g->in_pinned[i]) cu.MemFreeHost(g->in_pinned[i]);
    free(g->in_host[i]);
  }
  if (g->scal_pinned) cu.MemFreeHost(g->scal_pinned);
  if (g->mod) cu.ModuleUnload(g->mod);
  if (g->stream) cu.StreamDestroy(g->stream);
  if (g->ctx) cu.DevicePrimaryCtxRelease(g->dev);
  free(g);
}

/* ---------------------------------------------------------------- creation */

/* Load one module image with the JIT error log. Returns 0, or -1 with the reason in err. */
static int load_image(Gpu *g, const char *path, char *err, size_t errlen) {
  size_t len;
  char *img = read_file(path, &len); /* NUL-terminated: PTX must be a C string */
  if (!img) {
    seterr(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  static char elog[16384];
  elog[0] = 0;
  CUjit_option opt[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *val[] = {elog, (void *)(uintptr_t)sizeof elog};
  CUresult r = cu.ModuleLoadDataEx(&g->mod, img, 2, opt, val);
  free(img);
  if (r != CUDA_SUCCESS) {
    char b[256];
    g->mod = NULL;
    seterr(err, errlen, "%s: module load failed: %s%s%s", path, cu_result_str(r, b, sizeof b),
           elog[0] ? "; JIT log: " : "", elog);
    return -1;
  }
  return 0;
}

/* Prefer DIR/model.cubin when it was built for this device (plan dim `arch`, e.g. 90) and is
 * not older than the PTX; fall back to the PTX when the cubin does not load. */
static int load_module(Gpu *g, const char *ptx_path, const char **used, char *err,
                       size_t errlen) {
  char cubin[1100] = "";
  size_t pl = strlen(ptx_path);
  if (pl > 4 && !strcmp(ptx_path + pl - 4, ".ptx") && pl < sizeof cubin - 8)
    snprintf(cubin, sizeof cubin, "%.*s.cubin", (int)(pl - 4), ptx_path);
  long arch = plan_dim_opt(g->p, "arch", -1);
  struct stat sc, sp;
  int have_cubin = cubin[0] && stat(cubin, &sc) == 0;
  int have_ptx = stat(ptx_path, &sp) == 0;
  if (have_cubin && arch >= 0 && arch != g->cc) have_cubin = 0; /* built for another GPU */
  if (have_cubin && have_ptx && sc.st_mtime < sp.st_mtime) {
    fprintf(stderr, "gpu: %s is older than %s; using the PTX\n", cubin, ptx_path);
    have_cubin = 0;
  }
  if (have_cubin) {
    if (load_image(g, cubin, err, errlen) == 0) {
      *used = "cubin";
      return 0;
    }
    fprintf(stderr, "gpu: %s; falling back to the PTX\n", err);
  }
  if (load_image(g, ptx_path, err, errlen) != 0) {
    /* gen's default target sm_90a (Hopper's wgmma kernels) is arch-specific: its PTX loads on
     * compute capability 9.0 only, so say how to build for the GPU at hand */
    if (arch >= 0 && arch != g->cc) {
      size_t n = strlen(err);
      snprintf(err + n, errlen - n, " (the plan was generated for sm_%ld, this GPU is sm_%d: regenerate with "
               "gen --arch sm_%d)", arch, g->cc, g->cc);
    }
    return -1;
  }
  *used = "ptx";
  return 0;
}

/* cudaDataType of a plan dtype, for matmul operands. */
static cudaDataType_t lt_type(DType dt) { return dt == DT_F32 ? CUDA_R_32F : CUDA_R_16BF; }

/* Build the cuBLASLt descriptor, layouts and algorithm of one matmul op (docs/ir.md):
 * C[M,N] = op(A)·op(B) (+ beta·C) then the epilogue, row-major. cuBLASLt is column-major, where a
 * row-major X[r,c] is Xᵀ (c rows, r columns, ld c). So we compute Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ:
 *   cuBLASLt A := our B: tb = 0 → stored [K,N] row-major = col-major N×K (ld N), no transpose;
 *                        tb = 1 → stored [N,K] = col-major K×N (ld K), transposed.
 *   cuBLASLt B := our A: ta = 0 → stored [M,K] = col-major K×M (ld K), no transpose;
 *                        ta = 1 → stored [K,M] = col-major M×K (ld M), transposed.
 *   C, D: col-major N×M (ld N). The bias (length = D's rows = N) is then C[m,n] += bias[n], and the
 *   GELU aux matrix has D's shape (ld N). */
static void setup_matmul(Gpu *g, int i) {
  const Plan *p = g->p;
  const Op *op = &p->ops[i];
  OpExec *x = &g->ox[i];
  x->is_matmul = 1;
  long M = (long)op_attr(p, op, "M"), N = (long)op_attr(p, op, "N"), K = (long)op_attr(p, op, "K");
  int ta = (int)attr_or(op, "ta", 0), tb = (int)attr_or(op, "tb", 0);
  int epi = (int)attr_or(op, "epi", 0);
  x->alpha = 1.0f;
  x->beta = (float)attr_or(op, "beta", 0);
  x->ra = op_ref_req(p, op, "a");
  x->rb = op_ref_req(p, op, "b");
  x->rc = op_ref_req(p, op, "c");
  const Ref *rbias = op_ref(op, "bias"), *raux = op_ref(op, "aux");
  DType ta_dt, tb_dt, tc_dt, t;
  long na, nb, nc, n;
  CUdeviceptr da = ref_dev(g, x->ra, 0, &ta_dt, &na);
  CUdeviceptr db = ref_dev(g, x->rb, 0, &tb_dt, &nb);
  CUdeviceptr dc = ref_dev(g, x->rc, 0, &tc_dt, &nc);
  char msg[256];
  if (x->ra->kind == REF_INPUT || x->rb->kind == REF_INPUT || x->rc->kind == REF_INPUT)
    op_fail(op, "setup", "a matmul operand cannot be an input");
  if (ta_dt != DT_BF16 || tb_dt != DT_BF16 || tc_dt == DT_I32)
    op_fail(op, "setup", "matmul needs bf16 a and b, and bf16 or f32 c");
  if (M <= 0 || N <= 0 || K <= 0 || na < M * K || nb < K * N || nc < M * N) {
    snprintf(msg, sizeof msg, "shapes M=%ld N=%ld K=%ld do not fit the refs (a %ld, b %ld, c %ld)",
             M, N, K, na, nb, nc);
    op_fail(op, "setup", msg);
  }
  if ((epi == 1 || epi == 2) && !rbias) op_fail(op, "setup", "epi 1/2 needs a bias ref");
  if ((epi == 2 || epi == 3) && !raux) op_fail(op, "setup", "epi 2/3 needs an aux ref");
  if (epi == 3 && x->beta != 0.0f) op_fail(op, "setup", "epi 3 (dgelu) needs beta = 0");
  if (epi < 0 || epi > 3) op_fail(op, "setup", "epi must be 0, 1, 2 or 3");

  cudaDataType_t ct = lt_type(tc_dt);
  op_lt(op, "cublasLtMatmulDescCreate",
        lt.MatmulDescCreate(&x->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  int32_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  op_lt(op, "set TRANSA",
        lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  op_lt(op, "set TRANSB",
        lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  uint32_t ep = epi == 1 ? CUBLASLT_EPILOGUE_BIAS
              : epi == 2 ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
              : epi == 3 ? CUBLASLT_EPILOGUE_DGELU
                         : CUBLASLT_EPILOGUE_DEFAULT;
  op_lt(op, "set EPILOGUE",
        lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
  if (epi == 1 || epi == 2) {
    CUdeviceptr dbias = ref_dev(g, rbias, 0, &t, &n);
    if (t != DT_BF16 || n < N) op_fail(op, "setup", "bias must be bf16 with N elements");
    const void *pb = (const void *)(uintptr_t)dbias;
    op_lt(op, "set BIAS_POINTER",
          lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &pb, sizeof pb));
    if (ct != CUDA_R_16BF) { /* the default bias type is C's */
      int32_t bt = CUDA_R_16BF;
      op_lt(op, "set BIAS_DATA_TYPE",
            lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
  }
  if (epi == 2 || epi == 3) {
    CUdeviceptr daux = ref_dev(g, raux, 0, &t, &n);
    if (t != DT_BF16 || n < M * N) op_fail(op, "setup", "aux must be bf16 with M*N elements");
    if (N % 8) op_fail(op, "setup", "cuBLASLt GELU aux needs N divisible by 8");
    void *pa = (void *)(uintptr_t)daux;
    int64_t ld = N;
    op_lt(op, "set EPILOGUE_AUX_POINTER",
          lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &pa,
                                    sizeof pa));
    op_lt(op, "set EPILOGUE_AUX_LD",
          lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
    if (ct != CUDA_R_16BF) { /* the default aux type is C's */
      int32_t at = CUDA_R_16BF;
      op_lt(op, "set EPILOGUE_AUX_DATA_TYPE",
            lt.MatmulDescSetAttribute(x->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &at,
                                      sizeof at));
    }
  }
  op_lt(op, "layout A",
        tb ? lt.MatrixLayoutCreate(&x->la, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K)
           : lt.MatrixLayoutCreate(&x->la, CUDA_R_16BF, (uint64_t)N, (uint64_t)K, N));
  op_lt(op, "layout B",
        ta ? lt.MatrixLayoutCreate(&x->lb, CUDA_R_16BF, (uint64_t)M, (uint64_t)K, M)
           : lt.MatrixLayoutCreate(&x->lb, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K));
  op_lt(op, "layout C", lt.MatrixLayoutCreate(&x->lc, ct, (uint64_t)N, (uint64_t)M, N));

  /* Algorithm: the heuristic's first choice, picked once, so every run uses the same kernel.
   * First ask only for split-K reductions done in fp32 in the workspace (deterministic, no
   * rounding of partial sums to bf16); if that leaves nothing, accept any. */
  cublasLtMatmulPreference_t pref;
  op_lt(op, "cublasLtMatmulPreferenceCreate", lt.MatmulPreferenceCreate(&pref));
  uint64_t wsb = WORKSPACE_BYTES;
  op_lt(op, "set MAX_WORKSPACE_BYTES",
        lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                        sizeof wsb));
  uint32_t al[4] = {ptr_align(db), ptr_align(da), ptr_align(dc), ptr_align(dc)};
  cublasLtMatmulPreferenceAttributes_t alk[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int k = 0; k < 4; k++)
    op_lt(op, "set MIN_ALIGNMENT", lt.MatmulPreferenceSetAttribute(pref, alk[k], &al[k], sizeof al[k]));
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0, pick = -1;
  const char *anyred = getenv("MF_LT_ANY_REDUCTION"); /* =1: skip the fp32-reduction filter */
  for (int pass = anyred && *anyred && strcmp(anyred, "0") ? 1 : 0; pass < 2 && pick < 0; pass++) {
    uint32_t mask = pass == 0 ? CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE : CUBLASLT_REDUCTION_SCHEME_MASK;
    op_lt(op, "set REDUCTION_SCHEME_MASK",
          lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                          sizeof mask));
    memset(res, 0, sizeof res);
    found = 0;
    cublasStatus_t s = lt.MatmulAlgoGetHeuristic(g->lt, x->desc, x->la, x->lb, x->lc, x->lc, pref,
                                                 8, res, &found);
    /* any refusal of the filtered query just means: ask again unfiltered */
    if (pass == 1 && s != CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_NOT_SUPPORTED)
      op_lt(op, "cublasLtMatmulAlgoGetHeuristic", s);
    x->ncand = 0;
    for (int k = 0; s == CUBLAS_STATUS_SUCCESS && k < found; k++)
      if (res[k].state == CUBLAS_STATUS_SUCCESS && res[k].workspaceSize <= WORKSPACE_BYTES) {
        if (pick < 0) pick = k;
        x->cand[x->ncand++] = res[k].algo;
      }
  }
  lt.MatmulPreferenceDestroy(pref);
  if (pick < 0) {
    snprintf(msg, sizeof msg,
             "no cuBLASLt algorithm for M=%ld N=%ld K=%ld ta=%d tb=%d epi=%d c=%s "
             "(alignments A %u B %u C %u)", M, N, K, ta, tb, epi, dtype_name(tc_dt), al[0], al[1],
             al[2]);
    op_fail(op, "cublasLtMatmulAlgoGetHeuristic", msg);
  }
  x->algo = res[pick].algo;
}

static void setup_kernel(Gpu *g, int i, int smem_optin) {
  const Op *op = &g->p->ops[i];
  OpExec *x = &g->ox[i];
  char msg[256];
  CUresult r = cu.ModuleGetFunction(&x->fn, g->mod, op->kernel);
  if (r != CUDA_SUCCESS) {
    snprintf(msg, sizeof msg, "kernel %s not in the module (stale model.ptx/cubin?)", op->kernel);
    op_fail(op, "cuModuleGetFunction", msg);
  }
  int maxthr = 0, static_smem = 0;
  op_cu(op, "cuFuncGetAttribute",
        cu.FuncGetAttribute(&maxthr, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, x->fn));
  op_cu(op, "cuFuncGetAttribute",
        cu.FuncGetAttribute(&static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, x->fn));
  long threads = (long)op->block[0] * op->block[1] * op->block[2];
  if (threads <= 0 || threads > maxthr) {
    snprintf(msg, sizeof msg, "block of %ld threads; the kernel allows at most %d", threads, maxthr);
    op_fail(op, "setup", msg);
  }
  if (op->grid[0] <= 0 || op->grid[1] <= 0 || op->grid[2] <= 0 || op->smem < 0)
    op_fail(op, "setup", "grid dimensions must be positive and smem non-negative");
  if (op->smem + static_smem > smem_optin) {
    snprintf(msg, sizeof msg, "%d B dynamic + %d B static shared memory; the device allows %d B",
             op->smem, static_smem, smem_optin);
    op_fail(op, "setup", msg);
  }
  /* above 48 KiB (static + dynamic) a kernel must opt in to its dynamic shared memory */
  if (op->smem + static_smem > 48 * 1024)
    op_cu(op, "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
          cu.FuncSetAttribute(x->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, op->smem));
}

/* cuMemAlloc that reports failure (out of memory is an expected, explainable error). */
static int dalloc(CUdeviceptr *d, size_t bytes, const char *what, char *err, size_t errlen) {
  if (bytes == 0) bytes = 256; /* cuMemAlloc rejects 0 */
  CUresult r = cu.MemAlloc(d, bytes);
  if (r != CUDA_SUCCESS) {
    char b[256];
    *d = 0;
    seterr(err, errlen, "allocating %s (%.3f GiB) on the GPU: %s", what,
           (double)bytes / (1 << 30), cu_result_str(r, b, sizeof b));
    return -1;
  }
  return 0;
}

/* Rank 0's NCCL id, handed to the others by dist_bootstrap. */
static void make_nccl_id(unsigned char blob[DIST_BLOB_BYTES], void *ctx) {
  (void)ctx;
  char b[512];
  int r = nccl.GetUniqueId((MfNcclId *)(void *)blob);
  if (r != MF_NCCL_SUCCESS) fatal("rank 0: ncclGetUniqueId failed: %s", nccl_result_str(r, NULL, b, sizeof b));
}

/* Several GPUs: the NCCL communicator (id from rank 0 through dist_bootstrap), the comm stream,
 * the buckets and their events; then every collective of the step runs once outside the graph on
 * the all-zero buffers — NCCL connects its channels lazily, which must not happen during capture,
 * and a broken communicator fails here, before training. */
static void dist_setup(Gpu *g, char *info, size_t infolen) {
  _Static_assert(sizeof(MfNcclId) == DIST_BLOB_BYTES, "the NCCL id is the bootstrap blob");
  char e[1024];
  if (nccl_load(e, sizeof e)) fatal("rank %d: %s", g->rank, e);
  MfNcclId id;
  const char *how = dist_bootstrap((unsigned char *)(void *)&id, make_nccl_id, g);
  dist_watch_arm(dist_init_timeout(), "NCCL communicator init (ncclCommInitRank)");
  int r = nccl.CommInitRank(&g->comm, g->world, id, g->rank);
  dist_watch_disarm();
  if (r != MF_NCCL_SUCCESS) fatal("rank %d: ncclCommInitRank failed: %s", g->rank, nccl_result_str(r, NULL, e, sizeof e));
  dist_bootstrap_done();
  CU_CHECK(cu.StreamCreate(&g->cstream, CU_STREAM_NON_BLOCKING));
  CU_CHECK(cu.EventCreate(&g->ev_fork, CU_EVENT_DISABLE_TIMING));
  CU_CHECK(cu.EventCreate(&g->ev_join, CU_EVENT_DISABLE_TIMING));
  if (!g->zero) {
    g->bucket = dp_buckets(g->p, dp_bucket_target(), &g->nbucket);
    g->bev = xcalloc((size_t)(g->nbucket > 0 ? g->nbucket : 1), sizeof *g->bev);
    for (int k = 0; k < g->nbucket; k++) CU_CHECK(cu.EventCreate(&g->bev[k], CU_EVENT_DISABLE_TIMING));
    launch_loss(g);
    after_backward(g, 0);
  } else {
    after_backward(g, 0);
    reduce_partials(g);
    gather_params(g);
  }
  dist_wait(g, dist_init_timeout());
  int v = nccl.version;
  snprintf(info, infolen, "; rank %d of %d (%s, NCCL id via %s), NCCL %d.%d.%d, %s", g->rank, g->world,
           dist_env()->launcher, how, v / 10000, v / 100 % 100, v % 100,
           g->zero ? "ZeRO-1 shard" : "data parallel");
  if (g->zero) {
    size_t k = strlen(info);
    snprintf(info + k, infolen - k, " [%ld, %ld) of %ld", g->shard_lo, g->shard_hi, g->p->param_elems);
  } else {
    size_t k = strlen(info);
    snprintf(info + k, infolen - k, ", %d gradient buckets", g->nbucket);
  }
}

Backend *gpu_backend_new(const Plan *p, const char *ptx_path, char *err, size_t errlen) {
  if (cuda_load(err, errlen) != 0) return NULL;
  int count = 0;
  CUresult r = cu.DeviceGetCount(&count);
  char b[256];
  if (r != CUDA_SUCCESS || count == 0) {
    seterr(err, errlen, "no CUDA device (%s)",
           r != CUDA_SUCCESS ? cu_result_str(r, b, sizeof b) : "cuDeviceGetCount = 0");
    return NULL;
  }
  int dev = 0, world = dist_world(), rank = dist_rank();
  const char *lr = getenv("LOCAL_RANK");
  if (world > 1) {
    /* one GPU per rank: the launcher's local rank, or the only GPU this process sees (a launcher
     * that sets CUDA_VISIBLE_DEVICES per rank) */
    int l = dist_local_rank();
    if (count > 1 && l >= count) {
      seterr(err, errlen, "rank %d: local rank %d has no GPU (this host shows %d): start at most %d ranks per host",
             rank, l, count, count);
      return NULL;
    }
    dev = count == 1 ? 0 : l;
  } else if (lr && *lr) {
    char *end;
    long v = strtol(lr, &end, 10);
    if (*end || v < 0 || v >= count) {
      seterr(err, errlen, "LOCAL_RANK=%s is not a device index (this machine has %d)", lr, count);
      return NULL;
    }
    dev = (int)v;
  }

  Gpu *g = xcalloc(1, sizeof *g);
  g->p = p;
  g->dev = dev;
  g->tok_in = g->tgt_in = g->tokidx_in = g->opt_in = -1;
  g->world = world;
  g->rank = rank;
  g->zero = dist_zero();
  g->wait_limit = dist_timeout();
  g->gathered_at = -1;
  CUdevice d;
  CU_CHECK(cu.DeviceGet(&d, dev));
  g->dev = d;
  CU_CHECK(cu.DeviceGetName(g->devname, (int)sizeof g->devname - 1, d));
  int major = 0, minor = 0, smem_optin = 0;
  CU_CHECK(cu.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d));
  CU_CHECK(cu.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d));
  CU_CHECK(cu.DeviceGetAttribute(&g->sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d));
  CU_CHECK(cu.DeviceGetAttribute(&smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, d));
  g->cc = major * 10 + minor;
  size_t total_mem = 0;
  CU_CHECK(cu.DeviceTotalMem(&total_mem, d));
  r = cu.DevicePrimaryCtxRetain(&g->ctx, d);
  if (r != CUDA_SUCCESS) {
    seterr(err, errlen, "cannot create a context on GPU %d (%s): %s", dev, g->devname,
           cu_result_str(r, b, sizeof b));
    g->ctx = NULL;
    gpu_destroy(&g->b);
    return NULL;
  }
  CU_CHECK(cu.CtxSetCurrent(g->ctx));
  if (cublaslt_load(err, errlen) != 0) { gpu_destroy(&g->b); return NULL; }

  const char *image = "";
  if (load_module(g, ptx_path, &image, err, errlen) != 0) { gpu_destroy(&g->b); return NULL; }
  CU_CHECK(cu.StreamCreate(&g->stream, CU_STREAM_NON_BLOCKING));

  /* sizes */
  g->accum = (int)plan_dim_opt(p, "accum", 1);
  if (g->accum < 1) fatal("%s: dim accum must be >= 1", p->path);
  g->N = plan_dim(p, "N");
  g->Vp = plan_dim(p, "Vp");
  /* partials: plan dim G (else 1024), and at least the largest attr G of any op */
  g->npartials = plan_dim_opt(p, "G", 1024);
  if (p->n_partials > g->npartials) g->npartials = p->n_partials;
  for (int i = 0; i < p->nbuf; i++) {
    const Buffer *bf = &p->bufs[i];
    if (bf->gpu_off < 0 || bf->gpu_off + bf->numel * (long)dtype_size(bf->dt) > p->act_bytes)
      fatal("%s: buffer %d (%s) lies outside the activation arena (%ld bytes)", p->path, i,
            bf->name, p->act_bytes);
  }
  for (int i = 0; i < p->nparam; i++)
    if (p->params[i].offset < 0 || p->params[i].offset + p->params[i].numel > p->param_elems)
      fatal("%s: parameter %s lies outside the parameter arena", p->path, p->params[i].name);
  if (p->ninput > MF_MAX_INPUTS) fatal("%s: more than %d inputs", p->path, MF_MAX_INPUTS);
  for (int i = 0; i < p->ninput; i++) {
    const Input *in = &p->inputs[i];
    if (in->dt != DT_I32) fatal("%s: input %s must be i32", p->path, in->name);
    g->in_numel[i] = in->numel;
    long want = -1;
    if (!strcmp(in->name, "tokens")) { g->tok_in = i; want = g->N; }
    else if (!strcmp(in->name, "targets")) { g->tgt_in = i; want = g->N; }
    else if (!strcmp(in->name, "tokidx")) { g->tokidx_in = i; want = 2 * g->N + 2; }
    else if (!strcmp(in->name, "optrange")) { g->opt_in = i; want = 4; }
    if (want >= 0 && in->numel != want)
      fatal("%s: input %s has %ld elements per micro-step, expected %ld", p->path, in->name,
            in->numel, want);
  }
  if (g->tokidx_in >= 0 && g->tok_in < 0) fatal("%s: input tokidx needs input tokens", p->path);

  /* the optimizer's range (optrange, docs/ir.md): the whole arena, or this rank's ZeRO-1 shard;
   * under ZeRO-1 the grads and params arenas are padded to world·S for the reduce-scatter and the
   * all-gather, and master, m, v hold S elements */
  g->shard_S = g->grads_elems = g->shard_hi = p->param_elems;
  g->shard_lo = 0;
  if (g->zero) {
    dp_shard(p->param_elems, world, rank, &g->shard_S, &g->shard_lo, &g->shard_hi);
    g->grads_elems = g->shard_S * world;
  }

  /* device memory */
  size_t planned = 0, ge = (size_t)g->grads_elems, se = (size_t)g->shard_S;
  struct { CUdeviceptr *d; size_t bytes; const char *what; } al[24];
  int na = 0;
#define ADD(ptr, nbytes, name) (al[na].d = (ptr), al[na].bytes = (nbytes), al[na].what = (name), na++)
  ADD(&g->params, ge * 2, "params (bf16)");
  ADD(&g->master, se * 4, g->zero ? "master shard (f32)" : "master (f32)");
  ADD(&g->grads, ge * 4, "grads (f32)");
  ADD(&g->adam_m, se * 4, g->zero ? "adam_m shard (f32)" : "adam_m (f32)");
  ADD(&g->adam_v, se * 4, g->zero ? "adam_v shard (f32)" : "adam_v (f32)");
  ADD(&g->acts, (size_t)p->act_bytes, "activations");
  for (int i = 0; i < p->ninput; i++)
    ADD(&g->input[i], (size_t)(g->in_numel[i] * g->accum) * 4, p->inputs[i].name);
  ADD(&g->scal, NSCAL * 4, "scal");
  ADD(&g->loss, 4, "loss");
  ADD(&g->partials, (size_t)g->npartials * 4, "partials");
  ADD(&g->ws, WORKSPACE_BYTES, "cuBLASLt workspace");
#undef ADD
  for (int i = 0; i < na; i++) planned += al[i].bytes;
  for (int i = 0; i < na; i++)
    if (dalloc(al[i].d, al[i].bytes, al[i].what, err, errlen) != 0) {
      size_t len = strlen(err);
      snprintf(err + len, errlen - len, " (plan needs %.3f GiB in all, GPU has %.3f GiB)",
               (double)planned / (1 << 30), (double)total_mem / (1 << 30));
      gpu_destroy(&g->b);
      return NULL;
    }
  /* everything starts at zero: gaps in the parameter arena, moments, unused partials */
  for (int i = 0; i < na; i++)
    if (al[i].d != &g->ws && al[i].bytes) CU_CHECK(cu.MemsetD8Async(*al[i].d, 0, al[i].bytes, g->stream));
  for (int i = 0; i < p->ninput; i++) {
    size_t bytes = (size_t)(g->in_numel[i] * g->accum) * 4;
    g->in_host[i] = xcalloc(bytes / 4 + 1, 4);
    void *pin;
    CU_CHECK(cu.MemHostAlloc(&pin, bytes ? bytes : 4, 0));
    memset(pin, 0, bytes);
    g->in_pinned[i] = pin;
  }
  if (g->opt_in >= 0) /* 64-bit lo, hi as int32 words, low then high (docs/ir.md "optrange") */
    for (int m = 0; m < g->accum; m++) {
      int32_t *w = g->in_host[g->opt_in] + 4 * m;
      uint64_t lo = (uint64_t)g->shard_lo, hi = (uint64_t)g->shard_hi;
      w[0] = (int32_t)(uint32_t)lo, w[1] = (int32_t)(uint32_t)(lo >> 32);
      w[2] = (int32_t)(uint32_t)hi, w[3] = (int32_t)(uint32_t)(hi >> 32);
    }
  void *spin;
  CU_CHECK(cu.MemHostAlloc(&spin, sizeof g->scal_host, 0));
  memset(spin, 0, sizeof g->scal_host);
  g->scal_pinned = spin;
  CU_CHECK(cu.StreamSynchronize(g->stream));

  /* per-op state: kernels looked up once, matmuls planned once */
  LT_CHECK(lt.Create(&g->lt));
  g->ox = xcalloc((size_t)(p->nop > 0 ? p->nop : 1), sizeof *g->ox);
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    for (int k = 0; k < op->nref; k++) ref_dev(g, &op->ref[k], 0, NULL, NULL); /* validate */
    /* ZeRO-1: an op touching the sharded state or the norm partials must confine itself to the
     * shard through a range ref (optrange), or it would run over the whole arena */
    for (int k = 0; g->zero && k < op->nref; k++) {
      RefKind rk = op->ref[k].kind;
      if ((rk == REF_MASTER || rk == REF_ADAM_M || rk == REF_ADAM_V || (rk == REF_PARTIALS && op->ref[k].out)) &&
          !op_ref(op, "range"))
        fatal("%s:%d: op %d (%s) has no range ref (optrange): ZeRO-1 (the default on several GPUs) needs a plan from a gen that emits one; regenerate, or run with --zero 0",
              p->path, op->line, op->idx, op->kind);
    }
    if (!strcmp(op->kind, "matmul")) setup_matmul(g, i);
    else setup_kernel(g, i, smem_optin);
  }
  /* Run every matmul once now, on the all-zero buffers (zeros in, zeros out; grads and
   * activations are rewritten by every step anyway): cuBLASLt loads its kernels here rather than
   * during graph capture, and a bad configuration fails now, naming its op. */
  for (int i = 0; i < p->nop; i++)
    if (g->ox[i].is_matmul) {
      exec_op(g, i, 0);
      op_cu(&p->ops[i], "first matmul run", cu.StreamSynchronize(g->stream));
    }

  char distinfo[256] = "";
  if (world > 1) dist_setup(g, distinfo, sizeof distinfo);

  const char *ng = getenv("MF_NO_GRAPH"), *so = getenv("MF_SYNC_OPS");
  g->use_graph = !(ng && *ng && strcmp(ng, "0"));
  g->sync_ops = so && *so && strcmp(so, "0");

  g->b.name = g->devname;
  g->b.plan = p;
  /* dense bf16 peak: H100/H200 SXM 989 TFLOP/s, H100 PCIe 756 TFLOP/s; unknown elsewhere */
  g->b.peak_flops = g->cc != 90 ? 0 : strstr(g->devname, "PCIe") ? 756e12 : 989e12;
  g->b.destroy = gpu_destroy;
  g->b.set_master = gpu_set_master;
  g->b.get_master = gpu_get_master;
  g->b.get_grads = gpu_get_grads;
  g->b.set_opt_state = gpu_set_opt_state;
  g->b.get_opt_state = gpu_get_opt_state;
  g->b.set_batch = gpu_set_batch;
  g->b.set_scalars = gpu_set_scalars;
  g->b.step = gpu_step;
  g->b.zero_grads = gpu_zero_grads;
  g->b.run_op = gpu_run_op;
  g->b.run_decode = gpu_run_decode;
  g->b.profile_step = gpu_profile_step;
  g->b.survey_matmuls = gpu_survey_matmuls;
  g->b.sync = gpu_sync;
  g->b.read_loss = gpu_read_loss;
  g->b.read_grad_norm = gpu_read_grad_norm;
  g->b.read_ref = gpu_read_ref;
  g->b.write_ref = gpu_write_ref;
  g->b.gather_state = g->zero ? gpu_gather_state : NULL;

  size_t free_mem = 0, tot = 0;
  CU_CHECK(cu.MemGetInfo(&free_mem, &tot));
  fprintf(stderr,
          "gpu: %s (device %d, sm_%d, %d SMs, %.1f GiB, %.1f GiB free), driver %d.%d, cuBLASLt "
          "%zu, kernels from %s; plan uses %.3f GiB of device memory%s%s\n",
          g->devname, dev, g->cc, g->sms, (double)total_mem / (1 << 30),
          (double)free_mem / (1 << 30), cu.version / 1000, (cu.version % 1000) / 10, lt.version,
          image, (double)planned / (1 << 30), g->use_graph ? "" : " (MF_NO_GRAPH: no CUDA graph)", distinfo);
  return &g->b;
}

/* backend.h — what the training loop, the checks and the benchmarks need from an executor.
 * Two implementations: cpu.c (fp32 reference, the oracle) and gpu.c (CUDA driver API, cuBLASLt,
 * generated kernels, the whole step replayed as one CUDA graph). All float data crossing this
 * interface is f32 on the host; the GPU converts to/from bf16 where its buffers are bf16. */
#ifndef MF_BACKEND_H
#define MF_BACKEND_H
#include "plan.h"
#include <stdio.h>

typedef struct Backend Backend;
struct Backend {
  const char *name;          /* "cpu" or the GPU's name */
  const Plan *plan;
  double peak_flops;         /* dense bf16 peak for MFU; 0 when unknown (CPU) */
  void (*destroy)(Backend *);

  /* model state, all f32 host arrays of plan->param_elems elements */
  void (*set_master)(Backend *, const float *master);     /* GPU also refreshes the bf16 params */
  void (*get_master)(Backend *, float *out);
  void (*get_grads)(Backend *, float *out);
  void (*set_opt_state)(Backend *, const float *m, const float *v);
  void (*get_opt_state)(Backend *, float *m, float *v);
  /* Several GPUs with ZeRO-1 (dist.h): each rank holds only its shard of master, m and v. This
   * collective — every rank calls it at the same point, between steps — gathers the full state so
   * that get_master and get_opt_state work until the next step. NULL when the backend always holds
   * everything (CPU, one GPU, plain data parallelism). */
  void (*gather_state)(Backend *);

  /* inputs of one micro-step (plan dim N tokens each), and the step scalars (scal[0..7]) */
  void (*set_batch)(Backend *, int micro, const int32_t *tokens, const int32_t *targets);
  void (*set_scalars)(Backend *, const float *scal);

  /* one whole optimizer step: zero grads and loss, fwd+bwd for each micro-step, opt ops */
  void (*step)(Backend *);
  /* pieces, for checks: zero grads+loss; run one op for micro-step `micro` */
  void (*zero_grads)(Backend *);
  void (*run_op)(Backend *, const Op *op, int micro);
  /* one decode step: every `dec` op in plan order (sample.h sets dtokens/dpos first); the GPU
   * replays them as one CUDA graph, since a batch-1 token is too little work to pay a launch and
   * a synchronisation per op */
  void (*run_decode)(Backend *);
  /* one optimizer step op by op, each op timed on the device (events, no graph: launch gaps
   * included); ms[i] = milliseconds of op i summed over the micro-steps. NULL on the CPU. */
  void (*profile_step)(Backend *, double *ms);
  /* every matrix-product shape's candidate algorithms timed, a table to f (after profile_step: it overwrites
   * activations and gradients). NULL on the CPU. */
  void (*survey_matmuls)(Backend *, FILE *f);
  void (*sync)(Backend *);

  float (*read_loss)(Backend *);                          /* mean loss of the last step */
  double (*read_grad_norm)(Backend *);                    /* √Σ partials after the opt ops */
  /* read/write any ref as f32 (n elements); inputs are converted from/to int32 */
  void (*read_ref)(Backend *, const Ref *r, int micro, float *out, long n);
  void (*write_ref)(Backend *, const Ref *r, int micro, const float *in, long n);
};

Backend *cpu_backend_new(const Plan *p);
/* ptx_path: DIR/model.ptx (a DIR/model.cubin beside it is preferred when its arch matches).
 * Returns NULL with a message in err when no GPU/driver is available. */
Backend *gpu_backend_new(const Plan *p, const char *ptx_path, char *err, size_t errlen);

/* Number of elements a ref covers (buffer numel, param numel, arena size, input numel...). */
long ref_numel(const Plan *p, const Ref *r);
#endif

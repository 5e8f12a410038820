/* plan.h — the in-memory form of out/model.plan (format: docs/ir.md).
 * The plan is everything the runtime knows about a model: parameters, buffers, inputs, and the
 * ordered op list that both backends execute. */
#ifndef MF_PLAN_H
#define MF_PLAN_H
#include <stddef.h>
#include <stdint.h>

typedef enum { DT_BF16, DT_F32, DT_I32 } DType;

typedef enum {
  REF_ACT, REF_PARAM, REF_GRAD,                     /* one buffer / one parameter slice */
  REF_PARAMS, REF_MASTER, REF_GRADS, REF_ADAM_M, REF_ADAM_V, /* whole arenas */
  REF_SCAL, REF_LOSS, REF_PARTIALS,                 /* small runtime-owned buffers */
  REF_INPUT                                         /* tokens, targets, tokidx */
} RefKind;

typedef enum { PH_FWD, PH_BWD, PH_OPT, PH_DEC } Phase; /* dec: the one-token decode program */
#define MF_MAX_INPUTS 8

#define MF_MAX_REFS 16
#define MF_MAX_ATTRS 32

/* idx: buffer/param/input index; out: the op writes this ref (written ">role=ref" in the plan) */
typedef struct { char role[24]; RefKind kind; int idx; int out; } Ref;
typedef struct { char key[24]; double val; } Attr;

typedef struct {
  int idx;
  Phase phase;
  char kind[32];
  char kernel[128];          /* PTX entry name, "-" for matmul */
  int grid[3], block[3], smem;
  int nref; Ref ref[MF_MAX_REFS];
  int nattr; Attr attr[MF_MAX_ATTRS];
  char comment[128];         /* model-level name, e.g. "h.3.ln_1" */
  int line;                  /* line in model.plan */
} Op;

typedef struct {
  char name[128];
  long numel, offset;        /* offset in elements into the params/master/grads arenas */
  int decay;
  int frozen;                /* trailing word `frozen`: no gradient op, never changes (decay 0) */
  char init[16];             /* normal | zeros | ones | fill (= std) | sinusoidal (docs/ir_decoder.md) */
  double std;
  int ndim; long dims[4];
} Param;

typedef struct { char name[128]; DType dt; long numel; long gpu_off; long cpu_off; } Buffer;
typedef struct { char name[16]; DType dt; long numel; } Input; /* numel per micro-step */
typedef struct { char key[32]; double val; } KV;

typedef struct {
  char path[1024];           /* the plan file */
  char dir[1024];            /* its directory (out/) */
  char name[64];
  char hash[80];
  int ndim; KV dim[48];      /* B T D V Vp L H accum N flops_per_token ... */
  int ntrain; KV train[48];  /* lr min_lr warmup_steps steps weight_decay ... */
  int nparam; Param *params;
  long param_elems;
  long n_decay;              /* elements of the arena that get weight decay */
  int nbuf; Buffer *bufs;
  long act_bytes, act_cpu_elems;
  int ninput; Input inputs[MF_MAX_INPUTS];
  int nop; Op *ops;
  long n_partials;           /* size of the `partials` buffer: the largest attr G of any op (≥ 1) */
} Plan;

/* Parse a plan file. On failure returns -1 and writes "FILE:LINE: what is wrong" into err. */
int plan_load(const char *path, Plan *p, char *err, size_t errlen);
void plan_free(Plan *p);

/* Lookups. The *_req variants exit with a message naming the op when the item is absent. */
const Ref *op_ref(const Op *op, const char *role);          /* NULL if absent */
const Ref *op_ref_req(const Plan *p, const Op *op, const char *role);
int op_has_attr(const Op *op, const char *key);
double op_attr(const Plan *p, const Op *op, const char *key);/* exits if absent */
long plan_dim(const Plan *p, const char *key);               /* exits if absent */
long plan_dim_opt(const Plan *p, const char *key, long dflt);
double plan_train(const Plan *p, const char *key, double dflt);
int plan_input(const Plan *p, const char *name);             /* index or -1 */
int plan_param(const Plan *p, const char *name);             /* index or -1 */
size_t dtype_size(DType dt);
const char *dtype_name(DType dt);
/* "act:3" / "param:5" / "tokens" ... : the ref as written in the plan, for messages. */
void ref_str(const Plan *p, const Ref *r, char *buf, size_t n);
#endif

/* cpu.c — the CPU reference backend (backend.h): fp32 host arenas laid out exactly as the plan
 * says (activation buffers share memory where the memory plan makes them share), and one
 * dispatch per op kind onto the reference math in cpu_ops.c. Every ref is bounds-checked
 * against the extent the op will touch, so a wrong plan fails loudly instead of corrupting. */
#include "backend.h"
#include "cpu_ops.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  Backend b;
  const Plan *p;
  long accum;                /* micro-steps per optimizer step */
  float *master;             /* = params on the CPU */
  float *grads, *m, *v, *acts, *partials;
  int32_t *in[MF_MAX_INPUTS]; /* inputs, accum × numel each */
  float scal[8], loss;
} Cpu;

#define OPFMT "%s:%d: op %d (%s, %s)"
#define OPARGS(c, op) (c)->p->path, (op)->line, (op)->idx, (op)->kind, (op)->comment

/* The storage behind a float ref, with its element count. Inputs are int32 and go via iref. */
static float *ref_base(Cpu *c, const Ref *r) {
  const Plan *p = c->p;
  switch (r->kind) {
  case REF_ACT: return c->acts + p->bufs[r->idx].cpu_off;
  case REF_PARAM: return c->master + p->params[r->idx].offset;
  case REF_GRAD: return c->grads + p->params[r->idx].offset;
  case REF_PARAMS: case REF_MASTER: return c->master;
  case REF_GRADS: return c->grads;
  case REF_ADAM_M: return c->m;
  case REF_ADAM_V: return c->v;
  case REF_SCAL: return c->scal;
  case REF_LOSS: return &c->loss;
  case REF_PARTIALS: return c->partials;
  case REF_INPUT: return NULL;
  }
  return NULL;
}

static void check_micro(Cpu *c, int micro) {
  if (micro < 0 || micro >= c->accum) fatal("micro-step %d out of range (accum %ld)", micro, c->accum);
}

/* Float ref of role `role`, which must hold at least `need` elements. */
static float *F(Cpu *c, const Op *op, const char *role, long need) {
  const Ref *r = op_ref_req(c->p, op, role);
  if (r->kind == REF_INPUT) fatal(OPFMT ": ref '%s' is an int32 input, expected a float buffer", OPARGS(c, op), role);
  long have = ref_numel(c->p, r);
  if (have < need) {
    char s[64];
    ref_str(c->p, r, s, sizeof s);
    fatal(OPFMT ": ref %s=%s has %ld elements, the op needs %ld", OPARGS(c, op), role, s, have, need);
  }
  return ref_base(c, r);
}

/* Int32 input ref (tokens/targets) of micro-step `micro`, at least `need` elements. */
static const int32_t *I(Cpu *c, const Op *op, const char *role, long need, int micro) {
  const Ref *r = op_ref_req(c->p, op, role);
  if (r->kind != REF_INPUT) fatal(OPFMT ": ref '%s' must be an input (tokens/targets)", OPARGS(c, op), role);
  long have = c->p->inputs[r->idx].numel;
  if (have < need) fatal(OPFMT ": input %s has %ld elements, the op needs %ld", OPARGS(c, op), role, have, need);
  check_micro(c, micro);
  return c->in[r->idx] + (long)micro * have;
}

static long A(Cpu *c, const Op *op, const char *key) {
  double v = op_attr(c->p, op, key);
  if (v != floor(v) || v < 0 || v > 1e15) fatal(OPFMT ": attribute %s=%g must be a non-negative integer", OPARGS(c, op), key, v);
  return (long)v;
}
static float Af(Cpu *c, const Op *op, const char *key) { return (float)op_attr(c->p, op, key); }

/* ---- one function per op kind ---- */

static void k_matmul(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long M = A(c, op, "M"), N = A(c, op, "N"), K = A(c, op, "K"), ta = A(c, op, "ta"), tb = A(c, op, "tb");
  long epi = A(c, op, "epi");
  float beta = Af(c, op, "beta");
  if (epi > 3) fatal(OPFMT ": unknown epilogue %ld (expected 0..3)", OPARGS(c, op), epi);
  if (epi == 3 && beta != 0) fatal(OPFMT ": epilogue 3 (dgelu) requires beta 0", OPARGS(c, op));
  if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff) fatal(OPFMT ": matmul too large for BLAS", OPARGS(c, op));
  const float *a = F(c, op, "a", M * K), *b = F(c, op, "b", K * N);
  float *cc = F(c, op, "c", M * N);
  const float *bias = (epi == 1 || epi == 2) ? F(c, op, "bias", N) : NULL;
  float *aux = (epi == 2 || epi == 3) ? F(c, op, "aux", M * N) : NULL;
  cpu_matmul((int)M, (int)N, (int)K, (int)ta, (int)tb, beta, (int)epi, a, b, cc, bias, aux);
}

static void k_embed(Cpu *c, const Op *op, int micro) {
  long N = A(c, op, "N"), T = A(c, op, "T"), D = A(c, op, "D");
  const int32_t *tok = I(c, op, "tokens", N, micro);
  const Ref *wr = op_ref_req(c->p, op, "wte");
  long rows = ref_numel(c->p, wr) / (D ? D : 1);
  for (long i = 0; i < N; i++)
    if (tok[i] < 0 || tok[i] >= rows)
      fatal(OPFMT ": token %d at position %ld (micro-step %d) is outside the embedding table (%ld rows)",
            OPARGS(c, op), tok[i], i, micro, rows);
  if (T <= 0) fatal(OPFMT ": T must be positive", OPARGS(c, op));
  cpu_embed(tok, F(c, op, "wte", D), F(c, op, "wpe", (N < T ? N : T) * D), F(c, op, "out", N * D), N, T, D);
}

static void k_layernorm(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_layernorm(F(c, op, "x", N * C), F(c, op, "w", C), F(c, op, "b", C), F(c, op, "out", N * C),
                F(c, op, "mean", N), F(c, op, "rstd", N), N, C, Af(c, op, "eps"));
}

static void k_add_layernorm(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_add_layernorm(F(c, op, "a", N * C), F(c, op, "b", N * C), F(c, op, "w", C), F(c, op, "bias", C),
                    F(c, op, "sum", N * C), F(c, op, "out", N * C), F(c, op, "mean", N), F(c, op, "rstd", N), N,
                    C, Af(c, op, "eps"));
}

static void k_add(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_add(F(c, op, "a", n), F(c, op, "b", n), F(c, op, "out", n), n);
}

static void k_gelu(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_gelu(F(c, op, "x", n), F(c, op, "out", n), n);
}

static void attn_dims(Cpu *c, const Op *op, long *B, long *T, long *H, long *d) {
  *B = A(c, op, "B"); *T = A(c, op, "T"); *H = A(c, op, "H"); *d = A(c, op, "d");
  if (*d == 0) fatal(OPFMT ": head dim d must be positive", OPARGS(c, op));
}

static void k_attention(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B, T, H, d;
  attn_dims(c, op, &B, &T, &H, &d);
  long N = B * T, D = H * d;
  cpu_attention(F(c, op, "qkv", N * 3 * D), F(c, op, "out", N * D), F(c, op, "lse", B * H * T), B, T, H, d);
}

static const int32_t *targets_checked(Cpu *c, const Op *op, long N, long V, int micro) {
  const int32_t *t = I(c, op, "targets", N, micro);
  for (long i = 0; i < N; i++)
    if (t[i] >= V) fatal(OPFMT ": target %d at position %ld (micro-step %d) is not below V=%ld", OPARGS(c, op), t[i], i, micro, V);
  return t;
}

static void k_xent(Cpu *c, const Op *op, int micro) {
  long N = A(c, op, "N"), V = A(c, op, "V"), Vp = A(c, op, "Vp"), grad = A(c, op, "grad");
  if (V > Vp || V == 0) fatal(OPFMT ": need 0 < V <= Vp", OPARGS(c, op));
  const int32_t *t = targets_checked(c, op, N, V, micro);
  cpu_xent(F(c, op, "logits", N * Vp), t, F(c, op, "losses", N), N, V, Vp, Af(c, op, "scale"), grad != 0);
}

static void k_loss_sum(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N");
  cpu_loss_sum(F(c, op, "losses", N), F(c, op, "loss", 1), N, Af(c, op, "scale"));
}

static void k_gelu_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_gelu_bwd(F(c, op, "x", n), F(c, op, "dout", n), F(c, op, "dx", n), n, A(c, op, "acc") != 0);
}

static void k_layernorm_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_layernorm_bwd(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "w", C), F(c, op, "mean", N),
                    F(c, op, "rstd", N), F(c, op, "dx", N * C), N, C, A(c, op, "acc") != 0);
}

static void k_layernorm_bwd_params(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_layernorm_bwd_params(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "mean", N),
                           F(c, op, "rstd", N), F(c, op, "dw", C), F(c, op, "db", C), N, C);
}

static void k_bias_grad(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_bias_grad(F(c, op, "dout", N * C), F(c, op, "db", C), N, C);
}

static void k_attention_bwd_pre(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B, T, H, d;
  attn_dims(c, op, &B, &T, &H, &d);
  long N = B * T, D = H * d;
  cpu_attention_bwd_pre(F(c, op, "out", N * D), F(c, op, "dout", N * D), F(c, op, "delta", B * H * T), B, T, H, d);
}

static void k_attention_bwd_dkdv(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B, T, H, d;
  attn_dims(c, op, &B, &T, &H, &d);
  long N = B * T, D = H * d;
  cpu_attention_bwd_dkdv(F(c, op, "qkv", N * 3 * D), F(c, op, "dout", N * D), F(c, op, "lse", B * H * T),
                         F(c, op, "delta", B * H * T), F(c, op, "dqkv", N * 3 * D), B, T, H, d);
}

static void k_attention_bwd_dq(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B, T, H, d;
  attn_dims(c, op, &B, &T, &H, &d);
  long N = B * T, D = H * d;
  cpu_attention_bwd_dq(F(c, op, "qkv", N * 3 * D), F(c, op, "dout", N * D), F(c, op, "lse", B * H * T),
                       F(c, op, "delta", B * H * T), F(c, op, "dqkv", N * 3 * D), B, T, H, d);
}

static void k_embed_bwd_tok(Cpu *c, const Op *op, int micro) {
  long N = A(c, op, "N"), D = A(c, op, "D");
  const int32_t *tok = I(c, op, "tokens", N, micro); /* tokidx is for the GPU; ignored here */
  const Ref *wr = op_ref_req(c->p, op, "dwte");
  long rows = ref_numel(c->p, wr) / (D ? D : 1);
  for (long i = 0; i < N; i++)
    if (tok[i] < 0 || tok[i] >= rows)
      fatal(OPFMT ": token %d at position %ld is outside the embedding table (%ld rows)", OPARGS(c, op), tok[i], i, rows);
  cpu_embed_bwd_tok(tok, F(c, op, "dout", N * D), F(c, op, "dwte", D), N, D);
}

static void k_embed_bwd_pos(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), T = A(c, op, "T"), D = A(c, op, "D");
  if (T <= 0) fatal(OPFMT ": T must be positive", OPARGS(c, op));
  cpu_embed_bwd_pos(F(c, op, "dout", N * D), F(c, op, "dwpe", (N < T ? N : T) * D), N, T, D);
}

static void k_xent_bwd(Cpu *c, const Op *op, int micro) {
  long N = A(c, op, "N"), V = A(c, op, "V"), Vp = A(c, op, "Vp");
  if (V > Vp || V == 0) fatal(OPFMT ": need 0 < V <= Vp", OPARGS(c, op));
  const int32_t *t = targets_checked(c, op, N, V, micro);
  cpu_xent_bwd(F(c, op, "logits", N * Vp), t, F(c, op, "dlogits", N * Vp), N, V, Vp, Af(c, op, "scale"));
}

/* The optimizer's range [lo, hi) of the arena: the `range` ref (the optrange input, docs/ir.md:
 * 64-bit lo and hi, each as two int32 words, low then high), clamped to [0, n) as the GPU kernels
 * do; the whole arena when the op has no range ref. */
static long opt_word(const int32_t *r, int k) {
  return (long)(((uint64_t)(uint32_t)r[2 * k + 1] << 32) | (uint32_t)r[2 * k]);
}
static void opt_range(Cpu *c, const Op *op, long n, long *lo, long *hi) {
  *lo = 0;
  *hi = n;
  if (!op_ref(op, "range")) return;
  const int32_t *r = I(c, op, "range", 4, 0);
  long a = opt_word(r, 0), b = opt_word(r, 1);
  if (a > *lo) *lo = a;
  if (b < *hi) *hi = b;
  if (*hi < *lo) *hi = *lo;
}

static void k_sumsq(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n"), G = A(c, op, "G"), lo, hi;
  if (G == 0) fatal(OPFMT ": G must be positive", OPARGS(c, op));
  opt_range(c, op, n, &lo, &hi);
  cpu_sumsq(F(c, op, "grads", n), F(c, op, "partials", G), lo, hi, G);
}

static void k_adamw(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n"), nd = A(c, op, "n_decay"), G = A(c, op, "G"), lo, hi;
  float *master = F(c, op, "master", n);
  /* params is the master copy on the CPU: check the ref exists and is big enough, nothing to copy */
  if (F(c, op, "params", n) != master)
    fatal(OPFMT ": ref params must be the params arena", OPARGS(c, op));
  opt_range(c, op, n, &lo, &hi);
  cpu_adamw(master, F(c, op, "grads", n), F(c, op, "m", n), F(c, op, "v", n), F(c, op, "scal", 3),
            F(c, op, "partials", G), lo, hi, nd, G, Af(c, op, "wd"), Af(c, op, "beta1"), Af(c, op, "beta2"),
            Af(c, op, "eps"), Af(c, op, "clip"));
}

/* The decode position: a one-element int32 input, checked against the context length. */
static int dec_pos(Cpu *c, const Op *op, long T) {
  int pos = I(c, op, "pos", 1, 0)[0];
  if (pos < 0 || pos >= T) fatal(OPFMT ": decode position %d outside the context [0, %ld)", OPARGS(c, op), pos, T);
  return pos;
}

static void k_embed_pos(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), T = A(c, op, "T"), D = A(c, op, "D");
  const int32_t *tok = I(c, op, "tokens", N, 0);
  long rows = ref_numel(c->p, op_ref_req(c->p, op, "wte")) / (D ? D : 1);
  for (long i = 0; i < N; i++)
    if (tok[i] < 0 || tok[i] >= rows)
      fatal(OPFMT ": token %d is outside the embedding table (%ld rows)", OPARGS(c, op), tok[i], rows);
  cpu_embed_pos(tok, dec_pos(c, op, T), F(c, op, "wte", D), F(c, op, "wpe", T * D), F(c, op, "out", N * D), N, D);
}

static void k_attention_decode(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B, T, H, d;
  attn_dims(c, op, &B, &T, &H, &d);
  long D = H * d;
  cpu_attention_decode(F(c, op, "qkv", B * 3 * D), dec_pos(c, op, T), F(c, op, "kcache", B * T * D),
                       F(c, op, "vcache", B * T * D), F(c, op, "out", B * D), B, T, H, d);
}

/* ---- the model vocabulary (docs/ir_decoder.md) ---- */

static void k_rmsnorm(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_rmsnorm(F(c, op, "x", N * C), F(c, op, "w", C), F(c, op, "out", N * C), F(c, op, "rstd", N), N, C,
              Af(c, op, "eps"));
}

static void k_add_rmsnorm(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_add_rmsnorm(F(c, op, "a", N * C), F(c, op, "b", N * C), F(c, op, "w", C), F(c, op, "sum", N * C),
                  F(c, op, "out", N * C), F(c, op, "rstd", N), N, C, Af(c, op, "eps"));
}

static void k_rmsnorm_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_rmsnorm_bwd(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "w", C), F(c, op, "rstd", N),
                  F(c, op, "dx", N * C), N, C, A(c, op, "acc") != 0);
}

static void k_rmsnorm_bwd_params(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_rmsnorm_bwd_params(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "rstd", N), F(c, op, "dw", C), N, C);
}

static void k_dyt(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_dyt(F(c, op, "x", N * C), F(c, op, "alpha", 1), F(c, op, "w", C), F(c, op, "b", C), F(c, op, "out", N * C), N, C);
}

static void k_add_dyt(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_add_dyt(F(c, op, "a", N * C), F(c, op, "b", N * C), F(c, op, "alpha", 1), F(c, op, "w", C),
              F(c, op, "bias", C), F(c, op, "sum", N * C), F(c, op, "out", N * C), N, C);
}

static void k_dyt_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_dyt_bwd(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "alpha", 1), F(c, op, "w", C),
              F(c, op, "dx", N * C), N, C, A(c, op, "acc") != 0);
}

static void k_dyt_bwd_params(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), C = A(c, op, "C");
  cpu_dyt_bwd_params(F(c, op, "dout", N * C), F(c, op, "x", N * C), F(c, op, "alpha", 1), F(c, op, "dalpha", 1),
                     F(c, op, "w", C), F(c, op, "dw", C), F(c, op, "db", C), N, C);
}

static void k_relu(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_relu(F(c, op, "x", n), F(c, op, "out", n), n);
}

static void k_relu_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_relu_bwd(F(c, op, "x", n), F(c, op, "dout", n), F(c, op, "dx", n), n, A(c, op, "acc") != 0);
}

static void k_silu(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_silu(F(c, op, "x", n), F(c, op, "out", n), n);
}

static void k_silu_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long n = A(c, op, "n");
  cpu_silu_bwd(F(c, op, "x", n), F(c, op, "dout", n), F(c, op, "dx", n), n, A(c, op, "acc") != 0);
}

static int glu_act_attr(Cpu *c, const Op *op) {
  long act = A(c, op, "act");
  if (act > 1) fatal(OPFMT ": glu act=%ld (expected 0 gelu or 1 silu)", OPARGS(c, op), act);
  return (int)act;
}

static void k_glu(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), Fw = A(c, op, "F");
  int act = glu_act_attr(c, op);
  cpu_glu(F(c, op, "x", N * 2 * Fw), F(c, op, "out", N * Fw), N, Fw, act);
}

static void k_glu_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N = A(c, op, "N"), Fw = A(c, op, "F");
  int act = glu_act_attr(c, op);
  cpu_glu_bwd(F(c, op, "x", N * 2 * Fw), F(c, op, "dout", N * Fw), F(c, op, "dx", N * 2 * Fw), N, Fw, act);
}

static float drop_p(Cpu *c, const Op *op, const char *key) {
  float p = Af(c, op, key);
  if (!(p >= 0.0f && p < 1.0f)) fatal(OPFMT ": %s=%g must lie in [0, 1)", OPARGS(c, op), key, (double)p);
  return p;
}

static void k_dropout(Cpu *c, const Op *op, int micro) {
  long n = A(c, op, "n");
  cpu_dropout(F(c, op, "x", n), I(c, op, "dropctr", 2, micro), F(c, op, "out", n), n, drop_p(c, op, "p"),
              A(c, op, "stream"));
}

static void k_dropout_bwd(Cpu *c, const Op *op, int micro) {
  long n = A(c, op, "n");
  cpu_dropout_bwd(F(c, op, "dout", n), I(c, op, "dropctr", 2, micro), F(c, op, "dx", n), n, drop_p(c, op, "p"),
                  A(c, op, "stream"), A(c, op, "acc") != 0);
}

static void k_embed_tok(Cpu *c, const Op *op, int micro) {
  long N = A(c, op, "N"), D = A(c, op, "D");
  const int32_t *tok = I(c, op, "tokens", N, micro);
  long rows = ref_numel(c->p, op_ref_req(c->p, op, "wte")) / (D ? D : 1);
  for (long i = 0; i < N; i++)
    if (tok[i] < 0 || tok[i] >= rows)
      fatal(OPFMT ": token %d at position %ld (micro-step %d) is outside the embedding table (%ld rows)",
            OPARGS(c, op), tok[i], i, micro, rows);
  cpu_embed_tok(tok, F(c, op, "wte", D), F(c, op, "out", N * D), N, D);
}

/* mla_k's attrs: N H dn dr, and ROPE (0, 1 half-split, 2 adjacent) T rope_base for the rotation of krope */
typedef struct { long N, H, dn, dr, rope, T; float base; } MlaK;
static MlaK mla_k_cfg(Cpu *c, const Op *op) {
  MlaK m = {A(c, op, "N"), A(c, op, "H"), A(c, op, "dn"), A(c, op, "dr"), A(c, op, "ROPE"), A(c, op, "T"), 10000.0f};
  if (m.rope < 0 || m.rope > 2) fatal(OPFMT ": ROPE=%ld (expected 0, 1 half-split or 2 adjacent)", OPARGS(c, op), m.rope);
  if (m.rope && (m.T < 1 || m.N % m.T || m.dr % 2))
    fatal(OPFMT ": with ROPE, T=%ld must divide N=%ld and dr=%ld be even", OPARGS(c, op), m.T, m.N, m.dr);
  if (m.rope) m.base = Af(c, op, "rope_base");
  return m;
}

static void k_mla_k(Cpu *c, const Op *op, int micro) {
  (void)micro;
  MlaK m = mla_k_cfg(c, op);
  cpu_mla_k(F(c, op, "knope", m.N * m.H * m.dn), F(c, op, "krope", m.N * m.dr), F(c, op, "k", m.N * m.H * (m.dn + m.dr)),
            m.N, m.H, m.dn, m.dr, (int)m.rope, m.T, m.base);
}

static void k_mla_k_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  MlaK m = mla_k_cfg(c, op);
  cpu_mla_k_bwd(F(c, op, "dk", m.N * m.H * (m.dn + m.dr)), F(c, op, "dknope", m.N * m.H * m.dn),
                F(c, op, "dkrope", m.N * m.dr), m.N, m.H, m.dn, m.dr, (int)m.rope, m.T, m.base);
}

/* The attrs of attn / attn_bwd_dkdv / attn_bwd_dq, checked like attention_gen.lua checks them
 * (minus the GPU's head-dim menu: the CPU takes any width). */
static CpuAttn attn_cfg(Cpu *c, const Op *op, int micro) {
  CpuAttn a;
  memset(&a, 0, sizeof a);
  a.B = A(c, op, "B"); a.T = A(c, op, "T"); a.H = A(c, op, "H"); a.HKV = A(c, op, "HKV");
  a.DQK = A(c, op, "DQK"); a.DV = A(c, op, "DV");
  a.LDQ = A(c, op, "LDQ"); a.LDK = A(c, op, "LDK"); a.LDV = A(c, op, "LDV");
  a.QOFF = A(c, op, "QOFF"); a.KOFF = A(c, op, "KOFF"); a.VOFF = A(c, op, "VOFF");
  a.QHS = A(c, op, "QHS"); a.KHS = A(c, op, "KHS"); a.VHS = A(c, op, "VHS");
  a.WINDOW = A(c, op, "WINDOW"); a.SINK = A(c, op, "SINK"); a.ALIBI = A(c, op, "ALIBI");
  a.ROPE = A(c, op, "ROPE"); a.ROPE_DIM = A(c, op, "ROPE_DIM");
  a.KROT = op_has_attr(op, "KROT") ? A(c, op, "KROT") : 0;   /* attn_decode has none: it rotates what it appends */
  a.scale = Af(c, op, "scale");
  a.rope_base = a.ROPE ? Af(c, op, "rope_base") : 10000.0f;
  a.dropout = op_has_attr(op, "dropout") ? drop_p(c, op, "dropout") : 0.0f;
  a.stream = op_has_attr(op, "stream") ? A(c, op, "stream") : 0;
  if (!a.B || !a.T || !a.H || !a.HKV || !a.DQK || !a.DV) fatal(OPFMT ": B, T, H, HKV, DQK, DV must be positive", OPARGS(c, op));
  if (a.H % a.HKV) fatal(OPFMT ": HKV=%ld does not divide H=%ld", OPARGS(c, op), a.HKV, a.H);
  if (a.QOFF + (a.H - 1) * a.QHS + a.DQK > a.LDQ) fatal(OPFMT ": q heads do not fit in a row of LDQ=%ld", OPARGS(c, op), a.LDQ);
  if (a.KOFF + (a.HKV - 1) * a.KHS + a.DQK > a.LDK) fatal(OPFMT ": k heads do not fit in a row of LDK=%ld", OPARGS(c, op), a.LDK);
  if (a.VOFF + (a.HKV - 1) * a.VHS + a.DV > a.LDV) fatal(OPFMT ": v heads do not fit in a row of LDV=%ld", OPARGS(c, op), a.LDV);
  if (a.ALIBI > 1) fatal(OPFMT ": ALIBI=%ld (expected 0 or 1)", OPARGS(c, op), a.ALIBI);
  if (a.ROPE > 2) fatal(OPFMT ": ROPE=%ld (expected 0, 1 half-split or 2 adjacent)", OPARGS(c, op), a.ROPE);
  if (a.KROT != 0 && (a.KROT != 1 || !a.ROPE))
    fatal(OPFMT ": KROT=%ld (expected 0, or 1 with ROPE != 0: k arrives rotated)", OPARGS(c, op), a.KROT);
  if (a.ROPE && (a.ROPE_DIM < 2 || a.ROPE_DIM % 2 || a.ROPE_DIM > a.DQK))
    fatal(OPFMT ": ROPE_DIM=%ld must be even and in [2, DQK=%ld]", OPARGS(c, op), a.ROPE_DIM, a.DQK);
  if (a.dropout > 0) a.ctr = I(c, op, "dropctr", 2, micro);
  /* ParScale prefixes (docs/ir_parscale.md); absent attrs: none */
  a.NPRE = op_has_attr(op, "NPRE") ? A(c, op, "NPRE") : 0;
  a.NREP = op_has_attr(op, "NREP") ? A(c, op, "NREP") : 1;
  if (a.NREP < 1 || a.B % a.NREP) fatal(OPFMT ": NREP=%ld must be positive and divide B=%ld", OPARGS(c, op), a.NREP, a.B);
  if (a.NPRE > 0) {
    if (a.dropout > 0) fatal(OPFMT ": attention dropout with prefixes (NPRE=%ld) is not defined", OPARGS(c, op), a.NPRE);
    a.pk = F(c, op, "pk", a.NREP * a.HKV * a.NPRE * a.DQK);
    a.pv = F(c, op, "pv", a.NREP * a.HKV * a.NPRE * a.DV);
  }
  return a;
}

static void k_attn(Cpu *c, const Op *op, int micro) {
  CpuAttn a = attn_cfg(c, op, micro);
  long N = a.B * a.T;
  /* with RoPE the rotated copies the backward ops read as q, k (gen/graph.lua); with KROT k is already k̃ */
  int rot = a.ROPE != 0, krot = rot && !a.KROT;
  if (rot && !op_ref(op, "qr")) fatal(OPFMT ": RoPE needs the output qr", OPARGS(c, op));
  if (krot != (op_ref(op, "kr") != NULL))
    fatal(OPFMT ": the output kr belongs exactly to RoPE with KROT=0", OPARGS(c, op));
  cpu_attn(&a, F(c, op, "q", N * a.LDQ), F(c, op, "k", N * a.LDK), F(c, op, "v", N * a.LDV),
           F(c, op, "out", N * a.H * a.DV), F(c, op, "lse", a.B * a.H * a.T), rot ? F(c, op, "qr", N * a.LDQ) : NULL,
           krot ? F(c, op, "kr", N * a.LDK) : NULL);
}

static void k_attn_bwd_pre(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long B = A(c, op, "B"), T = A(c, op, "T"), H = A(c, op, "H"), DV = A(c, op, "DV"), N = B * T;
  cpu_attn_bwd_pre(F(c, op, "out", N * H * DV), F(c, op, "dout", N * H * DV), F(c, op, "delta", B * H * T), B, T, H, DV);
}

static void k_attn_bwd_dkdv(Cpu *c, const Op *op, int micro) {
  CpuAttn a = attn_cfg(c, op, micro);
  long N = a.B * a.T, S = a.B * a.H * a.T;
  cpu_attn_bwd_dkdv(&a, F(c, op, "q", N * a.LDQ), F(c, op, "k", N * a.LDK), F(c, op, "v", N * a.LDV),
                    F(c, op, "dout", N * a.H * a.DV), F(c, op, "lse", S), F(c, op, "delta", S),
                    F(c, op, "dk", N * a.LDK), F(c, op, "dv", N * a.LDV),
                    a.NPRE ? F(c, op, "dpk", a.B * a.HKV * a.NPRE * a.DQK) : NULL,
                    a.NPRE ? F(c, op, "dpv", a.B * a.HKV * a.NPRE * a.DV) : NULL);
}

/* ---- ParScale (docs/ir_parscale.md) ---- */

/* N, the replica count P (attr `P`), and a positive width attr */
static void ps_dims(Cpu *c, const Op *op, const char *wkey, long *N, long *W, long *P) {
  *N = A(c, op, "N"); *W = A(c, op, wkey); *P = A(c, op, "P");
  if (*P < 1) fatal(OPFMT ": P must be at least 1", OPARGS(c, op));
}

static void k_ps_replicate(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, C, P;
  ps_dims(c, op, "C", &N, &C, &P);
  cpu_ps_replicate(F(c, op, "x", N * C), F(c, op, "out", P * N * C), N, C, P);
}

static void k_ps_replicate_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, C, P;
  ps_dims(c, op, "C", &N, &C, &P);
  cpu_ps_replicate_bwd(F(c, op, "dout", P * N * C), F(c, op, "dx", N * C), N, C, P, A(c, op, "acc") != 0);
}

static void k_interleave(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, D, P;
  ps_dims(c, op, "D", &N, &D, &P);
  cpu_interleave(F(c, op, "x", P * N * D), F(c, op, "out", N * P * D), N, D, P);
}

static void k_interleave_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, D, P;
  ps_dims(c, op, "D", &N, &D, &P);
  cpu_interleave_bwd(F(c, op, "dout", N * P * D), F(c, op, "dx", P * N * D), N, D, P, A(c, op, "acc") != 0);
}

static void k_prefix_grad_reduce(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long R = A(c, op, "NREP"), Bm = A(c, op, "Bm"), ROW = A(c, op, "ROW");
  cpu_prefix_grad_reduce(F(c, op, "partial", R * Bm * ROW), F(c, op, "grad", R * ROW), R, Bm, ROW);
}

static void cra_dims(Cpu *c, const Op *op, long *N, long *P, long *H, long *d) {
  *N = A(c, op, "N"); *P = A(c, op, "P"); *H = A(c, op, "H"); *d = A(c, op, "d");
  if (*P < 1 || *H < 1 || *d < 1) fatal(OPFMT ": P, H, d must be positive", OPARGS(c, op));
}

static void k_cra(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, P, H, d;
  cra_dims(c, op, &N, &P, &H, &d);
  long R = P * N, W = H * d;
  cpu_cra(F(c, op, "qkv", R * 3 * W), F(c, op, "out", R * W), F(c, op, "lse", R * H), N, P, H, d, Af(c, op, "scale"));
}

static void k_cra_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, P, H, d;
  cra_dims(c, op, &N, &P, &H, &d);
  long R = P * N, W = H * d;
  cpu_cra_bwd(F(c, op, "qkv", R * 3 * W), F(c, op, "dout", R * W), F(c, op, "lse", R * H), F(c, op, "dqkv", R * 3 * W),
              N, P, H, d, Af(c, op, "scale"));
}

static float ps_eps(Cpu *c, const Op *op) {
  float e = Af(c, op, "eps");
  if (!(e >= 0.0f && e < 1.0f)) fatal(OPFMT ": eps=%g must lie in [0, 1)", OPARGS(c, op), (double)e);
  return e;
}

static void k_ps_aggregate(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, D, P;
  ps_dims(c, op, "D", &N, &D, &P);
  cpu_ps_aggregate(F(c, op, "h", P * N * D), F(c, op, "a", N * P), F(c, op, "b2", P), F(c, op, "y", N * D),
                   F(c, op, "w", N * P), N, D, P, ps_eps(c, op));
}

static void k_ps_aggregate_bwd(Cpu *c, const Op *op, int micro) {
  (void)micro;
  long N, D, P;
  ps_dims(c, op, "D", &N, &D, &P);
  cpu_ps_aggregate_bwd(F(c, op, "dy", N * D), F(c, op, "h", P * N * D), F(c, op, "w", N * P), F(c, op, "dh", P * N * D),
                       F(c, op, "da", N * P), F(c, op, "db2", P), N, D, P, ps_eps(c, op), A(c, op, "acc") != 0);
}

static void k_attn_bwd_dq(Cpu *c, const Op *op, int micro) {
  CpuAttn a = attn_cfg(c, op, micro);
  long N = a.B * a.T, S = a.B * a.H * a.T;
  cpu_attn_bwd_dq(&a, F(c, op, "q", N * a.LDQ), F(c, op, "k", N * a.LDK), F(c, op, "v", N * a.LDV),
                  F(c, op, "dout", N * a.H * a.DV), F(c, op, "lse", S), F(c, op, "delta", S), F(c, op, "dq", N * a.LDQ));
}

/* attn_decode: the attn attrs with B = sequences, T = the cache length; q, k, v one row each */
static void k_attn_decode(Cpu *c, const Op *op, int micro) {
  CpuAttn a = attn_cfg(c, op, micro);
  if (a.dropout > 0) fatal(OPFMT ": attn_decode takes no dropout (got %g)", OPARGS(c, op), (double)a.dropout);
  if (a.KROT) fatal(OPFMT ": attn_decode rotates the k it appends: KROT must be 0", OPARGS(c, op));
  cpu_attn_decode(&a, F(c, op, "q", a.B * a.LDQ), F(c, op, "k", a.B * a.LDK), F(c, op, "v", a.B * a.LDV),
                  dec_pos(c, op, a.T), F(c, op, "kcache", a.B * a.T * a.HKV * a.DQK),
                  F(c, op, "vcache", a.B * a.T * a.HKV * a.DV), F(c, op, "out", a.B * a.H * a.DV));
}

static const struct { const char *kind; void (*fn)(Cpu *, const Op *, int); } KINDS[] = {
  {"rmsnorm", k_rmsnorm}, {"add_rmsnorm", k_add_rmsnorm}, {"rmsnorm_bwd", k_rmsnorm_bwd},
  {"rmsnorm_bwd_params", k_rmsnorm_bwd_params}, {"dyt", k_dyt}, {"add_dyt", k_add_dyt}, {"dyt_bwd", k_dyt_bwd},
  {"dyt_bwd_params", k_dyt_bwd_params}, {"relu", k_relu}, {"relu_bwd", k_relu_bwd}, {"silu", k_silu},
  {"silu_bwd", k_silu_bwd}, {"glu", k_glu}, {"glu_bwd", k_glu_bwd}, {"dropout", k_dropout},
  {"dropout_bwd", k_dropout_bwd}, {"embed_tok", k_embed_tok}, {"mla_k", k_mla_k}, {"mla_k_bwd", k_mla_k_bwd},
  {"attn", k_attn}, {"attn_bwd_pre", k_attn_bwd_pre}, {"attn_bwd_dkdv", k_attn_bwd_dkdv},
  {"attn_bwd_dq", k_attn_bwd_dq}, {"ps_replicate", k_ps_replicate}, {"ps_replicate_bwd", k_ps_replicate_bwd},
  {"interleave", k_interleave}, {"interleave_bwd", k_interleave_bwd}, {"prefix_grad_reduce", k_prefix_grad_reduce},
  {"cra", k_cra}, {"cra_bwd", k_cra_bwd}, {"ps_aggregate", k_ps_aggregate}, {"ps_aggregate_bwd", k_ps_aggregate_bwd},
  {"embed_pos", k_embed_pos}, {"attention_decode", k_attention_decode}, {"attn_decode", k_attn_decode},
  {"matmul", k_matmul}, {"embed", k_embed}, {"layernorm", k_layernorm}, {"add_layernorm", k_add_layernorm},
  {"add", k_add}, {"gelu", k_gelu}, {"attention", k_attention}, {"xent", k_xent}, {"loss_sum", k_loss_sum},
  {"gelu_bwd", k_gelu_bwd}, {"layernorm_bwd", k_layernorm_bwd}, {"layernorm_bwd_params", k_layernorm_bwd_params},
  {"bias_grad", k_bias_grad}, {"attention_bwd_pre", k_attention_bwd_pre},
  {"attention_bwd_dkdv", k_attention_bwd_dkdv}, {"attention_bwd_dq", k_attention_bwd_dq},
  {"embed_bwd_tok", k_embed_bwd_tok}, {"embed_bwd_pos", k_embed_bwd_pos}, {"xent_bwd", k_xent_bwd},
  {"sumsq", k_sumsq}, {"adamw", k_adamw},
};

static void cpu_run_op(Backend *be, const Op *op, int micro) {
  Cpu *c = (Cpu *)be;
  for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
    if (!strcmp(op->kind, KINDS[i].kind)) { KINDS[i].fn(c, op, micro); return; }
  fatal(OPFMT ": unknown op kind '%s' for the CPU backend", OPARGS(c, op), op->kind);
}

/* ---- backend interface ---- */

static void cpu_run_decode(Backend *be) {
  Cpu *c = (Cpu *)be;
  for (int i = 0; i < c->p->nop; i++)
    if (c->p->ops[i].phase == PH_DEC) cpu_run_op(be, &c->p->ops[i], 0);
}

static void cpu_destroy(Backend *be) {
  Cpu *c = (Cpu *)be;
  free(c->master); free(c->grads); free(c->m); free(c->v); free(c->acts); free(c->partials);
  for (int i = 0; i < MF_MAX_INPUTS; i++) free(c->in[i]);
  free(c);
}

static size_t arena_bytes(Cpu *c) { return (size_t)c->p->param_elems * sizeof(float); }

static void cpu_set_master(Backend *be, const float *w) { Cpu *c = (Cpu *)be; memcpy(c->master, w, arena_bytes(c)); }
static void cpu_get_master(Backend *be, float *w) { Cpu *c = (Cpu *)be; memcpy(w, c->master, arena_bytes(c)); }
static void cpu_get_grads(Backend *be, float *g) { Cpu *c = (Cpu *)be; memcpy(g, c->grads, arena_bytes(c)); }
static void cpu_set_opt_state(Backend *be, const float *m, const float *v) {
  Cpu *c = (Cpu *)be;
  memcpy(c->m, m, arena_bytes(c));
  memcpy(c->v, v, arena_bytes(c));
}
static void cpu_get_opt_state(Backend *be, float *m, float *v) {
  Cpu *c = (Cpu *)be;
  memcpy(m, c->m, arena_bytes(c));
  memcpy(v, c->v, arena_bytes(c));
}

static void cpu_set_batch(Backend *be, int micro, const int32_t *tokens, const int32_t *targets) {
  Cpu *c = (Cpu *)be;
  check_micro(c, micro);
  const Plan *p = c->p;
  int it = plan_input(p, "tokens"), ig = plan_input(p, "targets"), ix = plan_input(p, "tokidx");
  if (it >= 0) memcpy(c->in[it] + micro * p->inputs[it].numel, tokens, (size_t)p->inputs[it].numel * 4);
  if (ig >= 0) memcpy(c->in[ig] + micro * p->inputs[ig].numel, targets, (size_t)p->inputs[ig].numel * 4);
  /* tokidx is unused by the CPU ops, but kept valid so that `--check` can hand it to the GPU */
  if (ix >= 0 && it >= 0) tokidx_build(tokens, p->inputs[it].numel, c->in[ix] + micro * p->inputs[ix].numel);
}

/* scal[3] = the 0-based step, scal[4] = the seed's low 24 bits (runtime/train.c step_scalars): the
 * dropout counter input of micro-step m is {seed, step·accum + m} (docs/ir_decoder.md "Dropout"). */
static void cpu_set_scalars(Backend *be, const float *scal) {
  Cpu *c = (Cpu *)be;
  memcpy(c->scal, scal, 8 * sizeof(float));
  int id = plan_input(c->p, "dropctr");
  if (id < 0) return;
  long step = lrintf(scal[3]), seed = lrintf(scal[4]);
  for (long m = 0; m < c->accum; m++) {
    c->in[id][2 * m] = (int32_t)seed;
    c->in[id][2 * m + 1] = (int32_t)(step * c->accum + m);
  }
}

static void cpu_zero_grads(Backend *be) {
  Cpu *c = (Cpu *)be;
  memset(c->grads, 0, arena_bytes(c));
  c->loss = 0;
}

static void run_phase(Cpu *c, Phase ph, int micro) {
  for (int i = 0; i < c->p->nop; i++)
    if (c->p->ops[i].phase == ph) cpu_run_op(&c->b, &c->p->ops[i], micro);
}

static void cpu_step(Backend *be) {
  Cpu *c = (Cpu *)be;
  cpu_zero_grads(be);
  for (int k = 0; k < c->accum; k++) {
    run_phase(c, PH_FWD, k);
    run_phase(c, PH_BWD, k);
  }
  run_phase(c, PH_OPT, 0);
}

static void cpu_sync(Backend *be) { (void)be; }

static float cpu_read_loss(Backend *be) { return ((Cpu *)be)->loss; }

static double cpu_read_grad_norm(Backend *be) {
  Cpu *c = (Cpu *)be;
  double s = 0;
  for (long g = 0; g < c->p->n_partials; g++) s += c->partials[g];
  return sqrt(s);
}

static void ref_io(Cpu *c, const Ref *r, int micro, float *f, long n, int write) {
  long have = ref_numel(c->p, r);
  if (n < 0 || n > have) {
    char s[64];
    ref_str(c->p, r, s, sizeof s);
    fatal("%s ref %s: %ld elements requested, it has %ld", write ? "write" : "read", s, n, have);
  }
  if (r->kind == REF_INPUT) {
    check_micro(c, micro);
    int32_t *ip = c->in[r->idx] + (long)micro * have;
    for (long i = 0; i < n; i++) {
      if (write) ip[i] = (int32_t)lrintf(f[i]); else f[i] = (float)ip[i];
    }
    return;
  }
  float *fp = ref_base(c, r);
  if (write) memmove(fp, f, (size_t)n * sizeof *f); else memmove(f, fp, (size_t)n * sizeof *f);
}

static void cpu_read_ref(Backend *be, const Ref *r, int micro, float *out, long n) { ref_io((Cpu *)be, r, micro, out, n, 0); }
static void cpu_write_ref(Backend *be, const Ref *r, int micro, const float *in, long n) {
  ref_io((Cpu *)be, r, micro, (float *)in, n, 1);
}

Backend *cpu_backend_new(const Plan *p) {
  Cpu *c = xcalloc(1, sizeof *c);
  c->p = p;
  c->accum = plan_dim_opt(p, "accum", 1);
  if (c->accum < 1) fatal("%s: dim accum must be at least 1", p->path);
  size_t pe = (size_t)p->param_elems;
  c->master = xcalloc(pe, sizeof(float));
  c->grads = xcalloc(pe, sizeof(float));
  c->m = xcalloc(pe, sizeof(float));
  c->v = xcalloc(pe, sizeof(float));
  c->acts = xcalloc((size_t)p->act_cpu_elems, sizeof(float));
  c->partials = xcalloc((size_t)p->n_partials, sizeof(float));
  for (int i = 0; i < p->ninput; i++) c->in[i] = xcalloc((size_t)(p->inputs[i].numel * c->accum), sizeof(int32_t));
  /* the optimizer's range (docs/ir.md "optrange"): the whole arena; the CPU backend never shards */
  int io = plan_input(p, "optrange");
  if (io >= 0) {
    if (p->inputs[io].numel != 4) fatal("%s: input optrange must have 4 elements", p->path);
    uint64_t n = (uint64_t)p->param_elems;
    for (long k = 0; k < c->accum; k++) {
      int32_t *w = c->in[io] + 4 * k;
      w[0] = w[1] = 0;
      w[2] = (int32_t)(uint32_t)n;
      w[3] = (int32_t)(uint32_t)(n >> 32);
    }
  }
  int idc = plan_input(p, "dropctr");
  if (idc >= 0 && p->inputs[idc].numel != 2) fatal("%s: input dropctr must have 2 elements", p->path);
  int ix = plan_input(p, "tokidx"), it = plan_input(p, "tokens");
  if (ix >= 0 && (it < 0 || p->inputs[ix].numel < 2 * p->inputs[it].numel + 2))
    fatal("%s: input tokidx needs 2·N+2 elements (N = tokens per micro-step)", p->path);
  Backend *b = &c->b;
  b->name = "cpu";
  b->plan = p;
  b->peak_flops = 0;
  b->destroy = cpu_destroy;
  b->set_master = cpu_set_master;
  b->get_master = cpu_get_master;
  b->get_grads = cpu_get_grads;
  b->set_opt_state = cpu_set_opt_state;
  b->get_opt_state = cpu_get_opt_state;
  b->set_batch = cpu_set_batch;
  b->set_scalars = cpu_set_scalars;
  b->step = cpu_step;
  b->zero_grads = cpu_zero_grads;
  b->run_op = cpu_run_op;
  b->run_decode = cpu_run_decode;
  b->sync = cpu_sync;
  b->read_loss = cpu_read_loss;
  b->read_grad_norm = cpu_read_grad_norm;
  b->read_ref = cpu_read_ref;
  b->write_ref = cpu_write_ref;
  return b;
}

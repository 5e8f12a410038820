/* evaluate.c — see evaluate.h. */
#define _POSIX_C_SOURCE 200809L
#include "evaluate.h"
#include "shards.h"
#include "util.h"
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int evalset_load(EvalSet *e, const char *glob, int B, int T, int vocab, int batches, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  Loader *l = loader_open(glob, B, T, vocab, 0, 1, EVAL_SEED, err, errlen);
  if (!l) return -1;
  e->BT = (long)B * T;
  e->tok = xmalloc((size_t)(batches * e->BT) * sizeof *e->tok);
  e->tgt = xmalloc((size_t)(batches * e->BT) * sizeof *e->tgt);
  for (int k = 0; k < batches; k++) {
    /* the loader's position reaches epoch 1 once every window has been read: stop, never repeat */
    if (loader_state(l).epoch > 0) break;
    if (loader_next(l, e->tok + k * e->BT, e->tgt + k * e->BT, err, errlen)) {
      loader_close(l);
      evalset_free(e);
      return -1;
    }
    e->n = k + 1;
  }
  loader_close(l);
  return 0;
}

void evalset_free(EvalSet *e) {
  free(e->tok);
  free(e->tgt);
  memset(e, 0, sizeof *e);
}

/* The forward loss_sum op: it adds scale·Σ_i losses[i] over its N rows, so a batch's mean loss is
 * (loss buffer) / (scale·N). */
static const Op *loss_sum_op(const Plan *p, long BT, double *div) {
  const Op *ls = NULL;
  for (int i = 0; i < p->nop && !ls; i++)
    if (p->ops[i].phase == PH_FWD && !strcmp(p->ops[i].kind, "loss_sum")) ls = &p->ops[i];
  if (!ls) fatal("%s: no loss_sum op in the forward pass: cannot evaluate", p->path);
  double scale = op_attr(p, ls, "scale"), N = op_attr(p, ls, "N");
  if (!(scale > 0) || (long)N != BT)
    fatal("%s:%d: loss_sum N=%g scale=%g does not match a batch of %ld tokens", p->path, ls->line, N, scale, BT);
  *div = scale * N;
  return ls;
}

double eval_loss(Backend *b, const EvalSet *e) {
  const Plan *p = b->plan;
  double div, sum = 0;
  loss_sum_op(p, e->BT, &div);
  for (int k = 0; k < e->n; k++) {
    b->zero_grads(b);
    b->set_batch(b, 0, e->tok + k * e->BT, e->tgt + k * e->BT);
    for (int i = 0; i < p->nop; i++)
      if (p->ops[i].phase == PH_FWD) b->run_op(b, &p->ops[i], 0);
    sum += (double)b->read_loss(b) / div;
  }
  return e->n ? sum / e->n : NAN;
}

double forward_logits(Backend *b, const int32_t *tok, const int32_t *tgt, float *logits) {
  const Plan *p = b->plan;
  long N = plan_dim(p, "B") * plan_dim(p, "T"), V = plan_dim(p, "V"), Vp = plan_dim(p, "Vp");
  double div;
  loss_sum_op(p, N, &div);
  b->zero_grads(b);
  b->set_batch(b, 0, tok, tgt);
  int got = 0;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_FWD) continue;
    if (!got && !strcmp(op->kind, "xent")) {
      float *all = xmalloc((size_t)(N * Vp) * sizeof *all);
      b->read_ref(b, op_ref_req(p, op, "logits"), 0, all, N * Vp);
      for (long r = 0; r < N; r++) memcpy(logits + r * V, all + r * Vp, (size_t)V * sizeof *logits);
      free(all);
      got = 1;
    }
    b->run_op(b, op, 0);
  }
  if (!got) fatal("%s: no xent op in the forward pass: no logits to read", p->path);
  return (double)b->read_loss(b) / div;
}

/* Call fn on every token of every shard matching pattern. */
typedef void (*TokFn)(void *ctx, const int32_t *t, size_t n);
static int each_shard(const char *pattern, int vocab, TokFn fn, void *ctx, size_t *total, char *err, size_t errlen) {
  glob_t g;
  int rc = glob(pattern, 0, NULL, &g);
  if (rc || g.gl_pathc == 0) {
    if (!rc) globfree(&g);
    snprintf(err, errlen, "no files match '%s'", pattern);
    return -1;
  }
  *total = 0;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    size_t n;
    int32_t *t = shard_read(g.gl_pathv[i], vocab, &n, err, errlen);
    if (!t) { globfree(&g); return -1; }
    fn(ctx, t, n);
    *total += n;
    free(t);
  }
  globfree(&g);
  return 0;
}

typedef struct { uint64_t *count; long nid; } Uni;

static void count_tokens(void *ctx, const int32_t *t, size_t n) {
  Uni *u = ctx;
  for (size_t i = 0; i < n; i++) {
    if (t[i] >= u->nid) {
      long m = u->nid;
      while (m <= t[i]) m *= 2;
      u->count = xrealloc(u->count, (size_t)m * sizeof *u->count);
      memset(u->count + u->nid, 0, (size_t)(m - u->nid) * sizeof *u->count);
      u->nid = m;
    }
    u->count[t[i]]++;
  }
}

typedef struct { const Uni *u; double denom; long nids; double nll; } UniEval;

static void score_tokens(void *ctx, const int32_t *t, size_t n) {
  UniEval *e = ctx;
  for (size_t i = 0; i < n; i++) {
    double c = t[i] < e->u->nid ? (double)e->u->count[t[i]] : 0.0;
    e->nll -= log((c + 1.0) / e->denom);
  }
}

int unigram_baseline(const char *train_glob, const char *val_glob, int vocab, double *xent, size_t *ntrain, size_t *nval,
                     char *err, size_t errlen) {
  Uni u = {xcalloc(1024, sizeof(uint64_t)), 1024};
  UniEval e = {&u, 0, 0, 0};
  int rc = -1;
  if (each_shard(train_glob, vocab, count_tokens, &u, ntrain, err, errlen)) goto done;
  /* add-one smoothing over the vocabulary (or every id seen, if the shards go beyond it) */
  long ids = vocab;
  for (long i = u.nid - 1; i >= ids; i--)
    if (u.count[i]) { ids = i + 1; break; }
  e.nids = ids;
  e.denom = (double)*ntrain + (double)ids;
  if (each_shard(val_glob, vocab, score_tokens, &e, nval, err, errlen)) goto done;
  if (*nval == 0) { snprintf(err, errlen, "'%s': no validation tokens", val_glob); goto done; }
  *xent = e.nll / (double)*nval;
  rc = 0;
done:
  free(u.count);
  return rc;
}

/* check.c — see check.h. */
#include "check.h"
#include "sample.h"
#include "init.h"
#include "safetensors.h"
#include "train.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double rel_l2(const float *out, const float *ref, long n) {
  double dd = 0, rr = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)out[i] - ref[i];
    dd += d * d;
    rr += (double)ref[i] * ref[i];
  }
  if (isnan(dd)) return INFINITY;
  return sqrt(dd) / (rr > 0 ? sqrt(rr) : 1e-12);
}

static const char *verdict(double err, double tol) { return err <= tol ? "ok" : "FAIL"; }

static void run_phase(Backend *b, Phase ph, int micro) {
  const Plan *p = b->plan;
  for (int i = 0; i < p->nop; i++)
    if (p->ops[i].phase == ph) b->run_op(b, &p->ops[i], micro);
}

/* ================= golden ================= */

int check_golden(Backend *b, const char *path, double tol, double loss_tol, int ntol_for, char *const *tol_for_name,
                 const double *tol_for) {
  const Plan *p = b->plan;
  char err[2048];
  StFile f;
  if (st_open(path, &f, err, sizeof err)) fatal("%s", err);
  long B = plan_dim(p, "B"), T = plan_dim(p, "T"), V = plan_dim(p, "V"), Vp = plan_dim(p, "Vp");
  long N = B * T, accum = plan_dim_opt(p, "accum", 1), pe = p->param_elems;
  int failed = 0, bad_inputs = 0;

  float *init = xcalloc((size_t)pe, sizeof *init);
  char name[300];
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    snprintf(name, sizeof name, "init.%s", pa->name);
    if (st_read_f32(&f, name, pa->ndim, pa->dims, init + pa->offset, err, sizeof err)) {
      fprintf(stderr, "runtime: %s\n", err);
      bad_inputs = 1;
    }
  }
  const StTensor *tt = st_find(&f, "tokens");
  if (!tt || tt->ndim != 3 || tt->shape[0] < 1 || tt->shape[1] != B * accum || tt->shape[2] != T) {
    fprintf(stderr, "runtime: %s: tensor tokens must have shape [S,%ld,%ld] (S ≥ 1, B·accum, T)\n", path, B * accum, T);
    bad_inputs = 1;
  }
  if (bad_inputs) fatal("%s: golden file does not match the plan %s", path, p->path);
  long S = tt->shape[0], shp[3] = {S, B * accum, T};
  int32_t *tok = xmalloc((size_t)(S * B * accum * T) * sizeof *tok), *tgt = xmalloc((size_t)(S * B * accum * T) * sizeof *tgt);
  float *losses = xmalloc((size_t)(S ? S : 1) * sizeof *losses), gloss;
  long one = 1;
  if (st_read_i32(&f, "tokens", 3, shp, tok, err, sizeof err) || st_read_i32(&f, "targets", 3, shp, tgt, err, sizeof err) ||
      st_read_f32(&f, "losses", 1, &S, losses, err, sizeof err) || st_read_f32(&f, "loss", 1, &one, &gloss, err, sizeof err))
    fatal("%s", err);
  printf("golden: %s vs %s on %s | %d params | %ld steps | tol %.1e, loss tol %.1e\n", path, p->name, b->name,
         p->nparam, S, tol, loss_tol);

  /* ---- step 0, op by op ---- */
  float *zero = xcalloc((size_t)pe, sizeof *zero), scal[8];
  b->set_master(b, init);
  b->set_opt_state(b, zero, zero);
  b->zero_grads(b);
  step_scalars(p, 0, (long)plan_train(p, "steps", (double)S), scal);
  b->set_scalars(b, scal);
  for (int k = 0; k < accum; k++) b->set_batch(b, k, tok + k * N, tgt + k * N);
  /* golden logits are [B,T,V] (micro-step 0) or [accum·B,T,V] (every micro-step, in order) */
  const StTensor *lt = st_find(&f, "logits");
  long lrows = lt && lt->ndim == 3 && lt->shape[0] == B * accum ? B * accum : B, lshape[3] = {lrows, T, V};
  long lmicro = lrows / B;
  float *lref = xmalloc((size_t)(lrows * T * V) * sizeof *lref), *lgot = xmalloc((size_t)(lrows * T * V) * sizeof *lgot);
  if (st_read_f32(&f, "logits", 3, lshape, lref, err, sizeof err)) fatal("%s", err);
  float *row = xmalloc((size_t)(N * Vp) * sizeof *row);
  int logits_done = 0;
  for (int k = 0; k < accum; k++) {
    int seen = 0;
    for (int i = 0; i < p->nop; i++) {
      const Op *op = &p->ops[i];
      if (op->phase != PH_FWD) continue;
      if (k < lmicro && !seen && !strcmp(op->kind, "xent")) {
        /* read the logits just before xent (which may overwrite them with their gradient) */
        const Ref *r = op_ref_req(p, op, "logits");
        if (ref_numel(p, r) < N * Vp) fatal("%s:%d: xent logits ref is smaller than N·Vp", p->path, op->line);
        b->sync(b);
        b->read_ref(b, r, k, row, N * Vp);
        for (long n = 0; n < N; n++) memcpy(lgot + (k * N + n) * V, row + n * Vp, (size_t)V * sizeof *row);
        seen = 1;
        logits_done++;
      }
      b->run_op(b, op, k);
    }
    run_phase(b, PH_BWD, k);
  }
  if (logits_done == lmicro) {
    double e = rel_l2(lgot, lref, lrows * T * V);
    printf("  %-40s rel %.3e  %s\n", "logits", e, verdict(e, tol));
    failed |= !(e <= tol);
  }
  free(lref); free(lgot); free(row);
  if (logits_done != lmicro) printf("  logits: no xent op in the plan, not compared\n");
  b->sync(b);
  float loss = b->read_loss(b);
  double le = fabs((double)loss - gloss) / fmax(fabs((double)gloss), 1e-12);
  printf("  %-40s %.6f vs %.6f rel %.3e  %s\n", "loss", (double)loss, (double)gloss, le, verdict(le, loss_tol));
  failed |= !(le <= loss_tol);
  float *grads = xmalloc((size_t)pe * sizeof *grads), *gref = xmalloc((size_t)pe * sizeof *gref);
  b->get_grads(b, grads);
  int *tol_used = xcalloc((size_t)(ntol_for > 0 ? ntol_for : 1), sizeof *tol_used);
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    snprintf(name, sizeof name, "grad.%s", pa->name);
    if (st_read_f32(&f, name, pa->ndim, pa->dims, gref, err, sizeof err)) {
      printf("  %-40s missing or mis-shaped: %s  FAIL\n", name, err);
      failed = 1;
      continue;
    }
    double e = rel_l2(grads + pa->offset, gref, pa->numel), t = tol;
    int own = 0;
    for (int k = 0; k < ntol_for; k++)
      if (!strcmp(tol_for_name[k], name)) t = tol_for[k], own = tol_used[k] = 1;
    printf("  %-40s rel %.3e  %s%s\n", name, e, verdict(e, t), own ? " (own tolerance)" : "");
    failed |= !(e <= t);
  }
  for (int k = 0; k < ntol_for; k++)
    if (!tol_used[k]) {
      printf("  --tol-for %s: no gradient of that name in %s  FAIL\n", tol_for_name[k], p->name);
      failed = 1;
    }
  free(tol_used);

  /* ---- S full optimizer steps from the initial weights ---- */
  b->set_master(b, init);
  b->set_opt_state(b, zero, zero);
  long sched = (long)plan_train(p, "steps", (double)S);
  for (long s = 0; s < S; s++) {
    for (int k = 0; k < accum; k++)
      b->set_batch(b, k, tok + (s * accum + k) * N, tgt + (s * accum + k) * N);
    step_scalars(p, s, sched, scal);
    b->set_scalars(b, scal);
    b->step(b);
    b->sync(b);
    float l = b->read_loss(b);
    double e = fabs((double)l - losses[s]) / fmax(fabs((double)losses[s]), 1e-12);
    char lab[32];
    snprintf(lab, sizeof lab, "losses[%ld]", s);
    printf("  %-40s %.6f vs %.6f rel %.3e  %s\n", lab, (double)l, (double)losses[s], e, verdict(e, loss_tol));
    failed |= !(e <= loss_tol);
  }
  printf("golden: %s\n", failed ? "FAIL" : "all ok");
  free(init); free(zero); free(grads); free(gref); free(tok); free(tgt); free(losses);
  st_close(&f);
  return failed;
}

/* ================= finite differences ================= */

/* Relative tolerance of g·v against the central difference. Correct code reaches ~1e-4 on the
 * tiny GPT-2 plans (any seed); a 1% error in a layer's gradient typically exceeds it. */
#define GRADCHECK_TOL 1e-3

/* Forward-only loss of micro-step 0. Summed in double from the per-row losses that the
 * loss_sum ops read, so that the f32 rounding of the scalar loss does not limit the check. */
static double fwd_loss(Backend *b) {
  const Plan *p = b->plan;
  b->zero_grads(b);
  run_phase(b, PH_FWD, 0);
  b->sync(b);
  double L = 0;
  int found = 0;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_FWD || strcmp(op->kind, "loss_sum")) continue;
    long n = (long)op_attr(p, op, "N");
    float *l = xmalloc((size_t)n * sizeof *l);
    b->read_ref(b, op_ref_req(p, op, "losses"), 0, l, n);
    double s = 0;
    for (long j = 0; j < n; j++) s += l[j];
    L += op_attr(p, op, "scale") * s;
    found = 1;
    free(l);
  }
  return found ? L : (double)b->read_loss(b);
}

int check_gradcheck(Backend *b, uint64_t seed) {
  const Plan *p = b->plan;
  long pe = p->param_elems, B = plan_dim(p, "B"), T = plan_dim(p, "T"), accum = plan_dim_opt(p, "accum", 1);
  float *theta = xmalloc((size_t)pe * sizeof *theta), *work = xmalloc((size_t)pe * sizeof *work);
  float *g = xmalloc((size_t)pe * sizeof *g), scal[8];
  int32_t *tok = xmalloc((size_t)(B * T) * sizeof *tok), *tgt = xmalloc((size_t)(B * T) * sizeof *tgt);
  /* The check runs at the initial point with the normal-initialised weights scaled by 5: at the
   * true init the attention is almost uniform and the residual stream dominates, so errors in
   * some paths (e.g. dq) barely move the loss; at 5× every path carries gradient, and the
   * finite differences of correct code still agree to ~1e-4. */
  init_params(p, seed, theta);
  for (int k = 0; k < p->nparam; k++)
    if (!strcmp(p->params[k].init, "normal"))
      for (long i = 0; i < p->params[k].numel; i++) theta[p->params[k].offset + i] *= 5.0f;
  b->set_master(b, theta);
  DataGen dg;
  data_init(&dg, seed, plan_dim(p, "V"));
  for (int k = 0; k < accum; k++) {
    data_next(&dg, B, T, tok, tgt);
    b->set_batch(b, k, tok, tgt);
  }
  data_free(&dg);
  step_scalars(p, 0, 1, scal);
  b->set_scalars(b, scal);
  b->zero_grads(b);
  run_phase(b, PH_FWD, 0);
  run_phase(b, PH_BWD, 0);
  b->sync(b);
  float L0 = b->read_loss(b);
  b->get_grads(b, g);
  printf("gradcheck: %s on %s | loss %.6f at 5x init scale | %d params | tol %.0e\n", p->name, b->name, (double)L0,
         p->nparam, GRADCHECK_TOL);
  /* the row losses are f32: the loss carries rounding noise of about an ulp of |L| */
  double noise = 2.0 * 1.2e-7 * fmax(fabs((double)L0), 1.0);
  int failed = 0;
  for (int k = 0; k < p->nparam; k++) {
    const Param *pa = &p->params[k];
    long n = pa->numel;
    /* Direction v on this tensor only: a random unit vector r plus the unit gradient ĝ,
     * normalised. A purely random direction of a large tensor is nearly orthogonal to g, so g·v
     * would drown in rounding noise; with ĝ mixed in, g·v ≈ ‖g‖/√2, and a wrong gradient
     * g = g* + e still shows: fd measures g*·v while g·v adds e·v ∋ e·ĝ, e·r. */
    double *v = xmalloc((size_t)n * sizeof *v), rr = 0, gg = 0, vv = 0, tt = 0, d = 0;
    uint64_t key = mix64(seed ^ 0x6772616463686bull ^ mix64((uint64_t)k));
    for (long i = 0; i < n; i++) {
      v[i] = rng_normal(key, (uint64_t)i);
      rr += v[i] * v[i];
      gg += (double)g[pa->offset + i] * g[pa->offset + i];
    }
    rr = sqrt(rr);
    gg = sqrt(gg);
    for (long i = 0; i < n; i++) {
      v[i] = v[i] / rr + (gg > 0 ? g[pa->offset + i] / gg : 0.0);
      vv += v[i] * v[i];
    }
    vv = sqrt(vv);
    for (long i = 0; i < n; i++) {
      v[i] /= vv;
      tt += (double)theta[pa->offset + i] * theta[pa->offset + i];
      d += (double)g[pa->offset + i] * v[i];         /* analytic directional derivative g·v */
    }
    /* ε so that the loss moves by ~2e-3 (far above its rounding noise), but the perturbation stays
     * within 10% of the tensor's scale (its norm, or 0.02 per element for zero-initialised ones) */
    double scale = fmax(sqrt(tt), 0.02 * sqrt((double)n));
    double eps = fmin(fmax(1e-3 / fmax(fabs(d), 1e-12), 1e-4 * scale), 0.1 * scale);
    memcpy(work, theta, (size_t)pe * sizeof *work);
    for (long i = 0; i < n; i++) work[pa->offset + i] = (float)(theta[pa->offset + i] + eps * v[i]);
    b->set_master(b, work);
    double lp = fwd_loss(b);
    for (long i = 0; i < n; i++) work[pa->offset + i] = (float)(theta[pa->offset + i] - eps * v[i]);
    b->set_master(b, work);
    double lm = fwd_loss(b);
    double fd = (lp - lm) / (2 * eps);
    double slack = noise / eps;                      /* what loss rounding alone can produce */
    double err = fabs(fd - d) / fmax(fmax(fabs(fd), fabs(d)), 1e-30);
    int ok = fabs(fd - d) <= GRADCHECK_TOL * fmax(fabs(fd), fabs(d)) + slack;
    printf("  %-40s g·v %+.6e  fd %+.6e  rel %.2e  eps %.1e  %s\n", pa->name, d, fd, err, eps, ok ? "ok" : "FAIL");
    failed |= !ok;
    free(v);
  }
  b->set_master(b, theta);
  printf("gradcheck: %s\n", failed ? "FAIL" : "all ok");
  free(theta); free(work); free(g); free(tok); free(tgt);
  return failed;
}

/* ================= GPU vs CPU, op by op ================= */

/* The refs an op writes (compared after it runs); NULL-terminated. */
static int written_roles(const Op *op, const char **roles) {
  static const struct { const char *kind; const char *roles[5]; } W[] = {
    {"matmul", {"c", "aux"}}, {"embed", {"out"}}, {"layernorm", {"out", "mean", "rstd"}},
    {"add_layernorm", {"sum", "out", "mean", "rstd"}}, {"add", {"out"}}, {"gelu", {"out"}},
    {"attention", {"out", "lse"}}, {"xent", {"losses", "logits"}}, {"loss_sum", {"loss"}},
    {"gelu_bwd", {"dx"}}, {"layernorm_bwd", {"dx"}}, {"layernorm_bwd_params", {"dw", "db"}},
    {"bias_grad", {"db"}}, {"attention_bwd_pre", {"delta"}}, {"attention_bwd_dkdv", {"dqkv"}},
    {"attention_bwd_dq", {"dqkv"}}, {"embed_bwd_tok", {"dwte"}}, {"embed_bwd_pos", {"dwpe"}},
    {"xent_bwd", {"dlogits"}}, {"sumsq", {"partials"}}, {"adamw", {"master", "m", "v", "params"}},
  };
  int n = 0;
  /* the plan marks written refs (">role="); use that when present, else the table above */
  for (int j = 0; j < op->nref; j++)
    if (op->ref[j].out) roles[n++] = op->ref[j].role;
  if (n) return n;
  for (size_t i = 0; i < sizeof W / sizeof W[0]; i++)
    if (!strcmp(op->kind, W[i].kind)) {
      for (int j = 0; j < 5 && W[i].roles[j]; j++) {
        const char *r = W[i].roles[j];
        if (!op_ref(op, r)) continue;
        if (!strcmp(op->kind, "matmul") && !strcmp(r, "aux")) { /* aux is written only by gelu_bias */
          int epi = 0;
          for (int a = 0; a < op->nattr; a++) if (!strcmp(op->attr[a].key, "epi")) epi = (int)op->attr[a].val;
          if (epi != 2) continue;
        }
        if (!strcmp(op->kind, "xent") && !strcmp(r, "logits")) { /* overwritten only when grad = 1 */
          int grad = 0;
          for (int a = 0; a < op->nattr; a++) if (!strcmp(op->attr[a].key, "grad")) grad = op->attr[a].val != 0;
          if (!grad) continue;
        }
        roles[n++] = r;
      }
      return n;
    }
  for (int j = 0; j < op->nref; j++) roles[n++] = op->ref[j].role; /* unknown kind: compare everything */
  return n;
}

static int check_one(Backend *cpu, Backend *gpu, const Op *op, int micro, double tol, double *worst_out) {
  const Plan *p = cpu->plan;
  long maxn = 0;
  for (int j = 0; j < op->nref; j++) {
    long n = ref_numel(p, &op->ref[j]);
    if (n > maxn) maxn = n;
  }
  float *a = xmalloc((size_t)maxn * sizeof *a), *c = xmalloc((size_t)maxn * sizeof *c);
  /* identical starting state: the CPU's values of every ref, inputs and outputs alike */
  for (int j = 0; j < op->nref; j++) {
    long n = ref_numel(p, &op->ref[j]);
    cpu->read_ref(cpu, &op->ref[j], micro, a, n);
    gpu->write_ref(gpu, &op->ref[j], micro, a, n);
  }
  cpu->run_op(cpu, op, micro);
  gpu->run_op(gpu, op, micro);
  gpu->sync(gpu);
  const char *roles[MF_MAX_REFS];
  int nr = written_roles(op, roles), bad = 0;
  double worst = 0;
  char line[1024];
  int k = snprintf(line, sizeof line, "  op %3d %s %-22s %-28s", op->idx,
                   op->phase == PH_FWD ? "fwd" : op->phase == PH_BWD ? "bwd" : op->phase == PH_OPT ? "opt" : "dec", op->kind, op->comment);
  for (int j = 0; j < nr; j++) {
    const Ref *r = op_ref(op, roles[j]);
    long n = ref_numel(p, r);
    cpu->read_ref(cpu, r, micro, c, n);
    gpu->read_ref(gpu, r, micro, a, n);
    double e;
    if (r->kind == REF_PARTIALS) {
      /* partials are partial sums over "any fixed partition" (docs/ir.md): only the total is
       * defined, so compare Σ partials — the squared gradient norm */
      double sa = 0, sc = 0;
      for (long i = 0; i < n; i++) { sa += a[i]; sc += c[i]; }
      e = fabs(sa - sc) / (fabs(sc) > 0 ? fabs(sc) : 1.0);
    } else {
      e = rel_l2(a, c, n);
    }
    if (!(e <= worst)) worst = e;
    if (!(e <= tol)) bad = 1;
    if (k < (int)sizeof line) k += snprintf(line + k, sizeof line - (size_t)k, " %s %.2e", roles[j], e);
  }
  printf("%s  %s\n", line, bad ? "FAIL" : "ok");
  free(a);
  free(c);
  *worst_out = worst;
  return bad;
}

int check_ops(Backend *cpu, Backend *gpu, uint64_t seed, double tol) {
  const Plan *p = cpu->plan;
  long pe = p->param_elems, B = plan_dim(p, "B"), T = plan_dim(p, "T"), accum = plan_dim_opt(p, "accum", 1);
  float *w = xmalloc((size_t)pe * sizeof *w), *z = xcalloc((size_t)pe, sizeof *z), scal[8];
  int32_t *tok = xmalloc((size_t)(B * T) * sizeof *tok), *tgt = xmalloc((size_t)(B * T) * sizeof *tgt);
  init_params(p, seed, w);
  DataGen dg;
  data_init(&dg, seed, plan_dim(p, "V"));
  for (int k = 0; k < accum; k++) {
    data_next(&dg, B, T, tok, tgt);
    cpu->set_batch(cpu, k, tok, tgt);
    gpu->set_batch(gpu, k, tok, tgt);
  }
  data_free(&dg);
  step_scalars(p, 0, (long)plan_train(p, "steps", 1), scal);
  Backend *both[2] = {cpu, gpu};
  for (int i = 0; i < 2; i++) {
    both[i]->set_master(both[i], w);
    both[i]->set_opt_state(both[i], z, z);
    both[i]->set_scalars(both[i], scal);
    both[i]->zero_grads(both[i]);
  }
  printf("check: %s, %s vs cpu, op by op (micro-step 0, then the optimizer) | tol %.1e\n", p->name, gpu->name, tol);
  const Op *first = NULL;
  double first_err = 0;
  int nbad = 0;
  static const Phase order[3] = {PH_FWD, PH_BWD, PH_OPT};
  for (int ph = 0; ph < 3; ph++)
    for (int i = 0; i < p->nop; i++) {
      const Op *op = &p->ops[i];
      if (op->phase != order[ph]) continue;
      double e;
      if (check_one(cpu, gpu, op, 0, tol, &e)) {
        nbad++;
        if (!first) { first = op; first_err = e; }
      }
    }
  if (first) {
    printf("check: %d op(s) diverge; the first is op %d (%s, kernel %s, %s) at %s:%d, rel err %.3e > %.1e\n", nbad,
           first->idx, first->kind, first->kernel, first->comment, p->path, first->line, first_err, tol);
  } else {
    printf("check: all %d ops agree\n", p->nop);
  }
  free(w); free(z); free(tok); free(tgt);
  return first != NULL;
}

/* ================= decode program vs forward pass ================= */

int check_decode(Backend *b, uint64_t seed, double tol) {
  const Plan *p = b->plan;
  long B = plan_dim(p, "B"), T = plan_dim(p, "T"), V = plan_dim(p, "V"), Vp = plan_dim(p, "Vp"), N = B * T;
  long accum = plan_dim_opt(p, "accum", 1);
  /* the decode program is inference (no dropout): a forward pass with dropout is another function */
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    int drop = !strcmp(op->kind, "dropout");
    for (int a = 0; a < op->nattr && !drop; a++) drop = !strcmp(op->attr[a].key, "dropout") && op->attr[a].val > 0;
    if (op->phase == PH_FWD && drop)
      fatal("%s: --decode-check compares with the forward pass, which has dropout (op %d, %s): generate the plan "
            "with model.dropout.attn=0 model.dropout.resid=0 model.dropout.mlp=0 (the decode program is the same)",
            p->path, op->idx, op->comment);
  }
  float *w = xmalloc((size_t)p->param_elems * sizeof *w);
  init_params(p, seed, w);
  b->set_master(b, w);
  int32_t *tok = xmalloc((size_t)N * sizeof *tok), *tgt = xmalloc((size_t)N * sizeof *tgt);
  DataGen dg;
  data_init(&dg, seed, V);
  for (long k = 0; k < accum; k++) {
    data_next(&dg, B, T, tok, tgt);
    b->set_batch(b, (int)k, tok, tgt);
  }
  data_free(&dg);
  /* the forward pass over the last micro-step's batch, stopped before the loss overwrites the logits */
  b->zero_grads(b);
  const Op *xent = NULL;
  for (int i = 0; i < p->nop && !xent; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_FWD) continue;
    if (!strcmp(op->kind, "xent")) xent = op;
    else b->run_op(b, op, (int)(accum - 1));
  }
  if (!xent) fatal("%s: no xent op in the forward pass", p->path);
  float *full = xmalloc((size_t)(N * Vp) * sizeof *full);
  b->read_ref(b, op_ref_req(p, xent, "logits"), (int)(accum - 1), full, N * Vp);
  /* the first sequence again, one token at a time through the KV cache */
  float *dec = xmalloc((size_t)(T * V) * sizeof *dec), *ref = xmalloc((size_t)(T * V) * sizeof *ref);
  for (long t = 0; t < T; t++) memcpy(ref + t * V, full + t * Vp, (size_t)V * sizeof *ref);
  sample_logits(b, tok, (int)T, dec);
  double worst = 0;
  long worst_t = 0;
  for (long t = 0; t < T; t++) {
    double e = rel_l2(dec + t * V, ref + t * V, V);
    if (!(e <= worst)) { worst = e; worst_t = t; }
  }
  double all = rel_l2(dec, ref, T * V);
  int bad = !(all <= tol) || !(worst <= 2 * tol);
  printf("decode-check: %s on %s: %ld positions, logits rel L2 %.2e overall, worst %.2e at position %ld (tol %.1e)  %s\n",
         p->name, b->name, T, all, worst, worst_t, tol, bad ? "FAIL" : "ok");
  free(w); free(tok); free(tgt); free(full); free(dec); free(ref);
  return bad;
}

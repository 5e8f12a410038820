/* train.c — see train.h. */
#include "train.h"
#include "init.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double lr_at(const Plan *p, long s, long steps) {
  double lr = plan_train(p, "lr", 6e-4), min_lr = plan_train(p, "min_lr", 0.0);
  long warmup = (long)plan_train(p, "warmup_steps", 0);
  if (s < warmup) return lr * (double)(s + 1) / (double)warmup;
  long span = steps - warmup > 1 ? steps - warmup : 1;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.141592653589793 * (double)(s - warmup) / (double)span));
}

void step_scalars(const Plan *p, long s, long steps, float scal[8]) {
  double b1 = plan_train(p, "beta1", 0.9), b2 = plan_train(p, "beta2", 0.95);
  memset(scal, 0, 8 * sizeof *scal);
  scal[0] = (float)lr_at(p, s, steps);
  scal[1] = (float)(1.0 - pow(b1, (double)(s + 1)));
  scal[2] = (float)(1.0 - pow(b2, (double)(s + 1)));
}

/* ---------------- synthetic data ---------------- */

void data_init(DataGen *g, uint64_t seed, long V) {
  memset(g, 0, sizeof *g);
  g->key = mix64(seed ^ 0xda7a5eedull);
  g->nstates = V < 256 ? V : 256;
  g->tok = xmalloc((size_t)g->nstates * sizeof *g->tok);
  g->succ = xmalloc((size_t)g->nstates * 4 * sizeof *g->succ);
  /* distinct token ids for the states, drawn by rejection */
  unsigned char *used = xcalloc((size_t)V, 1);
  uint64_t ctr = 0;
  for (long k = 0; k < g->nstates; k++) {
    long t;
    do t = (long)(mix64(g->key ^ mix64(ctr++)) % (uint64_t)V); while (used[t]);
    used[t] = 1;
    g->tok[k] = (int32_t)t;
  }
  free(used);
  for (long k = 0; k < g->nstates * 4; k++) g->succ[k] = (int32_t)(mix64(g->key ^ mix64(ctr++)) % (uint64_t)g->nstates);
  g->cur = 0;
  g->counter = ctr;
}

static long data_advance(DataGen *g) {
  static const double cum[4] = {0.6, 0.8, 0.95, 1.0};
  double u = rng_uniform(g->key, g->counter++);
  int j = 0;
  while (j < 3 && u >= cum[j]) j++;
  g->cur = g->succ[g->cur * 4 + j];
  return g->cur;
}

void data_next(DataGen *g, long B, long T, int32_t *tokens, int32_t *targets) {
  for (long b = 0; b < B; b++) {
    int32_t prev = g->tok[g->cur];
    for (long t = 0; t < T; t++) {
      int32_t next = g->tok[data_advance(g)];
      tokens[b * T + t] = prev;
      targets[b * T + t] = next;
      prev = next;
    }
  }
}

void data_free(DataGen *g) {
  free(g->tok);
  free(g->succ);
  memset(g, 0, sizeof *g);
}

/* ---------------- loop ---------------- */

typedef struct {
  long B, T, N, accum, V;
  double tokens_per_step, flops_per_token;
  int32_t *tok, *tgt;
} Shape;

static Shape shape_of(const Plan *p) {
  Shape s;
  s.B = plan_dim(p, "B");
  s.T = plan_dim(p, "T");
  s.V = plan_dim(p, "V");
  s.N = plan_dim_opt(p, "N", s.B * s.T);
  s.accum = plan_dim_opt(p, "accum", 1);
  if (s.N != s.B * s.T) fatal("%s: dim N=%ld is not B·T=%ld", p->path, s.N, s.B * s.T);
  s.tokens_per_step = (double)s.N * (double)s.accum;
  s.flops_per_token = (double)plan_dim_opt(p, "flops_per_token", 0);
  s.tok = xmalloc((size_t)s.N * sizeof *s.tok);
  s.tgt = xmalloc((size_t)s.N * sizeof *s.tgt);
  return s;
}

static void feed(Backend *b, DataGen *g, Shape *s) {
  for (int k = 0; k < s->accum; k++) {
    data_next(g, s->B, s->T, s->tok, s->tgt);
    b->set_batch(b, k, s->tok, s->tgt);
  }
}

static void fmt_rate(double v, char *buf, size_t n) {
  if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
  else if (v >= 1e3) snprintf(buf, n, "%.1fK", v / 1e3);
  else snprintf(buf, n, "%.1f", v);
}

static double mfu_of(const Backend *b, const Shape *s, double tok_per_s) {
  if (b->peak_flops <= 0 || s->flops_per_token <= 0) return -1;
  return s->flops_per_token * tok_per_s / b->peak_flops;
}

static void fmt_mfu(double mfu, char *buf, size_t n) {
  if (mfu < 0) snprintf(buf, n, "-");
  else snprintf(buf, n, "%.1f%%", 100 * mfu);
}

static void init_state(Backend *b, uint64_t seed) {
  const Plan *p = b->plan;
  float *w = xmalloc((size_t)p->param_elems * sizeof *w), *z = xcalloc((size_t)p->param_elems, sizeof *z);
  init_params(p, seed, w);
  b->set_master(b, w);
  b->set_opt_state(b, z, z);
  free(w);
  free(z);
}

int train_run(Backend *b, const TrainOpts *o) {
  const Plan *p = b->plan;
  Shape s = shape_of(p);
  DataGen g;
  data_init(&g, o->seed, s.V);
  init_state(b, o->seed);
  printf("train: %s on %s | %ld steps | B=%ld T=%ld accum=%ld | %.0f tokens/step | seed %llu\n", p->name, b->name,
         o->steps, s.B, s.T, s.accum, s.tokens_per_step, (unsigned long long)o->seed);
  double t_all = 0, t_interval = 0, t_first = 0;
  long n_interval = 0;
  float loss = NAN;
  double gnorm = 0;
  for (long step = 0; step < o->steps; step++) {
    float scal[8];
    step_scalars(p, step, o->steps, scal);
    double t0 = now_sec();
    feed(b, &g, &s);
    b->set_scalars(b, scal);
    b->step(b);
    b->sync(b);
    double dt = now_sec() - t0;
    if (step == 0) t_first = dt;
    t_all += dt;
    t_interval += dt;
    n_interval++;
    int last = step == o->steps - 1;
    int log = o->log_every > 0 && (step == 0 || (step + 1) % o->log_every == 0 || last);
    if (log || last) {
      loss = b->read_loss(b);
      gnorm = b->read_grad_norm(b);
      if (!isfinite(loss)) fatal("loss is %g at step %ld (diverged)", (double)loss, step + 1);
    }
    if (log) {
      double ms = 1e3 * t_interval / (double)n_interval, tps = s.tokens_per_step * n_interval / t_interval;
      char rate[32], mfu[32];
      fmt_rate(tps, rate, sizeof rate);
      fmt_mfu(mfu_of(b, &s, tps), mfu, sizeof mfu);
      printf("step %ld/%ld | loss %.4f | gnorm %.2f | lr %.2e | %.1f ms | %s tok/s | MFU %s\n", step + 1, o->steps,
             (double)loss, gnorm, (double)scal[0], ms, rate, mfu);
      fflush(stdout);
      t_interval = 0;
      n_interval = 0;
    }
  }
  /* the first step includes one-time setup (e.g. CUDA graph capture): leave it out when possible */
  double t_steady = o->steps > 1 ? t_all - t_first : t_all;
  long n_steady = o->steps > 1 ? o->steps - 1 : o->steps;
  if (o->steps > 0) {
    double tps = s.tokens_per_step * n_steady / t_steady;
    char rate[32], mfu[32];
    fmt_rate(tps, rate, sizeof rate);
    fmt_mfu(mfu_of(b, &s, tps), mfu, sizeof mfu);
    printf("done: %ld steps in %.2f s | final loss %.4f | %.1f ms/step | %s tok/s | MFU %s\n", o->steps, t_all,
           (double)loss, 1e3 * t_steady / n_steady, rate, mfu);
  }
  data_free(&g);
  free(s.tok);
  free(s.tgt);
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int bench_run(Backend *b, const TrainOpts *o) {
  const Plan *p = b->plan;
  Shape s = shape_of(p);
  DataGen g;
  data_init(&g, o->seed, s.V);
  init_state(b, o->seed);
  long warm = 5, n = o->steps > 0 ? o->steps : 1;
  double *t = xmalloc((size_t)n * sizeof *t);
  int32_t *all_tok = xmalloc((size_t)(s.N * s.accum) * sizeof *all_tok);
  int32_t *all_tgt = xmalloc((size_t)(s.N * s.accum) * sizeof *all_tgt);
  printf("bench: %s on %s | B=%ld T=%ld accum=%ld | %ld warm-up + %ld timed steps\n", p->name, b->name, s.B, s.T,
         s.accum, warm, n);
  for (long step = 0; step < warm + n; step++) {
    float scal[8];
    step_scalars(p, step, warm + n, scal);
    /* fresh data every step, as in training; generating it is host work outside the step, but
     * handing it to the backend (set_batch) is part of the timed step */
    for (int k = 0; k < s.accum; k++) data_next(&g, s.B, s.T, all_tok + k * s.N, all_tgt + k * s.N);
    double t0 = now_sec();
    for (int k = 0; k < s.accum; k++) b->set_batch(b, k, all_tok + k * s.N, all_tgt + k * s.N);
    b->set_scalars(b, scal);
    b->step(b);
    b->sync(b);
    if (step >= warm) t[step - warm] = now_sec() - t0;
  }
  float loss = b->read_loss(b);
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  double med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  double tps = s.tokens_per_step / med, mfu = mfu_of(b, &s, tps);
  char rate[32], mfus[32];
  fmt_rate(tps, rate, sizeof rate);
  fmt_mfu(mfu, mfus, sizeof mfus);
  printf("bench: median %.3f ms/step (min %.3f, max %.3f) | %s tok/s | MFU %s | last loss %.4f\n", 1e3 * med,
         1e3 * t[0], 1e3 * t[n - 1], rate, mfus, (double)loss);
  printf("BENCH tok_per_s=%.1f ms_per_step=%.4f mfu=%.4f\n", tps, 1e3 * med, mfu < 0 ? 0.0 : mfu);
  fflush(stdout);
  free(t);
  free(all_tok);
  free(all_tgt);
  data_free(&g);
  free(s.tok);
  free(s.tgt);
  return 0;
}

/* train.c — see train.h. */
#include "train.h"
#include "dist.h"
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
  /* the dropout counter (docs/ir_decoder.md): the step and the plan seed's low 24 bits (exact in f32) */
  scal[3] = (float)s;
  scal[4] = (float)((uint64_t)plan_train(p, "seed", 1337) & 0xFFFFFF);
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
  s.tokens_per_step = (double)s.N * (double)s.accum * (double)dist_world(); /* all ranks together */
  s.flops_per_token = (double)plan_dim_opt(p, "flops_per_token", 0);
  s.tok = xmalloc((size_t)s.N * sizeof *s.tok);
  s.tgt = xmalloc((size_t)s.N * sizeof *s.tgt);
  return s;
}

/* The batches of one run: token shards through a loader, or the synthetic stream. */
typedef struct {
  Loader *l;
  DataGen g;
} Source;

/* Several ranks (dist.h) share the one synthetic stream: a step takes world·accum micro-batches of
 * it and rank r keeps the r-th group of accum — so W ranks with accumulation A see exactly the
 * batches of one rank with accumulation W·A, and the stream's position is the same on every rank
 * (the loader strides over the ranks itself). This draws n micro-batches into the scratch rows. */
static void synth_skip(DataGen *g, Shape *s, long n) {
  for (long j = 0; j < n; j++) data_next(g, s->B, s->T, s->tok, s->tgt);
}

static void feed(Backend *b, Source *src, Shape *s) {
  char err[1024];
  long W = dist_world(), R = dist_rank();
  for (int k = 0; k < s->accum; k++) {
    if (src->l) {
      if (loader_next(src->l, s->tok, s->tgt, err, sizeof err)) fatal("%s", err);
    } else {
      if (k == 0) synth_skip(&src->g, s, R * s->accum);
      data_next(&src->g, s->B, s->T, s->tok, s->tgt);
    }
    b->set_batch(b, k, s->tok, s->tgt);
  }
  if (!src->l) synth_skip(&src->g, s, (W - 1 - R) * s->accum);
}

static void fmt_rate(double v, char *buf, size_t n) {
  if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
  else if (v >= 1e3) snprintf(buf, n, "%.1fK", v / 1e3);
  else snprintf(buf, n, "%.1f", v);
}

static double mfu_of(const Backend *b, const Shape *s, double tok_per_s) {
  if (b->peak_flops <= 0 || s->flops_per_token <= 0) return -1;
  return s->flops_per_token * tok_per_s / (b->peak_flops * dist_world()); /* tok/s of all ranks, all GPUs' peak */
}

static void fmt_mfu(double mfu, char *buf, size_t n) {
  if (mfu < 0) snprintf(buf, n, "-");
  else snprintf(buf, n, "%.1f%%", 100 * mfu);
}

/* "12s", "5m43s", "2h05m" */
static void fmt_eta(double sec, char *buf, size_t n) {
  long s = sec > 0 ? (long)(sec + 0.5) : 0;
  if (s < 60) snprintf(buf, n, "%lds", s);
  else if (s < 3600) snprintf(buf, n, "%ldm%02lds", s / 60, s % 60);
  else snprintf(buf, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
}

static void init_state(Backend *b, uint64_t seed, const float *weights) {
  const Plan *p = b->plan;
  float *w = xmalloc((size_t)p->param_elems * sizeof *w), *z = xcalloc((size_t)p->param_elems, sizeof *z);
  if (weights) memcpy(w, weights, (size_t)p->param_elems * sizeof *w);
  else init_params(p, seed, w);
  b->set_master(b, w);
  b->set_opt_state(b, z, z);
  free(w);
  free(z);
}

/* The resumable part of the run after `step` steps: the checkpoint's TrainState. */
static TrainState state_now(const TrainOpts *o, const Source *src, uint64_t seed, long step) {
  TrainState t;
  memset(&t, 0, sizeof t);
  t.step = step;
  t.total_steps = o->steps;
  t.seed = seed;
  t.synthetic = src->l == NULL;
  if (src->l) t.loader = loader_state(src->l);
  else { t.synth_counter = src->g.counter; t.synth_cur = src->g.cur; }
  return t;
}

int train_run(Backend *b, const TrainOpts *o) {
  const Plan *p = b->plan;
  Shape s = shape_of(p);
  Source src = {.l = o->data};
  uint64_t seed = o->resume ? o->resume->seed : o->seed;
  long s0 = 0;
  if (!src.l) data_init(&src.g, seed, s.V);
  if (o->resume) {
    const TrainState *r = o->resume;
    if (r->synthetic != (src.l == NULL))
      fatal("the checkpoint was trained on %s, this run has %s: pass %s", r->synthetic ? "the synthetic stream" : "token shards",
            src.l ? "--data" : "no --data", r->synthetic ? "no --data" : "the same --data");
    if (!src.l) {
      if (r->synth_cur < 0 || r->synth_cur >= src.g.nstates) fatal("checkpoint: synthetic stream state %ld out of range", r->synth_cur);
      src.g.counter = r->synth_counter;
      src.g.cur = r->synth_cur;
    }
    if (r->total_steps != o->steps)
      printf("note: the checkpoint's run was planned for %ld steps, this one for %ld: the lr schedule differs from there on\n",
             r->total_steps, o->steps);
    s0 = r->step;
  } else {
    init_state(b, seed, o->init_weights);
  }
  printf("train: %s on %s | steps %ld..%ld of %ld | B=%ld T=%ld accum=%ld | %.0f tokens/step | seed %llu%s\n", p->name, b->name,
         s0 + 1, o->steps, o->steps, s.B, s.T, s.accum, s.tokens_per_step, (unsigned long long)seed,
         o->resume ? " | resumed" : "");
  if (s0 >= o->steps) printf("train: the checkpoint is at step %ld: nothing left to train (raise --steps)\n", s0);
  fflush(stdout);
  double t_start = now_sec(), t_all = 0, t_interval = 0, t_first = 0, t_after_first = 0;
  long n_interval = 0;
  float loss = NAN;
  double gnorm = 0, last_val = NAN;
  char err[2048], dir[4400];
  for (long step = s0; step < o->steps; step++) {
    float scal[8];
    step_scalars(p, step, o->steps, scal);
    double t0 = now_sec();
    dist_note_step(step + 1);
    feed(b, &src, &s);
    b->set_scalars(b, scal);
    b->step(b);
    b->sync(b);
    double t1 = now_sec(), dt = t1 - t0;
    if (step == s0) { t_first = dt; t_after_first = t1; }
    t_all += dt;
    t_interval += dt;
    n_interval++;
    long done = step + 1;
    int last = done == o->steps;
    int eval = o->val && ((o->eval_every > 0 && done % o->eval_every == 0) || last);
    int log = (o->log_every > 0 && (step == s0 || done % o->log_every == 0 || last)) || eval;
    if (log || last) {
      loss = b->read_loss(b);
      gnorm = b->read_grad_norm(b);
      if (!isfinite(loss)) fatal("loss is %g at step %ld (diverged)", (double)loss, done);
    }
    /* several ranks: only rank 0 evaluates, writes checkpoints and samples (and logs: the others'
     * stdout is /dev/null, their RunLog NULL); the others wait for it in their next step */
    int r0 = dist_rank() == 0;
    double val = NAN;
    if (eval && r0) last_val = val = eval_loss(b, o->val);
    if (log) {
      double ms = 1e3 * t_interval / (double)n_interval, tps = s.tokens_per_step * n_interval / t_interval;
      /* the ETA uses the wall time per step since the first (which includes one-time setup), so
       * evaluations, checkpoints and samples are counted in */
      double per = step > s0 ? (now_sec() - t_after_first) / (double)(step - s0) : dt;
      char rate[32], mfu[32], eta[32], vs[48] = "";
      fmt_rate(tps, rate, sizeof rate);
      fmt_mfu(mfu_of(b, &s, tps), mfu, sizeof mfu);
      fmt_eta(per * (double)(o->steps - done), eta, sizeof eta);
      if (eval) snprintf(vs, sizeof vs, " | val %.4f", val);
      printf("step %ld/%ld | loss %.4f%s | gnorm %.2f | lr %.2e | %.1f ms | %s tok/s | MFU %s | ETA %s\n", done, o->steps,
             (double)loss, vs, gnorm, (double)scal[0], ms, rate, mfu, eta);
      fflush(stdout);
      if (o->log) {
        StepMetrics m = {.step = done, .train_loss = loss, .val_loss = val, .lr = scal[0], .grad_norm = gnorm, .ms = ms,
                         .tok_per_s = tps, .mfu = mfu_of(b, &s, tps), .tokens = s.tokens_per_step * (double)done,
                         .elapsed_s = now_sec() - t_start};
        runlog_step(o->log, &m);
      }
      t_interval = 0;
      n_interval = 0;
    }
    int save = o->run_dir && ((o->save_every > 0 && done % o->save_every == 0) || last);
    if (save && b->gather_state) b->gather_state(b); /* ZeRO-1: every rank, a collective */
    if (save && r0) {
      TrainState ts = state_now(o, &src, seed, done);
      double c0 = now_sec();
      if (ckpt_save(o->run_dir, b, &ts, dir, sizeof dir, err, sizeof err)) fatal("checkpoint: %s", err);
      printf("checkpoint: %s (%.1f s)\n", dir, now_sec() - c0);
      fflush(stdout);
    }
    int sample = o->sample && ((o->sample_every > 0 && done % o->sample_every == 0) || (last && o->sample_at_end));
    if (sample && r0) o->sample(o->sample_ctx, b, done);
    if (eval || save || sample) dist_slow_next();
  }
  long n_run = o->steps - s0;
  /* the first step includes one-time setup (e.g. CUDA graph capture): leave it out when possible */
  double t_steady = n_run > 1 ? t_all - t_first : t_all;
  long n_steady = n_run > 1 ? n_run - 1 : n_run;
  if (n_run > 0) {
    double tps = s.tokens_per_step * n_steady / t_steady;
    char rate[32], mfu[32], vs[48] = "";
    fmt_rate(tps, rate, sizeof rate);
    fmt_mfu(mfu_of(b, &s, tps), mfu, sizeof mfu);
    if (!isnan(last_val)) snprintf(vs, sizeof vs, " | val loss %.4f", last_val);
    printf("done: %ld steps in %.2f s | final loss %.4f%s | %.1f ms/step | %s tok/s | MFU %s\n", n_run, now_sec() - t_start,
           (double)loss, vs, 1e3 * t_steady / n_steady, rate, mfu);
  }
  if (!src.l) data_free(&src.g);
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
  init_state(b, o->seed, NULL);
  long warm = 5, n = o->steps > 0 ? o->steps : 1;
  double *t = xmalloc((size_t)n * sizeof *t);
  int32_t *all_tok = xmalloc((size_t)(s.N * s.accum) * sizeof *all_tok);
  int32_t *all_tgt = xmalloc((size_t)(s.N * s.accum) * sizeof *all_tgt);
  printf("bench: %s on %s | B=%ld T=%ld accum=%ld | %ld warm-up + %ld timed steps\n", p->name, b->name, s.B, s.T,
         s.accum, warm, n);
  for (long step = 0; step < warm + n; step++) {
    float scal[8];
    step_scalars(p, step, warm + n, scal);
    /* fresh data every step, as in training (several ranks: this rank's part of the shared stream,
     * see feed); generating it is host work outside the step, but handing it to the backend
     * (set_batch) is part of the timed step */
    synth_skip(&g, &s, (long)dist_rank() * s.accum);
    for (int k = 0; k < s.accum; k++) data_next(&g, s.B, s.T, all_tok + k * s.N, all_tgt + k * s.N);
    synth_skip(&g, &s, (long)(dist_world() - 1 - dist_rank()) * s.accum);
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

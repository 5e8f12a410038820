/* train.h — the training loop and the benchmark over any Backend, the learning-rate schedule,
 * and a deterministic synthetic token stream. */
#ifndef MF_TRAIN_H
#define MF_TRAIN_H
#include "backend.h"
#include "checkpoint.h"
#include "evaluate.h"
#include "runlog.h"
#include "shards.h"
#include <stdint.h>

typedef struct {
  long steps;        /* optimizer steps to run (also the schedule length) */
  uint64_t seed;     /* parameter init and data */
  long log_every;    /* print a line every K steps (and the first and last); 0 = only the summary */

  /* Where batches come from: token shards through this loader (positioned where training starts:
   * a resumed run's caller has restored it), or NULL for the synthetic stream from the seed. */
  Loader *data;
  /* Validation on a fixed set every eval_every steps (0: only at the end); NULL: none. */
  const EvalSet *val;
  long eval_every;
  /* Run records (metrics.jsonl) and checkpoints in run_dir/ckpt every save_every steps (0: only
   * at the end); NULL: neither. */
  RunLog *log;
  const char *run_dir;
  long save_every;
  /* Start: NULL = fresh (weights from init_weights, or from the seed when that is NULL, moments
   * zero); else continue after resume->step — the backend already holds the checkpoint's weights
   * and moments, and the synthetic stream continues from resume's position. */
  const TrainState *resume;
  const float *init_weights;
  /* Text samples every sample_every steps (0: never during) and, with sample_at_end, after the
   * last step: sample(ctx, b, steps completed). */
  long sample_every;
  int sample_at_end;
  void (*sample)(void *ctx, Backend *b, long step);
  void *sample_ctx;
} TrainOpts;

/* lr for 0-based step s of `steps`: linear warmup lr·(s+1)/warmup for s < warmup, then cosine
 * from lr to min_lr: min_lr + ½(lr − min_lr)(1 + cos(π·(s − warmup)/max(1, steps − warmup))).
 * lr, min_lr, warmup_steps come from the plan's train records. */
double lr_at(const Plan *p, long s, long steps);
/* scal[0] = lr, scal[1] = 1 − β1^t, scal[2] = 1 − β2^t with t = s + 1, scal[3] = s,
 * scal[4] = the plan's train seed & 0xFFFFFF (the dropout counter); the rest 0. */
void step_scalars(const Plan *p, long s, long steps, float scal[8]);

/* Synthetic data: a Markov chain over a few hundred token ids of the vocabulary, each with four
 * successors of probabilities .6/.2/.15/.05 — a model can learn it, so the loss visibly falls
 * (from ln V towards ≈ 1.1 nats). Fully determined by the seed. */
typedef struct {
  uint64_t key, counter;
  long nstates;
  int32_t *tok;      /* token id of each state */
  int32_t *succ;     /* nstates × 4 successor states */
  long cur;          /* current state; (counter, cur) is the resumable position */
} DataGen;
void data_init(DataGen *g, uint64_t seed, long V);
/* Next B rows of T+1 consecutive stream tokens: tokens = the first T, targets = the next T. */
void data_next(DataGen *g, long B, long T, int32_t *tokens, int32_t *targets);
void data_free(DataGen *g);

/* Train from a fresh start or a resume state (see TrainOpts), print one progress line per logged
 * step (step, loss, val, gnorm, lr, ms, tok/s, MFU, ETA) and a summary, append each logged step to
 * o->log, evaluate, checkpoint and sample as asked. Returns 0 (exits on a non-finite loss or a
 * failed checkpoint write). */
int train_run(Backend *b, const TrainOpts *o);
/* 5 warm-up steps, then opts->steps timed steps; prints the median and, as the LAST line,
 * "BENCH tok_per_s=<float> ms_per_step=<float> mfu=<float>" (mfu a fraction, 0 when unknown). */
int bench_run(Backend *b, const TrainOpts *o);
#endif

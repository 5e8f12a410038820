/* runlog.h — the records of a run in its run directory, under the names the sweep helper reads:
 *   meta.json      written at the start: plan name and source_hash, the spec and overrides (from
 *                  gen's config.json), git commit, backend, the full command line, start time, seed,
 *                  steps, data globs, and the step a resumed run continued from
 *   config.json    gen's config.json from beside model.plan, copied
 *   metrics.jsonl  one JSON object per logged step: step, train_loss, lr, tok_per_s, grad_norm, ms,
 *                  tokens, elapsed_s, mfu (when known) and val_loss (where evaluated)
 * A resumed run keeps the metrics lines up to the step it resumes from and appends after them. */
#ifndef MF_RUNLOG_H
#define MF_RUNLOG_H
#include "plan.h"
#include <stddef.h>
#include <stdint.h>

typedef struct {
  const char *backend;        /* backend / GPU name */
  int argc;
  char **argv;                /* the command line, recorded whole */
  uint64_t seed;
  long steps;
  const char *data, *val_data; /* shard globs; NULL: synthetic stream / no validation */
  const char *init_from;      /* --init-from directory or NULL */
  long resumed_from;          /* step of the checkpoint resumed from; -1 for a fresh run */
} RunInfo;

typedef struct {
  long step;                  /* optimizer steps completed */
  double train_loss, val_loss;/* val_loss NAN when not evaluated at this step */
  double lr, grad_norm, ms, tok_per_s;
  double mfu;                 /* fraction; < 0 when unknown */
  double tokens, elapsed_s;   /* tokens trained on so far; seconds since this process started training */
} StepMetrics;

typedef struct RunLog RunLog;

/* Create dir if needed and write meta.json and config.json; open metrics.jsonl (emptied for a
 * fresh run, cut after step resumed_from for a resumed one). NULL with a message on failure. */
RunLog *runlog_open(const char *dir, const Plan *p, const RunInfo *info, char *err, size_t errlen);
/* Append one metrics line (flushed). Exits with a message when the file cannot be written. */
void runlog_step(RunLog *r, const StepMetrics *m);
const char *runlog_dir(const RunLog *r);
void runlog_close(RunLog *r);
#endif

/* profile.c — see profile.h. The step runs op by op (no CUDA graph), so the total is a little above
 * the graph-replayed step of --bench: the difference is launch gaps, which a graph removes. */
#include "profile.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static const char *PHASE[] = {"fwd", "bwd", "opt", "dec"};

typedef struct { char key[48]; double ms; int n; } Row;

static const double *sort_ms; /* qsort has no context argument */
static int by_ms_op(const void *a, const void *b) {
  double x = sort_ms[*(const int *)a], y = sort_ms[*(const int *)b];
  return (x < y) - (x > y);
}
static int by_ms_row(const void *a, const void *b) {
  double x = ((const Row *)a)->ms, y = ((const Row *)b)->ms;
  return (x < y) - (x > y);
}

/* The matrix products grouped by shape (M N K ta tb epi): calls, time and rate (2·M·N·K per call), slowest
 * total first, so that a shape cuBLASLt runs poorly stands out. */
typedef struct { long M, N, K, ta, tb, epi; double ms; int n; } Mm;
static int by_ms_mm(const void *a, const void *b) {
  double x = ((const Mm *)a)->ms, y = ((const Mm *)b)->ms;
  return (x < y) - (x > y);
}
static void profile_matmuls(const Plan *p, const double *ms, FILE *f) {
  Mm *mm = xcalloc((size_t)p->nop, sizeof *mm);
  int n = 0;
  double flop = 0, tms = 0;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase == PH_DEC || strcmp(op->kind, "matmul")) continue;
    Mm k = {(long)op_attr(p, op, "M"), (long)op_attr(p, op, "N"), (long)op_attr(p, op, "K"), (long)op_attr(p, op, "ta"),
            (long)op_attr(p, op, "tb"), (long)op_attr(p, op, "epi"), 0, 0};
    int r = 0;
    while (r < n && !(mm[r].M == k.M && mm[r].N == k.N && mm[r].K == k.K && mm[r].ta == k.ta && mm[r].tb == k.tb &&
                      mm[r].epi == k.epi)) r++;
    if (r == n) mm[n++] = k;
    mm[r].ms += ms[i];
    mm[r].n++;
    flop += 2.0 * k.M * k.N * k.K;
    tms += ms[i];
  }
  if (n == 0) { free(mm); return; }
  qsort(mm, (size_t)n, sizeof *mm, by_ms_mm);
  fprintf(f, "matmuls by shape (%.3f ms, %.1f TFLOP/s overall):\n| M | N | K | ta | tb | epi | calls | ms | TFLOP/s |\n"
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n", tms, tms > 0 ? flop / tms * 1e-9 : 0.0);
  for (int r = 0; r < n; r++)
    fprintf(f, "| %ld | %ld | %ld | %ld | %ld | %ld | %d | %.3f | %.1f |\n", mm[r].M, mm[r].N, mm[r].K, mm[r].ta, mm[r].tb,
            mm[r].epi, mm[r].n, mm[r].ms, mm[r].ms > 0 ? 2.0 * mm[r].M * mm[r].N * mm[r].K * mm[r].n / mm[r].ms * 1e-9 : 0.0);
  free(mm);
}

int profile_print(Backend *b, FILE *f) {
  const Plan *p = b->plan;
  if (!b->profile_step) {
    fprintf(f, "profile: the %s backend cannot time ops one by one\n", b->name);
    return -1;
  }
  double *ms = xcalloc((size_t)p->nop, sizeof *ms), total = 0;
  b->profile_step(b, ms);
  Row *rows = xcalloc((size_t)p->nop, sizeof *rows);
  int nrow = 0;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase == PH_DEC) continue;
    total += ms[i];
    char key[48];
    snprintf(key, sizeof key, "%s %s", PHASE[op->phase], op->kind);
    int r = 0;
    while (r < nrow && strcmp(rows[r].key, key)) r++;
    if (r == nrow) snprintf(rows[nrow++].key, sizeof rows[0].key, "%s", key);
    rows[r].ms += ms[i];
    rows[r].n++;
  }
  qsort(rows, (size_t)nrow, sizeof *rows, by_ms_row);
  fprintf(f, "profile: %s, one step op by op (no graph): %.3f ms\n", p->name, total);
  fprintf(f, "| phase kind | ops | ms | share |\n| --- | --- | --- | --- |\n");
  for (int r = 0; r < nrow; r++)
    fprintf(f, "| %s | %d | %.3f | %.1f%% |\n", rows[r].key, rows[r].n, rows[r].ms, 100 * rows[r].ms / total);
  int *idx = xmalloc((size_t)p->nop * sizeof *idx);
  for (int i = 0; i < p->nop; i++) idx[i] = i;
  sort_ms = ms;
  qsort(idx, (size_t)p->nop, sizeof *idx, by_ms_op);
  fprintf(f, "slowest ops:\n| op | phase | kind | name | kernel | ms |\n| --- | --- | --- | --- | --- | --- |\n");
  for (int j = 0; j < 25 && j < p->nop; j++) {
    const Op *op = &p->ops[idx[j]];
    fprintf(f, "| %d | %s | %s | %s | %s | %.3f |\n", op->idx, PHASE[op->phase], op->kind, op->comment, op->kernel, ms[idx[j]]);
  }
  profile_matmuls(p, ms, f);
  if (b->survey_matmuls) b->survey_matmuls(b, f);
  fflush(f);
  free(idx);
  free(rows);
  free(ms);
  return 0;
}

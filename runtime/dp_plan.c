/* dp_plan.c — see dp_plan.h. */
#include "dp_plan.h"
#include "util.h"
#include <stdlib.h>

long dp_bucket_target(void) {
  const char *s = getenv("MF_DIST_BUCKET_MB");
  double mb = 32;
  if (s && *s) {
    char *end;
    mb = strtod(s, &end);
    if (*end || !(mb > 0) || mb > 1e6) fatal("MF_DIST_BUCKET_MB=%s: expected a positive number of MiB", s);
  }
  long t = (long)(mb * 1048576.0 / 4.0);
  return t > 0 ? t : 1;
}

static const Plan *sort_plan; /* qsort has no context argument */
static int by_offset(const void *a, const void *b) {
  long x = sort_plan->params[*(const int *)a].offset, y = sort_plan->params[*(const int *)b].offset;
  return (x > y) - (x < y);
}
static int by_ready(const void *a, const void *b) {
  const GradBucket *x = a, *y = b;
  if (x->after_op != y->after_op) return (x->after_op > y->after_op) - (x->after_op < y->after_op);
  return (x->lo > y->lo) - (x->lo < y->lo);
}

GradBucket *dp_buckets(const Plan *p, long target, int *n) {
  if (target < 1) target = 1;
  int np = p->nparam;
  int *ord = xmalloc((size_t)(np > 0 ? np : 1) * sizeof *ord);
  for (int i = 0; i < np; i++) ord[i] = i;
  sort_plan = p;
  qsort(ord, (size_t)np, sizeof *ord, by_offset);
  GradBucket *b = xmalloc((size_t)(np > 0 ? np : 1) * sizeof *b);
  int nb = 0;
  /* cut points: a new bucket starts at a parameter when the current one would pass `target` */
  for (int k = 0; k < np; k++) {
    const Param *q = &p->params[ord[k]];
    long end = q->offset + q->numel;
    if (nb == 0) {
      b[nb++] = (GradBucket){0, end, -1};
    } else if (end - b[nb - 1].lo > target && q->offset > b[nb - 1].lo) {
      b[nb - 1].hi = q->offset;
      b[nb++] = (GradBucket){q->offset, end, -1};
    } else if (end > b[nb - 1].hi) {
      b[nb - 1].hi = end;
    }
  }
  if (nb == 0 && p->param_elems > 0) b[nb++] = (GradBucket){0, p->param_elems, -1};
  if (nb) b[nb - 1].hi = p->param_elems; /* the arena's tail padding goes with the last bucket */
  free(ord);
  /* the last backward op writing into each bucket */
  int last_bwd = -1;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_BWD) continue;
    last_bwd = i;
    for (int j = 0; j < op->nref; j++) {
      const Ref *r = &op->ref[j];
      if (!r->out || (r->kind != REF_GRAD && r->kind != REF_GRADS)) continue;
      long lo = 0, hi = p->param_elems;
      if (r->kind == REF_GRAD) lo = p->params[r->idx].offset, hi = lo + p->params[r->idx].numel;
      for (int k = 0; k < nb; k++)
        if (lo < b[k].hi && b[k].lo < hi && i > b[k].after_op) b[k].after_op = i;
    }
  }
  for (int k = 0; k < nb; k++)
    if (b[k].after_op < 0) b[k].after_op = last_bwd;
  qsort(b, (size_t)nb, sizeof *b, by_ready);
  *n = nb;
  return b;
}

void dp_shard(long n, int world, int rank, long *S, long *lo, long *hi) {
  if (world < 1) world = 1;
  long s = (n + world - 1) / world;
  s = (s + 127) / 128 * 128;
  *S = s;
  *lo = (long)rank * s;
  *hi = *lo + s < n ? *lo + s : n;
  if (*hi < *lo) *hi = *lo;
}

void dp_print(const Plan *p, int world, long target, FILE *f) {
  int nb;
  GradBucket *b = dp_buckets(p, target, &nb);
  fprintf(f, "dist-plan: %s | %ld parameter elements | %d buckets of at most %ld elements (in launch order)\n", p->name,
          p->param_elems, nb, target);
  for (int k = 0; k < nb; k++) {
    const Op *op = b[k].after_op >= 0 ? &p->ops[b[k].after_op] : NULL;
    fprintf(f, "bucket %d lo %ld hi %ld elems %ld after_op %d %s\n", k, b[k].lo, b[k].hi, b[k].hi - b[k].lo, b[k].after_op,
            op ? op->comment : "-");
  }
  for (int r = 0; r < world; r++) {
    long S, lo, hi;
    dp_shard(p->param_elems, world, r, &S, &lo, &hi);
    fprintf(f, "shard rank %d of %d: S %ld lo %ld hi %ld\n", r, world, S, lo, hi);
  }
  free(b);
}

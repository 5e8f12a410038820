/* dp_plan.h — how a plan's gradients are shared between data-parallel ranks: the buckets of the
 * grads arena that are all-reduced while the backward pass still runs, and the ZeRO-1 shard of
 * each rank. Pure plan arithmetic (no GPU), so it is tested on the CPU (`runtime --dist-plan W`).
 *
 * Buckets tile the parameter arena [0, param_elems) in arena order, cut at parameter offsets,
 * each at most `target` elements unless one parameter alone is larger. A bucket is final in a
 * micro-step once the last backward op writing any gradient inside it has run: that op is its
 * `after_op` (an index into plan->ops). The buckets are returned ordered by after_op, the order in
 * which the backward pass completes them (a bucket no backward op writes is final after the last
 * backward op).
 *
 * ZeRO-1: rank r of W owns [r·S, min((r+1)·S, n)) of the arena with S = ⌈n/W⌉ rounded up to a
 * multiple of 128 elements, so every shard starts 512-byte aligned; the grads and bf16 params
 * arenas are padded to W·S elements so that the in-place reduce-scatter and all-gather see equal
 * parts. */
#ifndef MF_DP_PLAN_H
#define MF_DP_PLAN_H
#include "plan.h"
#include <stdio.h>

typedef struct { long lo, hi; int after_op; } GradBucket;

/* Elements per bucket: MF_DIST_BUCKET_MB (default 32) MiB of f32 gradients. */
long dp_bucket_target(void);
/* The buckets (malloc'd, *n of them). target: elements per bucket (>= 1). */
GradBucket *dp_buckets(const Plan *p, long target, int *n);

/* This rank's shard: S (elements per rank) and [lo, hi), hi >= lo. */
void dp_shard(long n, int world, int rank, long *S, long *lo, long *hi);

/* Print the buckets and the shards of `world` ranks (the hidden mode --dist-plan). */
void dp_print(const Plan *p, int world, long target, FILE *f);
#endif

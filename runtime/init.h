/* init.h — deterministic parameter initialisation. */
#ifndef MF_INIT_H
#define MF_INIT_H
#include "plan.h"
#include <stdint.h>

/* Fill master[0 .. p->param_elems) from the plan's param records: normal(0, std) / zeros / ones /
 * fill (every element = std) / sinusoidal (the fixed position table, docs/ir_decoder.md); gaps
 * between params are zero; rows ≥ V of wte.weight are zeroed. Element i of param k is a pure
 * function of (seed, k, i) — the same on every backend and for any thread count. */
void init_params(const Plan *p, uint64_t seed, float *master);

/* The counter-based generator behind it, exposed for the synthetic data and the checks:
 * mix64 is the splitmix64 finaliser; rng_normal is a standard normal drawn from (key, counter). */
uint64_t mix64(uint64_t x);
double rng_uniform(uint64_t key, uint64_t counter);  /* in [0, 1) */
double rng_normal(uint64_t key, uint64_t counter);
#endif

/* init.c — parameter initialisation from a seed with a counter-based generator.
 * No generator state is carried between elements: element i of parameter k is drawn from
 * hash(seed, k, i), so the result is independent of iteration order, threads and backend. */
#include "init.h"
#include <math.h>
#include <string.h>

/* splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix with good avalanche. */
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double rng_uniform(uint64_t key, uint64_t counter) {
  return (double)(mix64(key ^ mix64(counter)) >> 11) * 0x1.0p-53;
}

/* Box–Muller: z = √(−2 ln u1)·cos(2π u2), u1 ∈ (0, 1], u2 ∈ [0, 1); two draws per counter. */
double rng_normal(uint64_t key, uint64_t counter) {
  double u1 = 1.0 - rng_uniform(key, 2 * counter);
  double u2 = rng_uniform(key, 2 * counter + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void init_params(const Plan *p, uint64_t seed, float *master) {
  memset(master, 0, (size_t)p->param_elems * sizeof *master);
  for (int k = 0; k < p->nparam; k++) {
    const Param *pa = &p->params[k];
    float *w = master + pa->offset;
    uint64_t key = mix64(mix64(seed) ^ (0x5851f42d4c957f2dull * (uint64_t)(k + 1)));
    if (!strcmp(pa->init, "ones")) {
      for (long i = 0; i < pa->numel; i++) w[i] = 1.0f;
    } else if (!strcmp(pa->init, "normal")) {
      for (long i = 0; i < pa->numel; i++) w[i] = (float)(pa->std * rng_normal(key, (uint64_t)i));
    } else if (!strcmp(pa->init, "fill")) {
      for (long i = 0; i < pa->numel; i++) w[i] = (float)pa->std;
    } else if (!strcmp(pa->init, "sinusoidal")) {
      /* the fixed table of "Attention is all you need": rows t, D = the last dim,
       * pe[t, 2i] = sin(t·ω_i), pe[t, 2i+1] = cos(t·ω_i), ω_i = 10000^(−2i/D) */
      long D = pa->dims[pa->ndim - 1], rows = pa->numel / D;
      for (long t = 0; t < rows; t++)
        for (long c = 0; c < D; c++) {
          double om = pow(10000.0, -(double)(c - c % 2) / (double)D), a = (double)t * om;
          w[t * D + c] = (float)(c % 2 ? cos(a) : sin(a));
        }
    } /* zeros: already zero */
    if (!strcmp(pa->name, "wte.weight") && pa->ndim == 2) {
      /* padded vocabulary rows never see a token: keep them exactly zero */
      long V = plan_dim_opt(p, "V", pa->dims[0]);
      if (V < pa->dims[0]) memset(w + V * pa->dims[1], 0, (size_t)((pa->dims[0] - V) * pa->dims[1]) * sizeof *w);
    }
  }
}

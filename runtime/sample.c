/* sample.c — text generation with the plan's decode program (docs/ir.md, phase `dec`).
 *
 * One decode step writes the token and its position into the `dtokens`/`dpos` inputs and runs
 * the dec ops: each layer's attn_decode appends that token's key (rotated at pos with RoPE) and
 * value to the layer's KV cache and attends over the visible positions of 0..pos (window and
 * sinks as in training), so generating after an n-token prompt costs one
 * single-token step per token — the prefix is never recomputed. */
#include "sample.h"
#include "init.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sample_supported(const Plan *p) {
  for (int i = 0; i < p->nop; i++)
    if (p->ops[i].phase == PH_DEC) return 1;
  return 0;
}

typedef struct {
  Backend *b;
  const Plan *p;
  Ref tok, pos;      /* the decode inputs */
  const Ref *logits; /* output of the last dec op: [Bs, Vp] */
  long T, V, Vp;
  float *row;        /* Vp floats */
} Decoder;

static void dec_open(Decoder *d, Backend *b) {
  const Plan *p = b->plan;
  memset(d, 0, sizeof *d);
  d->b = b;
  d->p = p;
  if (!sample_supported(p)) fatal("%s: the plan has no decode program (a plan from an older gen: regenerate it)", p->path);
  int ti = plan_input(p, "dtokens"), pi = plan_input(p, "dpos");
  if (ti < 0 || pi < 0) fatal("%s: the decode program needs inputs dtokens and dpos", p->path);
  d->tok = (Ref){.role = "tokens", .kind = REF_INPUT, .idx = ti};
  d->pos = (Ref){.role = "pos", .kind = REF_INPUT, .idx = pi};
  const Op *last = NULL;
  for (int i = 0; i < p->nop; i++)
    if (p->ops[i].phase == PH_DEC) last = &p->ops[i];
  d->logits = op_ref_req(p, last, "c");
  d->T = plan_dim(p, "T");
  d->V = plan_dim(p, "V");
  d->Vp = plan_dim(p, "Vp");
  if (ref_numel(p, d->logits) < d->Vp) fatal("%s: decode logits are smaller than the vocabulary", p->path);
  d->row = xmalloc((size_t)d->Vp * sizeof *d->row);
}

/* Run one decode step for token `tok` at position `pos`; leaves its logits in d->row. */
static void dec_step(Decoder *d, int32_t tok, long pos) {
  if (pos >= d->T) fatal("decode: position %ld is past the context length %ld", pos, d->T);
  float t = (float)tok, q = (float)pos;
  d->b->write_ref(d->b, &d->tok, 0, &t, 1);
  d->b->write_ref(d->b, &d->pos, 0, &q, 1);
  d->b->run_decode(d->b);
  d->b->read_ref(d->b, d->logits, 0, d->row, d->V); /* the padding columns are never sampled */
}

static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x < y) - (x > y);
}

/* Pick a token from logits[0..V): greedy at temperature 0, else softmax(logits/τ) restricted to
 * the top k, sampled with a counter-based draw (reproducible from the seed). */
static int32_t pick(const float *logits, long V, const SampleOpts *o, uint64_t counter) {
  long best = 0;
  for (long i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  if (o->temperature <= 0) return (int32_t)best;
  float cut = -INFINITY;
  if (o->top_k > 0 && o->top_k < V) {
    float *tmp = xmalloc((size_t)V * sizeof *tmp);
    memcpy(tmp, logits, (size_t)V * sizeof *tmp);
    qsort(tmp, (size_t)V, sizeof *tmp, cmp_desc);
    cut = tmp[o->top_k - 1];
    free(tmp);
  }
  double sum = 0, mx = logits[best];
  for (long i = 0; i < V; i++)
    if (logits[i] >= cut) sum += exp((logits[i] - mx) / o->temperature);
  double u = rng_uniform(o->seed ^ 0x5a4d504cULL, counter) * sum, acc = 0;
  for (long i = 0; i < V; i++) {
    if (logits[i] < cut) continue;
    acc += exp((logits[i] - mx) / o->temperature);
    if (acc >= u) return (int32_t)i;
  }
  return (int32_t)best;
}

int32_t *sample_generate(Backend *b, const int32_t *prompt, int n, const SampleOpts *o, int *n_out) {
  Decoder d;
  dec_open(&d, b);
  if (n < 1) fatal("sample: the prompt must hold at least one token");
  if (n >= d.T) fatal("sample: the prompt has %d tokens; the context holds %ld", n, d.T);
  for (int i = 0; i < n; i++) {
    if (prompt[i] < 0 || prompt[i] >= d.V) fatal("sample: prompt token %d is %d, outside the vocabulary", i, prompt[i]);
    dec_step(&d, prompt[i], i);
  }
  int32_t *out = xmalloc((size_t)(o->max_new > 0 ? o->max_new : 1) * sizeof *out);
  int k = 0;
  long pos = n;
  while (k < o->max_new) {
    int32_t t = pick(d.row, d.V, o, (uint64_t)k);
    out[k++] = t;
    if ((o->stop_at_eot && t == 50256) || pos >= d.T) break;
    dec_step(&d, t, pos++);
  }
  free(d.row);
  *n_out = k;
  return out;
}

void sample_logits(Backend *b, const int32_t *tokens, int n, float *out) {
  Decoder d;
  dec_open(&d, b);
  for (int i = 0; i < n; i++) {
    dec_step(&d, tokens[i], i);
    memcpy(out + (long)i * d.V, d.row, (size_t)d.V * sizeof *out);
  }
  free(d.row);
}

void sample_bench(Backend *b, int n_prompt, int n_new, uint64_t seed, double *ms_prompt, double *ms_new) {
  Decoder d;
  dec_open(&d, b);
  SampleOpts greedy = {.max_new = n_new};
  double t0 = now_sec();
  for (int i = 0; i < n_prompt; i++) dec_step(&d, (int32_t)(rng_uniform(seed, (uint64_t)i) * (double)(d.V - 1)), i);
  double t1 = now_sec();
  long pos = n_prompt;
  for (int k = 0; k < n_new; k++) dec_step(&d, pick(d.row, d.V, &greedy, (uint64_t)k), pos++);
  double t2 = now_sec();
  *ms_prompt = 1e3 * (t1 - t0) / n_prompt;
  *ms_new = 1e3 * (t2 - t1) / (n_new > 0 ? n_new : 1);
  free(d.row);
}

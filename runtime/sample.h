/* sample.h — text generation with the plan's decode program: the `dec` ops process one token
 * per sequence at position `pos`, appending its keys and values to a per-layer KV cache, so a
 * prompt of n tokens and m new tokens cost n + m single-token steps (no prefix recomputation). */
#ifndef MF_SAMPLE_H
#define MF_SAMPLE_H
#include "backend.h"
#include <stdint.h>

typedef struct {
  int max_new;        /* tokens to generate (stops early at the end of the context) */
  float temperature;  /* 0 = greedy */
  int top_k;          /* 0 = no top-k filter */
  uint64_t seed;
  int stop_at_eot;    /* stop after emitting end-of-text (50256) */
} SampleOpts;

/* 1 when the plan has a decode program (dec ops), else 0. */
int sample_supported(const Plan *p);

/* Feed prompt[0..n) then sample. Returns a malloc'd array of the generated ids (*n_out of them).
 * Uses the backend's current weights; leaves the training state (master, moments, grads) alone. */
int32_t *sample_generate(Backend *b, const int32_t *prompt, int n, const SampleOpts *o, int *n_out);

/* Teacher-forced decode: logits (first V columns, f32) at every position of tokens[0..n), written
 * to out[n][V]. Used by the tests that compare incremental decoding with the full forward pass. */
void sample_logits(Backend *b, const int32_t *tokens, int n, float *out);

/* Decode speed, as --generate pays it: feed n_prompt ids drawn from the seed (the first step also
 * captures the GPU's decode graph), then time n_new greedy steps — each the whole decode program,
 * the logits read back and the next id picked on the host. Writes the mean milliseconds per token of
 * both phases. n_prompt ≥ 1 and n_prompt + n_new must fit the context (the caller checks). */
void sample_bench(Backend *b, int n_prompt, int n_new, uint64_t seed, double *ms_prompt, double *ms_new);
#endif
